"""Time the whole tiny demo pipeline (the Prefect flow `make demo` runs) in a scratch directory.

Goal: <= 4 minutes on 2 CPU cores. Prints wall time per stage, the total, and the
accuracy per thinking budget.

    python benchmarks/demo_time.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="run in this directory and keep it (default: a temp dir, removed)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="s1flow-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    shutil.copytree(REPO / "infra", work / "infra", dirs_exist_ok=True)
    os.chdir(work)
    os.environ.setdefault("S1FLOW_NO_PROGRESS", "1")

    from components.config import load_config
    from components.paths import Paths
    from components.pipeline.registry import STAGES, run_stage
    from flows.pipeline import summary_lines

    cfg = load_config("params.yaml")
    paths = Paths.for_profile(cfg.name)
    timings, results = {}, {"profile": cfg.name}
    start = time.perf_counter()
    for name in STAGES:
        t = time.perf_counter()
        results[name] = run_stage(name, cfg, paths)
        timings[name] = time.perf_counter() - t
    total = time.perf_counter() - start
    print("\nstage timings (s):")
    for name, s in timings.items():
        print(f"  {name:12s} {s:7.1f}")
    print(f"  {'total':12s} {total:7.1f}  (goal <= 240 s on 2 CPU cores; {os.cpu_count()} cores here)")
    for line in summary_lines(results):
        print(line)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
