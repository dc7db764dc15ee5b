"""s1-32b-rehearsal is s1-32b with one declared substitution list: any other difference fails here."""
import pytest

from components.config import ConfigError, load_config, parse_profile, read_params, resolve_profiles, substitutions
from tests.conftest import REPO

PARAMS = REPO / "params.yaml"


def _leaves(value, prefix=""):
    """{dotted.key: value} of every leaf (a list is one leaf)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _differences(a: dict, b: dict) -> set[str]:
    la, lb = _leaves(a), _leaves(b)
    return {k for k in la.keys() | lb.keys() if la.get(k, object()) != lb.get(k, object())}


def _covered(key: str, declared: set[str]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


def test_the_rehearsal_block_is_extends_and_the_substitution_list_only():
    raw = read_params(PARAMS)
    assert set(raw["s1-32b-rehearsal"]) == {"extends", "substitute"}
    assert raw["s1-32b-rehearsal"]["extends"] == "s1-32b"


def test_the_rehearsal_differs_from_s1_32b_only_in_declared_keys():
    raw = read_params(PARAMS)
    declared = set(substitutions(raw, "s1-32b-rehearsal"))
    profiles = resolve_profiles(raw)
    real, rehearsal = (parse_profile(profiles[n], n).model_dump(mode="json") for n in ("s1-32b", "s1-32b-rehearsal"))
    real.pop("name"), rehearsal.pop("name")
    differing = _differences(real, rehearsal)
    assert not {k for k in differing if not _covered(k, declared)}, "settings differ outside the substitution list"
    # and every declared key is a real substitution (a no-op entry would hide which settings are the real ones)
    assert not {d for d in declared if not any(_covered(k, {d}) for k in differing)}


def test_the_rehearsal_keeps_what_the_cluster_run_checks():
    cfg = load_config(PARAMS, "s1-32b-rehearsal")
    assert cfg.sft.launcher == "ray" and cfg.sft.deepspeed == "always" and cfg.sft.ray_resources_per_worker == {"p5": 1}
    assert cfg.sft.checkpoint_uri.startswith("s3://") and cfg.sft.ray_storage.startswith("s3://")
    assert cfg.teacher.kind == "gemini" and cfg.domain.classifier == "llm" and cfg.difficulty.runner == "ray_llm"
    assert cfg.selection.strategy == "s1" and cfg.engine.backend == "vllm" and cfg.evaluate.via == "serve"
    assert cfg.teacher.base_url.startswith("http://127.0.0.1:") and cfg.domain.base_url.startswith("http://127.0.0.1:")


def test_a_substitution_sets_nested_keys_and_replaces_lists(tmp_path):
    raw = {"base": {"sft": {"world_size": 16, "per_device_batch_size": 1, "global_batch_size": 16},
                    "evaluate": {"budgets": [512, 1024]}, "engine": {"unlimited_thinking_tokens": 4096}},
           "small": {"extends": "base", "substitute": {"sft.world_size": 2, "evaluate.budgets": [8]}}}
    small = resolve_profiles(raw)["small"]
    assert small["sft"] == {"world_size": 2, "per_device_batch_size": 1, "global_batch_size": 16}
    assert small["evaluate"]["budgets"] == [8]
    assert raw["base"]["sft"]["world_size"] == 16  # the parent's block is untouched


@pytest.mark.parametrize("blocks,message", [
    ({"a": {"sft": {}}, "b": {"substitute": {"sft.world_size": 2}}}, "b.substitute: substitutions apply to an extended"),
    ({"a": {"sft": {"epochs": 3}}, "b": {"extends": "a", "substitute": {"sft.epochs.x": 2}}}, "sft.epochs is not a section"),
    ({"a": {}, "b": {"extends": "a", "substitute": ["sft.epochs=2"]}}, "must be a mapping of dotted keys"),
])
def test_a_broken_substitution_is_named(blocks, message):
    with pytest.raises(ConfigError, match=message):
        resolve_profiles(blocks)
