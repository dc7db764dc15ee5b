"""Confidence exit at reasoning transitions (DEER, arXiv 2504.15895): each time thinking emits a transition
string (``transitions``: "Wait", a new line), a trial answer is probed in a side branch (delimiter and answer
prefix forced, ``answer_tokens`` greedy tokens; :mod:`components.inference.probing`), and thinking ends once its
mean token probability reaches ``threshold`` (0: at the first transition; above 1: never, which is budget forcing
itself). Its sweep values are thinking budgets; compute counts every probe's tokens (``probe_tokens``). Refused,
with the setting named, where probing has no meaning (see :mod:`~components.inference.methods.early_exit`) or a
transition string can never be emitted by the model's tokenizer."""
from __future__ import annotations

from typing import Sequence

from pydantic import Field, field_validator

from components.inference.budget_forcing import Probe
from components.inference.methods.base import MethodRefused, MethodSettings
from components.inference.methods.early_exit import ProbingMethod
from components.inference.probing import ProbeSpec, Transitions


class ConfidenceExitSettings(MethodSettings):
    threshold: float = Field(0.95, ge=0, description="mean token probability of a trial answer that ends thinking")
    transitions: list[str] = Field(default_factory=lambda: ["Wait"], max_length=16,
                                   description="strings after which a trial answer is probed (at most 16, each at "
                                   "most 64 characters)")
    answer_tokens: int = Field(16, ge=1, description="most tokens of each trial answer")

    @field_validator("transitions")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value or any(not s for s in value):
            raise ValueError("list at least one non-empty transition string, e.g. ['Wait']")
        if any(len(s) > 64 for s in value):
            raise ValueError("each transition string is at most 64 characters")
        return value


class ConfidenceExit(ProbingMethod):
    name = "confidence_exit"
    Settings = ConfidenceExitSettings

    def probe(self) -> ProbeSpec:
        s = self.settings
        return ProbeSpec(at=tuple(s.transitions), answer_tokens=s.answer_tokens,
                         answer_prefix=self.forcing.final_answer_prefix)

    def stop(self, probes: Sequence[Probe]) -> bool:
        return bool(probes) and probes[-1].mean_prob >= self.settings.threshold

    def check(self, engine) -> None:
        super().check(engine)
        unknown = getattr(engine.tokenizer, "unk_token_id", None)
        for s in self.settings.transitions:
            marks = Transitions(engine.tokenizer, [s])
            if not marks.ending and (not marks.encoded[0] or unknown in marks.encoded[0]):
                raise MethodRefused(f"evaluate.methods.confidence_exit.transitions: {s!r} is never emitted by this "
                                    "model's tokenizer (no token ends with it and it does not encode), so no probe "
                                    "would be taken")

    def describe(self) -> dict:
        return {**super().describe(), **self.settings.model_dump()}
