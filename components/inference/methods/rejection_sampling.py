"""Rejection sampling (s1's baseline): sample at ``sample_temperature`` until the thinking fits the budget, at
most ``max_tries`` times; the last try is kept otherwise. Every try's thinking is compute spent: the kept try's
in ``thinking_tokens`` (what Control reads), the others' in ``discarded_tokens``."""
from __future__ import annotations

from typing import Optional, Sequence

from pydantic import Field

from components.inference.budget_forcing import ForcedResult
from components.inference.methods.base import Method, MethodSettings, Progress


class RejectionSettings(MethodSettings):
    max_tries: int = Field(8, gt=0, description="samples drawn at most per question")


class RejectionSampling(Method):
    name = "rejection_sampling"
    samples_itself = True
    Settings = RejectionSettings

    def run(self, engine, questions: Sequence[str], value: Optional[int], progress: Progress = None
            ) -> list[ForcedResult]:
        prompts = self.prompts(engine, questions)
        chosen: list[Optional[ForcedResult]] = [None] * len(prompts)
        spent = [0] * len(prompts)  # thinking of the tries before the kept one
        pending = list(range(len(prompts)))
        for attempt in range(self.settings.max_tries):
            results = engine.generate_forced([prompts[i] for i in pending], [self.forcing.spec(None)] * len(pending),
                                             self.forcing.sampled(attempt))
            still = []
            for i, r in zip(pending, results):
                if chosen[i] is not None:
                    spent[i] += chosen[i].thinking_tokens
                chosen[i] = r.model_copy(update={"tries": attempt + 1, "discarded_tokens": spent[i]})
                if r.thinking_tokens > value:
                    still.append(i)
            if progress:
                progress(len(pending) - len(still))
            pending = still
            if not pending:
                break
        if progress and pending:
            progress(len(pending))
        return chosen
