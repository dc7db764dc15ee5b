"""The engine protocol every inference backend implements (HF transformers, vLLM).

Prompts are text or token ids. ``generate`` (plain batched generation with stop tokens, min/max new tokens,
sampling, logit bias / banned tokens), ``generate_forced`` (budget forcing, see
:mod:`components.inference.budget_forcing`; an optional ``on_token(index, token,
phase)`` callback sees each generated token, for streaming; a sampled prompt draws
with ``seeds[i]`` if given, else ``sampling.seed + i``, whatever else shares its batch), ``shutdown`` (free
the engine) and ``context_length`` (the model's maximum sequence length, or None).
The async vLLM engine offers the same calls as coroutines.

    out = engine.generate(prompts, Sampling(max_new_tokens=32, stop_token_ids=(im_end,)))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence, Union

from components.inference.budget_forcing import BudgetSpec, ForcedResult, Phase


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters shared by both calls (``max/min_new_tokens`` and stops: ``generate`` only)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    logit_bias: dict[int, float] = field(default_factory=dict)
    banned_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens ({self.min_new_tokens}) > max_new_tokens ({self.max_new_tokens})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def biases(self) -> dict[int, float]:
        """logit_bias with banned tokens folded in as -inf."""
        out = dict(self.logit_bias)
        out.update({t: float("-inf") for t in self.banned_token_ids})
        return out


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (a stop token) or "length"


class Engine(Protocol):
    name: str
    tokenizer: object
    batch_size: int

    def generate(self, prompts: Sequence[Union[str, Sequence[int]]], sampling: Sampling) -> list[Completion]: ...

    @property
    def context_length(self) -> Optional[int]: ...

    def generate_forced(self, prompts: Sequence[Union[str, Sequence[int]]], specs: Sequence[BudgetSpec], sampling: Sampling = ...,
                        progress: Optional[Callable[[int], None]] = None,
                        on_token: Optional[Callable[[int, int, Phase], None]] = None,
                        seeds: Optional[Sequence[int]] = None) -> list[ForcedResult]: ...

    def shutdown(self) -> None: ...


def row_seeds(prompts: Sequence, specs: Sequence, sampling: Sampling,
              seeds: Optional[Sequence[int]] = None) -> list[int]:
    """``generate_forced``'s checked inputs: one seed per prompt, ``seeds`` or ``sampling.seed`` + index."""
    if len(prompts) != len(specs) or (seeds is not None and len(seeds) != len(prompts)):
        raise ValueError(f"{len(prompts)} prompts but {len(specs)} budget specs"
                         + (f" and {len(seeds)} seeds" if seeds is not None else ""))
    return list(seeds) if seeds is not None else [sampling.seed + i for i in range(len(prompts))]
