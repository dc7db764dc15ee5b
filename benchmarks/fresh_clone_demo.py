"""`make demo` from fresh clones, install included: the wall time a new user waits, per revision.

Each run clones this repository at a revision into a scratch folder, gives it a new PREFECT_HOME (as on a new
machine; pip's and uv's download caches stay as they are) and times `make demo` there. Several revisions are
interleaved (A, B, A, B, ...), so a busy machine slows each alike. Prints each run's wall time and the demo's
top-budget line, then the median per revision. Goal: <= 3 minutes on 2 CPU cores.

    python benchmarks/fresh_clone_demo.py --revs HEAD --runs 3
    python benchmarks/fresh_clone_demo.py --revs main~5 HEAD --runs 3     # two revisions side by side
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def demo_once(rev: str, work: Path) -> tuple[float, int, str]:
    """Clone ``rev`` into ``work``, time `make demo` there: (seconds, exit code, its budget lines)."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=work, check=True)
    env = {**os.environ, "PREFECT_HOME": str(work / ".prefect-home")}
    start = time.perf_counter()
    done = subprocess.run(["make", "demo"], cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    top = [ln.strip() for ln in done.stdout.splitlines() if ln.startswith(("budget", "no budget"))][-2:]
    return seconds, done.returncode, " | ".join(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--revs", nargs="+", default=["HEAD"], help="revisions to time, interleaved")
    ap.add_argument("--runs", type=int, default=3, help="runs per revision")
    args = ap.parse_args()
    revs = {r: subprocess.run(["git", "rev-parse", "--short", r], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip() for r in args.revs}
    times: dict[str, list[float]] = {r: [] for r in revs.values()}
    for i in range(args.runs):
        for rev in revs.values():
            with tempfile.TemporaryDirectory(prefix="s1flow-demo-") as tmp:
                seconds, rc, top = demo_once(rev, Path(tmp) / "project")
            times[rev].append(seconds)
            print(f"run {i + 1} {rev}: {int(seconds // 60)}:{seconds % 60:04.1f} exit {rc} | {top}", flush=True)
    for rev, ts in times.items():
        print(f"{rev}: median {statistics.median(ts):.0f} s over {len(ts)} runs "
              f"({', '.join(f'{t:.0f}' for t in ts)}; {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
