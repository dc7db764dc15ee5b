"""s1 against s1.1 in the miniature: the same selected questions, only the traces changed.

s1.1 kept s1K's 1,000 questions and replaced Gemini's traces with DeepSeek-R1's (longer, with more
self-correction). Here the first programmatic teacher plays Gemini and ``teacher.style: thorough`` plays R1
(components/distill/teachers/programmatic.py). Starts from a finished run (``--from``: a root where the select
stage has run, e.g. the project after ``make demo``). Two arms, each in its own directory with the source's data
and base model: ``standard`` trains on the source's selection as it is; ``thorough`` on the same questions with
the thorough teacher's traces, written from each question. Each arm runs tokenize -> train -> evaluate (every
budget; the compute-matched comparison and the ablations off), one process per arm.

Writes ``metrics/<profile>/trace_swap.json`` in the ``--from`` root: each arm's traces (mean characters,
re-checks) and accuracy, and at every budget the paired comparison thorough - standard on the same held-out
questions (components/evaluation/compare.py: each side's 95% interval, the difference's, the paired test).

    python benchmarks/trace_swap.py --from . [--parallel 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.data_ablation import QUIET_EVAL, prepare  # noqa: E402
from benchmarks.runpool import run_pool, run_stages  # noqa: E402

ARMS = {"standard": [], "thorough": ["teacher.style=thorough"]}  # the overrides of each arm
STAGES = ["tokenize", "train", "evaluate"]
RECHECK = "Wait, let me re-check"


def swap_traces(selected: Path, overrides: list[str]) -> dict:
    """Rewrite ``selected`` (the source's selection) with the traces of the teacher ``overrides`` configure, each
    written from its question; the summary of the traces it holds after."""
    from components.config import load_config
    from components.distill.teachers.programmatic import ProgrammaticTeacher
    from components.records import Example, read_jsonl, write_jsonl
    examples = read_jsonl(selected, Example)
    teacher = load_config(REPO / "params.yaml", overrides=overrides).teacher
    if teacher.style != "standard":
        solver = ProgrammaticTeacher(teacher)
        swapped = [ex.model_copy(update={"trace": solver.solve(ex.question)}) for ex in examples]
        failed = [ex.question.id for ex in swapped if not ex.trace.ok]
        if failed:
            raise SystemExit(f"the {teacher.style} teacher could not answer {len(failed)} selected questions "
                             f"(e.g. {failed[:3]}): the arms would not train on the same questions")
        write_jsonl(selected, swapped)
        examples = swapped
    return {"examples": len(examples), "style": teacher.style,
            "mean_trace_chars": round(sum(len(ex.trace.thinking) for ex in examples) / max(len(examples), 1), 1),
            "rechecks": sum(ex.trace.thinking.count(RECHECK) for ex in examples)}


def run_one(root: Path, overrides: list[str], profile: str) -> dict:
    """The arm in ``root``: its traces swapped in, then tokenize -> train -> evaluate (this process)."""
    from components.paths import Paths
    traces = swap_traces(Paths.for_profile(profile, root).selected, overrides)
    res, times = run_stages(root, overrides, STAGES)
    return {"traces": traces, "accuracy_by_budget": {str(p["budget"]): p["accuracy"] for p in
                                                      res["evaluate"]["points"]}, "times": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", help="a finished run's root (after the select stage); required")
    ap.add_argument("--root", default="/tmp/s1flow-trace-swap", help="where the arms run")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per arm")
    ap.add_argument("--set", action="append", default=[], help="extra config override key=value (both arms)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--profile", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        out = run_one(Path(args.one), args.set, args.profile)
        (Path(args.one) / "arm.json").write_text(json.dumps(out))
        return
    if not args.source:
        ap.error("--from is required: a finished run's root (after the select stage), e.g. the project after make demo")

    from components.config import load_config
    from components.evaluation.compare import CompareError, Point, compare, format_result
    from components.evaluation.report import TRACE_SWAP
    source, root = Path(args.source).resolve(), Path(args.root)
    cfg = load_config(REPO / "params.yaml", overrides=args.set)
    profile = cfg.name
    from components.paths import Paths
    selected = Paths.for_profile(profile, source).selected
    if not selected.exists():
        sys.exit(f"--from: {source} has no {selected.relative_to(source)}; run the stages up to select there first")

    def start(arm: str):
        run_dir = root / arm
        if (run_dir / "arm.json").exists():  # resumable: a finished arm is read, not rerun
            return None
        prepare(source, run_dir, profile)
        overrides = [*QUIET_EVAL, *args.set, *ARMS[arm]]
        env = dict(os.environ, S1FLOW_THREADS=str(args.threads), S1FLOW_NO_PROGRESS="1", PYTHONPATH=str(REPO))
        cmd = [sys.executable, __file__, "--one", str(run_dir), "--profile", profile] + [
            x for o in overrides for x in ("--set", o)]
        log = open(root / f"{arm}.log", "w")
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    root.mkdir(parents=True, exist_ok=True)
    results = run_pool(list(ARMS), start, lambda arm: root / arm / "arm.json", lambda arm: root / f"{arm}.log",
                       args.parallel)
    if set(results) != set(ARMS):
        sys.exit(f"an arm did not finish (logs under {root}); {TRACE_SWAP} not written")
    samples = {arm: str(root / arm / "data" / profile / "eval_samples.jsonl") for arm in ARMS}
    comparisons = []
    for budget in [*cfg.evaluate.budgets, None]:
        try:
            result = compare(samples["standard"], samples["thorough"], Point(budget=budget), Point(budget=budget))
        except CompareError as e:  # e.g. no no-budget run in these results
            print(f"budget {budget}: no comparison ({e})")
            continue
        comparisons.append({"budget": budget, **result})
        print(format_result(result), end="\n\n")
    out = source / "metrics" / profile / TRACE_SWAP
    out.write_text(json.dumps({"task": "heldout", "arms": results, "comparisons": comparisons}, indent=1))
    for arm, r in results.items():
        t = r["traces"]
        print(f"{arm:<9} {t['examples']} examples, {t['mean_trace_chars']} trace chars on average, "
              f"{t['rechecks']} re-checks")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
