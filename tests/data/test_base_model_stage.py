"""The base-model stage's gate: a pre-training that misses its probe fails loudly and is kept; the pipeline goes
on with it only when asked (pretrain.allow_unready), and then every later stage says so."""
import json
import shutil

import pytest

from components.config import load_config
from components.data import base_model_stage as stage_module
from components.data.base_model_readiness import base_model_warning
from components.data.base_model_stage import (
    BaseModelNotReady,
    base_model_stage,
    unready_build_dir,
)
from components.data.base_release import MANIFEST, fingerprint, write_release
from components.paths import Paths
from tests.conftest import REPO

REPORT_FIXTURE = REPO / "tests" / "fixtures" / "report" / "metrics" / "tiny"


def _cfg(**pretrain):
    """micro, shrunk to a second of pre-training whose probe cannot pass: 8 steps, a probe at step 5, target 1.0."""
    cfg = load_config(REPO / "params.yaml", "micro")
    update = {"steps": 8, "probe_every": 5, "warmup_steps": 2, "cooldown_steps": 2, "documents": 200,
              "probe_target": 1.0, "allow_unready": False, **pretrain}
    return cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update=update)})


def _run(cfg, root):
    """The stage on difficulty 1 only (short traces: a quick probe)."""
    return base_model_stage(cfg.model, cfg.pretrain, cfg.pool.domains, 1, 1, Paths.for_profile("micro", root))


def _fp(cfg):
    return fingerprint(cfg.model, cfg.pretrain, cfg.pool.domains, 1, 1)


@pytest.fixture(scope="module")
def missed(tmp_path_factory):
    """A real pre-training that misses its probe: (the run's root, the error's message)."""
    root = tmp_path_factory.mktemp("missed")
    with pytest.raises(BaseModelNotReady) as err:
        _run(_cfg(), root)
    return root, str(err.value)


@pytest.fixture
def no_pretraining(monkeypatch):
    """Pre-training replaced by a failure: what runs under it must not pre-train."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("pre-trained again")
    monkeypatch.setattr(stage_module, "pretrain_base_model", refuse)
    return calls


def _copy(root, tmp_path):
    shutil.copytree(root, tmp_path / "run")
    return tmp_path / "run"


def test_a_pretraining_that_misses_its_probe_fails_with_seeds_scores_and_remedies(missed):
    root, message = missed
    cfg = _cfg()
    paths = Paths.for_profile("micro", root)
    kept = json.loads((unready_build_dir(paths) / MANIFEST).read_text())
    scores = kept["summary"]["skill_probe"]["accuracy"]
    assert set(scores) == set(cfg.pool.domains) and kept["summary"]["probe_passed"] is False
    assert message.startswith("base model not ready: pre-training ran 8 steps")
    assert f"pretrain.seed {cfg.pretrain.seed}, model.seed {cfg.model.seed}" in message
    assert "pretrain.probe_target 1.0 (pretrain.probe_gate every_domain)" in message
    assert all(f"{domain} {score:.2f}" in message for domain, score in scores.items())
    samples = kept["summary"]["skill_probe"]["samples"]
    assert all(f"{d}: {s['question']!r} expected {s['expected']}" in message for d, s in samples.items())
    for remedy in ("raise pretrain.steps", "use the shipped release", "another pretrain.seed",
                   "set pretrain.allow_unready: true"):
        assert remedy in message
    # the stage leaves nothing a later stage could use, and keeps the model for the rerun
    assert not paths.base_model.exists() and not paths.metric("base_model.json").exists()
    assert kept["fingerprint"] == _fp(cfg) and (unready_build_dir(paths) / "model.safetensors").is_file()
    assert str(unready_build_dir(paths)) in message


def test_a_rerun_fails_at_once_with_the_same_message(missed, no_pretraining, tmp_path):
    root, message = missed
    run = _copy(root, tmp_path)
    with pytest.raises(BaseModelNotReady) as err:
        _run(_cfg(), run)
    assert str(err.value) == message.replace(str(root), str(run))
    assert not no_pretraining


def test_allow_unready_installs_the_kept_model_and_every_later_stage_warns(missed, no_pretraining, tmp_path):
    from components.evaluation.report import load_results, results_markdown
    from components.modeling import load_model
    from components.pipeline.registry import run_stage

    cfg = _cfg(allow_unready=True)
    assert _fp(cfg) == _fp(_cfg())  # going on deliberately is no other model
    run = _copy(missed[0], tmp_path)
    paths = Paths.for_profile("micro", run)
    summary = _run(cfg, run)
    assert not no_pretraining and summary["source"] == "unready-build" and summary["ready"] is False
    warning = summary["warning"]
    assert f"pretrain.seed {cfg.pretrain.seed}, model.seed {cfg.model.seed}" in warning
    assert "allow_unready" in warning and "arithmetic 0.00" in warning
    assert json.loads(paths.metric("base_model.json").read_text()) == summary
    load_model(paths.base_model)
    assert base_model_warning(paths) == warning

    collected = run_stage("collect", cfg, paths)  # a later stage: its result and its summary file
    assert collected["warning"] == warning
    assert json.loads(paths.metric("collect_report.json").read_text())["warning"] == warning

    shutil.copy(REPORT_FIXTURE / "eval.json", paths.metric("eval.json"))
    page = results_markdown(load_results(paths))
    assert page.index(f"> **WARNING:** {warning}") < page.index("## Test-time scaling")


def test_a_changed_config_pretrains_as_usual(missed, no_pretraining, tmp_path):
    run = _copy(missed[0], tmp_path)
    for cfg in (_cfg(seed=_cfg().pretrain.seed + 1), _cfg(steps=9, allow_unready=True)):
        with pytest.raises(AssertionError, match="pre-trained again"):
            _run(cfg, run)
    assert len(no_pretraining) == 2


def _fake_pretraining(monkeypatch, passed: bool):
    """Pre-training that writes a stand-in model and reports whether its probe passed."""
    def fake(model, pretrain, domains, min_difficulty, max_difficulty, out_dir, checkpoint):
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_text("weights")
        return {"steps": 8, "probes": [[5, 1.0 if passed else 0.0]], "probe_passed": passed, "source": "pretrained",
                **({} if passed else {"skill_probe": {"accuracy": {"arithmetic": 0.0}, "mean": 0.0, "lowest": 0.0,
                                                       "questions": 1, "samples": {}}})}
    monkeypatch.setattr(stage_module, "pretrain_base_model", fake)


def test_allow_unready_goes_on_after_the_pretraining_and_keeps_it(monkeypatch, tmp_path):
    _fake_pretraining(monkeypatch, passed=False)
    cfg = _cfg(allow_unready=True)
    paths = Paths.for_profile("micro", tmp_path)
    summary = _run(cfg, tmp_path)
    assert summary["ready"] is False and "arithmetic 0.00" in summary["warning"]
    assert (paths.base_model / "model.safetensors").read_text() == "weights"
    kept = json.loads((unready_build_dir(paths) / MANIFEST).read_text())
    assert kept["fingerprint"] == _fp(cfg) and kept["summary"]["probe_passed"] is False


def test_a_passing_pretraining_a_release_and_a_hub_model_are_ready_and_carry_nothing(monkeypatch, tmp_path):
    _fake_pretraining(monkeypatch, passed=True)
    cfg = _cfg()
    paths = Paths.for_profile("micro", tmp_path / "a")
    summary = _run(cfg, tmp_path / "a")
    assert summary["ready"] is True and "warning" not in summary and base_model_warning(paths) is None
    assert not unready_build_dir(paths).exists()

    built = tmp_path / "built"
    built.mkdir()
    (built / "model.safetensors").write_text("weights")
    released = _cfg(release=str(tmp_path / "release"))
    write_release(built, {"probe_passed": True}, tmp_path / "release", _fp(released))
    summary = _run(released, tmp_path / "b")
    assert summary["source"] == "release" and summary["ready"] is True and "warning" not in summary

    hub = _cfg().model_copy(update={"model": _cfg().model.model_copy(update={"source": "hub", "name": "org/m"})})
    assert _run(hub, tmp_path / "c") == {"source": "hub", "name": "org/m", "ready": True}


def test_a_release_is_never_written_from_a_pretraining_that_missed_its_probe(monkeypatch, tmp_path):
    from components.data.base_model_stage import release_base_model
    _fake_pretraining(monkeypatch, passed=False)
    cfg = _cfg(release=str(tmp_path / "release"))
    paths = Paths.for_profile("micro", tmp_path)
    with pytest.raises(BaseModelNotReady, match="base model not ready"):
        release_base_model(cfg.model, cfg.pretrain, cfg.pool.domains, 1, 1, paths)
    assert not (tmp_path / "release").exists()
    assert json.loads((unready_build_dir(paths) / MANIFEST).read_text())["fingerprint"] == _fp(cfg)
    _fake_pretraining(monkeypatch, passed=True)
    assert release_base_model(cfg.model, cfg.pretrain, cfg.pool.domains, 1, 1, paths) == tmp_path / "release"
