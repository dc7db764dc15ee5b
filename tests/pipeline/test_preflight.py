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


def test_serve_on_a_public_host_without_its_key_fails_before_any_stage(monkeypatch):
    monkeypatch.delenv("S1FLOW_TEST_SERVE_KEY", raising=False)
    cfg = parse_profile({"evaluate": {"via": "serve"}, "serve": {"host": "0.0.0.0",
                                                                 "api_key_env": "S1FLOW_TEST_SERVE_KEY"}}, "tiny")
    with pytest.raises(ConfigError) as e:
        preflight(cfg, ["collect", "evaluate"])
    msg = str(e.value)
    assert "serve.api_key_env" in msg and "S1FLOW_TEST_SERVE_KEY is empty" in msg
    assert "export S1FLOW_TEST_SERVE_KEY=" in msg and "serve.host: 127.0.0.1" in msg
    monkeypatch.setenv("S1FLOW_TEST_SERVE_KEY", "k")
    preflight(cfg, ["evaluate"])
    monkeypatch.delenv("S1FLOW_TEST_SERVE_KEY")
    preflight(parse_profile({"evaluate": {"via": "serve"}, "serve": {"api_key_env": "S1FLOW_TEST_SERVE_KEY"}},
                            "tiny"), ["evaluate"])  # loopback: no key needed


@pytest.fixture
def no_hf_token(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf, "HF_TOKEN_PATH", str(tmp_path / "token"))
    return tmp_path / "token"


def test_a_gated_task_without_a_hugging_face_token_fails_before_any_stage(no_hf_token, monkeypatch):
    cfg = parse_profile({"evaluate": {"tasks": ["aime24", "gpqa_diamond"]},
                         "decontamination": {"tasks": ["aime24", "gpqa_diamond"]}}, "tiny")
    for stages in (["evaluate"], ["filter"]):
        with pytest.raises(ConfigError) as e:
            preflight(cfg, stages)
        msg = str(e.value)
        assert "['gpqa_diamond']" in msg and "Idavidrein/gpqa" in msg and "HF_TOKEN" in msg, msg
    preflight(cfg, ["collect"])
    no_hf_token.write_text("hf_from_login_file")  # `hf auth login`'s token file counts
    preflight(cfg, ["evaluate", "filter"])
    no_hf_token.unlink()
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    preflight(cfg, ["evaluate", "filter"])
    monkeypatch.delenv("HF_TOKEN")
    local = parse_profile({"evaluate": {"tasks": ["gpqa_diamond"], "task_files": {"gpqa_diamond": "gpqa.jsonl"}},
                           "decontamination": {"tasks": ["gpqa_diamond"]}}, "tiny")
    assert not [p for p in problems(local, ["evaluate", "filter"]) if "gated" in p]  # a local copy needs none


def test_a_reward_model_on_the_engines_gpus_needs_its_memory_share_lowered():
    pytest.importorskip("prefect")
    ev = {"compute_matched": ["rebase"],
          "methods": {"rebase": {"reward": "Qwen/Qwen2.5-Math-PRM-7B", "reward_device": "cuda:0"}}}
    shared = parse_profile({"engine": {"backend": "vllm", "tensor_parallel_size": 8}, "evaluate": ev}, "tiny")
    assert any(p.startswith("evaluate.methods.rebase.reward_device: cuda:0 is one of the in-process engine's 8 GPUs")
               and "engine.gpu_memory_utilization" in p for p in problems(shared, ["evaluate"]))
    roomy = parse_profile({"engine": {"backend": "vllm", "tensor_parallel_size": 8, "gpu_memory_utilization": 0.75},
                           "evaluate": ev}, "tiny")
    assert not [p for p in problems(roomy, ["evaluate"]) if "reward_device" in p]



def test_a_method_section_its_settings_refuse_is_named_among_the_problems():
    pytest.importorskip("prefect")
    ev = {"compute_matched": ["rebase"], "methods": {"rebase": {"widths": [0], "reward_device": "cuda:0"}}}
    cfg = parse_profile({"engine": {"backend": "vllm", "tensor_parallel_size": 8}, "evaluate": ev}, "tiny")
    found = problems(cfg, ["evaluate"])  # no traceback: every problem listed, the bad section among them
    assert any(p.startswith("evaluate.methods.rebase.widths: Value error, list widths >= 1") for p in found), found
