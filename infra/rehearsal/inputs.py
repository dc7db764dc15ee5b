"""The rehearsal's input files: a pool in the fields of s1's 59K pool and local copies of the benchmarks.

The pool's rows carry s1's ``source_type`` values (the column Algorithm 1's phase 1 matches) and a worked
``solution`` ending in ``\\boxed{}`` (the field s1-32b extracts its answers from), except the rows of the sources
whose solutions s1 kept whole (GPQA explanations, the statistics qualifying exam): theirs is an explanation
with no ``\\boxed{}``, which s1-32b keeps as the reference (``answer_format: solution``) for the LLM judge to
grade the teacher and the students against. The questions come from the procedural world, so the programmatic
teacher behind the local provider can solve them. The benchmarks (AIME24/25, MATH500, AMC23, GPQA Diamond, and
the contests HMMT February 2025, BRUMO 2025, AIME 2026) are procedural questions of other seeds in each
benchmark's fields.

    python infra/rehearsal/inputs.py --out runs/s1-32b-rehearsal/inputs --pool 96
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.config import PoolConfig
from components.data.pool import generate_heldout, generate_pool

# source_type values of s1's 59K pool (simplescaling/data_ablation_full59K), in a mix like its sources
SOURCE_TYPES = (
    "AI-MO/NuminaMath-CoT/aops_forum", "AI-MO/NuminaMath-CoT/olympiads", "AI-MO/NuminaMath-CoT/amc_aime",
    "qfq/openaimath/Algebra", "qfq/openaimath/Number Theory", "qfq/openaimath/Counting & Probability",
    "qq8933/AIME_1983_2024", "Idavidrein/gpqa", "KbsdJames/Omni-MATH", "GAIR/OlympicArena/Math",
    "Hothan/OlympiadBench/Open-ended/Math", "baber/agieval/aqua_rat", "TIGER-Lab/TheoremQA/integer",
    "daman1209arora/jeebench/math", "simplescaling/s1-prob", "qfq/stats_qual",
)
# sources whose reference is a whole solution (no \boxed{}): graded by the judge, as s1 graded them
SOLUTION_SOURCES = {"Idavidrein/gpqa", "qfq/stats_qual"}
DOMAINS = ["arithmetic", "algebra", "number_theory", "combinatorics"]
BENCHMARKS = {"aime24": 30, "aime25": 30, "math500": 40, "amc23": 40, "gpqa_diamond": 20,
              "hmmt_feb25": 10, "brumo25": 10, "aime26": 10}
MATHARENA = {"hmmt_feb25", "brumo25", "aime26"}  # MathArena's fields: problem_idx, problem, answer
PRM_DIR = "Qwen2.5-Math-PRM-rehearsal"  # the substitute for Qwen/Qwen2.5-Math-PRM-7B (params.yaml)


def solution(answer: str, source_type: str) -> str:
    if source_type in SOLUTION_SOURCES:
        return f"Working through the problem step by step, the quantity asked for comes to {answer}."
    return f"Worked solution.\n\\boxed{{{answer}}}"


def pool_rows(size: int, seed: int = 301) -> list[dict]:
    questions = generate_pool(PoolConfig(size=size, seed=seed, malformed_fraction=0.0))
    types = [SOURCE_TYPES[i % len(SOURCE_TYPES)] for i in range(len(questions))]
    return [{"question": q.question, "solution": solution(q.answer, t), "source_type": t, "difficulty": q.difficulty}
            for q, t in zip(questions, types)]


def benchmark_rows(name: str, size: int, seed: int) -> list[dict]:
    questions = generate_heldout(seed, size, DOMAINS, 3, 6)
    if name == "gpqa_diamond":
        return [{"Record ID": f"rec{i}", "Question": q.question, "Correct Answer": q.answer,
                 **{f"Incorrect Answer {k}": str(int(q.answer) + k) if q.answer.lstrip("-").isdigit()
                    else f"{q.answer}{k}" for k in (1, 2, 3)}} for i, q in enumerate(questions)]
    if name in MATHARENA:
        return [{"problem_idx": i + 1, "problem": q.question, "answer": q.answer} for i, q in enumerate(questions)]
    return [{"id": f"{name}-{i}", "problem": q.question, "answer": q.answer} for i, q in enumerate(questions)]


def write_inputs(out: Path, pool_size: int, prm_base: Path | None = None) -> dict[str, int]:
    """The pool and benchmark files (rows written, by name); with ``prm_base``, also the PRM directory REBASE
    loads by name (infra/rehearsal/prm.py)."""
    out.mkdir(parents=True, exist_ok=True)
    written = {"pool": pool_rows(pool_size)}
    for k, (name, size) in enumerate(BENCHMARKS.items()):
        written[name] = benchmark_rows(name, size, 900 + k)
    for name, rows in written.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if prm_base is not None:
        from infra.rehearsal.prm import make_prm
        make_prm(prm_base, out / PRM_DIR)
    return {name: len(rows) for name, rows in written.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/s1-32b-rehearsal/inputs")
    ap.add_argument("--pool", type=int, default=96)
    a = ap.parse_args()
    print(json.dumps(write_inputs(Path(a.out), a.pool)))


if __name__ == "__main__":
    main()
