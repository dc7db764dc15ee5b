"""Robustness of the miniature: the tiny pipeline over seeds and torch thread counts.

Each (seed, threads) run is its own process in its own root directory; the seed
shifts every seed of the world (model init, pre-training data, pool, teacher,
selection, SFT, held-out set), so seeds are independent worlds. Prints accuracy
per budget per run, then mean ± sd per budget per thread count, and checks the
miniature's targets (top budget >= 0.8, monotone in budget, base <= 5%).

    python benchmarks/miniature.py --seeds 3 --threads 1 2 [--parallel 2] [--root DIR] [--set key=value ...]
    python benchmarks/miniature.py --root DIR --report-only   # summarise finished runs
    python benchmarks/miniature.py --stages base-model --parallel 6 ...  # pre-train only (a many-core machine),
    python benchmarks/miniature.py --reuse-base ...                      # then the rest where the base models are
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.runpool import run_pool, run_stages  # noqa: E402

STAGES = ["base-model", "collect", "distill", "filter", "select", "tokenize", "train", "evaluate"]
SEEDED = ["model.seed", "pretrain.seed", "pool.seed", "teacher.seed", "selection.seed", "sft.seed",
          "heldout.seed", "evaluate.seed"]


def seed_overrides(seed: int) -> list[str]:
    """Seed 0 is params.yaml as committed; seed k adds 100*k to every seed of the world. Every seed pre-trains
    (the shipped base model would stand in for seed 0's pre-training on another machine)."""
    from components.config import load_config
    cfg = load_config(REPO / "params.yaml")
    out = ["pretrain.release=null"]
    for key in SEEDED:
        section, field = key.split(".")
        out.append(f"{key}={getattr(getattr(cfg, section), field) + 100 * seed}")
    return out


def run_one(root: Path, overrides: list[str], stages: list[str] = STAGES, reuse_base: bool = False) -> dict:
    """Run the stages in ``root`` (this process); return the evaluation summary and stage times. ``reuse_base``:
    a base model already in ``root`` (e.g. pre-trained elsewhere with ``--stages base-model``) is kept."""
    from components.config import load_config
    from components.paths import Paths
    base_summary = Paths.for_profile(load_config(REPO / "params.yaml", overrides=overrides).name,
                                     root).metric("base_model.json")
    kept = {}
    if reuse_base and base_summary.exists() and "base-model" in stages:
        stages = [s for s in stages if s != "base-model"]
        kept = {"base-model": json.loads(base_summary.read_text()).get("seconds")}
    from components.data.base_model_stage import BaseModelNotReady
    try:
        res, times = run_stages(root, overrides, stages)
    except BaseModelNotReady as e:  # the seed's pre-training missed its skill gate: a result, not a crash
        return {"gate_missed": str(e)}
    times = {**kept, **times}
    gate = gate_step(json.loads(base_summary.read_text())) if base_summary.exists() else None
    if "evaluate" not in res:
        return {"times": times, "gate_step": gate, **({"base_model": res["base-model"]} if "base-model" in res else {})}
    ev = res["evaluate"]
    return {"gate_step": gate, "base": ev["base_accuracy"], "budgets": {str(p["budget"]): p["accuracy"] for p in ev["points"]},
            "avg_thinking": {str(p["budget"]): p["avg_thinking_tokens"] for p in ev["points"]},
            "unlimited": ev["unlimited"]["accuracy"], "times": times, "total_s": round(sum(times.values()), 1)}


def gate_step(base_model: dict) -> int | None:
    """The pre-training step at which the skill probe passed (None: it did not, or the model was installed)."""
    probes = base_model.get("probes") or []
    return probes[-1][0] if base_model.get("probe_passed") and probes else None


def _spawn(seed: int, threads: int, root: Path, extra: list[str], stages: list[str],
           reuse_base: bool) -> subprocess.Popen:
    env = dict(os.environ, S1FLOW_THREADS=str(threads), S1FLOW_NO_PROGRESS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, __file__, "--one", str(root / f"seed{seed}-t{threads}"), "--seed", str(seed),
           "--stages", *stages] + (["--reuse-base"] if reuse_base else [])
    for o in extra:
        cmd += ["--set", o]
    log = open(root / f"seed{seed}-t{threads}.log", "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def report(results: dict[tuple[int, int], dict]) -> bool:
    missed = {k: r for k, r in results.items() if "gate_missed" in r}
    for (seed, thr), r in sorted(missed.items()):
        print(f"seed {seed} threads {thr}: pre-training missed its skill gate -> FAIL\n  "
              + r["gate_missed"].replace("\n", "\n  "))
    results = {k: r for k, r in results.items() if k not in missed}
    if not results:
        print("NOT ALL PASS")
        return False
    gates = [r.get("gate_step") for r in results.values()]
    if any(g is not None for g in gates):
        passed = sorted(g for g in gates if g is not None)
        print(f"gate passed at steps {passed} (median {statistics.median(passed)}, slowest {passed[-1]})")
    budgets = sorted({b for r in results.values() for b in r["budgets"]}, key=int)
    head = "seed thr   base " + " ".join(f"{b:>6}" for b in budgets) + "  unlim  total_s"
    print(head)
    for (seed, thr), r in sorted(results.items()):
        print(f"{seed:>4} {thr:>3} {r['base']:6.3f} " + " ".join(f"{r['budgets'][b]:6.3f}" for b in budgets)
              + f" {r['unlimited']:6.3f} {r['total_s']:8.1f}")
    ok = True
    for thr in sorted({t for _, t in results}):
        rs = [r for (_, t), r in results.items() if t == thr]
        print(f"\nthreads={thr}: mean ± sd over {len(rs)} seed(s)")
        print(f"  base (no thinking) {_mean_sd([r['base'] for r in rs])}")
        for b in budgets:
            print(f"  budget {b:>4}: {_mean_sd([r['budgets'][b] for r in rs])}")
        print(f"  no budget  : {_mean_sd([r['unlimited'] for r in rs])}")
    for (seed, thr), r in sorted(results.items()):
        accs = [r["budgets"][b] for b in budgets]
        mono = all(b2 >= b1 for b1, b2 in zip(accs, accs[1:]))
        top, base = accs[-1], r["base"]
        good = top >= 0.9 and mono and base <= 0.05
        ok &= good
        print(f"seed {seed} threads {thr}: top {top:.3f} (>=0.9 {top >= 0.9}), monotone {mono}, "
              f"base {base:.3f} (<=0.05 {base <= 0.05}) -> {'PASS' if good else 'FAIL'}")
    ok &= not missed
    print("ALL PASS" if ok else "NOT ALL PASS")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ap.add_argument("--seed-list", type=int, nargs="*", help="explicit seeds (overrides --seeds)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--parallel", type=int, default=1, help="runs at once (use 1 for clean timings)")
    ap.add_argument("--root", default="/tmp/s1flow-miniature")
    ap.add_argument("--set", action="append", default=[], help="extra config override key=value")
    ap.add_argument("--report-only", action="store_true", help="only summarise the runs already under --root")
    ap.add_argument("--stages", nargs="+", default=STAGES, choices=STAGES,
                    help="stages to run (e.g. only base-model: pre-train the seeds on a bigger machine)")
    ap.add_argument("--reuse-base", action="store_true", help="keep a base model already in a run's folder")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        res = run_one(Path(args.one), seed_overrides(args.seed) + args.set, args.stages, args.reuse_base)
        (Path(args.one) / "miniature.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res))
        return
    root = Path(args.root)
    if args.report_only:
        found = {}
        for f in sorted(root.glob("seed*-t*/miniature.json")):
            seed, thr = f.parent.name.removeprefix("seed").split("-t")
            found[(int(seed), int(thr))] = json.loads(f.read_text())
        if not found:
            sys.exit(f"--root: no finished runs (seed*-t*/miniature.json) under {root}")
        report(found)
        return
    root.mkdir(parents=True, exist_ok=True)
    seeds = args.seed_list if args.seed_list is not None else list(range(args.seeds))
    results = run_pool([(s, t) for t in args.threads for s in seeds], lambda key: _spawn(*key, root, args.set, args.stages,
                                                                        args.reuse_base),
                       lambda key: root / f"seed{key[0]}-t{key[1]}" / "miniature.json",
                       lambda key: root / f"seed{key[0]}-t{key[1]}.log", args.parallel)
    (root / "summary.json").write_text(json.dumps({f"{s}-{t}": r for (s, t), r in results.items()}, indent=1))
    if results and "evaluate" in args.stages:
        report(results)


if __name__ == "__main__":
    main()
