"""Preflight: config problems named before any stage runs."""
import pytest

from components.config import ConfigError, parse_profile
from components.pipeline.preflight import preflight, problems


def test_unavailable_teacher_and_engine_fail_before_work(monkeypatch):
    pytest.importorskip("prefect")  # the main venv, where vllm is not installed
    monkeypatch.delenv("S1FLOW_TEST_KEY", raising=False)  # a key someone set in the environment
    import importlib.util
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    cfg = parse_profile({"teacher": {"kind": "gemini", "api_key_env": "S1FLOW_TEST_KEY"},
                         "engine": {"backend": "vllm"}}, "tiny")
    with pytest.raises(ConfigError) as e:
        preflight(cfg, ["collect", "distill", "filter", "evaluate"])
    assert "teacher.api_key_env: environment variable S1FLOW_TEST_KEY is not set" in str(e.value)
    assert "engine.backend: 'vllm' needs the vllm package" in str(e.value)
    preflight(cfg, ["collect"])  # stages that need neither still run


def test_missing_eval_set_is_named(tmp_path):
    cfg = parse_profile({"decontamination": {"eval_sets": [str(tmp_path / "nope.jsonl")]}}, "tiny")
    assert any("decontamination.eval_sets" in p for p in problems(cfg, ["filter"]))


def test_default_profile_has_no_problems():
    assert problems(parse_profile({}, "tiny"), ["distill", "filter", "train", "evaluate"]) == []


def test_reporting_a_benchmark_not_decontaminated_against_fails_before_any_work():
    from components.config import ConfigError, parse_profile
    from components.pipeline.preflight import preflight
    cfg = parse_profile({"evaluate": {"tasks": ["heldout", "aime24"]}}, "tiny")
    with pytest.raises(ConfigError, match=r"evaluate.tasks: \['aime24'\] would be reported"):
        preflight(cfg, ["collect", "evaluate"])
    preflight(cfg, ["collect"])  # a run without evaluation is not concerned
    preflight(parse_profile({"evaluate": {"tasks": ["heldout", "aime24"]}, "decontamination": {"tasks": ["aime24"]}},
                            "tiny"), ["evaluate"])
    preflight(parse_profile({"evaluate": {"tasks": ["aime24"], "allow_contaminated": True}}, "tiny"), ["evaluate"])
