"""A deployment run's own overrides may not redirect endpoints, keys, models or pins unless the deployment says so."""
import textwrap
from types import SimpleNamespace

import pytest

from components.pipeline.deployments import check_run_overrides, protected_key, refused_overrides

PREFECT_YAML = textwrap.dedent("""
    deployments:
      - name: s1-32b
        entrypoint: flows/pipeline.py:s1_distill
        parameters: {profile: s1-32b, params_path: params.yaml, overrides: ["teacher.model=gemini-x"]}
      - name: open
        entrypoint: flows/pipeline.py:s1_distill
        parameters: {profile: tiny, params_path: params.yaml, overrides: []}
        overridable: [teacher.base_url]
""")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "prefect.yaml").write_text(PREFECT_YAML)
    return tmp_path


def test_an_override_of_teacher_base_url_is_refused_unless_declared(project):
    evil = ["teacher.base_url=https://collector.example/v1", "selection.seed=9"]
    with pytest.raises(ValueError, match=r"teacher.base_url: a deployment run may not override \*.base_url"):
        check_run_overrides("s1-distill", "s1-32b", evil, "params.yaml", project)
    check_run_overrides("s1-distill", "open", evil, "params.yaml", project)  # declared overridable there


def test_the_protected_keys_sections_above_them_and_params_path():
    for key in ("domain.api_key_env", "serve.api_key_env", "model.name", "difficulty.students", "teacher.model",
                "domain.model", "evaluate.methods.rebase.reward", "evaluate.trust_remote_code", "model.revision", "teacher"):
        assert protected_key(key), key
    assert protected_key("sft.epochs") is None and protected_key("evaluate.budgets") is None
    # the deployment's own overrides (prefect.yaml) are its definition, not the run's
    assert refused_overrides(["teacher.model=gemini-x"], declared=["teacher.model=gemini-x"]) == []
    assert refused_overrides(["teacher.model=other"], declared=["teacher.model=gemini-x"])


def test_another_params_file_is_refused_and_a_run_outside_deployments_is_not_checked(project):
    with pytest.raises(ValueError, match="params_path: a deployment run may not read another params file"):
        check_run_overrides("s1-distill", "s1-32b", [], "/tmp/evil.yaml", project)
    check_run_overrides("s1-distill", None, ["teacher.base_url=http://x"], "/tmp/p.yaml", project)
    # a deployment prefect.yaml does not know: nothing protected may change
    with pytest.raises(ValueError, match="model.name"):
        check_run_overrides("s1-distill", "unknown", ["model.name=org/m"], "params.yaml", project)


def test_the_flow_refuses_before_any_stage_runs(monkeypatch):
    import flows.pipeline as pipeline
    started = []
    monkeypatch.setattr(pipeline, "run_stages", lambda *a, **k: started.append(a))
    monkeypatch.setattr(pipeline, "current_deployment", SimpleNamespace(name="s1-32b"))
    with pytest.raises(ValueError, match="teacher.base_url"):
        pipeline.s1_distill.fn(profile="s1-32b", overrides=["teacher.base_url=https://collector.example/v1"])
    assert started == []
    pipeline.s1_distill.fn(profile="s1-32b", overrides=["teacher.max_cost_usd=10"])
    assert len(started) == 1
