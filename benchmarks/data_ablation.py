"""The s1 data ablation (paper Table 2) in the miniature: selection strategies at equal size, over seeds.

Starts from a finished run (``--from``: a root where base-model, collect, distill and filter have run,
e.g. one of benchmarks/miniature.py's ``seed*-t*`` directories or the project root after ``make demo``).
For each strategy and selection seed it copies that root's data and base model into its own directory,
then runs select -> tokenize -> train -> evaluate there (the evaluation at the top budget only, so every
strategy is judged by the same thinking budget), one process per run. ``all`` is the whole quality pool
(not size N, as in the paper); it and ``longest`` select without randomness (the same rows for every
seed, and SFT's own seed is fixed), so they run once, with the first seed.

Writes ``metrics/<profile>/data_ablation.json`` in the ``--from`` root (the schema of
components/evaluation/report.py, which ``s1flow report`` renders) and prints mean ± SE per strategy.

    python benchmarks/data_ablation.py --from /tmp/s1flow-miniature/seed0-t2 [--seeds 0 1 2] [--parallel 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.runpool import run_pool, run_stages  # noqa: E402

STRATEGIES = ["s1", "random", "longest", "diversity_only", "all"]
UNSEEDED = {"longest", "all"}  # the same selection whatever the seed
STAGES = ["select", "tokenize", "train", "evaluate"]
QUIET_EVAL = ["evaluate.compute_matched=[]", "evaluate.wait_string_ablation=[]", "evaluate.num_waits_ablation=[]",
              "evaluate.protocols=[paper]"]


def prepare(source: Path, target: Path, profile: str) -> None:
    """The source run's inputs to selection (data, base model, filter metrics), nothing after it."""
    if (target / "data").exists():
        return
    shutil.copytree(source / "data" / profile, target / "data" / profile)
    shutil.copytree(source / "models" / profile / "base", target / "models" / profile / "base")
    (target / "metrics" / profile).mkdir(parents=True, exist_ok=True)
    for name in ("filter_report.json", "collect_report.json", "base_model.json"):
        if (source / "metrics" / profile / name).exists():
            shutil.copy(source / "metrics" / profile / name, target / "metrics" / profile / name)
    if not (target / "infra").exists():
        os.symlink(REPO / "infra", target / "infra")


def run_one(root: Path, overrides: list[str]) -> dict:
    """select -> tokenize -> train -> evaluate in ``root`` (this process); the top-budget accuracy and which
    held-out questions it got right (for the paired comparison of strategies over the same questions)."""
    from components.config import load_config
    from components.evaluation.compare import read_samples
    from components.evaluation.statistics import per_question
    from components.paths import Paths

    res, times = run_stages(root, overrides, STAGES)
    report, point = res["evaluate"], res["evaluate"]["points"][-1]
    paths = Paths.for_profile(load_config(REPO / "params.yaml", overrides=overrides).name, root)
    table = per_question(read_samples(paths.eval_samples), task=report["task"], method=report["method"],
                         budget=point["budget"])
    return {"accuracy": point["accuracy"], "budget": point["budget"], "size": res["select"].get("selected"),
            "correct": {q: [right, n] for q, (right, n) in table.items()}, "times": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", help="a finished run's root (after the filter stage); required")
    ap.add_argument("--root", default="/tmp/s1flow-data-ablation", help="where the runs go")
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="selection seeds")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--set", action="append", default=[], help="extra config override key=value")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        out = run_one(Path(args.one), args.set)
        (Path(args.one) / "ablation.json").write_text(json.dumps(out))
        return
    if not args.source:
        ap.error("--from is required: a finished run's root (after the filter stage), e.g. the project after make demo")

    from components.config import load_config
    from components.evaluation.report import DATA_ABLATION, data_ablation_row
    source, root = Path(args.source).resolve(), Path(args.root)
    cfg = load_config(REPO / "params.yaml", overrides=args.set)
    profile, top = cfg.name, max(cfg.evaluate.budgets)
    if not (source / "data" / profile / "filtered.jsonl").exists():
        sys.exit(f"--from: {source} has no data/{profile}/filtered.jsonl; run the stages up to filter there first")

    def start(key: tuple[str, int]):
        strategy, seed = key
        run_dir = root / f"{strategy}-seed{seed}"
        if (run_dir / "ablation.json").exists():  # resumable: a finished run is read, not rerun
            return None
        prepare(source, run_dir, profile)
        overrides = [f"selection.strategy={strategy}", f"selection.seed={seed}", f"evaluate.budgets=[{top}]",
                     *QUIET_EVAL, *args.set]
        env = dict(os.environ, S1FLOW_THREADS=str(args.threads), S1FLOW_NO_PROGRESS="1", PYTHONPATH=str(REPO))
        cmd = [sys.executable, __file__, "--one", str(run_dir)] + [x for o in overrides for x in ("--set", o)]
        log = open(root / f"{strategy}-seed{seed}.log", "w")
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    root.mkdir(parents=True, exist_ok=True)
    results = run_pool([(s, seed) for s in args.strategies for seed in (args.seeds[:1] if s in UNSEEDED else args.seeds)],
                       start, lambda key: root / f"{key[0]}-seed{key[1]}" / "ablation.json",
                       lambda key: root / f"{key[0]}-seed{key[1]}.log", args.parallel)
    rows = []
    for strategy in args.strategies:
        runs = sorted((seed, r) for (s, seed), r in results.items() if s == strategy)
        if runs:
            rows.append(data_ablation_row(strategy, runs[0][1]["size"] or cfg.selection.size, [s for s, _ in runs],
                                          [r["accuracy"] for _, r in runs],
                                          [r["correct"] for _, r in runs] if all("correct" in r for _, r in runs)
                                          else None))
    if not rows:
        sys.exit(f"no run finished (logs under {root}); {DATA_ABLATION} not written")
    out = source / "metrics" / profile / DATA_ABLATION
    out.write_text(json.dumps({"task": "heldout", "budget": top, "rows": rows}, indent=1))
    print(f"\n{'strategy':<15} {'size':>5}  accuracy at budget {top} (mean ± SE over selection seeds)")
    for r in rows:
        spread = f"± {r['se']:.3f}" if r["se"] is not None else "(one seed: no SE)"
        print(f"{r['strategy']:<15} {r['size']:>5}  {r['mean']:.3f} {spread}  per seed {r['accuracy']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
