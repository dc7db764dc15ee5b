"""HF transformers engine: batched, left-padded generation with budget forcing.

The :class:`BudgetForcer` acts on each step's scores inside the decoding loop
(:mod:`components.inference.decoding`: finished rows leave the batch), so a forced
"Wait" costs only its own tokens (the KV cache is kept). Sampled rows draw from
their own generators (seeded ``seeds[i]``, default ``sampling.seed`` + the prompt's
index): a prompt's sample does not depend on the batch it shares.

    engine = HFEngine.from_pretrained("models/tiny/sft")
    results = engine.generate_forced(prompts, [BudgetSpec(max_thinking_tokens=64)] * len(prompts))
"""
from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence, Union

import torch

from components.inference.attention import use_grouped_sdpa
from components.inference.budget_forcing import (
    BudgetForcer,
    BudgetSpec,
    ForcedResult,
    ForcingVocab,
    Phase,
    max_new_tokens_for,
    split_result,
)
from components.inference.decoding import decode, left_padded, sample, shrinkable_cache, top_p_filter, warp
from components.inference.engine import Completion, Sampling, row_seeds
from components.inference.thinking_cap import capped_specs
from components.modeling import load_model

if TYPE_CHECKING:
    from components.inference.probing import ProbeSpec


class RollingJob(Protocol):
    """One generation handed to :meth:`HFEngine.generate_rolling` (the server's queue item)."""

    prompt: Sequence[int]
    spec: BudgetSpec
    seed: int

    def gone(self) -> bool:
        """True once nobody waits for it: its row leaves at its next token."""

    def on_token(self, token: int, phase: Phase) -> None:
        """Each token as it is generated (streaming)."""

    def finish(self, result: ForcedResult) -> None:
        """Its row ended (finished, cut at its limit, or left because it was gone)."""

    def fail(self, error: Exception) -> None:
        """It could not join (its prompt's checks or prefill failed); the rows running beside it go on."""

# Defaults a hub model's generation_config may carry that ``model.generate`` would apply on its own
# (Qwen2.5-Instruct: repetition_penalty 1.05); the engine applies only the request's Sampling, as vLLM does.
_NEUTRAL = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0,
            "bad_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None}


def warn_unapplied_generation_defaults(model) -> dict:
    """Log the generation_config defaults this engine does not apply (when it is built); returns them."""
    config = getattr(model, "generation_config", None)
    found = {k: getattr(config, k, None) for k, neutral in _NEUTRAL.items()
             if getattr(config, k, None) not in (neutral, None)}
    if found:
        logging.getLogger(__name__).warning(
            "HF engine: the model's generation_config sets %s; not applied (the engine samples with each "
            "request's temperature/top_p/seed/logit_bias only, as the vLLM engine does)", found)
    return found


class HFEngine:
    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 64, unlimited_thinking_tokens: int = 1024):
        self.model, self.tokenizer = model, tokenizer
        warn_unapplied_generation_defaults(model)
        use_grouped_sdpa(model)  # on a CPU: no copy of the KV cache per query head
        self.batch_size, self.unlimited = batch_size, unlimited_thinking_tokens
        self.vocab = ForcingVocab.from_tokenizer(tokenizer)

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "float32", revision: Optional[str] = None, **kw) -> "HFEngine":
        model, tokenizer = load_model(path, dtype, revision=revision)
        return cls(model, tokenizer, **kw)

    @property
    def context_length(self) -> Optional[int]:
        return getattr(self.model.config, "max_position_embeddings", None)

    def shutdown(self) -> None:
        """Drop the model's weights (the engine is unusable afterwards)."""
        self.model = None
        import gc
        gc.collect()

    def _encode(self, prompts: Sequence[Union[str, Sequence[int]]]):
        """Left-padded input ids and mask for prompts given as text or as token ids (one kind per call)."""
        if prompts and not isinstance(prompts[0], str):
            return self.tokenizer.pad({"input_ids": [list(p) for p in prompts]}, return_tensors="pt", padding=True)
        return self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)

    def _generate_batch(self, prompts: Sequence[str], specs: Sequence[BudgetSpec], sampling: Sampling,
                        seeds: Sequence[int], on_token=None,
                        cancelled: Optional[Callable[[int], bool]] = None) -> list[ForcedResult]:
        enc = self._encode(prompts)
        forcer = BudgetForcer(specs, self.vocab, do_sample=not sampling.greedy, seeds=seeds, on_token=on_token)
        pick = self._forced_pick(forcer, sampling, forcer.observe)

        gone = cancelled or (lambda row: False)
        # a batch whose callers all went away is not run; a row whose caller went away leaves at its next token
        steps = 0 if all(gone(r) for r in range(len(prompts))) else max_new_tokens_for(specs, self.vocab, self.unlimited)
        generated = decode(self.model, enc["input_ids"], enc["attention_mask"], steps, pick,
                           done=lambda row, token: forcer.states[row].phase is Phase.DONE or gone(row))
        return [split_result(st, gen, self.vocab) for st, gen in zip(forcer.states, generated)]

    def generate_forced(self, prompts: Sequence[Union[str, Sequence[int]]], specs: Sequence[BudgetSpec],
                        sampling: Sampling = Sampling(), progress: Optional[Callable[[int], None]] = None,
                        on_token: Optional[Callable] = None,
                        seeds: Optional[Sequence[int]] = None,
                        cancelled: Optional[Callable[[int], bool]] = None) -> list[ForcedResult]:
        """``on_token(index, token, phase)``: each token as it is generated (index into ``prompts``). ``seeds``:
        one per prompt (default ``sampling.seed`` + its index). ``cancelled(index)``: true once nobody waits for
        that prompt (a client that went away); its row stops at its next token (before its prefill when every
        row of a batch is cancelled) and its result is what it had, to be discarded."""
        seeds = row_seeds(prompts, specs, sampling, seeds)
        specs = capped_specs(prompts, specs, self.vocab, self.tokenizer, self.unlimited, self.context_length)
        results: list[ForcedResult] = []
        for start in range(0, len(prompts), self.batch_size):
            end = min(start + self.batch_size, len(prompts))
            shifted = (lambda row, tok, ph, _s=start: on_token(row + _s, tok, ph)) if on_token else None
            gone = (lambda row, _s=start: cancelled(row + _s)) if cancelled else None
            results += self._generate_batch(prompts[start:end], specs[start:end], sampling,
                                            seeds=seeds[start:end], on_token=shifted, cancelled=gone)
            if progress:
                progress(end - start)
        return results

    def generate_probed(self, prompts: Sequence[Union[str, Sequence[int]]], specs: Sequence[BudgetSpec],
                        probe: "ProbeSpec", stop_rule: Callable, sampling: Sampling = Sampling(),
                        seeds: Optional[Sequence[int]] = None,
                        progress: Optional[Callable[[int], None]] = None) -> list[ForcedResult]:
        """:func:`components.inference.probing.generate_probed` inside the decoding loop: thinking is budget
        forcing's, and each probe runs on a fork of its row's KV cache (the row's last token, the delimiter, the
        prefix and the trial answer are all it computes), discarded after the trial answer. A model whose cache
        rows cannot leave the batch probes by chunks (:func:`~components.inference.probing.probed_by_chunks`)."""
        from components.inference.probing import check_probed, probed_by_chunks
        check_probed(specs)
        if shrinkable_cache(self.model) is None:
            return probed_by_chunks(self, prompts, specs, probe, stop_rule, sampling, seeds, progress)
        seeds = row_seeds(prompts, specs, sampling, seeds)
        specs = capped_specs(prompts, specs, self.vocab, self.tokenizer, self.unlimited, self.context_length)
        results: list[ForcedResult] = []
        for start in range(0, len(prompts), self.batch_size):
            end = min(start + self.batch_size, len(prompts))
            results += self._probed_batch(prompts[start:end], specs[start:end], probe, stop_rule, sampling,
                                          seeds[start:end])
            if progress:
                progress(end - start)
        return results

    def _probed_batch(self, prompts, specs, probe, stop_rule, sampling: Sampling, seeds) -> list[ForcedResult]:
        from components.inference.probing import ProbeBrancher
        enc = self._encode(prompts)
        forcer = BudgetForcer(specs, self.vocab, do_sample=not sampling.greedy, seeds=seeds)
        bias = self._bias(sampling)
        brancher = ProbeBrancher(forcer, probe, stop_rule, sampling, bias)
        pick = self._forced_pick(forcer, sampling, brancher.observe, bias)

        steps = max_new_tokens_for(specs, self.vocab, self.unlimited)
        generated = decode(self.model, enc["input_ids"], enc["attention_mask"], steps, pick,
                           done=lambda row, token: forcer.states[row].phase is Phase.DONE, brancher=brancher)
        return [brancher.result(row, split_result(st, gen, self.vocab))
                for row, (st, gen) in enumerate(zip(forcer.states, generated))]

    def _forced_pick(self, forcer: BudgetForcer, sampling: Sampling, observe: Callable[[int, int], None],
                     bias: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        """The decoding loop's ``pick`` under budget forcing: bias, then the forcer's action on each row, then the
        argmax (greedy) or a draw from the row's own generator; each chosen token reported to ``observe``."""
        bias = bias or self._bias(sampling)

        def pick(rows: list[int], scores: torch.Tensor) -> torch.Tensor:
            scores = bias(scores)
            if sampling.greedy:
                tokens = forcer.apply(rows, scores).argmax(dim=-1)
            else:  # "would stop" read in the distribution the token is drawn from; its bans before the nucleus
                tempered = scores / sampling.temperature  # is cut, so a nucleus of banned tokens leaves the rest
                signal = top_p_filter(tempered, sampling.top_p)  # read by apply before its in-place bans
                scores = top_p_filter(forcer.apply(rows, tempered, signal_scores=signal), sampling.top_p)
                tokens = sample(scores, [forcer.states[r].generator for r in rows])
            for row, token in zip(rows, tokens.tolist()):
                observe(row, token)
            return tokens
        return pick

    def generate_rolling(self, jobs: Sequence["RollingJob"], more: Callable[[int], Sequence["RollingJob"]],
                         sampling: Sampling, max_rows: Optional[int] = None) -> None:
        """Continuous batching (a server's engine loop): ``jobs`` start decoding, and between steps ``more(room)``
        hands over up to ``room`` jobs that join the running batch (at most ``max_rows``, default ``batch_size``,
        rows decode at once), until no row is left and ``more`` has none. Each job's ``finish(result)`` is called
        the moment its row ends (``fail(error)`` if it could not join: the others go on); a job whose ``gone()``
        turns true leaves at its next token. ``sampling`` is every job's (its seed the job's own). A model whose
        cache rows cannot join runs ``jobs`` first and asks ``more`` after."""
        limit = self.context_length or 1 << 30  # a safety net: the forcer ends every row (answer cap, then end)
        rows = max_rows or self.batch_size
        while jobs:  # one decoding run, unless the model's rows cannot join one (then one per batch)
            self._rolling_run(jobs, more, sampling, limit, rows)
            jobs = more(rows)

    def _rolling_run(self, jobs: Sequence["RollingJob"], more: Callable[[int], Sequence["RollingJob"]],
                     sampling: Sampling, limit: int, rows: int) -> None:
        table: list[RollingJob] = []  # the job behind each row of the run
        forcer = BudgetForcer([], self.vocab, do_sample=not sampling.greedy,
                              on_token=lambda row, token, phase: table[row].on_token(token, phase))

        def admit(batch: Sequence[RollingJob]) -> list[list[int]]:
            prompts = [list(j.prompt) for j in batch]
            try:
                specs = capped_specs(prompts, [j.spec for j in batch], self.vocab, self.tokenizer, self.unlimited,
                                     self.context_length)
            except Exception as error:  # these jobs fail; the running rows go on
                for job in batch:
                    job.fail(error)
                return []
            for job, spec in zip(batch, specs):
                forcer.add(spec, job.seed)
                table.append(job)
            return prompts

        def rejected(rows_: list[int], error: Exception) -> None:
            for row in rows_:
                table[row].fail(error)

        def refill(active: int) -> list[list[int]]:
            return admit(more(rows - active)) if active < rows else []

        def finished(row: int, tokens: list[int]) -> None:
            table[row].finish(split_result(forcer.states[row], tokens, self.vocab))

        prompts = admit(jobs)
        if not prompts:
            return
        ids, mask = left_padded(prompts, self.model.device)
        decode(self.model, ids, mask, limit, self._forced_pick(forcer, sampling, forcer.observe),
               done=lambda row, token: forcer.states[row].phase is Phase.DONE or table[row].gone(),
               refill=refill, finished=finished, rejected=rejected)

    @staticmethod
    def _bias(sampling: Sampling) -> Callable[[torch.Tensor], torch.Tensor]:
        """``logit_bias`` and the banned tokens (-inf), added to every row's scores in place."""
        biases = sampling.biases()
        if not biases:
            return lambda scores: scores
        ids, values = torch.tensor(list(biases)), torch.tensor(list(biases.values()), dtype=torch.float32)

        def add(scores: torch.Tensor) -> torch.Tensor:
            scores[:, ids] += values.to(scores.device)
            return scores
        return add

    def generate(self, prompts: Sequence[Union[str, Sequence[int]]], sampling: Sampling,
                 seeds: Optional[Sequence[int]] = None) -> list[Completion]:
        """Plain batched generation; stops at any of ``sampling.stop_token_ids`` (default ``<|im_end|>``).
        Prompts are text, or token ids (e.g. a prompt and the thinking already generated for it). A sampled
        prompt draws with ``seeds[i]`` if given, else ``sampling.seed`` + its index. Each completion carries
        its tokens' log-probabilities (the scores after bias and bans; sampled: tempered and top-p cut)."""
        stops = list(sampling.stop_token_ids or (self.vocab.end_id,))
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        seeds = list(seeds) if seeds is not None else [sampling.seed + i for i in range(len(prompts))]
        bias = self._bias(sampling)
        out: list[Completion] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start:start + self.batch_size])
            enc = self._encode(chunk)
            generators = [torch.Generator().manual_seed(int(seeds[start + i])) for i in range(len(chunk))]
            logprobs: list[list[float]] = [[] for _ in chunk]
            step = itertools.count()

            def pick(rows: list[int], scores: torch.Tensor, _gens=generators, _step=step, _lp=logprobs
                     ) -> torch.Tensor:
                scores = bias(scores)
                if next(_step) < sampling.min_new_tokens:  # every active row has made as many tokens
                    scores[:, stops] = float("-inf")
                if not sampling.greedy:
                    scores = warp(scores, sampling.temperature, sampling.top_p)
                tokens = scores.argmax(dim=-1) if sampling.greedy else sample(scores, [_gens[r] for r in rows])
                chosen = torch.log_softmax(scores, dim=-1).gather(-1, tokens[:, None])[:, 0]
                for row, lp in zip(rows, chosen.tolist()):
                    _lp[row].append(lp)
                return tokens

            generated = decode(self.model, enc["input_ids"], enc["attention_mask"], sampling.max_new_tokens,
                               pick, done=lambda row, token: token in stops)
            for row, kept in enumerate(generated):
                stopped = bool(kept) and kept[-1] in stops
                out.append(Completion(
                    token_ids=kept, text=self.tokenizer.decode(kept[:-1] if stopped else kept,
                                                               skip_special_tokens=True),
                    prompt_tokens=int(enc["attention_mask"][row].sum()), completion_tokens=len(kept),
                    finish_reason="stop" if stopped else "length", logprobs=logprobs[row],
                ))
        return out
