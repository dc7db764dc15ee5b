"""A model answering questions directly in its own chat format (no thinking), graded against the reference.

The difficulty filter's students and evaluation's base-model reference both use it. An attempt its
token limit cut off before it wrote a final answer has not solved the question, whatever its last
line says (``attempt_answer``). The difficulty filter takes the completions themselves
(:func:`student_completions`): it grades a row whose reference is a whole solution with an LLM judge.

    solved = student_attempts(engine, examples, max_new_tokens=48)
"""
from __future__ import annotations

from typing import Callable, Optional

from components.common.grading import attempt_answer, grade_question
from components.formatting import prompt_text
from components.inference.engine import Completion, Sampling
from components.records import Example


def finished(completion: Completion) -> bool:
    """Whether the attempt ended on its own (not cut off by its token limit)."""
    return completion.finish_reason != "length"


def solves(completion: Completion, ex: Example) -> bool:
    """Whether the attempt's answer matches the example's reference, by the question's kind: the option letter
    for multiple choice, symbolic equivalence (math-verify) otherwise (the same rule as the Ray Data students)."""
    return grade_question(ex.question, attempt_answer(completion.text, finished(completion)))


def student_completions(engine, examples: list[Example], max_new_tokens: int,
                        progress: Optional[Callable[[int], None]] = None) -> list[Completion]:
    """The engine's greedy answer to each example in its own chat format."""
    prompts = [prompt_text(engine.tokenizer, ex.question.question) for ex in examples]
    sampling = Sampling(max_new_tokens=max_new_tokens)
    outputs: list[Completion] = []
    for start in range(0, len(prompts), engine.batch_size):
        outputs += engine.generate(prompts[start:start + engine.batch_size], sampling)
        if progress:
            progress(min(engine.batch_size, len(prompts) - start))
    return outputs


def student_attempts(engine, examples: list[Example], max_new_tokens: int,
                     progress: Optional[Callable[[int], None]] = None) -> list[bool]:
    """Whether the engine, answering greedily in its own chat format, solves each example."""
    outputs = student_completions(engine, examples, max_new_tokens, progress)
    return [solves(c, ex) for c, ex in zip(outputs, examples)]
