"""Every hub model and dataset a run downloads is pinned to a commit; local directories need none."""
import pytest

from components.config import ConfigError, load_config, parse_profile
from components.data.hub_pins import is_hub_id, require_pinned, unpinned
from components.inference.methods.registry import hub_models
from tests.conftest import REPO

SHA = "5ede1c97bbab6ce5cda5812749b4c0bdf79b18dd"
HUB = {"model": {"source": "hub", "name": "Qwen/Qwen2.5-32B-Instruct", "dtype": "bfloat16"},
       "pretrain": {"enabled": False},
       "difficulty": {"students": ["Qwen/Qwen2.5-7B-Instruct", "base"]},
       "evaluate": {"compute_matched": ["rebase"], "methods": {"rebase": {"reward": "Qwen/Qwen2.5-Math-PRM-7B"}}}}


def test_a_hub_profile_without_revisions_is_refused_naming_each_key():
    cfg = parse_profile(HUB, "hub")
    with pytest.raises(ConfigError) as err:
        require_pinned(cfg, method_models=hub_models)
    text = str(err.value)
    for key in ("model.revision: Qwen/Qwen2.5-32B-Instruct", "difficulty.revisions.Qwen/Qwen2.5-7B-Instruct",
                "evaluate.methods.rebase.reward_revision"):
        assert key in text
    assert "40-hex commit SHA" in text


def test_the_base_student_is_pinned_by_model_revision_alone():
    """'base' is model.name at model.revision: no second pin under difficulty.revisions."""
    base_only = {**HUB, "model": {**HUB["model"], "revision": SHA}, "difficulty": {"students": ["base"]}}
    assert unpinned(parse_profile(base_only, "hub"), ["filter"]) == []
    unpinned_base = {**HUB, "difficulty": {"students": ["base"]}}
    assert [p.split(":")[0] for p in unpinned(parse_profile(unpinned_base, "hub"), ["filter"])] == [
        "model.revision"]


def test_pins_clear_the_refusal_and_only_the_stages_run_are_checked():
    pinned = {**HUB, "model": {**HUB["model"], "revision": SHA},
              "difficulty": {**HUB["difficulty"], "revisions": {"Qwen/Qwen2.5-7B-Instruct": SHA}},
              "evaluate": {**HUB["evaluate"],
                           "methods": {"rebase": {"reward": "Qwen/Qwen2.5-Math-PRM-7B", "reward_revision": SHA}}}}
    require_pinned(parse_profile(pinned, "hub"), method_models=hub_models)
    assert unpinned(parse_profile(HUB, "hub"), ["collect", "distill"]) == []


def test_local_directories_need_no_revision(tmp_path):
    assert is_hub_id("Qwen/Qwen2.5-7B-Instruct") and not is_hub_id("base") and not is_hub_id("programmatic")
    assert not is_hub_id("runs/s1-32b-rehearsal/inputs/Qwen2.5-Math-PRM-rehearsal")
    local = tmp_path / "org"
    (local / "model").mkdir(parents=True)
    assert not is_hub_id(str(local / "model"))
    assert unpinned(load_config(REPO / "params.yaml", "s1-32b-rehearsal")) == []


def test_s1_32b_pins_its_models_and_names_the_datasets_still_unpinned():
    problems = unpinned(load_config(REPO / "params.yaml", "s1-32b"))
    assert [p.split(":")[0] for p in problems] == ["pool.sources.0.revision", "pool.sources.4.revision",
                                                   "decontamination.tasks"]
