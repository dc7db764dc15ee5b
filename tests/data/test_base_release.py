"""The shipped base model (pretrain.release): current, skilled, and used only for the config it was built from."""
import json
import shutil
from datetime import date

import pytest

from components.config import load_config
from components.data import base_release
from components.data.base_model import probe_questions, textbook_document, textbook_probe
from components.data.base_model_stage import base_model_stage, release_base_model
from components.data.base_release import code_digest, fingerprint, release_dir, release_status
from components.modeling import load_model
from components.paths import Paths
from tests.conftest import REPO


def _tiny():
    return load_config(REPO / "params.yaml", "tiny")


def _fp(cfg):
    return fingerprint(cfg.model, cfg.pretrain, cfg.pool.domains, cfg.pool.min_difficulty, cfg.pool.max_difficulty)


def test_the_shipped_release_was_built_from_the_committed_params_and_code():
    cfg = _tiny()
    status = release_status(release_dir(cfg.pretrain), _fp(cfg))
    assert status.usable, (f"{status.reason}. The tiny profile's pre-training params or corpus code changed: rebuild "
                           "the release with `s1flow release-base` (~10 min on 2 cores) and commit releases/")


def test_the_shipped_base_model_writes_correct_worked_solutions():
    """Fresh problems from the upper half of the difficulty range (the pre-training probe): the release
    has the skill the gate asked for; an untrained model of the same shape solves none."""
    cfg = _tiny()
    model, tokenizer = load_model(release_dir(cfg.pretrain))
    fresh = cfg.pretrain.model_copy(update={"seed": cfg.pretrain.seed + 17, "probe_questions": 16})
    questions = probe_questions(fresh, cfg.pool.domains, cfg.pool.min_difficulty, cfg.pool.max_difficulty, corpus=[])
    longest = max(len(tokenizer(textbook_document(q))["input_ids"]) for q in questions)
    assert textbook_probe(tokenizer, questions, longest + 8)(model) >= cfg.pretrain.probe_target
    summary = json.loads((release_dir(cfg.pretrain) / base_release.MANIFEST).read_text())["summary"]
    assert summary["probes"] and summary["probes"][-1][1] >= cfg.pretrain.probe_target


def _micro(tmp_path, **pretrain):
    """The micro profile with its release at ``tmp_path / "release"``."""
    cfg = load_config(REPO / "params.yaml", "micro")
    return cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(
        update={"release": str(tmp_path / "release"), **pretrain})})


def _stage(cfg, root):
    return base_model_stage(cfg.model, cfg.pretrain, cfg.pool.domains, cfg.pool.min_difficulty,
                            cfg.pool.max_difficulty, Paths.for_profile("micro", root))


def test_a_release_is_installed_for_its_own_config_and_nothing_else(tmp_path):
    cfg = _micro(tmp_path)
    written = release_base_model(cfg.model, cfg.pretrain, cfg.pool.domains, cfg.pool.min_difficulty,
                                 cfg.pool.max_difficulty, Paths.for_profile("micro", tmp_path / "build"))
    assert (written / "model.safetensors").is_file() and (written / base_release.MANIFEST).is_file()

    same = _stage(cfg, tmp_path / "a")
    assert same["source"] == "release" and same["fingerprint"] == _fp(cfg)
    installed = tmp_path / "a" / "models" / "micro" / "base"
    assert (installed / "model.safetensors").read_bytes() == (written / "model.safetensors").read_bytes()
    assert not (installed / base_release.MANIFEST).exists()
    load_model(installed)  # loads like any saved model

    other = _micro(tmp_path, seed=cfg.pretrain.seed + 1)
    assert _stage(other, tmp_path / "b")["source"] == "pretrained"
    assert _stage(_micro(tmp_path, release=None), tmp_path / "c")["source"] == "pretrained"


def test_editing_the_corpus_code_invalidates_a_release(tmp_path, monkeypatch):
    cfg = _micro(tmp_path)
    before = _fp(cfg)
    copy = tmp_path / "components"
    for code in base_release.FINGERPRINT_CODE:
        (copy / code).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(base_release.COMPONENTS / code, copy / code)
    monkeypatch.setattr(base_release, "COMPONENTS", copy)
    assert _fp(cfg) == before
    problems = (copy / "data/problems.py").read_text()
    (copy / "data/problems.py").write_text(problems + "\n# a comment changes nothing the build runs\n")
    assert _fp(cfg) == before
    assert "Wait, let me re-check: " in problems  # a new trace format does
    (copy / "data/problems.py").write_text(problems.replace("Wait, let me re-check: ", "Wait, re-check: "))
    assert _fp(cfg) != before


def test_release_base_refuses_without_a_target(tmp_path):
    from components.config import ConfigError
    cfg = _micro(tmp_path, release=None)
    with pytest.raises(ConfigError, match="pretrain.release"):
        release_base_model(cfg.model, cfg.pretrain, cfg.pool.domains, cfg.pool.min_difficulty,
                           cfg.pool.max_difficulty, Paths.for_profile("micro", tmp_path))


def test_the_code_fingerprint_follows_what_the_build_runs_and_nothing_else(tmp_path):
    def digest(**files):
        for name, text in files.items():
            (tmp_path / f"{name}.py").write_text(text)
        return code_digest(tuple(f"{n}.py" for n in files), ("build",), root=tmp_path)

    base = digest(a="import os\nSTEP = 2\n\ndef build():\n    return helper() * STEP\n\ndef helper():\n    return 1\n",
                  b="def unused():\n    return 0\n")
    # documented, commented, imports moved, an unreached definition changed or removed: the same build
    assert digest(a='"""Module."""\nSTEP = 2  # the step\n\ndef build():\n    """Build."""\n    import sys\n'
                    "    return helper() * STEP\n\n\ndef helper():\n    return 1\n", b="") == base
    # the build's own code, a function it calls, or a constant it reads changes: another fingerprint
    assert digest(a="STEP = 3\n\ndef build():\n    return helper() * STEP\n\ndef helper():\n    return 1\n",
                  b="") != base
    assert digest(a="STEP = 2\n\ndef build():\n    return helper() * STEP\n\ndef helper():\n    return 2\n",
                  b="") != base
    # a definition moved to another fingerprinted file is still the same code
    assert digest(a="def build():\n    return helper() * STEP\n\ndef helper():\n    return 1\n",
                  b="STEP = 2\n") == base


def test_the_base_models_release_date_leaves_a_release_current():
    """model.released dates the model for the results page; it shapes nothing the release holds."""
    cfg = _tiny()
    dated = cfg.model_copy(update={"model": cfg.model.model_copy(update={"released": date(2026, 1, 1)})})
    assert _fp(dated) == _fp(cfg)
    assert _fp(cfg.model_copy(update={"model": cfg.model.model_copy(update={"seed": 1})})) != _fp(cfg)
