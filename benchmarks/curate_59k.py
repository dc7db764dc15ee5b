"""Quality + decontamination + selection of a 59K-row pool, timed. Goal: <= 10 s.

The pool is procedural questions with programmatic-teacher traces (built before
the clock starts, as distillation would have). Decontamination runs against the
real AIME24, AMC23 and MATH500 questions the project ships (tests/fixtures/eval,
loaded by the evaluation task loaders, as ``decontamination.tasks`` does), a
held-out procedural set, 200 pool questions planted verbatim and up to 200
planted as paraphrases (other words around an 8-word span of the question,
for questions of at least 8 words): the report checks that every planted row
was dropped. The timed part is what the filter and select stages
run: the n-gram index (stable blake2b hashes), the Ray Data transforms (Ray
start-up included), then s1's diversity selection of 1,000.

    python benchmarks/curate_59k.py [--rows 59029] [--select 1000]
"""
from __future__ import annotations

import argparse
import os
import random
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("S1FLOW_NO_PROGRESS", "1")

from components.common.raycluster import ensure_ray  # noqa: E402
from components.config import PoolConfig, QualityConfig, TeacherConfig  # noqa: E402
from components.curation.decontamination import NgramIndex, normalise  # noqa: E402
from components.curation.filtering import quality_and_decontamination  # noqa: E402
from components.curation.selection import select  # noqa: E402
from components.data.pool import generate_heldout, generate_pool  # noqa: E402
from components.data.tasks import load_task  # noqa: E402
from components.distill.teachers.programmatic import ProgrammaticTeacher  # noqa: E402
from components.records import Example  # noqa: E402

EVAL = Path(__file__).resolve().parents[1] / "tests/fixtures/eval"
TASKS = ("aime24", "amc23", "math500")


def eval_texts(pool: list[Example]) -> tuple[list[str], set[str]]:
    """Benchmark questions plus planted contamination; the ids of the planted pool questions."""
    texts: list[str] = []
    for name in TASKS:
        texts += [q.question for q in load_task(name, EVAL / f"{name}.jsonl")]
    texts += [q.question for q in generate_heldout(6, 500, PoolConfig().domains, 3, 6)]
    rng = random.Random(0)
    planted = rng.sample(pool, 400)
    texts += [ex.question.question for ex in planted[:200]]  # verbatim copies
    paraphrased = set()
    for ex in planted[200:]:  # paraphrases: an 8-word span of the question inside other words
        words = normalise(ex.question.question)
        if len(words) < 8:
            continue  # too short to share an 8-gram without being a copy
        start = rng.randrange(len(words) - 7)
        texts.append("Consider the following. " + " ".join(words[start:start + 8]) + ". Explain your steps.")
        paraphrased.add(ex.question.id)
    return texts, {ex.question.id for ex in planted[:200]} | paraphrased


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
    texts, planted = eval_texts(pool)
    print(f"built {len(pool)} examples and {len(texts)} evaluation texts in {time.time() - t0:.1f} s (not timed)")

    start = time.time()
    ensure_ray()
    t_ray = time.time()
    index = NgramIndex.build(texts, 8)
    t_index = time.time()
    kept, dropped = quality_and_decontamination(pool, QualityConfig(), index)
    t_filter = time.time()
    chosen = select(kept, "diversity", a.select, 4)
    t_select = time.time()
    total = t_select - start
    print(f"drop reasons: {dict(Counter(ex.drop_reason for ex in dropped))}; kept {len(kept)}")
    missed = planted & {ex.question.id for ex in kept}
    print(f"planted contamination caught: {len(planted) - len(missed)} of {len(planted)} "
          f"(against {', '.join(TASKS)} from {EVAL.relative_to(EVAL.parents[2])}, held-out set, planted rows)")
    print(f"selected {len(chosen)} over {len({e.question.msc for e in chosen})} domains")
    print(f"Ray start-up {t_ray - start:.2f} s, index {t_index - t_ray:.2f} s, quality+decontamination (Ray Data) "
          f"{t_filter - t_index:.2f} s, selection {t_select - t_filter:.2f} s")
    print(f"total {total:.2f} s for {len(pool)} rows (goal <= 10 s)")


if __name__ == "__main__":
    main()
