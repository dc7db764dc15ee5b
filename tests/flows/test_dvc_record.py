"""One record of what is done: a Prefect flow run is recorded in dvc.lock as `dvc commit` records it (`dvc status`
clean, `dvc repro` runs nothing, `dvc push` pushes its outputs, `dvc exp show` has its metrics), a stage `dvc repro`
finished is a cache hit for the flow, and `.venv/bin/dvc repro` runs without the venv on PATH.

One micro pipeline run serves every check: the flow runs it, then `dvc repro` re-runs its last three stages, then
the flow runs again and must run no stage."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.paths import Paths
from components.pipeline.dvc_record import unrecorded_reason
from components.pipeline.registry import STAGES, recorded_result
from tests.conftest import REPO
from tests.support.in_project import in_project
from tests.support.micro import PROFILE, write_micro_project

BIN = Path(sys.executable).parent
VENV = Path(sys.prefix)  # the environment running the tests: the project's .venv
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def _env(with_venv_on_path: bool = True) -> dict:
    path = [p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != BIN]
    return {**os.environ, "PATH": os.pathsep.join([str(BIN), *path] if with_venv_on_path else path),
            "S1FLOW_NO_PROGRESS": "1"}


def _run(cmd: list, cwd: Path, with_venv_on_path: bool = True) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(with_venv_on_path), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def _dvc_project(root: Path) -> Path:
    """The micro project as a git + DVC repository with one commit, its .venv the test's environment."""
    write_micro_project(root, with_code=True)
    (root / ".gitignore").write_text(".venv\n")
    _run(["git", "init", "-q"], root)
    _run([str(BIN / "dvc"), "init", "-q"], root)
    _run([*GIT, "add", "-A"], root)
    _run([*GIT, "commit", "-qm", "micro project"], root)
    (root / ".venv").symlink_to(VENV)
    return root


def _flow(root: Path, run_stage) -> dict:
    """The Prefect pipeline in process, from ``root``, with ``run_stage`` in place of the registry's."""
    from flows.pipeline import s1_pipeline
    with in_project(root), pytest.MonkeyPatch.context() as mp:
        mp.setattr("flows.pipeline.run_stage", run_stage)
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # the default 10 s outlasts micro training
        return s1_pipeline(profile=PROFILE)


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=180):  # a loaded 2-core machine starts it slowly
        yield


@pytest.fixture(scope="module")
def flow_first(prefect_api, tmp_path_factory):
    """The flow on a fresh DVC project: every stage runs, and is recorded. Also what each stage's metrics file
    reads back as, before anything else runs there."""
    from components.pipeline.registry import run_stage
    root, ran = _dvc_project(tmp_path_factory.mktemp("flow-first")), []

    def recording(name, cfg, paths):
        ran.append(name)
        return run_stage(name, cfg, paths)

    result = _flow(root, recording)
    read_back = {name: recorded_result(name, Paths.for_profile(PROFILE, root)) for name in STAGES}
    return root, result, ran, read_back


@pytest.fixture(scope="module")
def repro_then_flow(flow_first):
    """`.venv/bin/dvc repro` (no venv on PATH) re-runs train, evaluate and register in the flow's project; then the
    flow, without its output ledger (so every stage asks dvc.lock, none is a Prefect cache hit), runs no stage."""
    root, ran = flow_first[0], []
    assert shutil.which("s1flow", path=_env(with_venv_on_path=False)["PATH"]) is None
    repro = _run([".venv/bin/dvc", "repro", "--force", "--downstream", "train"], root, with_venv_on_path=False)
    (root / "runs" / PROFILE / "ledger.json").unlink()
    lock = (root / "dvc.lock").read_text()

    def refusing(name, cfg, paths):
        ran.append(name)
        raise AssertionError(f"{name} ran although dvc.lock records it as up to date")

    return root, repro, lock, _flow(root, refusing), ran


def test_the_flow_runs_and_records_every_stage(flow_first):
    root, _, ran, _ = flow_first
    assert ran == list(STAGES)
    assert list(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) == list(STAGES)


def test_after_the_flow_dvc_status_is_clean_and_repro_runs_nothing(flow_first):
    root = flow_first[0]
    assert "Data and pipelines are up to date" in _run(["dvc", "status"], root)
    out = _run(["dvc", "repro"], root)
    assert _ran(out) == set() and "Data and pipelines are up to date" in out


def test_each_stage_result_reads_back_from_its_metrics_file(flow_first):
    """What a DVC-finished stage gives the flow is what the stage returned (in JSON's types)."""
    _, result, _, read_back = flow_first
    for name in STAGES:
        returned = json.loads(json.dumps(result[name]))
        assert json.dumps(read_back[name], sort_keys=True) == json.dumps(returned, sort_keys=True), name


def test_dvc_push_pushes_what_the_flow_recorded(flow_first, monkeypatch):
    """Every cached out dvc.lock records (models, data) reaches the S3 remote."""
    import boto3

    from tests.support.services import moto_bucket
    root = flow_first[0]
    shutil.copy(REPO / ".dvc/config", root / ".dvc/config")  # the project's remote: s3://s1flow-dvc/cache
    with moto_bucket(monkeypatch, "s1flow-dvc") as endpoint:
        _run(["dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint], root)
        out = _run(["dvc", "push"], root)
        keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="s1flow-dvc").get("Contents", [])}
    assert re.search(r"\d+ files? pushed", out), out
    cached = {o.replace("${profile}", PROFILE) for s in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values()
              for o in s.get("outs", []) if isinstance(o, str)}  # the outs without `cache: false`
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    md5s = {o["path"]: o["md5"] for s in lock.values() for o in s.get("outs", []) if o["path"] in cached}
    assert set(md5s) == cached and f"models/{PROFILE}/sft" in cached
    assert all(f"cache/files/md5/{m[:2]}/{m[2:]}" in keys for m in md5s.values()), (md5s, sorted(keys))


def test_dvc_exp_show_lists_the_flow_run_metrics(flow_first):
    root = flow_first[0]
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], root))
    workspace = next(b for b in shown if b["rev"] == "workspace")["data"]
    ev = workspace["metrics"][f"metrics/{PROFILE}/eval.json"]["data"]
    on_disk = json.loads((root / f"metrics/{PROFILE}/eval.json").read_text())
    for key in ("control", "performance", "base_accuracy"):
        assert ev[key] == on_disk[key], key


def test_dvc_repro_runs_its_stages_through_the_launcher(repro_then_flow):
    repro = repro_then_flow[1]
    assert _ran(repro) == {"train", "evaluate", "register"}
    assert "bin/s1flow stage register" in repro


def test_after_dvc_repro_the_flow_runs_no_stage_and_summarises(repro_then_flow):
    from flows.pipeline import summary_lines
    root, _, lock, result, ran = repro_then_flow
    assert ran == []
    assert (root / "dvc.lock").read_text() == lock  # nothing to record: dvc.lock already had every stage
    lines = summary_lines(result)
    run = json.loads((root / f"metrics/{PROFILE}/mlflow_run.json").read_text())
    assert lines[0] == f"profile: {PROFILE}" and any(run["run_id"] in line for line in lines)
    assert [p["budget"] for p in result["evaluate"]["points"]] == [8, 16]


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    from dvc.repo import Repo
    root = write_micro_project(tmp_path / "project")
    Repo.init(str(root), no_scm=True).close()
    return root


def test_a_run_dvc_yaml_describes_is_recorded(dvc_repo):
    assert unrecorded_reason(dvc_repo / "params.yaml", PROFILE, [], dvc_repo) == ""


@pytest.mark.parametrize("case, expected", [
    ("overrides", "overrides params (sft.epochs=2)"),
    ("other params", "not the params.yaml beside dvc.yaml"),
    ("other profile", f"profile 'tiny' is not params.yaml's profile ({PROFILE!r})"),
    ("no DVC repository", "in no DVC repository"),
])
def test_a_run_dvc_yaml_does_not_describe_is_not_recorded(dvc_repo, tmp_path, case, expected):
    params, profile, overrides = dvc_repo / "params.yaml", PROFILE, []
    if case == "overrides":
        overrides = ["sft.epochs=2"]
    elif case == "other params":
        params = tmp_path / "params.yaml"
        shutil.copy(dvc_repo / "params.yaml", params)
    elif case == "other profile":
        profile = "tiny"
    else:
        shutil.rmtree(dvc_repo / ".dvc")
    assert expected in unrecorded_reason(params, profile, overrides, dvc_repo)


def _launcher_project(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    shutil.copy(REPO / "bin/s1flow", root / "bin/s1flow")
    return root


def _fake_s1flow(folder: Path, says: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "s1flow").write_text(f'#!/bin/sh\necho "{says} $*"\n')
    (folder / "s1flow").chmod(0o755)


def _launch(root: Path, path: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.pathsep.join([*map(str, path), "/usr/bin", "/bin"])}
    return subprocess.run(["bin/s1flow", "stage", "collect"], cwd=root, env=env, capture_output=True, text=True)


def test_the_launcher_runs_the_checkouts_venv_first_then_path(tmp_path):
    root = _launcher_project(tmp_path / "project")
    _fake_s1flow(tmp_path / "elsewhere", "on PATH")
    assert _launch(root, [tmp_path / "elsewhere"]).stdout == "on PATH stage collect\n"
    _fake_s1flow(root / ".venv/bin", "venv")
    assert _launch(root, [tmp_path / "elsewhere"]).stdout == "venv stage collect\n"


def test_the_launcher_without_s1flow_says_how_to_install(tmp_path):
    root = _launcher_project(tmp_path / "project")
    proc = _launch(root, [root / "bin"])  # itself on PATH: not taken for s1flow
    assert proc.returncode == 127 and "make install" in proc.stderr


class _Log:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def info(self, msg, *args):
        self.lines.append(("info", msg % args))

    def warning(self, msg, *args):
        self.lines.append(("warning", msg % args))


def test_a_dvc_error_is_a_warning_never_a_failed_stage(monkeypatch):
    """DVC failing to record a finished stage, or to say whether one is up to date: a warning, and the stage runs."""
    import flows.pipeline as pipeline

    def broken(*args):
        raise RuntimeError("Unable to acquire lock")

    log = _Log()
    monkeypatch.setattr(pipeline, "get_run_logger", lambda: log)
    monkeypatch.setattr(pipeline, "record_stage", broken)
    monkeypatch.setattr(pipeline, "finished_result", broken)
    pipeline._record("train", Paths.for_profile(PROFILE))
    assert pipeline._finished_in_dvc("train", Paths.for_profile(PROFILE)) is None
    assert log.lines == [("warning", "train: not recorded in dvc.lock: RuntimeError: Unable to acquire lock"),
                         ("warning", "train: DVC status failed, running the stage: RuntimeError: Unable to acquire lock")]
