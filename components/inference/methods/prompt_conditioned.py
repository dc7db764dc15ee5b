"""Control by prompt only (s1's conditional-length baselines): the budget is stated in the prompt and the
model decides when to stop. ``token_conditional`` states it in tokens, ``step_conditional`` in steps of
``step_tokens``, ``class_conditional`` as "think briefly" up to ``threshold`` and "think thoroughly" above."""
from __future__ import annotations

from typing import Optional, Sequence

from pydantic import Field

from components.formatting import thinking_prompt
from components.inference.budget_forcing import ForcedResult
from components.inference.methods.base import Method, MethodSettings, Progress


class _PromptConditioned(Method):
    def hint(self, budget: int) -> str:
        raise NotImplementedError

    def run(self, engine, questions: Sequence[str], value: Optional[int], progress: Progress = None
            ) -> list[ForcedResult]:
        prompts = [thinking_prompt(engine.tokenizer, f"{q}\n{self.hint(value)}") for q in questions]
        return engine.generate_forced(prompts, [self.forcing.spec(None)] * len(prompts), self.forcing.greedy(),
                                      progress)


class TokenConditional(_PromptConditioned):
    name = "token_conditional"

    def hint(self, budget: int) -> str:
        return f"Think for up to {budget} tokens."


class StepSettings(MethodSettings):
    step_tokens: int = Field(30, gt=0, description="tokens per step")


class StepConditional(_PromptConditioned):
    name = "step_conditional"
    Settings = StepSettings

    def hint(self, budget: int) -> str:
        return f"Think for up to {max(1, budget // self.settings.step_tokens)} steps."


class ClassSettings(MethodSettings):
    threshold: int = Field(96, gt=0, description="budgets up to this get the 'think briefly' prompt")


class ClassConditional(_PromptConditioned):
    name = "class_conditional"
    Settings = ClassSettings

    def hint(self, budget: int) -> str:
        return "Think briefly." if budget <= self.settings.threshold else "Think step by step, thoroughly."
