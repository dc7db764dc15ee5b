"""Scheduled waits (AlphaOne-style, arXiv 2505.24863): a slow-thinking phase up to the moment ``alpha`` x budget,
then fast thinking. Before the moment every attempt to end thinking is answered with the wait string (the
schedule: at most ``max_waits`` waits, None for as many as the model asks; s1's extension rule, the shared
``wait_strings`` in rotation); at the moment the end of thinking is forced. Its sweep values are thinking budgets;
a question thinks at most ``alpha`` x budget tokens (``alpha`` > 1 lets it think past the budget, as AlphaOne
scales its moment). AlphaOne's own schedule inserts waits at newline transitions with a decaying probability;
this one inserts them only where the model would stop, which keeps greedy decoding deterministic."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

from pydantic import Field

from components.inference.budget_forcing import ForcedResult
from components.inference.methods.base import Method, MethodSettings, Progress


class ScheduledWaitsSettings(MethodSettings):
    alpha: float = Field(1.0, gt=0, le=4, description="the moment, as a multiple of the budget, where slow thinking "
                         "ends and the end of thinking is forced")
    max_waits: Optional[int] = Field(None, ge=0, description="waits inserted at most before the moment (None: "
                                     "every attempt to stop before it)")


class ScheduledWaits(Method):
    name = "scheduled_waits"
    Settings = ScheduledWaitsSettings
    reach_setting = "alpha"

    def thinking_reach(self, value: int) -> int:
        return self.moment(value)

    def moment(self, budget: int) -> int:
        return max(1, math.floor(self.settings.alpha * budget))

    def run(self, engine, questions: Sequence[str], value: Optional[int], progress: Progress = None
            ) -> list[ForcedResult]:
        moment = min(self.moment(value), engine.unlimited)
        waits = self.settings.max_waits
        spec = dataclasses.replace(self.forcing.spec(moment), min_thinking_tokens=moment if waits is None else 0,
                                   num_waits=waits or 0)
        prompts = self.prompts(engine, questions)
        return engine.generate_forced(prompts, [spec] * len(prompts), self.forcing.greedy(), progress)
