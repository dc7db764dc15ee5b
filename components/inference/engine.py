"""The engine protocol every inference backend implements (HF transformers, vLLM), and the engine factory.

Prompts are text or token ids. ``generate`` (plain batched generation with stop tokens, min/max new tokens,
sampling, logit bias / banned tokens), ``generate_forced`` (budget forcing, see
:mod:`components.inference.budget_forcing`; an optional ``on_token(index, token,
phase)`` callback sees each generated token, for streaming; a sampled prompt draws
with ``seeds[i]`` if given, else ``sampling.seed + i``, whatever else shares its batch), ``shutdown`` (free
the engine), ``context_length`` (the model's maximum sequence length, or None), ``vocab`` (the token ids
budget forcing needs) and ``unlimited`` (the thinking cap of a spec without ``max_thinking_tokens``).
The async vLLM engine offers the same calls as coroutines.

``engine.backend`` names a backend in :data:`ENGINES`; :func:`build_engine` imports its module only when it is
built, so vLLM loads only for the vllm backend.

    engine = build_engine(EngineConfig(backend="hf"), "float32", "models/tiny/sft")
    out = engine.generate(prompts, Sampling(max_new_tokens=32, stop_token_ids=(engine.vocab.end_id,)))
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Sequence, Union

from components.config import EngineConfig
from components.inference.budget_forcing import BudgetSpec, ForcedResult, ForcingVocab, Phase


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
    # log-probability of each generated token in the distribution it was chosen from (after logit bias and bans;
    # sampled: after temperature and top-p, vLLM's processed_logprobs), or None where the engine gives none
    logprobs: Optional[list[float]] = None


class Engine(Protocol):
    name: str  # the backend: "hf" or "vllm"
    tokenizer: object
    batch_size: int  # prompts per batch (vLLM: sequences in flight)
    vocab: ForcingVocab  # the token ids budget forcing needs: stops, delimiter, end of turn, banned
    unlimited: int  # the thinking cap: a spec without max_thinking_tokens thinks at most this many tokens

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


ENGINES: dict[str, str] = {
    "hf": "components.inference.hf_engine:HFEngine",
    "vllm": "components.inference.vllm_engine:VLLMEngine",
}

# Serving replicas want the async form where a backend has one (continuous batching, streaming, aborts).
SERVING_ENGINES: dict[str, str] = {**ENGINES, "vllm": "components.inference.vllm_engine:AsyncVLLMEngine"}

# The package each engine needs beyond the core install.
REQUIRES = {"vllm": "vllm"}


def engine_problem(name: str) -> str | None:
    """Why ``name`` cannot run here, or None."""
    if name not in ENGINES:
        return f"{name!r} is not an engine; choose one of {sorted(ENGINES)}"
    need = REQUIRES.get(name)
    if need and importlib.util.find_spec(need) is None:
        return (f"{name!r} needs the {need} package: install the gpu extra (pip install -e .[gpu]) on a GPU "
                "machine, or use `make vllm-env` for the CPU build; or choose 'hf'")
    return None


def build_engine(cfg: EngineConfig, dtype: str, model: str, batch_size: Optional[int] = None, serving: bool = False,
                 revision: Optional[str] = None, **backend_options: Any) -> Engine:
    """The ``engine`` section's backend for a model directory or hub id, ``batch_size`` prompts per batch (default
    ``cfg.batch_size``). ``serving=True``: the async engine where the backend has one (its calls are coroutines).
    ``revision``: the hub commit of a hub id (model.revision, difficulty.revisions), passed to every load.
    ``backend_options``: more arguments of the backend's ``from_pretrained`` (vLLM: ``gpu_memory_utilization``;
    the section's ``max_num_batched_tokens`` and ``kv_cache_blocks`` are passed when set)."""
    module, cls = (SERVING_ENGINES if serving else ENGINES)[cfg.backend].split(":")
    if cfg.backend == "vllm":
        scheduling = {k: v for k, v in (("max_num_batched_tokens", cfg.max_num_batched_tokens),
                                        ("kv_cache_blocks", cfg.kv_cache_blocks)) if v is not None}
        backend_options = {"tensor_parallel_size": cfg.tensor_parallel_size, **scheduling, **backend_options}
    return getattr(importlib.import_module(module), cls).from_pretrained(
        str(model), dtype, batch_size=batch_size or cfg.batch_size,
        unlimited_thinking_tokens=cfg.unlimited_thinking_tokens, revision=revision, **backend_options)
