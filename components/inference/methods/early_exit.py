"""Early exit on answer convergence (Dynasor's Certaindex, arXiv 2412.20993): every ``probe_every`` thinking
tokens a trial answer is probed in a side branch (the end-of-thinking delimiter and the answer prefix forced,
``answer_tokens`` greedy tokens; :mod:`components.inference.probing`), and thinking ends once the last ``agree``
probes give the same non-empty answer (compared by grading equivalence, or as normalised strings). Its sweep
values are thinking budgets (thinking never passes them); compute counts every probe's tokens
(``probe_tokens``). Where probing has no meaning (no end-of-thinking delimiter in the tokenizer, an answer
prefix that encodes to nothing, forced waits) the method is refused with the setting named."""
from __future__ import annotations

import re
from typing import ClassVar, Literal, Optional, Sequence

from pydantic import Field

from components.common.grading import extract_answer, grade
from components.formatting import IM_START
from components.inference.budget_forcing import ForcedResult, Probe
from components.inference.methods.base import Method, MethodRefused, MethodSettings, Progress
from components.inference.probing import ProbeSpec, generate_probed


class ProbingMethod(Method):
    """A sequential method whose thinking a stop rule over answer probes ends (early or confidence exit)."""

    answers_unbudgeted: ClassVar[bool] = True

    def probe(self) -> ProbeSpec:
        raise NotImplementedError

    def stop(self, probes: Sequence[Probe]) -> bool:
        raise NotImplementedError

    def run(self, engine, questions: Sequence[str], value: Optional[int], progress: Progress = None
            ) -> list[ForcedResult]:
        prompts = self.prompts(engine, questions)
        return generate_probed(engine, prompts, [self.forcing.spec(value)] * len(prompts), self.probe(), self.stop,
                               self.forcing.greedy(), progress=progress)

    def cost(self, questions: int, value: Optional[int]) -> int:
        return 2 * questions  # the thinking run and its probes (short sequences)

    def check(self, engine) -> None:
        tok, v, key = engine.tokenizer, engine.vocab, f"evaluate.methods.{self.name}"
        start = tok.convert_tokens_to_ids(IM_START)
        if start is None or start == getattr(tok, "unk_token_id", None) or not v.delimiter_ids:
            raise MethodRefused(f"{key}: the model's tokenizer has no end-of-thinking delimiter ({IM_START}answer): "
                                "a probe forces it to ask for the answer, so probing has no meaning for this "
                                "model; use budget_forcing or a model trained in the thinking format")
        prefix = self.forcing.final_answer_prefix
        if prefix and not v.encode(prefix):
            raise MethodRefused(f"evaluate.final_answer_prefix: {prefix!r} encodes to no tokens, so a probe cannot "
                                f"force it ({self.name}); set a prefix the tokenizer encodes, or ''")
        for name in ("num_waits", "min_thinking_tokens"):
            if getattr(self.forcing, name):
                raise MethodRefused(f"evaluate.{name}: {self.name} ends thinking early and forces no waits; set "
                                    f"{name} to 0 or leave {self.name} out of the methods compared")


class EarlyExitSettings(MethodSettings):
    probe_every: int = Field(32, ge=1, description="thinking tokens between probes")
    agree: int = Field(3, ge=1, description="consecutive probes that must give the same answer to stop")
    answer_tokens: int = Field(16, ge=1, description="most tokens of each trial answer")
    compare: Literal["equivalent", "string"] = Field(
        "equivalent", description="answers compared by grading equivalence, or as normalised strings")


def normalised(answer: str) -> str:
    """An extracted answer for string comparison: lower case, whitespace collapsed, a trailing period gone."""
    return re.sub(r"\s+", " ", answer).strip().rstrip(".").lower()


class EarlyExit(ProbingMethod):
    name = "early_exit"
    Settings = EarlyExitSettings

    def probe(self) -> ProbeSpec:
        s = self.settings
        return ProbeSpec(every=s.probe_every, answer_tokens=s.answer_tokens,
                         answer_prefix=self.forcing.final_answer_prefix)

    def answer_of(self, probe: Probe) -> str:
        """The answer a probe gave: extracted from its text; none where it wrote nothing after the forced prefix."""
        prefix = self.forcing.final_answer_prefix
        rest = probe.answer[len(prefix):] if prefix and probe.answer.startswith(prefix) else probe.answer
        return extract_answer(probe.answer) if rest.strip() else ""

    def same(self, a: str, b: str) -> bool:
        if self.settings.compare == "string":
            return normalised(a) == normalised(b)
        return grade(a, b)

    def stop(self, probes: Sequence[Probe]) -> bool:
        """The last ``agree`` probes all give the same non-empty answer."""
        k = self.settings.agree
        if len(probes) < k:
            return False
        last = [self.answer_of(p) for p in probes[-k:]]
        return bool(normalised(last[0])) and all(self.same(last[0], a) for a in last[1:])

    def describe(self) -> dict:
        return {**super().describe(), **self.settings.model_dump()}
