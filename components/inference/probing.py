"""Answer probing: thinking that a stop rule ends once trial answers say the model has settled.

While a prompt thinks, a *probe* asks what it would answer now: in a side branch, the
prompt and the thinking so far are followed by the end-of-thinking delimiter and the
answer prefix, and a short trial answer is decoded greedily (``answer_tokens`` at most,
ending at ``<|im_end|>``). Probes are taken after every ``every`` thinking tokens and/or
after each transition string in ``at`` (``"Wait"``, a new line). After each probe,
``stop_rule(probes)`` (the row's probes so far) decides whether thinking ends now; if so,
the answer is forced as budget forcing forces it at the budget (delimiter and answer
prefix, then the answer). Thinking never passes ``spec.max_thinking_tokens`` (without one:
the engine's unlimited cap); the model ending its thinking ends it (its delimiter, no
prefix, as budget forcing). A probe's tokens (forced delimiter and prefix, trial answer)
are counted in the result's ``probe_tokens``; its record is in ``probes``.

:func:`generate_probed` runs on any engine: an engine with its own ``generate_probed`` (the
HF engine: each probe forks the rows' KV cache inside the decoding loop, so nothing of the
prefix is recomputed) runs it there; any other (vLLM offline, vLLM async behind a sync
facade) goes through :func:`probed_by_chunks`, which thinks in chunks with plain
``generate`` calls continued from token ids (rows batched per call) and probes with a
``generate`` call per round. On vLLM, prefix caching (on in the engine's construction)
keeps the prompt's and the thinking's KV blocks between those calls: each call recomputes
only the tokens after the last full cached block (at most a block of 16 tokens) and its new
tokens (the probe's delimiter, prefix and trial answer).

Decisions follow budget forcing's exactly under greedy decoding: a chunk stops at a stop
token (the model ends thinking), at a never-generated token (``<|endoftext|>``, pad: that
one step is chosen again with it and the stop tokens banned, as the forcer does) or at the
last token of a transition, so a greedy probed run whose rule never fires equals
``generate_forced`` at the same budget, and the two paths give the same tokens (up to
float-level differences between prefilled and incrementally decoded attention).
Forced waits and a minimum of thinking are not probing's (a spec with either is refused).

    probe = ProbeSpec(every=32, answer_tokens=16, answer_prefix="Answer:")
    results = generate_probed(engine, prompts, [BudgetSpec(max_thinking_tokens=256)] * len(prompts), probe,
                              stop_rule=lambda probes: len(probes) >= 2 and probes[-1].answer == probes[-2].answer)
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import torch

from components.inference.budget_forcing import BudgetSpec, ForcedResult, ForcingVocab, Phase, Probe
from components.inference.engine import Sampling
from components.inference.thinking_cap import capped_specs

StopRule = Callable[[Sequence[Probe]], bool]


@dataclass(frozen=True)
class ProbeSpec:
    """Where to probe (``every`` thinking tokens and/or after each transition string in ``at``) and how
    (``answer_tokens`` of trial answer after the delimiter and ``answer_prefix``)."""

    every: Optional[int] = None
    at: tuple[str, ...] = ()
    answer_tokens: int = 16
    answer_prefix: str = ""

    def __post_init__(self):
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be >= 1 thinking tokens, got {self.every}")
        if any(not s for s in self.at):
            raise ValueError("at: a transition string must not be empty")
        if self.every is None and not self.at:
            raise ValueError("a probe needs every (thinking tokens between probes) or at (transition strings)")
        if self.answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1, got {self.answer_tokens}")


_TEXTS: dict[int, tuple[object, list[tuple[int, str]]]] = {}  # tokenizer id -> (tokenizer, each token's text)
_ENDING: "OrderedDict[tuple[int, str], frozenset[int]]" = OrderedDict()  # the most recent strings' token sets
_ENDING_KEPT = 256


def _token_texts(tokenizer) -> list[tuple[int, str]]:
    """Every vocabulary token's id and text, decoded once per tokenizer."""
    hit = _TEXTS.get(id(tokenizer))
    if hit is None or hit[0] is not tokenizer:
        hit = _TEXTS[id(tokenizer)] = (tokenizer, [(i, tokenizer.convert_tokens_to_string([t]))
                                                   for t, i in tokenizer.get_vocab().items()])
    return hit[1]


def tokens_ending_with(tokenizer, text: str) -> frozenset[int]:
    """Ids of the vocabulary's tokens whose text ends with ``text``: the vocabulary is decoded once per tokenizer,
    then each string is a filter over it; the last :data:`_ENDING_KEPT` strings' answers are kept (a server
    asked for ever new strings holds a bounded cache)."""
    key = (id(tokenizer), text)
    if key in _ENDING:
        _ENDING.move_to_end(key)
        return _ENDING[key]
    ids = _ENDING[key] = frozenset(i for i, s in _token_texts(tokenizer) if s.endswith(text))
    while len(_ENDING) > _ENDING_KEPT:
        _ENDING.popitem(last=False)
    return ids


class Transitions:
    """Whether thinking has just emitted a transition string: its last token's text ends with one, or its last
    tokens are one's encoding (a string split over tokens)."""

    def __init__(self, tokenizer, strings: Sequence[str]):
        self.encoded = [tuple(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in strings]
        self.ending = frozenset().union(*(tokens_ending_with(tokenizer, s) for s in strings))
        self.last_ids = self.ending | {e[-1] for e in self.encoded if e}  # a transition ends with one of these

    def ends(self, ids: Sequence[int]) -> bool:
        if not ids:
            return False
        return ids[-1] in self.ending or any(e and tuple(ids[-len(e):]) == e for e in self.encoded)


def transitions_for(tokenizer, probe: ProbeSpec) -> Optional[Transitions]:
    return Transitions(tokenizer, probe.at) if probe.at else None


def probe_due(probe: ProbeSpec, transitions: Optional[Transitions], thinking: Sequence[int], budget: int) -> bool:
    """Whether thinking ``thinking`` (under ``budget``) is a probe point: a multiple of ``every``, or just
    after a transition. The budget itself is none (the answer is forced there anyway)."""
    n = len(thinking)
    if n == 0 or n >= budget:
        return False
    return bool(probe.every and n % probe.every == 0) or (transitions is not None and transitions.ends(thinking))


def probe_head(vocab: ForcingVocab, probe: ProbeSpec) -> tuple[int, ...]:
    """The tokens a probe forces after the thinking: the delimiter and the answer prefix."""
    return tuple(vocab.delimiter_ids) + (vocab.encode(probe.answer_prefix) if probe.answer_prefix else ())


def probe_bans(vocab: ForcingVocab, sampling: Sampling) -> tuple[int, ...]:
    """Tokens an answer never takes (as budget forcing's answer phase): ``<|im_start|>`` and the never-generated."""
    return tuple(sampling.banned_token_ids) + (vocab.stop_ids[0], *vocab.banned_ids)


def make_probe(vocab: ForcingVocab, probe: ProbeSpec, thinking_tokens: int, tokens: Sequence[int],
               logprobs: Optional[Sequence[float]]) -> Probe:
    """A probe's record from its trial answer's tokens (its closing ``<|im_end|>`` included, if reached) and
    their log-probabilities; the mean probability leaves out the closing token unless it is all there is."""
    tokens, lps = list(tokens), list(logprobs or [])
    body, body_lps = tokens, lps
    if len(tokens) > 1 and tokens[-1] == vocab.end_id:
        body, body_lps = tokens[:-1], lps[:-1]
    prefix = vocab.encode(probe.answer_prefix) if probe.answer_prefix else ()
    text = vocab.tokenizer.decode(list(prefix) + [t for t in body if t != vocab.end_id and t not in vocab.banned_ids])
    mean = sum(math.exp(x) for x in body_lps) / len(body_lps) if body_lps else 0.0
    return Probe(thinking_tokens=thinking_tokens, answer=text, mean_prob=mean,
                 tokens=len(probe_head(vocab, probe)) + len(tokens))


def check_probed(specs: Sequence[BudgetSpec]) -> None:
    for spec in specs:
        if spec.num_waits or spec.min_thinking_tokens:
            raise ValueError("num_waits / min_thinking_tokens: probing ends thinking early and forces no waits; "
                             "set both to 0 for an answer-probing controller")


def generate_probed(engine, prompts: Sequence[Union[str, Sequence[int]]], specs: Sequence[BudgetSpec],
                    probe: ProbeSpec, stop_rule: StopRule, sampling: Sampling = Sampling(),
                    seeds: Optional[Sequence[int]] = None,
                    progress: Optional[Callable[[int], None]] = None) -> list[ForcedResult]:
    """Each prompt thought under its spec, probed as ``probe`` says, thinking ended where ``stop_rule`` says
    (see the module docstring); on the engine's own ``generate_probed`` where it has one."""
    check_probed(specs)
    if len(prompts) != len(specs) or (seeds is not None and len(seeds) != len(prompts)):
        raise ValueError(f"{len(prompts)} prompts but {len(specs)} budget specs"
                         + (f" and {len(seeds)} seeds" if seeds is not None else ""))
    own = getattr(engine, "generate_probed", None)
    if own is not None:
        return own(prompts, specs, probe, stop_rule, sampling, seeds=seeds, progress=progress)
    return probed_by_chunks(engine, prompts, specs, probe, stop_rule, sampling, seeds, progress)


@dataclass
class _Row:
    prompt: list[int]
    budget: int
    seed: int
    thinking: list[int] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    end: Optional[str] = None  # "model" (its delimiter), "budget", "exit" (the stop rule)
    repick: bool = False       # its last step chose a never-generated token: choose again with it banned
    probed_at: int = -1
    calls: int = 0


def probed_by_chunks(engine, prompts: Sequence[Union[str, Sequence[int]]], specs: Sequence[BudgetSpec],
                     probe: ProbeSpec, stop_rule: StopRule, sampling: Sampling = Sampling(),
                     seeds: Optional[Sequence[int]] = None,
                     progress: Optional[Callable[[int], None]] = None) -> list[ForcedResult]:
    """:func:`generate_probed` on any engine's plain ``generate`` (see the module docstring). Sampled thinking
    draws each chunk with a seed made from the row's seed (``seeds[i]``, default ``sampling.seed`` + i) and the
    chunk's number, whatever the batch."""
    check_probed(specs)
    v, tok = engine.vocab, engine.tokenizer
    specs = capped_specs(prompts, specs, v, tok, engine.unlimited, engine.context_length)
    row_seed = list(seeds) if seeds is not None else [sampling.seed + i for i in range(len(prompts))]
    rows = [_Row(prompt=list(tok(p, add_special_tokens=False)["input_ids"]) if isinstance(p, str) else list(p),
                 budget=s.max_thinking_tokens, seed=int(row_seed[i])) for i, (p, s) in enumerate(zip(prompts, specs))]
    for r in rows:
        r.end = "budget" if r.budget <= 0 else None
    transitions = transitions_for(tok, probe)
    chunk_stops = tuple(dict.fromkeys(v.stop_ids + v.banned_ids + tuple(sorted(transitions.last_ids)
                                                                        if transitions else ())))
    head = list(probe_head(v, probe))

    def call(members: list[_Row], texts: list[list[int]], params: Sampling):
        if params.greedy:
            return engine.generate(texts, params)
        return engine.generate(texts, params, seeds=[(r.seed * 7919 + r.calls) % 2**31 for r in members])

    while any(r.end is None for r in rows):
        groups: dict[tuple[int, bool], list[_Row]] = {}
        for r in rows:
            if r.end is not None:
                continue
            n, length = len(r.thinking), 1
            if not r.repick:
                length = r.budget - n
                if probe.every:
                    length = min(length, probe.every - n % probe.every)
            groups.setdefault((length, r.repick), []).append(r)
        for (length, repick), members in groups.items():
            params = dataclasses.replace(
                sampling, max_new_tokens=length, min_new_tokens=0,
                stop_token_ids=(v.end_id,) if repick else chunk_stops,
                banned_token_ids=tuple(sampling.banned_token_ids) + ((*v.stop_ids, *v.banned_ids) if repick else ()))
            outs = call(members, [r.prompt + r.thinking for r in members], params)
            for r, c in zip(members, outs):
                r.calls += 1
                _take(r, list(c.token_ids), v)
        due = [r for r in rows if r.end is None and len(r.thinking) != r.probed_at
               and probe_due(probe, transitions, r.thinking, r.budget)]
        if due:
            trial = Sampling(max_new_tokens=probe.answer_tokens, stop_token_ids=(v.end_id,),
                             logit_bias=dict(sampling.logit_bias), banned_token_ids=probe_bans(v, sampling))
            for r, c in zip(due, engine.generate([r.prompt + r.thinking + head for r in due], trial)):
                r.probed_at = len(r.thinking)
                r.probes.append(make_probe(v, probe, len(r.thinking), c.token_ids, c.logprobs))
                if stop_rule(r.probes):
                    r.end = "exit"
    results = _answers(engine, rows, specs, sampling, call)
    if progress:
        progress(len(prompts))
    return results


def _take(r: _Row, tokens: list[int], v: ForcingVocab) -> None:
    """A chunk's tokens into the row: a stop token ends thinking, a never-generated one is chosen again."""
    r.repick = False
    if tokens and tokens[-1] in v.stop_ids:
        r.thinking += tokens[:-1]
        r.end = "model"
        return
    if tokens and tokens[-1] in v.banned_ids:
        tokens, r.repick = tokens[:-1], True
    r.thinking += tokens
    if len(r.thinking) >= r.budget:
        r.end = "budget"


def _answers(engine, rows: list[_Row], specs: Sequence[BudgetSpec], sampling: Sampling, call) -> list[ForcedResult]:
    """Each row's answer as budget forcing generates it: after the delimiter (and the answer prefix when
    thinking was ended for the model), at most ``max_answer_tokens`` (prefix included), then ``<|im_end|>``."""
    v = engine.vocab
    heads, frees = [], []
    for r, spec in zip(rows, specs):
        prefix = list(v.encode(spec.final_answer_prefix)) if spec.final_answer_prefix and r.end != "model" else []
        heads.append(prefix)
        frees.append(max(spec.max_answer_tokens - len(prefix), 0))
    answers: list[list[int]] = [[] for _ in rows]
    by_free: dict[int, list[int]] = {}
    for i, free in enumerate(frees):
        if free > 0:
            by_free.setdefault(free, []).append(i)
    for free, members in by_free.items():
        params = dataclasses.replace(sampling, max_new_tokens=free, min_new_tokens=0, stop_token_ids=(v.end_id,),
                                     banned_token_ids=probe_bans(v, sampling))
        texts = [rows[i].prompt + rows[i].thinking + list(v.delimiter_ids) + heads[i] for i in members]
        for i, c in zip(members, call([rows[i] for i in members], texts, params)):
            answers[i] = [t for t in c.token_ids if t != v.end_id and t not in v.banned_ids]
    out = []
    for r, prefix, answer in zip(rows, heads, answers):
        said = prefix + answer
        out.append(ForcedResult(
            thinking=v.tokenizer.decode(r.thinking), answer=v.tokenizer.decode(said),
            thinking_tokens=len(r.thinking), answer_tokens=len(said), waits_used=0, hit_budget=r.end == "budget",
            token_ids=r.thinking + list(v.delimiter_ids) + said + [v.end_id], probes=r.probes,
            probe_tokens=sum(p.tokens for p in r.probes), exited=r.end == "exit"))
    return out


class ProbeBrancher:
    """The HF decoding loop's probes (a :class:`~components.inference.decoding.Brancher`) over the rows of a
    :class:`~components.inference.budget_forcing.BudgetForcer`: it observes each row's tokens for the forcer,
    names the rows due for a probe, decodes their trial answers greedily (``bias``: the request's logit bias and
    bans, then the answer's bans) and, where the stop rule fires, lowers the row's budget to the thinking it has,
    so the forcer forces the answer at its next step."""

    def __init__(self, forcer, probe: ProbeSpec, stop_rule: StopRule, sampling: Sampling,
                 bias: Callable[[torch.Tensor], torch.Tensor]):
        v = forcer.vocab
        self.forcer, self.probe, self.stop_rule, self.bias, self.vocab = forcer, probe, stop_rule, bias, v
        self.transitions = transitions_for(v.tokenizer, probe)
        self.head, self.max_new_tokens = probe_head(v, probe), probe.answer_tokens
        self.bans = torch.tensor(probe_bans(v, Sampling()))  # the request's own bans are in ``bias``
        n = len(forcer.states)
        self.thinking: list[list[int]] = [[] for _ in range(n)]
        self.probes: list[list[Probe]] = [[] for _ in range(n)]
        self.exited, self.probed_at = [False] * n, [-1] * n
        self.logprobs: dict[int, list[float]] = {}

    def observe(self, row: int, token: int) -> None:
        thinking = self.forcer.states[row].phase is Phase.THINKING
        self.forcer.observe(row, token)
        if thinking:
            self.thinking[row].append(token)

    def heads(self, rows: list[int]) -> dict[int, Sequence[int]]:
        out = {}
        for row in rows:
            st, thought = self.forcer.states[row], self.thinking[row]
            if (st.phase is Phase.THINKING and not self.exited[row] and len(thought) != self.probed_at[row]
                    and probe_due(self.probe, self.transitions, thought, st.spec.max_thinking_tokens)):
                out[row], self.probed_at[row], self.logprobs[row] = self.head, len(thought), []
        return out

    def pick(self, rows: list[int], scores: torch.Tensor) -> torch.Tensor:
        scores = self.bias(scores)
        scores[:, self.bans] = float("-inf")
        tokens = scores.argmax(dim=-1)
        chosen = torch.log_softmax(scores, dim=-1).gather(-1, tokens[:, None])[:, 0]
        for row, lp in zip(rows, chosen.tolist()):
            self.logprobs[row].append(lp)
        return tokens

    def done(self, row: int, token: int) -> bool:
        return token == self.vocab.end_id

    def report(self, row: int, tokens: list[int]) -> None:
        self.probes[row].append(make_probe(self.vocab, self.probe, len(self.thinking[row]), tokens,
                                           self.logprobs.pop(row)))
        if self.stop_rule(self.probes[row]):
            st = self.forcer.states[row]
            self.exited[row] = True
            st.spec = dataclasses.replace(st.spec, max_thinking_tokens=st.thinking_tokens)

    def result(self, row: int, forced: ForcedResult) -> ForcedResult:
        """The forcer's result for ``row`` with its probes (a stop-rule exit is not the budget's)."""
        return forced.model_copy(update={
            "probes": self.probes[row], "probe_tokens": sum(p.tokens for p in self.probes[row]),
            "exited": self.exited[row], "hit_budget": forced.hit_budget and not self.exited[row]})
