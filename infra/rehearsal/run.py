"""`make rehearsal`: the s1-32b pipeline in miniature, on a local two-node Ray cluster, end to end.

Starts the services (infra/rehearsal/services.py) from one interpreter (``--python``, default ``.venv-vllm``),
writes the inputs (infra/rehearsal/inputs.py), then runs every stage of the ``s1-32b-rehearsal`` profile with
``s1flow stage`` (the function each Prefect task and DVC stage calls) against the cluster. Distillation is
SIGKILLed once part of the pool is done; once its TeacherWorker actors are gone and a call the provider held
has had time to bill, what is on record and what was billed are read, and the stage runs again: a question
whose answer was on record before the kill must not be billed again. SFT's Ray Train worker on node 2 is
SIGKILLed once a checkpoint is complete in the bucket and the local work directory removed; Ray Train restarts
the worker group in the same stage run, which must resume from the bucket. A kill that never happened (the
stage ended first, or no worker ran on node 2) fails the stage: the check was not exercised. At the end it
prints wall and stage times, rows after each stage, the resumed step, the Ray node every actor ran on, the
provider's fault counts, the S3 objects by prefix and the load average; a stage that failed (an error, a
stage past its time limit) is shown as failed with the tail of its error, and the stages after it as not run,
never as passed.

    python infra/rehearsal/run.py                  # every stage
    python infra/rehearsal/run.py --through train  # stop after a stage
    python infra/rehearsal/run.py --from evaluate  # from a stage, on what an earlier rehearsal left
    python infra/rehearsal/run.py --prefect        # the deployment s1-pipeline/s1-32b-rehearsal through a worker
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components.config import load_config  # noqa: E402
from components.distill.distillation import max_lost_on_kill, teacher_fingerprint  # noqa: E402
from components.distill.shards import ShardStore  # noqa: E402
from components.paths import Paths  # noqa: E402
from components.pipeline.registry import STAGES  # noqa: E402
from infra.rehearsal.inputs import write_inputs  # noqa: E402
from infra.rehearsal.provider import question_key  # noqa: E402
from infra.rehearsal.services import BUCKETS, DEFAULT_PYTHON, PORTS, REPO, Services  # noqa: E402

PROFILE = "s1-32b-rehearsal"
DEPLOYMENT = f"s1-pipeline/{PROFILE}"
console = Console()


@dataclass
class StageRun:
    name: str
    status: str = "not run"          # passed | failed | not run
    seconds: float = 0.0
    rows: dict = field(default_factory=dict)
    note: str = ""


def _lines(path: Path) -> int:
    return sum(1 for line in path.open() if line.strip()) if path.is_file() else 0


def rows_after(name: str, paths: Paths) -> dict:
    files = {"collect": {"pool": paths.pool, "heldout": paths.heldout}, "distill": {"traces": paths.traces},
             "filter": {"quality_pool": paths.quality_pool, "filtered": paths.filtered},
             "select": {"s1k": paths.selected}, "tokenize": {"sft_tokens": paths.sft_tokens},
             "evaluate": {"eval_samples": paths.eval_samples}}.get(name, {})
    return {k: _lines(p) for k, p in files.items()}


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


def s3_client():
    import boto3
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.rstrip("/") + "/"


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    keys, pages = [], s3_client().get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def s3_summary(buckets: tuple[str, ...], depth: int = 3) -> dict[str, dict]:
    """Objects and bytes by key prefix (its first ``depth`` parts) in each bucket."""
    out: dict[str, dict] = {}
    client = s3_client()
    for bucket in buckets:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                key = f"s3://{bucket}/" + "/".join(o["Key"].split("/")[:depth])
                row = out.setdefault(key, {"objects": 0, "bytes": 0})
                row["objects"] += 1
                row["bytes"] += o["Size"]
    return out


def provider(path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['provider']}{path}", timeout=10) as r:
        return json.loads(r.read())


TIMED_OUT = 124  # a stage's exit status when it ran past its time limit (and was killed), as timeout(1) has it


def kill_group(proc: subprocess.Popen) -> int:
    """SIGKILL the process group ``proc`` leads (started with ``start_new_session``) and reap it; a group already
    gone is fine. Returns the exit status."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait()


def run_logged(cmd: list[str], log_path: Path, env: dict, timeout_s: float) -> tuple[int, str]:
    """Run ``cmd`` in its own process group, output appended to ``log_path``; past ``timeout_s`` the whole group is
    killed and the status is :data:`TIMED_OUT`. Returns (status, the log's tail, with the time-out said)."""
    with log_path.open("a") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out.write(f"\n{Path(cmd[0]).name}: killed after {timeout_s:g} s (its time limit)\n")
            rc = TIMED_OUT
        finally:
            if proc.poll() is None:  # interrupted while waiting: leave nothing running
                kill_group(proc)
    return rc, log_path.read_text()[-1500:]


class Driver:
    def __init__(self, services: Services, log_dir: Path, hold_s: float = 0.0, paths: Paths | None = None,
                 gone_timeout_s: float = 180.0, stage_timeout_s: float = 1200.0):
        """``hold_s``: how long the provider holds a call it times out (such a call bills when it wakes);
        ``gone_timeout_s``: how long a killed stage's Ray actors get to go away before they are SIGKILLed;
        ``stage_timeout_s``: a stage's time limit (a stage past it is killed and fails)."""
        self.s, self.log_dir, self.hold_s, self.gone_timeout_s = services, log_dir, hold_s, gone_timeout_s
        self.stage_timeout_s = stage_timeout_s
        self.cfg = load_config(REPO / "params.yaml", PROFILE)
        self.paths = paths or Paths.for_profile(PROFILE, REPO)

    def command(self, name: str, overrides: list[str] = ()) -> list[str]:
        sets = [a for o in overrides for a in ("--set", o)]
        return [str(self.s.bin / "s1flow"), "stage", name, "--profile", PROFILE, *sets]

    def run_stage(self, name: str, overrides: list[str] = (), timeout_s: float | None = None) -> tuple[int, str]:
        return run_logged(self.command(name, overrides), self.log_dir / f"stage-{name}.log", self.s.env,
                          timeout_s or self.stage_timeout_s)

    def wait_gone(self, title: str) -> list[int]:
        """Wait until no process of either Ray node has ``title`` in its title (a killed driver's actors are
        reaped by Ray, not by the kill); past ``gone_timeout_s`` SIGKILL what is left. Returns the pids it had
        to kill."""
        end = time.monotonic() + self.gone_timeout_s
        while True:
            pids = [pid for node in (0, 1) for pid in self.s.process_pids(title, node=node)]
            if not pids:
                return []
            if time.monotonic() >= end:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return pids
            time.sleep(0.5)

    # ---- distillation: SIGKILL mid-run, then resume --------------------------------------------------------
    def distill_with_kill(self, kill_fraction: float) -> tuple[int, str, dict]:
        """Run distill; once ``kill_fraction`` of the pool is on record, SIGKILL the stage's process group. Its
        TeacherWorker actors live in Ray's worker processes, outside that group, and may finish calls: the
        record and the bill are read once they are gone and then more than the provider's hold time has passed
        (a call it held bills when it wakes). Then the stage runs again; an answer on record before must not be
        billed again. A stage that ends before the kill fails: the check was not exercised."""
        teacher, fingerprint = self.cfg.teacher, teacher_fingerprint(self.cfg.teacher)
        shard_uri = getattr(teacher, "shard_uri", None)  # where the distill stage keeps its shards
        shard_dir = f"{shard_uri.rstrip('/')}/{fingerprint}" if shard_uri else self.paths.distill_shards(fingerprint)
        pool = _lines(self.paths.pool)
        log_path = self.log_dir / "stage-distill.log"
        check: dict = {"killed": False, "pool": pool, "max_lost_on_kill": max_lost_on_kill(self.cfg.teacher)}
        timeout_s = self.stage_timeout_s
        with log_path.open("a") as log:
            proc = subprocess.Popen(self.command("distill"), cwd=REPO, env=self.s.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                end = time.monotonic() + timeout_s
                while proc.poll() is None and time.monotonic() < end:
                    time.sleep(0.5)
                    if len(self._done_texts(shard_dir)) >= kill_fraction * pool:
                        kill_group(proc)
                        check["killed"] = True
                        break
            finally:
                if proc.poll() is None:  # past its time, or the driver failed reading the record
                    kill_group(proc)
        if not check["killed"]:
            why = f"it ran past {timeout_s:g} s" if proc.returncode == -signal.SIGKILL else \
                f"it ended (exit status {proc.returncode}) first"
            return 1, (f"kill not exercised: distill was to be SIGKILLed at {kill_fraction:.0%} of the pool on "
                       f"record, but {why}\n{log_path.read_text()[-1200:]}"), check
        killed_at = time.monotonic()
        check["workers_killed_after_kill"] = self.wait_gone("TeacherWorker")
        time.sleep(self.hold_s + 1.0)  # a call a worker sent before it went is held that long, then billed
        check["settle_s"] = round(time.monotonic() - killed_at, 1)
        billed_at_kill = provider("/billed")
        done_at_kill = self._done_texts(shard_dir)
        rc, tail = self.run_stage("distill")
        billed_after = provider("/billed")
        paid_again = sum(1 for h in done_at_kill if billed_after.get(h, 0) > billed_at_kill.get(h, 0))
        check.update({"done_at_kill": len(done_at_kill), "paid_again_for_recorded": paid_again,
                      "billed_twice_any_reason": sum(1 for n in billed_after.values() if n > 1)})
        return rc, tail, check

    # ---- SFT: a Ray Train worker on node 2 SIGKILLed after the first checkpoint reaches the bucket ------------
    def train_with_kill(self, timeout_s: float = 1500) -> tuple[int, str, dict]:
        """Run the train stage; once a checkpoint is marked complete in the bucket, SIGKILL the RayTrainWorker on
        node 2 and remove the SFT work directory (the rehearsal's two nodes share one disk, a cluster's do not:
        no local checkpoint survives). Ray Train (``sft.max_failures``) must restart the worker group within the
        same stage run, and the new group must resume from the bucket's checkpoint, not from step 0."""
        bucket, prefix = split_s3(self.cfg.sft.checkpoint_uri)
        log_path = self.log_dir / "stage-train.log"
        with log_path.open("a") as log:
            proc = subprocess.Popen(self.command("train"), cwd=REPO, env=self.s.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            check: dict = {"killed": None, "max_failures": self.cfg.sft.max_failures}
            end = time.monotonic() + timeout_s
            try:
                while proc.poll() is None and time.monotonic() < end:
                    time.sleep(1)
                    marked = [k for k in s3_keys(bucket, prefix) if k.endswith("/COMPLETE")]
                    if not marked:
                        continue
                    pids = self.s.process_pids("RayTrainWorker", node=1)
                    if pids:
                        for pid in pids:
                            try:
                                os.kill(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                        shutil.rmtree(self.paths.sft_work, ignore_errors=True)
                        check["killed"] = {"node": "node-2", "pids": pids, "bucket_checkpoints_at_kill":
                                           sorted(k.split("/")[-2] for k in marked)}
                        break
                try:
                    rc = proc.wait(timeout=max(1.0, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    kill_group(proc)
                    log.write(f"\ntrain: killed after {timeout_s:g} s (its time limit)\n")
                    rc = TIMED_OUT
            finally:
                if proc.poll() is None:  # the driver failed watching it: leave nothing running
                    kill_group(proc)
        tail = log_path.read_text()[-1500:]
        check["bucket_checkpoints_after"] = sorted({k.split("/")[-2] for k in s3_keys(bucket, prefix)
                                                    if k.endswith("/COMPLETE")})
        if rc == 0:
            summary = json.loads(self.paths.metric("train.json").read_text())
            check.update({k: summary.get(k) for k in ("attempts", "restarts", "resumed_from", "restored_from",
                                                      "steps")},
                         rank0_node=self.s.ray_nodes().get(summary.get("rank0_node_id", ""), "?"))
        return rc, tail, check

    # ---- the whole pipeline as the Prefect deployment, through a worker ----------------------------------------
    def prefect_run(self, deployment: str, timeout_s: float = 3600) -> tuple[int, str, dict[str, dict]]:
        """``prefect deployment run DEPLOYMENT --watch`` (the worker started by Services.start_prefect runs it);
        returns its exit status, the end of its output and each task run's state and seconds, by stage."""
        import httpx
        log = self.log_dir / "prefect-deployment-run.log"
        returncode, _ = run_logged([str(self.s.bin / "prefect"), "deployment", "run", deployment, "--watch",
                                    "--watch-interval", "5"], log, self.s.env, timeout_s)
        text = log.read_text()
        found = re.search(r"UUID: ([0-9a-f-]{36})", text)
        if not found:
            return returncode or 1, text[-1500:], {}
        api = self.s.env["PREFECT_API_URL"]
        flow_state = httpx.get(f"{api}/flow_runs/{found.group(1)}").json()["state"]["type"]
        tasks = httpx.post(f"{api}/task_runs/filter",
                           json={"flow_runs": {"id": {"any_": [found.group(1)]}}}).json()
        stages: dict[str, dict] = {}
        for t in sorted(tasks, key=lambda t: t["expected_start_time"]):
            stage = t["name"].rsplit("-", 1)[0]
            stages[stage] = {"state": t["state"]["name"], "seconds": round(t.get("total_run_time") or 0.0, 1)}
        rc = 0 if returncode == 0 and flow_state == "COMPLETED" else 1
        return rc, f"flow run {found.group(1)}: {flow_state}\n{text[-1500:]}", stages

    def _done_texts(self, shard_dir: Path | str) -> set[str]:
        """The provider's billing keys (:func:`question_key`) of the questions with a successful trace in the
        shards."""
        try:
            done = ShardStore(shard_dir).done_ids()
        except FileNotFoundError:
            return set()
        texts = {}
        with self.paths.pool.open() as rows:
            for line in rows:
                row = json.loads(line)
                texts[row["id"]] = row["question"]
        return {question_key(texts[q]) for q in done if q in texts}

    def placement(self) -> dict:
        """Actors by class and node ('head' / 'node-2'), from Ray's state API."""
        names = self.s.ray_nodes()
        code = ("import json, ray; ray.init(address='auto', log_to_driver=False); "  # GCS's actor table: no dashboard
                "print(json.dumps([[a.get('ActorClassName'), (a.get('Address') or {}).get('NodeID')] "
                "for a in ray._private.state.actors().values()]))")
        out = subprocess.run([str(self.s.python), "-c", code], env=self.s.env, capture_output=True, text=True,
                             timeout=120)
        placed: dict[str, dict[str, int]] = {}
        for cls, node in json.loads(out.stdout.strip().splitlines()[-1]):
            where = names.get(node, node[:8] if node else "?")
            placed.setdefault(cls, {}).setdefault(where, 0)
            placed[cls][where] += 1
        return placed


def checked_stage(driver: Driver, name: str, kill_at: float, train_kill: bool = True) -> tuple[int, str, str, dict]:
    """Run one stage as the rehearsal does (distill and train with their kills) and judge it: (status, the tail of
    its output or why it failed, a note for the report, the kill checks for the report). An error of the driver
    itself fails the stage with its traceback; a kill that never happened fails it as not exercised."""
    note, checks = "", {}
    try:
        if name == "distill":
            rc, tail, check = driver.distill_with_kill(kill_at)
            checks["distill_kill"] = check
            if not check.get("killed"):
                return (rc or 1), tail, "kill not exercised: distill was never SIGKILLed", checks
            note = (f"SIGKILL at {check['done_at_kill']}/{check['pool']} done; recorded answers billed again: "
                    f"{check['paid_again_for_recorded']}")
            if rc == 0 and check["paid_again_for_recorded"]:
                rc, tail = 1, "answers on record before the kill were billed again after it"
        elif name == "train" and train_kill:
            rc, tail, check = driver.train_with_kill()
            checks["train_kill"] = check
            killed = check.get("killed") or {}
            if not killed:
                return (rc or 1), (f"kill not exercised: no RayTrainWorker ran on node 2 once a checkpoint was in "
                                   f"the bucket\n{tail}"), "kill not exercised", checks
            resumed = Path(check["resumed_from"]).name if check.get("resumed_from") else None
            note = (f"RayTrainWorker on node 2 SIGKILLed (bucket had {killed.get('bucket_checkpoints_at_kill')}); "
                    f"Ray Train attempts {check.get('attempts')}, resumed from {resumed} "
                    f"({check.get('restored_from')}), {check.get('steps')} steps")
            if rc == 0 and not check.get("restarts"):
                rc, tail = 1, "the worker was killed but Ray Train did not restart the worker group"
            elif rc == 0 and not check.get("restored_from"):
                rc, tail = 1, "the restarted worker group did not resume from a checkpoint in the bucket"
        else:
            rc, tail = driver.run_stage(name)
        if rc == TIMED_OUT:
            note = " | ".join(x for x in (note, "timed out") if x)
    except Exception:
        rc, tail = 1, traceback.format_exc()[-1500:]
    return rc, tail, note, checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--through", choices=list(STAGES), default="register", help="last stage to run")
    ap.add_argument("--from", dest="start", choices=list(STAGES), default=None,
                    help="first stage to run, on the outputs an earlier rehearsal left (default: a clean run)")
    ap.add_argument("--python", default=DEFAULT_PYTHON,
                    help="the interpreter of every node and stage (default $S1FLOW_REHEARSAL_PYTHON or "
                         ".venv-vllm/bin/python)")
    ap.add_argument("--kill-at", type=float, default=0.4, help="share of the pool done when distill is SIGKILLed")
    ap.add_argument("--rate-429", type=float, default=0.15)
    ap.add_argument("--rate-timeout", type=float, default=0.05)
    ap.add_argument("--no-train-kill", action="store_true", help="train once, without killing a worker")
    ap.add_argument("--prefect", action="store_true",
                    help="run the deployment s1-pipeline/s1-32b-rehearsal through a Prefect worker on a local "
                         "Prefect server (no injected kills: the stages run inside the flow run)")
    ap.add_argument("--report", default=None, help="also write the report as JSON here")
    a = ap.parse_args()

    start = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    paths = Paths.for_profile(PROFILE, REPO)
    if a.start is None:
        for d in (paths.root / k / PROFILE for k in ("data", "models", "metrics", "plots", "runs")):
            shutil.rmtree(d, ignore_errors=True)
    work = paths.runs / "services"
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(REPO / "params.yaml", PROFILE)
    inputs = write_inputs(REPO / Path(cfg.pool.sources[0].path).parent, cfg.pool.size, prm_base=REPO / cfg.model.name)
    runs = {name: StageRun(name) for name in STAGES}
    report: dict = {"inputs": inputs}
    with Services(work, a.python) as services:
        os.environ.update({k: v for k, v in services.env.items() if k.startswith("AWS_")})  # the driver reads S3 too
        with console.status("starting services: provider, moto S3, MLflow, Ray head + node 2") as status:
            t = time.monotonic()
            hold_s = cfg.teacher.timeout_s + 1  # a timed-out call: held past the client's timeout, then billed
            services.start_provider(a.rate_429, a.rate_timeout, hold_s=hold_s)
            services.start_s3()
            services.start_mlflow()
            services.start_ray()
            if a.prefect:
                status.update("Prefect server, deployments, worker")
                services.start_prefect()
            report["services_s"] = round(time.monotonic() - t, 1)
            status.update("services up")
        console.print(f"services up in {report['services_s']} s; Ray nodes: {services.ray_nodes()}")
        driver = Driver(services, work, hold_s=hold_s)
        names = list(STAGES)
        order = names[names.index(a.start) if a.start else 0: names.index(a.through) + 1]
        if a.prefect:
            t = time.monotonic()
            with console.status(f"prefect deployment run {DEPLOYMENT} (a worker runs it)"):
                try:
                    rc, tail, states = driver.prefect_run(DEPLOYMENT)
                except Exception:
                    rc, tail, states = 1, traceback.format_exc()[-1500:], {}
            report["prefect"] = {"deployment": DEPLOYMENT, "seconds": round(time.monotonic() - t, 1),
                                 "result": _last_line(tail.splitlines()[0]) if tail else ""}
            for name in order:
                state = states.get(name, {})
                runs[name].status = {"Completed": "passed", "Cached": "cached"}.get(state.get("state"), "failed"
                                                                                     if state else "not run")
                runs[name].seconds, runs[name].rows = state.get("seconds", 0.0), rows_after(name, paths)
                runs[name].note = f"Prefect task: {state.get('state', 'none')}"
            if rc:
                report.setdefault("failures", {})["prefect"] = tail
            order = []  # the flow ran them
        for name in order:
            run = runs[name]
            with console.status(f"stage {name}"):
                t = time.monotonic()
                rc, tail, run.note, checks = checked_stage(driver, name, a.kill_at, train_kill=not a.no_train_kill)
                report.update(checks)
                run.seconds = round(time.monotonic() - t, 1)
            run.rows = rows_after(name, paths)
            run.status = "passed" if rc == 0 else "failed"
            if rc:
                run.note = " | ".join(x for x in (run.note, _last_line(tail)) if x)
                report.setdefault("failures", {})[name] = tail
            console.print(f"{name}: {run.status} in {run.seconds} s {run.rows} {run.note}")
            if rc:
                break
        try:
            report["placement"] = driver.placement()
        except Exception as e:  # the report still prints
            report["placement"] = {"error": f"{type(e).__name__}: {e}"}
        try:
            report["provider"] = provider("/stats")
        except Exception as e:
            report["provider"] = {"error": f"{type(e).__name__}: {e}"}
        try:
            report["s3"] = s3_summary(BUCKETS)
        except Exception as e:
            report["s3"] = {"error": f"{type(e).__name__}: {e}"}
    report["wall_s"] = round(time.monotonic() - start, 1)
    report["load_average"] = {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]}
    report["stages"] = {n: vars(r) for n, r in runs.items()}
    print_report(report)
    if a.report:
        Path(a.report).write_text(json.dumps(report, indent=1, default=str))
    ran = [r for r in runs.values() if r.status != "not run" or r.name in order]
    sys.exit(0 if ran and all(r.status in ("passed", "cached") for r in ran) and "failures" not in report else 1)


def print_report(report: dict) -> None:
    table = Table(title=f"s1-32b rehearsal: wall {report['wall_s']} s (services {report.get('services_s')} s)")
    for col in ("stage", "status", "seconds", "rows", "note"):
        table.add_column(col)
    for name, r in report["stages"].items():
        table.add_row(name, r["status"], str(r["seconds"]), json.dumps(r["rows"]), r["note"])
    console.print(table)
    console.print(f"load average (1, 5, 15 min) at start {report['load_average']['start']}, "
                  f"at end {report['load_average']['end']} on {os.cpu_count()} CPUs")
    distill = report["stages"].get("distill", {})
    console.print(f"distillation: {distill.get('seconds')} s; provider (faults injected): {report.get('provider')}")
    console.print(f"distill kill/resume: {report.get('distill_kill')}")
    console.print(f"SFT kill/resume: {report.get('train_kill')}")
    console.print(f"actors by node: {report.get('placement')}")
    console.print("S3 objects by prefix:")
    for prefix, row in sorted((report.get("s3") or {}).items()):
        console.print(f"  {prefix}: {row}")


if __name__ == "__main__":
    main()
