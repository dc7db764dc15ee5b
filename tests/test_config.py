import pytest
import yaml

from components.config import ConfigError, load_config, parse_profile
from tests.conftest import REPO


def test_both_profiles_in_params_yaml_validate():
    tiny = load_config(REPO / "params.yaml")
    big = load_config(REPO / "params.yaml", profile="s1-32b")
    assert tiny.name == "tiny" and tiny.model.source == "embedded"
    assert big.model.name == "Qwen/Qwen2.5-32B-Instruct"
    # the paper's SFT recipe
    assert (big.sft.epochs, big.sft.learning_rate, big.sft.global_batch_size, big.sft.block_size) == (5, 1e-5, 16, 32768)
    assert (big.sft.adam_beta1, big.sft.adam_beta2, big.sft.weight_decay, big.sft.warmup_ratio) == (0.9, 0.95, 1e-4, 0.05)
    assert big.selection.size == 1000


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"tiny\.sft\.learning_rat: unknown key"):
        parse_profile({"sft": {"learning_rat": 1e-5}}, "tiny")


def test_wrong_type_is_named_with_value():
    with pytest.raises(ConfigError, match=r"tiny\.sft\.epochs: .*got 'five'"):
        parse_profile({"sft": {"epochs": "five"}}, "tiny")


def test_min_thinking_above_budget_is_rejected():
    with pytest.raises(ConfigError, match=r"tiny\.evaluate\.min_thinking_tokens: \(100\) > smallest budget \(64\)"):
        parse_profile({"evaluate": {"budgets": [64, 128], "min_thinking_tokens": 100}}, "tiny")


def test_global_batch_must_divide_by_world_size():
    with pytest.raises(ConfigError, match=r"tiny\.sft\.global_batch_size: \(16\) must be a multiple"):
        parse_profile({"sft": {"global_batch_size": 16, "per_device_batch_size": 3}}, "tiny")


def test_impossible_values_rejected():
    with pytest.raises(ConfigError, match="tiny.pool.min_difficulty: "):
        parse_profile({"pool": {"min_difficulty": 5, "max_difficulty": 2}}, "tiny")
    with pytest.raises(ConfigError, match="tiny.evaluate.budgets"):
        parse_profile({"evaluate": {"budgets": []}}, "tiny")
    with pytest.raises(ConfigError, match="selection.size"):
        parse_profile({"pool": {"size": 10}, "selection": {"size": 50}}, "tiny")


def test_overrides_apply_and_are_validated():
    cfg = parse_profile({}, "tiny", overrides=["sft.epochs=2", "evaluate.budgets=[4, 8]"])
    assert cfg.sft.epochs == 2 and cfg.evaluate.budgets == [4, 8]
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_profile({}, "tiny", overrides=["sft.epochs"])


def test_unknown_profile_and_broken_other_profile(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("profile: tiny\ntiny: {}\nbig:\n  sft: {lr: 1}\n")
    with pytest.raises(ConfigError, match="big.sft.lr: unknown key"):
        load_config(p)
    with pytest.raises(ConfigError, match="'nope' is not defined"):
        load_config(p, profile="nope")


def test_micro_extends_tiny_section_by_section():
    tiny = load_config(REPO / "params.yaml")
    micro = load_config(REPO / "params.yaml", profile="micro")
    assert micro.name == "micro" and micro.model.hidden_size == 64 and micro.pretrain.release is None
    assert micro.model.max_position_embeddings == tiny.model.max_position_embeddings  # a key micro does not set
    assert micro.quality == tiny.quality and micro.teacher == tiny.teacher  # a section micro does not set
    assert [s.kind for s in micro.pool.sources] == ["procedural"]  # a list replaces, it does not merge
    assert micro.tracking.registered_model == "s1flow-micro" != tiny.tracking.registered_model


@pytest.mark.parametrize("blocks,message", [
    ({"a": {"extends": "nowhere"}}, r"a\.extends: 'nowhere' is not a profile"),
    ({"a": {"extends": "b"}, "b": {"extends": "a"}}, r"b\.extends: profiles extend each other in a cycle \(a -> b -> a\)"),
])
def test_a_broken_extends_is_named(tmp_path, blocks, message):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"profile": "a", **blocks}))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_profile_extending_another_is_validated_like_the_others(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"profile": "tiny", "tiny": {}, "small": {"extends": "tiny",
                                                                           "sft": {"epochs": -1}}}))
    with pytest.raises(ConfigError, match=r"small\.sft\.epochs"):
        load_config(path)


def test_params_yaml_holds_only_values_dvc_can_record():
    """DVC records params.yaml's values in dvc.lock and refuses a YAML date (an unquoted day): every
    value must be a string, number, boolean, null, list or mapping."""
    from pathlib import Path

    import yaml

    def odd(node, path):
        if isinstance(node, dict):
            return [p for k, v in node.items() for p in odd(v, f"{path}.{k}")]
        if isinstance(node, list):
            return [p for i, v in enumerate(node) for p in odd(v, f"{path}[{i}]")]
        return [] if node is None or isinstance(node, (str, int, float, bool)) else [f"{path}: {type(node).__name__}"]
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    assert odd(params, "params") == []
