"""The rehearsal's local services: a two-node Ray cluster, moto S3, an MLflow server and the provider.

Each service is a process group this module started and stops by its own id (never `ray stop`, which would stop
every Ray on the machine). The two Ray nodes share nothing but the loopback network: each has its own temp dir
and its own working directory, and both declare the logical resources the s1-32b profile places work with (one
GPU and one ``p5`` slot each: Ray Train's two workers, ``{p5: 1}`` apiece, must land on different nodes).

    with Services(work_dir, python) as s: s.start_s3(); ...   # s.env: the environment every process gets
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from components.common.processes import command_line, processes_mentioning, with_descendants

REPO = Path(__file__).resolve().parents[2]
# The interpreter every process runs (both Ray nodes, the driver's stages, the services): the project with vLLM,
# Ray, DeepSpeed, MLflow and Prefect in one environment, as in the cluster image (`make vllm-env`)
DEFAULT_PYTHON = os.environ.get("S1FLOW_REHEARSAL_PYTHON", str(REPO / ".venv-vllm/bin/python"))
# outside Ray's worker port range; Ray takes 27434-27437 (GCS, client server, each node's dashboard agent)
PORTS = {"provider": 27431, "s3": 27432, "mlflow": 27433, "ray": 27434, "prefect": 27440}
BUCKETS = ("s1flow-checkpoints", "s1flow-mlflow")
NODE_RESOURCES = '{"p5": 1}'


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check, what: str, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not come up within {timeout_s:g} s")


class Services:
    def __init__(self, work: Path, python: str = DEFAULT_PYTHON):
        self.work = work
        self.python = Path(python).absolute()  # a venv's bin/python: its bin dir holds ray, mlflow, moto_server
        if not self.python.is_file():
            raise FileNotFoundError(f"{python}: no interpreter; build it with `make vllm-env` or pass --python")
        self.bin = self.python.parent
        self.procs: dict[str, subprocess.Popen] = {}
        self.ray_temps = [Path(f"/tmp/s1rh-{os.getpid()}-head"), Path(f"/tmp/s1rh-{os.getpid()}-node2")]
        endpoint = f"http://127.0.0.1:{PORTS['s3']}"
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": f"127.0.0.1:{PORTS['ray']}",
                    "AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                    "AWS_ENDPOINT_URL_S3": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint,
                    "GEMINI_API_KEY": "rehearsal", "ANTHROPIC_API_KEY": "rehearsal",
                    "S1FLOW_API_KEY": "rehearsal", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(self.bin.parent)}

    # ---- processes -------------------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, cwd=cwd or REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_provider(self, rate_429: float, rate_timeout: float, hold_s: float) -> None:
        self._spawn("provider", [str(self.python), str(REPO / "infra/rehearsal/provider.py"),
                                 f"--port={PORTS['provider']}", f"--rate-429={rate_429}",
                                 f"--rate-timeout={rate_timeout}", f"--hold-s={hold_s}"])
        wait_for(lambda: port_open(PORTS["provider"]), "provider")

    def start_s3(self) -> None:
        self._spawn("s3", [str(self.bin / "moto_server"), "-H", "127.0.0.1", "-p", str(PORTS["s3"])])
        wait_for(lambda: port_open(PORTS["s3"]), "moto S3")
        import boto3
        s3 = boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="rehearsal", aws_secret_access_key="rehearsal")
        for bucket in BUCKETS:
            s3.create_bucket(Bucket=bucket)

    def start_mlflow(self) -> None:
        self.env.update(S1FLOW_MLFLOW_PORT=str(PORTS["mlflow"]), S1FLOW_BIN=str(self.bin),
                        S1FLOW_MLFLOW_DB=f"sqlite:///{self.work / 'mlflow.db'}",
                        S1FLOW_MLFLOW_ARTIFACTS="s3://s1flow-mlflow/artifacts")
        self._spawn("mlflow", ["bash", str(REPO / "infra/mlflow/server.sh")])
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{PORTS['mlflow']}/health", timeout=1).status
                 == 200, "MLflow server", 180)

    def start_prefect(self) -> None:
        """A Prefect server (its own PREFECT_HOME), the deployments of prefect.yaml registered (`s1flow deploy`)
        and a process worker on the local pool: ``prefect deployment run`` then runs a flow with this env."""
        home = self.work / "prefect-home"
        home.mkdir(exist_ok=True)
        api = f"http://127.0.0.1:{PORTS['prefect']}/api"
        self.env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        PREFECT_UI_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="2")
        self._spawn("prefect-server", [str(self.bin / "prefect"), "server", "start", "--host", "127.0.0.1",
                                       "--port", str(PORTS["prefect"])])
        wait_for(lambda: urllib.request.urlopen(f"{api}/health", timeout=2).status == 200, "Prefect server", 180)
        out = subprocess.run([str(self.bin / "s1flow"), "deploy"], cwd=REPO, env=self.env, capture_output=True,
                             text=True, timeout=600)
        if out.returncode:
            raise RuntimeError(f"s1flow deploy failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        self._spawn("prefect-worker", [str(self.bin / "prefect"), "worker", "start", "--pool", "s1flow-local"])

    def start_ray(self) -> None:
        """Head (the driver's node) and a second node, each with its own temp and working directory."""
        ray = str(self.bin / "ray")
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=1", f"--resources={NODE_RESOURCES}",
                  "--disable-usage-stats"]
        for temp in self.ray_temps:
            temp.mkdir(parents=True, exist_ok=True)
        node_dirs = [self.work / "node-head", self.work / "node-2"]
        for d in node_dirs:
            d.mkdir(parents=True, exist_ok=True)
        for i, (temp, cwd) in enumerate(zip(self.ray_temps, node_dirs)):
            role = ["--head", f"--port={PORTS['ray']}", "--include-dashboard=false",
                    f"--ray-client-server-port={PORTS['ray'] + 1}"] if i == 0 \
                else [f"--address=127.0.0.1:{PORTS['ray']}"]
            # ports of its own per node, away from another Ray's defaults on this host
            role += [f"--min-worker-port={30000 + 1000 * i}", f"--max-worker-port={30999 + 1000 * i}",
                     f"--dashboard-agent-listen-port={PORTS['ray'] + 2 + i}"]
            out = subprocess.run([ray, "start", *role, *common, f"--temp-dir={temp}"], cwd=cwd, env=self.env,
                                 capture_output=True, text=True, timeout=240)
            if out.returncode:
                raise RuntimeError(f"ray start ({'head' if i == 0 else 'node 2'}) failed:\n{out.stderr[-3000:]}")

    def ray_nodes(self) -> dict[str, str]:
        """node id -> 'head' | 'node-2' (by the temp dir each node was started with)."""
        code = ("import json, ray; ray.init(address='auto', log_to_driver=False); "
                "print(json.dumps([[n['NodeID'], n.get('NodeManagerAddress'), n.get('ObjectStoreSocketName')] "
                "for n in ray.nodes() if n['Alive']]))")
        out = subprocess.run([str(self.python), "-c", code], env=self.env, capture_output=True, text=True,
                             timeout=120)
        nodes = json.loads(out.stdout.strip().splitlines()[-1])
        return {nid: ("head" if str(self.ray_temps[0]) in (sock or "") else "node-2") for nid, _, sock in nodes}

    def process_pids(self, title: str, node: int) -> list[int]:
        """Processes of Ray node ``node`` (0: head, 1: node 2) whose title (Ray's ``ray::Class.method``) holds
        ``title``."""
        return sorted(pid for pid in self._ray_pids([self.ray_temps[node]]) if title in command_line(pid))

    # ---- teardown --------------------------------------------------------------------------------------------
    def _ray_pids(self, temps: list[Path] | None = None) -> set[int]:
        """The Ray processes started with one of ``temps`` (default: both nodes') and their descendants."""
        temps = [str(t) for t in (temps or self.ray_temps)]
        return with_descendants(processes_mentioning(*temps)) - {os.getpid()}

    def stop(self) -> None:
        for pid in self._ray_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except OSError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for temp in self.ray_temps:
            shutil.rmtree(temp, ignore_errors=True)

    def __enter__(self) -> "Services":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
