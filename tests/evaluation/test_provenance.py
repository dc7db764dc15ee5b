"""The record of where an evaluation's numbers came from (eval.json → provenance) and the page printing it."""
import hashlib
import json
import os
import shutil
import subprocess
from datetime import date
from pathlib import Path

from components.common.redaction import secret_name
from components.common.run_environment import git_state, library_versions
from components.config import EngineConfig, EvaluateConfig, ModelConfig, ServeConfig, load_config
from components.data.tasks import TASKS
from components.evaluation.provenance import params_digest, protocol, provenance
from components.evaluation.report import load_results, results_markdown
from components.paths import Paths
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "report"
SECRET = "sk-live-0123456789abcdef"


def _record(tmp_path: Path, **evaluate) -> dict:
    paths = Paths.for_profile("t", tmp_path)
    paths.heldout.parent.mkdir(parents=True, exist_ok=True)
    paths.heldout.write_text('{"id": "q0", "question": "1+1?", "answer": "2"}\n')
    ev = EvaluateConfig(tasks=["heldout", "aime24", "math500"], task_files={"math500": "tasks/math500.jsonl"},
                        **evaluate)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "math500.jsonl").write_text('{"problem": "2+2?", "answer": "4"}\n')
    return provenance(ev, EngineConfig(), ModelConfig(), ServeConfig(), "0123456789abcdef", paths)


def test_the_record_names_code_params_libraries_hardware_protocol_and_datasets(tmp_path):
    rec = _record(tmp_path)
    json.dumps(rec)  # eval.json and MLflow take it as it is
    assert rec["git"] == git_state()  # the project checkout's commit, not the run directory's (no git here)
    if (REPO / ".git").exists() and shutil.which("git"):
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        assert rec["git"]["commit"] == head
    assert rec["libraries"] == library_versions() and rec["libraries"]["torch"]
    assert rec["hardware"]["cpu_count"] == os.cpu_count()
    assert rec["protocol"] == "paper" and (rec["temperature"], rec["seeds"]) == (0.0, [0])
    assert rec["params_sections"] == ["engine", "evaluate", "model", "serve"] and len(rec["params_digest"]) == 64
    heldout = Paths.for_profile("t", tmp_path).heldout
    assert rec["datasets"] == {
        "heldout": {"source": str(heldout.relative_to(tmp_path)),
                    "sha256": hashlib.sha256(heldout.read_bytes()).hexdigest()},
        "aime24": {"source": "HuggingFaceH4/aime_2024", "configs": [], "split": "train",
                   "revision": TASKS["aime24"].revision},
        "math500": {"source": "tasks/math500.jsonl",
                    "sha256": hashlib.sha256((tmp_path / "tasks/math500.jsonl").read_bytes()).hexdigest()}}
    assert _record(tmp_path / "s", temperature=0.6, top_p=0.95, seeds=[0, 1])["protocol"] == "sampled"
    assert protocol(EvaluateConfig(temperature=0.6)) == "sampled"


def test_the_params_digest_follows_values_not_key_order():
    cfg = load_config(REPO / "params.yaml", profile="tiny")
    sections = {"engine": cfg.engine, "evaluate": cfg.evaluate, "model": cfg.model, "serve": cfg.serve}
    digest = params_digest(sections)
    assert params_digest(dict(reversed(sections.items()))) == digest
    shuffled = {k: dict(reversed(v.model_dump(mode="json").items())) for k, v in sections.items()}
    assert params_digest(shuffled) == digest
    changed = {**sections, "evaluate": cfg.evaluate.model_copy(update={"temperature": 0.6})}
    assert params_digest(changed) != digest
    assert params_digest(cfg) != params_digest(load_config(REPO / "params.yaml", profile="tiny",
                                                           overrides=["evaluate.seeds=[0, 1]"]))


def test_no_secret_reaches_the_record_or_the_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("S1FLOW_API_KEY", SECRET)
    rec = json.dumps(_record(tmp_path))
    secrets = [v for k, v in os.environ.items() if secret_name(k.lower()) and len(v) >= 8]
    assert SECRET in secrets and not [v for v in secrets if v in rec]
    # a credential written into the config is masked before hashing: changing it leaves the digest alone
    cfg = load_config(REPO / "params.yaml", profile="tiny")
    with_secret = lambda s: cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={  # noqa: E731
        "extra_body": {"api_key": s}, "base_url": f"https://bob:{s}@api.example/v1"})})
    assert params_digest(with_secret(SECRET)) == params_digest(with_secret("another-secret-value"))


def _page(tmp_path: Path) -> str:
    shutil.copytree(FIXTURE / "metrics", tmp_path / "metrics")
    return results_markdown(load_results(Paths.for_profile("tiny", tmp_path)))


def test_the_report_prints_the_record_and_a_line_under_each_section(tmp_path):
    page = _page(tmp_path)
    for row in (f"| evaluated at commit | `{'1' * 40}` |",
                "| protocol | paper: greedy, temperature 0.0, top-p 1.0, seeds [0] |",
                f"| params digest | `{'2' * 12}` (sha256 of engine, evaluate, model, serve) |",
                "| libraries | torch 2.13.0, transformers 5.19.0, deepspeed 0.19.8, ray 2.60.0, math-verify 0.9.0; "
                "not installed: vllm |",
                "| hardware | Example CPU @ 2.00GHz (2 cores); no GPU |",
                f"| datasets | heldout `data/tiny/heldout.jsonl` sha256 `{'3' * 12}`; aime24 "
                f"`HuggingFaceH4/aime_2024` @ `{TASKS['aime24'].revision[:12]}` |"):
        assert row in page
    line = (f"_Where these numbers come from: commit `{'1' * 12}`, params `{'2' * 12}`, paper protocol "
            "(temperature 0.0, seeds [0]), hf on 2 CPU cores; the full record heads the page._")
    assert page.count(line) == 4  # budgets, compute-matched, both extrapolation tables
    sections = page.split("\n## ")[1:]
    assert all("_Where these numbers come from:" in s for s in sections)


def test_a_record_without_the_fields_reads_not_recorded(tmp_path):
    shutil.copytree(FIXTURE / "metrics", tmp_path / "metrics")
    paths = Paths.for_profile("tiny", tmp_path)
    ev = json.loads(paths.metric("eval.json").read_text())
    ev["provenance"] = {"engine": "hf", "temperature": 0.0}
    git = {"commit": None, "dirty": None, "note": "no git checkout at /opt/s1flow: the code runs from an installed copy"}
    paths.metric("eval.json").write_text(json.dumps(ev))
    page = results_markdown(load_results(paths))
    assert "| libraries | not recorded |" in page and "| datasets | not recorded |" in page
    ev["provenance"]["git"] = git
    paths.metric("eval.json").write_text(json.dumps(ev))
    page = results_markdown(load_results(paths))
    assert f"| evaluated at commit | none ({git['note']}) |" in page and "commit none," in page


def test_the_record_dates_the_base_model_for_the_pages_flag(tmp_path):
    assert _record(tmp_path)["base_model_released"] is None  # the embedded model: no date, nothing flagged
    paths = Paths.for_profile("t", tmp_path / "q")
    model = load_config(REPO / "params.yaml", profile="s1-32b").model
    rec = provenance(EvaluateConfig(tasks=["aime24"]), EngineConfig(), model, ServeConfig(), "0" * 16, paths)
    assert rec["base_model_released"] == date(2024, 9, 19).isoformat() and json.loads(json.dumps(rec)) == rec
