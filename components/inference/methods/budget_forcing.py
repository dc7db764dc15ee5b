"""Budget forcing (s1): thinking cut at the budget by forcing the end-of-thinking delimiter and the answer prefix,
or extended by suppressing the delimiter and appending a wait string (the shared ``min_thinking_tokens``,
``num_waits``, ``wait_strings``). Its sweep values are thinking budgets; ``None`` thinks up to the engine's cap.
A greedy sweep that only cuts thinks once for every budget (:mod:`components.inference.budget_sweep`)."""
from __future__ import annotations

from typing import Optional, Sequence

from components.inference.budget_forcing import ForcedResult
from components.inference.budget_sweep import budget_sweep, shares_thinking
from components.inference.methods.base import Method, Progress


class BudgetForcing(Method):
    name = "budget_forcing"
    answers_unbudgeted = True
    shares_sweep = True

    def run(self, engine, questions: Sequence[str], value: Optional[int], progress: Progress = None
            ) -> list[ForcedResult]:
        prompts = self.prompts(engine, questions)
        return engine.generate_forced(prompts, [self.forcing.spec(value)] * len(prompts), self.forcing.greedy(),
                                      progress)

    def run_sweep(self, engine, questions: Sequence[str], values: Sequence[Optional[int]], progress: Progress = None
                  ) -> dict[Optional[int], list[ForcedResult]]:
        """Each budget's run as a prefix of one capped run where greedy forcing only cuts; else one run each."""
        spec, sampling = self.forcing.spec(None), self.forcing.greedy()
        if not shares_thinking(spec, sampling, values, engine.unlimited):
            return super().run_sweep(engine, questions, values, progress)
        return budget_sweep(engine, self.prompts(engine, questions), values, spec, sampling, progress)
