"""Screenshot of the MLflow UI comparing two training runs (headless Debian Chromium).

Picks the newest run of each of two selection strategies in the experiment (by
default s1K ``diversity`` vs the ``random`` ablation), starts an MLflow UI on
127.0.0.1 over the same store, and saves the run-comparison page (params, metrics
side by side, per-budget accuracy) as a PNG.

    .venv/bin/s1flow run                                   # s1K run
    .venv/bin/s1flow run --set selection.strategy=random   # the random-1K ablation
    .venv/bin/python infra/mlflow/screenshot_compare.py    # -> docs/mlflow_compare.png

Needs Debian's chromium (apt-get install chromium); nothing else leaves the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx
from mlflow import MlflowClient

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def newest_runs(client: MlflowClient, experiment: str, strategies: list[str]) -> tuple[str, list[str]]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"experiment {experiment!r} not found; run the pipeline first (s1flow run)")
    ids = []
    for strategy in strategies:
        runs = client.search_runs([exp.experiment_id], f"params.`selection.strategy` = '{strategy}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            sys.exit(f"no run with selection.strategy={strategy}; run: s1flow run --set selection.strategy={strategy}")
        ids.append(runs[0].info.run_id)
    return exp.experiment_id, ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    ap.add_argument("--experiment", default="s1flow-tiny")
    ap.add_argument("--strategies", nargs=2, default=["diversity", "random"])
    ap.add_argument("--out", default="docs/mlflow_compare.png")
    ap.add_argument("--size", default="1600,1400")
    a = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("chromium not found: apt-get install chromium")
    exp_id, run_ids = newest_runs(MlflowClient(a.tracking_uri), a.experiment, a.strategies)
    port = free_port()
    ui = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", a.tracking_uri,
                           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([exp_id])})
        url = f"{base}/#/compare-runs?{query}"
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={a.size}",
                            "--virtual-time-budget=30000", f"--screenshot={Path(a.out).resolve()}", url],
                           check=True, capture_output=True, timeout=180)
        print(f"compared runs {run_ids[0]} ({a.strategies[0]}) and {run_ids[1]} ({a.strategies[1]}): {a.out}")
        print(f"same view live: {url}")
    finally:
        ui.terminate()
        ui.wait(20)


if __name__ == "__main__":
    main()
