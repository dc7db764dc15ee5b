"""Screenshot of the MLflow UI comparing two training runs (headless Debian Chromium).

Picks the newest run of each of two selection strategies in the experiment (by
default s1K ``diversity`` vs the ``random`` ablation), starts an MLflow UI on
127.0.0.1 over the same store, and saves the run-comparison page as a PNG: the
params that differ, the metrics side by side (accuracy per budget, Control,
Scaling, Performance, SFT and distillation figures) and the scaling plots.

    .venv/bin/s1flow run                                   # s1K run
    .venv/bin/s1flow run --set selection.strategy=random   # the random-1K ablation
    .venv/bin/python infra/mlflow/screenshot_compare.py    # -> docs/mlflow_compare.png

Needs Debian's chromium (apt-get install chromium); nothing else leaves the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx
from mlflow import MlflowClient

from components.common.network import free_port
from components.common.waiting import wait_http

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


# Run in the page once it has rendered: show only the params that differ, close the assistant panel,
# then open the scaling plot in the artefact comparison (each step optional: the UI moves between versions).
PAGE_SETUP = """(() => {
  const done = [];
  const byText = (t) => [...document.querySelectorAll('*')].filter(e => e.childElementCount === 0 && e.textContent.trim() === t);
  const label = byText('Show diff only')[0];
  const sw = label && label.closest('div').parentElement.querySelector('button[role=switch]');
  if (sw) { sw.click(); done.push('diff only'); }
  const close = [...document.querySelectorAll('button')]
    .find(b => (b.getAttribute('aria-label') || '').toLowerCase() === 'close');
  if (close) { close.click(); done.push('assistant closed'); }
  return done.join(', ');
})()"""
OPEN_PLOT = """(() => {
  const file = [...document.querySelectorAll('*')].find(
    e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim() === 'scaling.png'));
  if (!file) return '';
  for (const el of [file, file.parentElement, file.parentElement && file.parentElement.parentElement]) { if (el) el.click(); }
  return 'scaling.png opened';
})()"""


async def _cdp_screenshot(ws_url: str, url: str, width: int, height: int, out: Path,
                          scripts: tuple[str, ...] = (PAGE_SETUP, OPEN_PLOT), settle_s: float = 10) -> str:
    import websockets
    async with websockets.connect(ws_url, max_size=2**27) as ws:
        counter = 0

        async def call(method: str, **params):
            nonlocal counter
            counter += 1
            await ws.send(json.dumps({"id": counter, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == counter:
                    return msg.get("result", {})
        await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        await call("Page.navigate", url=url)
        await asyncio.sleep(settle_s)  # the single-page app fetches runs, params and metrics
        steps = []
        for script in scripts:
            steps.append((await call("Runtime.evaluate", expression=script, returnByValue=True))["result"].get("value", ""))
            await asyncio.sleep(4)
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
        return ", ".join(x for x in steps if x)


def screenshot(chromium: str, url: str, size: str, out: Path, scripts: tuple[str, ...] = (PAGE_SETUP, OPEN_PLOT),
               settle_s: float = 10) -> str:
    """Drive headless Chromium over the DevTools protocol (no extra packages: websockets comes with uvicorn);
    run ``scripts`` in the page once it settled, then save the PNG. Also used by infra/prefect/screenshot_run.py."""
    width, height = (int(v) for v in size.split(","))
    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                    f"--remote-debugging-port={port}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=1).json()
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
            return asyncio.run(_cdp_screenshot(ws_url, url, width, height, out, scripts, settle_s))
        finally:
            browser.terminate()
            browser.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db")
    ap.add_argument("--experiment", default="s1flow-tiny")
    ap.add_argument("--strategies", nargs=2, default=["diversity", "random"])
    ap.add_argument("--out", default="docs/mlflow_compare.png")
    ap.add_argument("--size", default="1600,2100", help="viewport width,height in pixels")
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
        wait_http(f"{base}/health", ui)
        query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([exp_id])})
        url = f"{base}/#/compare-runs?{query}"
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        steps = screenshot(chromium, url, a.size, Path(a.out))
        print(f"page set-up: {steps or 'none'}")
        print(f"compared runs {run_ids[0]} ({a.strategies[0]}) and {run_ids[1]} ({a.strategies[1]}): {a.out}")
        print(f"same view live: {url}")
    finally:
        ui.terminate()
        ui.wait(20)


if __name__ == "__main__":
    main()
