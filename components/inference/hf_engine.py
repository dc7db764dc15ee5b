"""HF transformers engine: batched, left-padded generation with budget forcing.

The :class:`BudgetForcer` runs inside ``model.generate`` as a logits processor,
so a forced "Wait" costs only its own tokens (the KV cache is kept).

    engine = HFEngine.from_pretrained("models/tiny/sft")
    results = engine.generate_forced(prompts, [BudgetSpec(max_thinking_tokens=64)] * len(prompts))
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Union

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from components.data.base_model import load_model
from components.inference.attention import use_grouped_sdpa
from components.inference.budget_forcing import (
    BudgetForcer,
    BudgetSpec,
    ForcedResult,
    ForcingVocab,
    max_new_tokens_for,
    split_result,
)
from components.inference.engine import Completion, Sampling


class LogitBiasProcessor(LogitsProcessor):
    """Adds a fixed bias to chosen token ids (OpenAI's ``logit_bias``); runs before forcing."""

    def __init__(self, bias: dict[int, float]):
        self.ids = torch.tensor(list(bias.keys()), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.ids] += self.values.to(scores.dtype)
        return scores


class BudgetForcingLogitsProcessor(LogitsProcessor):
    def __init__(self, forcer: BudgetForcer, prompt_len: int):
        self.forcer, self.prompt_len, self.observed = forcer, prompt_len, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.observed = input_ids.shape[1] - self.prompt_len  # generated tokens seen so far
        return self.forcer.step(input_ids[:, -1].tolist() if self.observed > 0 else None, scores)

    def observe_rest(self, generated: torch.LongTensor) -> None:
        """``generate`` never shows the processor its final token: account for (and report) it."""
        for pos in range(self.observed, generated.shape[1]):
            for row, tok in enumerate(generated[:, pos].tolist()):
                self.forcer.observe(row, tok)


class HFEngine:
    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 64, unlimited_thinking_tokens: int = 1024):
        self.model, self.tokenizer = model, tokenizer
        use_grouped_sdpa(model)  # on a CPU: no copy of the KV cache per query head
        self.batch_size, self.unlimited = batch_size, unlimited_thinking_tokens
        self.vocab = ForcingVocab.from_tokenizer(tokenizer)

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "float32", **kw) -> "HFEngine":
        model, tokenizer = load_model(path, dtype)
        return cls(model, tokenizer, **kw)

    @property
    def context_length(self) -> Optional[int]:
        return getattr(self.model.config, "max_position_embeddings", None)

    def shutdown(self) -> None:
        """Drop the model's weights (the engine is unusable afterwards)."""
        self.model = None
        import gc
        gc.collect()

    def _cap(self, spec: BudgetSpec) -> BudgetSpec:
        if spec.max_thinking_tokens is None:
            return dataclasses.replace(spec, max_thinking_tokens=self.unlimited)
        return spec

    def _encode(self, prompts: Sequence[Union[str, Sequence[int]]]):
        """Left-padded input ids and mask for prompts given as text or as token ids (one kind per call)."""
        if prompts and not isinstance(prompts[0], str):
            return self.tokenizer.pad({"input_ids": [list(p) for p in prompts]}, return_tensors="pt", padding=True)
        return self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)

    @torch.inference_mode()
    def _generate_batch(self, prompts: Sequence[str], specs: Sequence[BudgetSpec], sampling: Sampling,
                        seeds: Sequence[int], on_token=None) -> list[ForcedResult]:
        enc = self._encode(prompts)
        forcer = BudgetForcer(specs, self.vocab, do_sample=not sampling.greedy, seeds=seeds, on_token=on_token)
        prompt_len = enc["input_ids"].shape[1]
        kwargs = self._sampling_kwargs(sampling, int(seeds[0]))
        processors = self._bias_processors(sampling)
        forcing = BudgetForcingLogitsProcessor(forcer, prompt_len)
        processors.append(forcing)
        out = self.model.generate(
            **enc, max_new_tokens=max_new_tokens_for(specs, self.vocab, self.unlimited),
            logits_processor=LogitsProcessorList(processors),
            eos_token_id=self.vocab.end_id, pad_token_id=self.tokenizer.pad_token_id, **kwargs,
        )
        forcing.observe_rest(out[:, prompt_len:])
        return [split_result(st, out[i, prompt_len:].tolist(), self.vocab) for i, st in enumerate(forcer.states)]

    def generate_forced(self, prompts: Sequence[Union[str, Sequence[int]]], specs: Sequence[BudgetSpec],
                        sampling: Sampling = Sampling(), progress: Optional[Callable[[int], None]] = None,
                        on_token: Optional[Callable] = None) -> list[ForcedResult]:
        """``on_token(index, token, phase)``: each token as it is generated (index into ``prompts``)."""
        if len(prompts) != len(specs):
            raise ValueError(f"{len(prompts)} prompts but {len(specs)} budget specs")
        specs = [self._cap(s) for s in specs]
        results: list[ForcedResult] = []
        for start in range(0, len(prompts), self.batch_size):
            end = min(start + self.batch_size, len(prompts))
            shifted = (lambda row, tok, ph, _s=start: on_token(row + _s, tok, ph)) if on_token else None
            results += self._generate_batch(prompts[start:end], specs[start:end], sampling,
                                            seeds=[sampling.seed + i for i in range(start, end)], on_token=shifted)
            if progress:
                progress(end - start)
        return results

    @staticmethod
    def _bias_processors(sampling: Sampling) -> list:
        biases = sampling.biases()
        return [LogitBiasProcessor(biases)] if biases else []

    @staticmethod
    def _sampling_kwargs(sampling: Sampling, seed_offset: int) -> dict:
        if sampling.greedy:
            return dict(do_sample=False)
        torch.manual_seed(sampling.seed + seed_offset)
        return dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Union[str, Sequence[int]]], sampling: Sampling) -> list[Completion]:
        """Plain batched generation; stops at any of ``sampling.stop_token_ids`` (default ``<|im_end|>``).
        Prompts are text, or token ids (e.g. a prompt and the thinking already generated for it)."""
        stops = list(sampling.stop_token_ids or (self.vocab.end_id,))
        out: list[Completion] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start:start + self.batch_size])
            enc = self._encode(chunk)
            width = enc["input_ids"].shape[1]
            ids = self.model.generate(
                **enc, max_new_tokens=sampling.max_new_tokens, min_new_tokens=sampling.min_new_tokens,
                logits_processor=LogitsProcessorList(self._bias_processors(sampling)),
                eos_token_id=stops, pad_token_id=self.tokenizer.pad_token_id,
                **self._sampling_kwargs(sampling, start),
            )
            for row in range(len(chunk)):
                gen = ids[row, width:].tolist()
                stop_at = next((i for i, t in enumerate(gen) if t in stops), None)
                kept = gen if stop_at is None else gen[: stop_at + 1]
                text_ids = kept if stop_at is None else kept[:-1]
                out.append(Completion(
                    token_ids=kept, text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
                    prompt_tokens=int(enc["attention_mask"][row].sum()), completion_tokens=len(kept),
                    finish_reason="length" if stop_at is None else "stop",
                ))
        return out
