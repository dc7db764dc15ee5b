"""Screenshot of the Prefect UI: a finished s1-pipeline flow run and its artifacts (headless Debian Chromium).

Starts a Prefect server with its UI on 127.0.0.1 (its own PREFECT_HOME), runs the pipeline as a flow
run against it (``s1flow run``; by default the micro profile in a temporary folder, a
couple of minutes on 2 CPU cores), then saves the flow run's Artifacts tab as a PNG: the results
table, the MLflow links and the selection funnel.

    .venv/bin/python infra/prefect/screenshot_run.py                 # -> docs/prefect_artifacts.png
    .venv/bin/python infra/prefect/screenshot_run.py --project .     # the project here, as it is

Needs Debian's chromium (apt-get install chromium); nothing else leaves the machine.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from components.common.network import free_port  # noqa: E402
from components.common.waiting import wait_http  # noqa: E402
from components.pipeline.project import write_project  # noqa: E402

# Open the Artifacts tab of the flow run page, then every artifact card's details where the UI folds them.
OPEN_ARTIFACTS = """(() => {
  const tab = [...document.querySelectorAll('button, a, [role=tab], li')]
    .find(e => e.textContent.trim() === 'Artifacts');
  if (!tab) return '';
  tab.click();
  return 'artifacts tab';
})()"""
SHOW_ALL = """(() => {
  const toggles = [...document.querySelectorAll('button')].filter(b => /^(Grid|List)$/i.test(b.getAttribute('title') || ''));
  const list = toggles.find(b => /list/i.test(b.getAttribute('title') || ''));
  if (list) { list.click(); return 'list view'; }
  return '';
})()"""


def _screenshot_helper():
    spec = importlib.util.spec_from_file_location("screenshot_compare", REPO / "infra/mlflow/screenshot_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.screenshot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", default=None, help="run the pipeline here (default: a temporary micro project)")
    ap.add_argument("--out", default=str(REPO / "docs/prefect_artifacts.png"))
    ap.add_argument("--size", default="1600,1500", help="viewport width,height in pixels")
    a = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("chromium not found: apt-get install chromium")
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.project:
            project = Path(a.project).resolve()
        else:
            project = write_project(tmp / "project", "micro")
        port = free_port()
        env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "true",
               "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
        with open(tmp / "server.log", "w") as log:
            server = subprocess.Popen([str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                       str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/api/health", server, why=lambda: (tmp / "server.log").read_text()[-3000:])
            run = subprocess.run([str(bin_dir / "s1flow"), "run"], cwd=project, env=env, capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"the pipeline failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
            flow_runs = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter",
                                   json={"sort": "START_TIME_DESC", "limit": 1}).json()
            flow_run = flow_runs[0]["id"]
            url = f"http://127.0.0.1:{port}/runs/flow-run/{flow_run}?tab=Artifacts"
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            steps = _screenshot_helper()(chromium, url, a.size, Path(a.out), scripts=(OPEN_ARTIFACTS, SHOW_ALL),
                                         settle_s=8)
            print(f"page set-up: {steps or 'none'}")
            print(f"flow run {flow_run} ({flow_runs[0]['name']}, {flow_runs[0]['state_type']}): {a.out}")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
