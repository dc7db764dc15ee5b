"""Quality + decontamination + selection of a 59K-row pool on this machine. Goal: <= 60 s.

The pool is procedural questions with programmatic-teacher traces (built before
the clock starts, as distillation would have). Decontamination runs against the
real AIME24/AMC23/MATH500 files when ../shared is present, else against a
held-out procedural set, plus 200 pool questions planted as contaminated. The
timed part is what the filter and select stages run: the Ray Data transforms
(Ray start-up included), then s1's diversity selection of 1,000.

    python benchmarks/curate_59k.py [--rows 59029] [--select 1000]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("S1FLOW_NO_PROGRESS", "1")

from components.config import PoolConfig, QualityConfig, TeacherConfig  # noqa: E402
from components.curation.decontamination import NgramIndex  # noqa: E402
from components.curation.filtering import quality_and_decontamination  # noqa: E402
from components.curation.selection import select  # noqa: E402
from components.data.pool import generate_heldout, generate_pool  # noqa: E402
from components.distill.teachers.programmatic import ProgrammaticTeacher  # noqa: E402
from components.records import Example  # noqa: E402

SHARED_EVAL = Path(__file__).resolve().parents[2] / "shared/data/eval"


def eval_texts(pool: list[Example]) -> list[str]:
    texts = []
    for f in sorted(SHARED_EVAL.glob("*.jsonl")) if SHARED_EVAL.exists() else []:
        texts += [json.loads(line).get("problem") or json.loads(line).get("question", "") for line in open(f)]
    texts += [q.question for q in generate_heldout(6, 500, PoolConfig().domains, 3, 6)]
    texts += [ex.question.question for ex in random.Random(0).sample(pool, 200)]  # planted contamination
    return texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=59029)
    ap.add_argument("--select", type=int, default=1000)
    a = ap.parse_args()
    t0 = time.time()
    teacher = ProgrammaticTeacher(TeacherConfig())
    rng = random.Random(0)
    pool = [Example(question=q, trace=teacher.solve(q), trace_tokens=rng.randint(50, 4000))
            for q in generate_pool(PoolConfig(size=a.rows, seed=59, malformed_fraction=0.02))]
    texts = eval_texts(pool)
    print(f"built {len(pool)} examples and {len(texts)} evaluation texts in {time.time() - t0:.1f} s (not timed)")

    start = time.time()
    index = NgramIndex.build(texts, 8)
    t_index = time.time()
    kept, dropped = quality_and_decontamination(pool, QualityConfig(), index)
    t_filter = time.time()
    chosen = select(kept, "diversity", a.select, 4)
    t_select = time.time()
    total = t_select - start
    print(f"drop reasons: {dict(Counter(ex.drop_reason for ex in dropped))}; kept {len(kept)}")
    print(f"selected {len(chosen)} over {len({e.question.msc for e in chosen})} domains")
    print(f"index {t_index - start:.2f} s, quality+decontamination (Ray Data, start-up included) "
          f"{t_filter - t_index:.2f} s, selection {t_select - t_filter:.2f} s")
    print(f"total {total:.2f} s for {len(pool)} rows (goal <= 60 s)")


if __name__ == "__main__":
    main()
