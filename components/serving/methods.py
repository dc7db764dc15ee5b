"""Test-time methods per request: which a request may name, its settings from the body, and the engine view a
method object runs on inside the server.

A request names its method in ``method`` (default: the registry's reference, budget forcing) and sends that
method's settings under their own names (``probe_every``, ``agree``, ``threshold``, ``alpha``, ...), checked by
the method's ``Settings`` class. ``budget: "auto"`` names :data:`AUTO`: thinking stops on answer convergence under
``max_thinking_tokens``, optionally under a compute cap (``max_compute_tokens``: thinking and probe tokens) and a
latency cap (``max_latency_s``), both checked at each probe.

The method object runs in a worker thread on a :class:`ServedEngine`: its ``generate_forced`` rows join the
server's micro-batches (HF) or the async engine's continuous batching (vLLM); plain generation and the HF engine's
probed decoding run under the lock that serialises HF engine calls. A request whose client goes away cancels its
engine calls: queued rows leave their batch, vLLM requests are aborted, and a probed HF run ends at its next probe.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from typing import Any, Callable, Optional, Sequence

from pydantic import BaseModel, ValidationError

from components.inference.budget_forcing import BudgetSpec, ForcedResult
from components.inference.engine import Sampling, row_seeds
from components.inference.methods.base import Forcing, Kind, Method
from components.inference.methods.registry import SERVED, method_class
from components.inference.methods.voting import vote_groups


def settings_owners() -> dict[str, list[str]]:
    """Each settings name of the served methods and the methods that have it."""
    owners: dict[str, list[str]] = {}
    for name in SERVED:
        for field in method_class(name).Settings.model_fields:
            owners.setdefault(field, []).append(name)
    return owners


def request_settings(name: str, body: dict[str, Any], reserved: Sequence[str] = ()) -> BaseModel:
    """Method ``name``'s settings from the request body's fields of the same names, checked by its ``Settings``
    (strict types, as every request field). A setting of another served method is refused rather than ignored.
    Errors are ``ValueError("<field>: <what is wrong>")``."""
    cls = method_class(name)
    model = cls.Settings
    if cls.sweep_setting and cls.sweep_setting in body:  # a request runs one value: n, or the thinking budget
        raise ValueError(f"{cls.sweep_setting}: {name} answers one request at one setting, taken from the request "
                         f"({'n' if cls.kind is Kind.PARALLEL else 'max_thinking_tokens'}); remove "
                         f"{cls.sweep_setting}")
    mine = set(model.model_fields) - set(reserved) - {cls.sweep_setting}
    for field, names in settings_owners().items():
        if field in body and field not in mine and field not in reserved:
            raise ValueError(f"{field}: a setting of {' and '.join(names)}, not of {name}; remove it or send "
                             f"method: {names[0]}")
    try:
        return model.model_validate({k: body[k] for k in mine if k in body}, strict=True)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "method"
        raise ValueError(f"{where}: {first['msg']}") from None


MIN_PROBE_EVERY, MAX_PROBES = 4, 64  # a probe copies the row's KV cache: bounded, a request cannot hold a replica


def fitted(settings: BaseModel, spec: BudgetSpec) -> BaseModel:
    """``settings`` with a trial answer at most the request's answer cap long where the request left
    ``answer_tokens`` to its default (one it sent is checked by :func:`served_limits`)."""
    default = getattr(settings, "answer_tokens", None)
    if default is None or "answer_tokens" in settings.model_fields_set or default <= spec.max_answer_tokens:
        return settings
    return settings.model_copy(update={"answer_tokens": spec.max_answer_tokens})


def served_limits(settings: BaseModel, spec: BudgetSpec, cap: int) -> Optional[tuple[str, str]]:
    """``(field, message)`` where a method's settings ask more of one replica than a request may: a trial answer
    longer than the request's answer cap, or probes closer than :data:`MIN_PROBE_EVERY` thinking tokens or so
    close that a run of ``cap`` thinking tokens would take more than :data:`MAX_PROBES`."""
    answer_tokens = getattr(settings, "answer_tokens", None)
    if answer_tokens is not None and answer_tokens > spec.max_answer_tokens:
        return "answer_tokens", (f"answer_tokens: {answer_tokens} is longer than the request's answer cap "
                                 f"({spec.max_answer_tokens}, max_tokens); a trial answer is an answer: lower it")
    every, least = getattr(settings, "probe_every", None), max(MIN_PROBE_EVERY, -(-cap // MAX_PROBES))
    if every is not None and every < least:
        return "probe_every", (f"probe_every: at least {least} thinking tokens between probes for a thinking cap of "
                               f"{cap} (at most {MAX_PROBES} probes a request; each copies the row's KV cache), got "
                               f"{every}")
    return None


def refusal_field(message: str, name: str) -> tuple[str, str]:
    """The request field a :class:`~components.inference.methods.base.MethodRefused` message names (its key is
    the offline one, ``evaluate.num_waits`` or ``evaluate.methods.<name>.<setting>``) and the message with it."""
    head, _, rest = message.partition(": ")
    field = head.removeprefix(f"evaluate.methods.{name}").removeprefix("evaluate.").lstrip(".") or "method"
    return field, f"{field}: {rest}" if rest else message


def build(name: str, forcing: Forcing, settings: BaseModel, value: int) -> Method:
    """Method ``name`` for one request, run on prompts the server has rendered (token ids): its ``prompts`` step
    passes them through."""
    method = method_class(name)(forcing, settings, [value])
    method.prompts = lambda engine, prompts: [list(p) for p in prompts]
    return method


def cap_stop(method: Method, max_compute_tokens: Optional[int], deadline: Optional[float]) -> None:
    """``budget: auto``'s caps on a probing method's stop rule: thinking also ends at the first probe where
    thinking and probe tokens reach ``max_compute_tokens``, or past ``deadline`` (``time.monotonic()``)."""
    rule = method.stop

    def stop(probes) -> bool:
        return rule(probes) or over_compute(probes, max_compute_tokens) or (
            deadline is not None and time.monotonic() >= deadline)
    stop.rule = rule  # type: ignore[attr-defined]  # the method's own rule, to tell convergence from a cap
    method.stop = stop


def over_compute(probes, cap: Optional[int]) -> bool:
    return cap is not None and bool(probes) and probes[-1].thinking_tokens + sum(p.tokens for p in probes) >= cap


def stopped_by(method: Method, r: ForcedResult, max_compute_tokens: Optional[int] = None) -> str:
    """Why thinking ended: ``converged`` (the method's own stop rule), ``max_compute_tokens``, ``max_latency_s``,
    ``budget`` (the cap) or ``model`` (the model ended it)."""
    if r.exited:
        if getattr(method.stop, "rule", method.stop)(r.probes):
            return "converged"
        return "max_compute_tokens" if over_compute(r.probes, max_compute_tokens) else "max_latency_s"
    return "budget" if r.hit_budget else "model"


def method_record(method: Method, r: ForcedResult, cap: int, reason: Optional[str] = None) -> dict:
    """What a sequential method did for one choice (``choices[i].s1``)."""
    out = {"method": method.name, "settings": method.settings.model_dump(mode="json"), "cap": cap,
           "probe_tokens": r.probe_tokens, "compute_tokens": r.compute_tokens, "exited": r.exited,
           "tokens_saved": cap - r.compute_tokens}
    if method.kind is Kind.SEQUENTIAL:
        out.update(probes=[p.model_dump() for p in r.probes], converged_at=r.thinking_tokens if r.exited else None)
    if reason is not None:
        out["stopped_by"] = reason
    return out


def label_vote(method: Method, answers: Sequence[str], results: Sequence[ForcedResult],
               same: Callable[[str, str], bool]) -> tuple[int, list[int]]:
    """The sample a parallel method's own vote (its ``combine``) picks, and the samples of its answer's group,
    with answers grouped by ``same`` (the server's bounded equality): each sample's answer is replaced by its
    group's number before ``combine`` sees it, so the method's rule decides and no comparison runs unbounded."""
    groups = vote_groups(answers, same)
    if not groups:
        return 0, []
    label = {i: str(g) for g, members in enumerate(groups) for i in members}
    tagged = [r.model_copy(update={"answer": f"Answer: {label[i]}" if i in label else "", "token_ids": [i]})
              for i, r in enumerate(results)]
    chosen = method.combine([[r] for r in tagged])[0]
    pick = chosen.token_ids[0]
    return pick, groups[int(label[pick])] if pick in label else []


class Cancelled(Exception):
    """The request's client went away: its method run stops at its next engine call."""


class ServedEngine:
    """The engine as one request's method object sees it, from a worker thread (see the module docstring)."""

    def __init__(self, service, loop: asyncio.AbstractEventLoop):
        engine = service.engine
        self.service, self.loop, self.inner = service, loop, engine
        self.name, self.tokenizer, self.vocab = engine.name, engine.tokenizer, engine.vocab
        self.batch_size, self.unlimited, self.context_length = engine.batch_size, engine.unlimited, engine.context_length
        self.gone = threading.Event()
        self._pending: set[concurrent.futures.Future] = set()
        self._guard = threading.Lock()
        if not service.is_async and hasattr(engine, "generate_probed"):
            self.generate_probed = self._probed  # probing finds the HF engine's own probed decoding through it

    def cancel(self) -> None:
        """Stop the run: engine calls in flight are cancelled, later ones refused."""
        self.gone.set()
        with self._guard:
            pending = list(self._pending)
        for f in pending:
            f.cancel()

    def _check(self) -> None:
        if self.gone.is_set():
            raise Cancelled("the client went away")

    def _on_loop(self, make: Callable[[], Any]):
        """``await make()`` on the server's event loop, from this worker thread."""
        self._check()

        async def run():
            return await make()
        f = asyncio.run_coroutine_threadsafe(run(), self.loop)
        with self._guard:
            self._pending.add(f)
        try:
            if self.gone.is_set():
                f.cancel()
            return f.result()
        except concurrent.futures.CancelledError:
            raise Cancelled("the client went away") from None
        finally:
            with self._guard:
                self._pending.discard(f)

    def generate_forced(self, prompts: Sequence[Sequence[int]], specs: Sequence[BudgetSpec],
                        sampling: Sampling = Sampling(), progress=None, seeds: Optional[Sequence[int]] = None,
                        **_) -> list[ForcedResult]:
        if self.service.is_async:
            out = self._on_loop(lambda: self.inner.generate_forced(list(prompts), list(specs), sampling, seeds=seeds))
        else:
            rows = [dataclasses.replace(sampling, seed=s) for s in row_seeds(prompts, specs, sampling, seeds)]
            out = self._on_loop(lambda: self._batched(prompts, specs, rows))
        if progress:
            progress(len(prompts))
        return out

    async def _batched(self, prompts, specs, rows: list[Sampling]) -> list[ForcedResult]:
        futures = [self.service.batcher.submit(list(p), s, r, lambda: None) for p, s, r in zip(prompts, specs, rows)]
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for f in futures:
                if not f.done():
                    f.cancel()

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling, seeds: Optional[Sequence[int]] = None):
        kw = {} if seeds is None else {"seeds": seeds}
        if self.service.is_async:
            return self._on_loop(lambda: self.inner.generate(list(prompts), sampling, **kw))
        self._check()
        with self.service.exclusive():
            return self.inner.generate(list(prompts), sampling, **kw)

    def _probed(self, prompts, specs, probe, stop_rule, sampling: Sampling = Sampling(), seeds=None, progress=None):
        self._check()
        with self.service.exclusive():
            out = self.inner.generate_probed(prompts, specs, probe, lambda probes: self.gone.is_set() or
                                             stop_rule(probes), sampling, seeds=seeds, progress=progress)
        self._check()
        return out
