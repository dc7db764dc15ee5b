"""What every test-time method is: a name, a kind, the settings it sweeps, how it runs, what it spent.

A method is built from the decoding settings every method shares (:class:`Forcing`, evaluate's own keys), its
own params section (``evaluate.methods.<name>``, validated by the method's :class:`Settings`) and the token
budgets of the headline sweep. ``run(engine, questions, value)`` answers every question at one sweep value (a
thinking budget, a number of samples, a tree width, a number of waits); ``run_sweep`` answers at several values
and shares work between them where the method can (budget forcing thinks once for all its budgets, voting draws
its largest N once). Compute is what each result reports in ``compute_tokens``: its thinking tokens (parallel
methods: summed over samples or expanded nodes) and the tokens of any trial answers it probed.

    method = build("budget_forcing", Forcing(), {}, budgets=[48, 96])
    results = method.run(engine, ["What is 2 + 2?"], 48)
"""
from __future__ import annotations

from enum import Enum
from typing import Callable, ClassVar, NamedTuple, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from components.formatting import thinking_prompt
from components.inference.budget_forcing import BudgetSpec, ForcedResult
from components.inference.engine import Sampling

Progress = Optional[Callable[[int], None]]


class Kind(str, Enum):
    SEQUENTIAL = "sequential"  # one chain of thought per question, its length controlled
    PARALLEL = "parallel"      # independent samples per question, combined by a vote
    SEARCH = "search"          # a tree of partial chains guided by a reward


class MethodRefused(ValueError):
    """A method asked of a model or setting where it has no meaning (the message names the setting)."""


class Forcing(BaseModel):
    """The decoding and forcing settings every method shares (evaluate's keys of the same names)."""

    model_config = ConfigDict(frozen=True)

    min_thinking_tokens: int = Field(0, ge=0)
    num_waits: int = Field(0, ge=0)
    wait_strings: tuple[str, ...] = ("Wait",)
    final_answer_prefix: str = "Answer:"
    max_answer_tokens: int = Field(24, gt=0)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 7
    sample_temperature: float = Field(1.0, gt=0)

    def spec(self, max_thinking_tokens: Optional[int]) -> BudgetSpec:
        return BudgetSpec(max_thinking_tokens=max_thinking_tokens, min_thinking_tokens=self.min_thinking_tokens,
                          num_waits=self.num_waits, wait_strings=tuple(self.wait_strings),
                          final_answer_prefix=self.final_answer_prefix, max_answer_tokens=self.max_answer_tokens)

    def greedy(self) -> Sampling:
        """The headline decoding (greedy unless ``temperature`` says otherwise)."""
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed)

    def sampled(self, k: int) -> Sampling:
        """The ``k``-th independent sample's decoding (``sample_temperature``, its own seed)."""
        return Sampling(temperature=self.sample_temperature, top_p=self.top_p, seed=self.seed + 1000 * k)


class ModelUse(NamedTuple):
    """A model a method loads besides the engine's (REBASE's process reward model)."""

    key: str                 # its settings key (``reward``): pins and devices are reported under it
    name: str                # hub id, directory, or a registered name
    revision: Optional[str]  # the pinned commit of a hub id
    device: str              # where it runs (a name registered in code runs in process and ignores it)


class MethodSettings(BaseModel):
    """A method's own params section: unknown keys refused (a typo names itself), frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoSettings(MethodSettings):
    """A method with nothing to set beyond the shared decoding settings."""


def positive_counts(values: list[int], what: str) -> list[int]:
    """A non-empty list of counts >= 1 (samples, widths), else a ValueError naming ``what``."""
    if not values or any(v < 1 for v in values):
        raise ValueError(f"list {what} >= 1, got {values}")
    return values


class Method:
    """One test-time method. Subclasses set the class attributes and ``run``; ``run_sweep`` where the sweep's
    values share work."""

    name: ClassVar[str]
    kind: ClassVar[Kind] = Kind.SEQUENTIAL
    Settings: ClassVar[type[BaseModel]] = NoSettings
    value_label: ClassVar[str] = "B="        # how a sweep value is shown: B= thinking budget
    budgeted: ClassVar[bool] = True          # sweep values are thinking-token budgets (they bound thinking)
    shares_sweep: ClassVar[bool] = False     # run_sweep does the whole sweep's work at once
    answers_unbudgeted: ClassVar[bool] = False  # value None: thinking capped only by the engine's cap
    reach_setting: ClassVar[Optional[str]] = None  # the setting that lets thinking pass the sweep value, if any
    sweep_setting: ClassVar[Optional[str]] = None  # the setting listing the sweep values, when not evaluate.budgets
    samples_itself: ClassVar[bool] = False   # draws its own samples (sample_temperature), not the shared decoding

    def __init__(self, forcing: Forcing, settings: BaseModel, budgets: Sequence[int], trusted: Sequence[str] = ()):
        """``trusted``: models (hub ids or directories) allowed to run their repository's own code on load."""
        self.forcing, self.settings, self.budgets, self.trusted = forcing, settings, list(budgets), set(trusted)

    @classmethod
    def problems(cls, settings: BaseModel, trusted: Sequence[str]) -> list[str]:
        """What is wrong with ``settings`` beside the shared ones (``trusted``: evaluate.trust_remote_code), as
        messages naming the key; checked when the config is read."""
        return []

    @classmethod
    def models(cls, settings: BaseModel) -> list[ModelUse]:
        """The models the method loads besides the engine's (for pins and device checks before a run)."""
        return []

    def acquire(self) -> None:
        """Load what the method needs besides the engine (once per process), before its runs."""

    def release(self) -> None:
        """Free what :meth:`acquire` loaded."""

    def thinking_reach(self, value: int) -> int:
        """The most thinking tokens a run at budget ``value`` can take (more than ``value`` only where
        :attr:`reach_setting` allows it)."""
        return value

    def values(self) -> list[int]:
        """What the method's sweep varies (default: the headline's thinking budgets)."""
        return sorted(self.budgets)

    def run(self, engine, questions: Sequence[str], value: Optional[int], progress: Progress = None
            ) -> list[ForcedResult]:
        raise NotImplementedError

    def run_sweep(self, engine, questions: Sequence[str], values: Sequence[Optional[int]], progress: Progress = None
                  ) -> dict[Optional[int], list[ForcedResult]]:
        """Every value's results; ``progress`` advances once per question over the whole sweep."""
        last = len(values) - 1
        return {v: self.run(engine, questions, v, progress if i == last else None) for i, v in enumerate(values)}

    def cost(self, questions: int, value: Optional[int]) -> int:
        """Generated sequences for ``questions`` at ``value``, to share parts out between workers."""
        return questions

    def sweep_cost(self, questions: int) -> int:
        """Generated sequences of the whole sweep (a shared sweep: its largest value's)."""
        costs = [self.cost(questions, v) for v in self.values()]
        return max(costs) if self.shares_sweep else sum(costs)

    def check(self, engine) -> None:
        """Raise :class:`MethodRefused` where the method has no meaning for this engine's model."""

    def prompts(self, engine, questions: Sequence[str]) -> list[str]:
        return [thinking_prompt(engine.tokenizer, q) for q in questions]

    def describe(self) -> dict:
        """What the report records of the method beside its points."""
        return {"kind": self.kind.value, "value_label": self.value_label}
