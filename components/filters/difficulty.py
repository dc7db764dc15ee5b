"""Difficulty filter: students attempt each question; drop what any of them solves.

In the tiny profile the student is the base model answering in its own chat
format (as s1 used Qwen2.5-7B/32B-Instruct); answers are graded with
math-verify against the reference. Trace length in tokens of the target
tokenizer is recorded as the second difficulty signal.

    attempts = student_attempts(engine, questions, max_new_tokens=48)
"""
from __future__ import annotations

from typing import Callable, Optional

from components.formatting import prompt_text
from components.grading import extract_answer, grade
from components.inference.engine import Sampling
from components.records import Example


def student_attempts(engine, examples: list[Example], max_new_tokens: int,
                     progress: Optional[Callable[[int], None]] = None) -> list[bool]:
    """Whether the student engine, answering greedily in its own chat format, solves each example."""
    prompts = [prompt_text(engine.tokenizer, ex.question.question) for ex in examples]
    sampling = Sampling(max_new_tokens=max_new_tokens)
    outputs = []
    for start in range(0, len(prompts), engine.batch_size):
        outputs += [c.text for c in engine.generate(prompts[start:start + engine.batch_size], sampling)]
        if progress:
            progress(min(engine.batch_size, len(prompts) - start))
    return [grade(extract_answer(o), ex.question.answer) for o, ex in zip(outputs, examples)]


def trace_length(tokenizer, ex: Example) -> int:
    return len(tokenizer(ex.trace.thinking, add_special_tokens=False)["input_ids"])
