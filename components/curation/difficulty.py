"""Difficulty signals: students attempt each question (``components.inference.attempts``), and the
trace length in tokens of the target tokenizer.

In the tiny profile the student is the base model answering in its own chat
format (as s1 used Qwen2.5-7B/32B-Instruct); answers are graded with
math-verify against the reference.

    n = trace_length(tokenizer, example)
"""
from __future__ import annotations

from components.records import Example


def trace_length(tokenizer, ex: Example) -> int:
    return len(tokenizer(ex.trace.thinking, add_special_tokens=False)["input_ids"])
