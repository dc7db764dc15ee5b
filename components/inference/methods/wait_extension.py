"""Budget forcing's other direction: the end of thinking suppressed ``num_waits`` times, no maximum (s1's
extrapolation). Its sweep values are numbers of forced waits (``evaluate.methods.wait_extension.waits``)."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from pydantic import Field

from components.inference.budget_forcing import ForcedResult
from components.inference.methods.base import Method, MethodSettings, Progress


class WaitExtensionSettings(MethodSettings):
    waits: list[int] = Field(default_factory=lambda: [0, 1, 2, 4], description="numbers of forced waits swept")


class WaitExtension(Method):
    name = "wait_extension"
    Settings = WaitExtensionSettings
    value_label = "W="
    sweep_setting = "waits"
    budgeted = False

    def values(self) -> list[int]:
        return sorted(self.settings.waits)

    def run(self, engine, questions: Sequence[str], value: Optional[int], progress: Progress = None
            ) -> list[ForcedResult]:
        return self.run_many(engine, questions, [(tuple(self.forcing.wait_strings), value or 0)], progress)[0]

    def run_many(self, engine, questions: Sequence[str], runs: Sequence[tuple[tuple[str, ...], int]],
                 progress: Progress = None) -> list[list[ForcedResult]]:
        """Several (wait strings, number of waits) runs. Greedy: one ``generate_forced`` call over every run's
        rows (each its own spec), so the engine batches across runs; sampling: run by run (each run's rows keep
        their seeds)."""
        prompts = self.prompts(engine, questions)
        base = self.forcing.spec(None)
        specs = [dataclasses.replace(base, num_waits=k, wait_strings=strings) for strings, k in runs]
        sampling = self.forcing.greedy()
        if not sampling.greedy:
            out = [engine.generate_forced(prompts, [spec] * len(prompts), sampling) for spec in specs]
        else:
            flat = engine.generate_forced(prompts * len(specs), [spec for spec in specs for _ in prompts], sampling)
            out = [flat[i * len(prompts):(i + 1) * len(prompts)] for i in range(len(specs))]
        if progress:
            progress(len(questions))
        return out

    def cost(self, questions: int, value: Optional[int]) -> int:
        return questions * (1 + (value or 0))  # a forced wait makes a sequence think again
