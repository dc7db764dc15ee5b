"""How concurrent generations share the HF engine: continuous batching, or micro-batches for other engines.

* :class:`ContinuousBatcher` (an engine with ``generate_rolling``, the HF engine): one engine loop in a worker
  thread; a generation joins the running batch between decoding steps (as vLLM's scheduler admits requests)
  and is answered the moment its row ends, so a short request never waits for a long neighbour and its
  client's next request can take its row at once. Joining costs a prefill forward pass of its own, so rows
  join in groups: a run starts once ``max_size`` generations are queued or the oldest has waited ``wait_s``,
  and generations join a running batch once a quarter of its rows are free and as many are queued, or the
  oldest has waited ``wait_s``. Rows of one run share a sampling setting (temperature,
  top-p, biases; each row its own seed); a generation with another setting waits at the head of the queue,
  and nothing behind it is admitted until the running batch drains (first come, first served). A caller that
  needs the engine for something else (:meth:`ContinuousBatcher.exclusive`) stops admission the same way.
* :class:`MicroBatcher` (any engine that has only ``generate_forced``): concurrent items collected for up to
  ``wait_s`` (or ``max_size`` items), one engine call per batch and sampling setting.

Both: the queue holds at most ``max_queued`` items (more get 429, and the caller keeps its capacity to give
back); a generation's ``release`` is called once the engine is done with it (finished, or stopped because its
caller went away: at once when it was still queued), never before; an engine failure is retried generation by
generation, so only the generation that fails alone fails (a stream that already sent tokens is retried from
the start, its sent tokens not sent again). Continuous: a generation whose prefill fails as it joins fails at
once, and the running rows go on.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator, Optional

from components.inference.budget_forcing import BudgetSpec, ForcedResult, Phase
from components.inference.engine import Sampling
from components.serving.protocol import APIError

log = logging.getLogger("s1flow.serve")

OnToken = Callable[[int, int, Phase], None]  # (row, token, phase), as generate_forced's on_token


def sampling_key(sampling: Sampling) -> tuple:
    """What rows of one batch must share: everything in ``sampling`` but the seed."""
    return (sampling.temperature, sampling.top_p, tuple(sorted(sampling.biases().items())))


def _busy(max_queued: int) -> APIError:
    return APIError(429, f"server busy: {max_queued} generations queued; retry shortly", type_="rate_limit_error",
                    code="overloaded", headers={"Retry-After": "1"})


@dataclasses.dataclass(eq=False)
class Generation:
    """One queued generation: the engine's job (prompt, spec, seed, ``gone``, ``on_token``, ``finish``) and the
    event loop's future. Engine-thread calls reach the loop through ``call_soon_threadsafe``."""

    prompt: list[int]
    spec: BudgetSpec
    sampling: Sampling
    future: asyncio.Future
    release: Callable[[], None]
    loop: asyncio.AbstractEventLoop
    stream: Optional[OnToken] = None
    queued_at: float = dataclasses.field(default_factory=time.monotonic)
    left: bool = False  # its caller went away: the engine may stop it
    ended: bool = False  # the engine is done with it (its release is on its way)
    sent: list[int] = dataclasses.field(default_factory=list)  # tokens streamed so far
    replay: int = 0  # a retry: how many of them it regenerates (compared, not sent again)
    replayed: int = 0  # how many it has regenerated so far
    diverged: bool = False  # a retry regenerated other tokens than it had sent

    @property
    def seed(self) -> int:
        return self.sampling.seed

    @property
    def key(self) -> tuple:
        return sampling_key(self.sampling)

    def gone(self) -> bool:
        return self.left

    def on_token(self, token: int, phase: Phase) -> None:
        if self.stream is None or self.diverged:
            return
        if self.replayed < self.replay:  # a retry regenerating what was sent: not sent again
            self.diverged = token != self.sent[self.replayed]
            self.replayed += 1
            return
        self.sent.append(token)
        self.stream(0, token, phase)

    def finish(self, result: ForcedResult) -> None:
        self._end(lambda: self.future.set_result(result))

    def fail(self, error: BaseException) -> None:
        self._end(lambda: self.future.set_exception(error))

    def drop(self) -> None:
        """Its caller went away before the engine saw it."""
        self._end(lambda: None)

    def _end(self, settle: Callable[[], None]) -> None:
        if self.ended:
            return
        self.ended = True

        def done() -> None:
            if not self.future.done():
                settle()
            self.release()
        try:
            self.loop.call_soon_threadsafe(done)
        except RuntimeError:  # the loop is closed: the server is gone
            pass


def _new_generation(prompt: list[int], spec: BudgetSpec, sampling: Sampling, release: Callable[[], None],
                    stream: Optional[OnToken]) -> Generation:
    loop = asyncio.get_running_loop()
    gen = Generation(prompt, spec, sampling, loop.create_future(), release, loop, stream)
    gen.future.add_done_callback(lambda f: setattr(gen, "left", f.cancelled()))
    return gen


class ContinuousBatcher:
    """Continuous batching on an engine with ``generate_rolling`` (module docstring)."""

    def __init__(self, engine: Any, lock: threading.Lock, max_size: int, wait_s: float, max_queued: int = 1024):
        self.engine, self.lock, self.max_size, self.wait_s, self.max_queued = engine, lock, max_size, wait_s, max_queued
        self.group = max(1, max_size // 4)  # rows worth a prefill of their own
        self.pending: deque[Generation] = deque()
        self.guard = threading.Lock()  # pending, waiting
        self.waiting: list[float] = []  # when each caller waiting for the engine outside the batcher came
        self.wake: Optional[asyncio.Event] = None
        self.task: Optional[asyncio.Task] = None
        self.batches, self.items = 0, 0  # engine runs, generations run

    def submit(self, prompt: list[int], spec: BudgetSpec, sampling: Sampling, release: Callable[[], None],
               on_token: Optional[OnToken] = None) -> asyncio.Future:
        """The future of one generation; cancelling it makes the engine stop its row at its next token."""
        if self.task is None:
            self.wake = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._loop())
        gen = _new_generation(prompt, spec, sampling, release, on_token)
        gen.future.add_done_callback(lambda f: self._forget(gen) if f.cancelled() else None)
        with self.guard:
            if len(self.pending) >= self.max_queued:  # the caller gives its capacity back
                raise _busy(self.max_queued)
            self.pending.append(gen)
        self.wake.set()
        return gen.future

    def _forget(self, gen: Generation) -> None:
        """``gen``'s caller went away: still queued, it leaves the queue and gives its capacity back now (the
        engine stops it itself if it has it)."""
        with self.guard:
            queued = gen in self.pending
            if queued:
                self.pending.remove(gen)
        if queued:
            gen.drop()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The engine to oneself, in turn with the queue: generations queued after this call do not join the
        running batch, and it is held once that batch has drained."""
        came = time.monotonic()
        with self.guard:
            self.waiting.append(came)
        try:
            with self.lock:
                yield
        finally:
            with self.guard:
                self.waiting.remove(came)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                await self._gather()
                await loop.run_in_executor(None, self._run)

    async def _gather(self) -> None:
        """Before a run: until ``max_size`` generations are queued or the oldest has waited ``wait_s``."""
        while self.pending and len(self.pending) < self.max_size:
            left = self.pending[0].queued_at + self.wait_s - time.monotonic()
            if left <= 0:
                return
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), left)
            except asyncio.TimeoutError:
                return

    def _take(self, room: int, key: Optional[tuple]) -> list[Generation]:
        """Up to ``room`` generations from the head of the queue with sampling ``key`` (a run's first rows: any
        key, when None), none while someone who came before the head waits for the engine; generations whose
        callers left are dropped (released) on the way. Rows joining a run (``key`` given) come in groups (module docstring)."""
        out: list[Generation] = []
        with self.guard:
            while self.pending and self.pending[0].left:
                self.pending.popleft().drop()
            cutoff = min(self.waiting, default=float("inf"))  # generations queued after it wait for it
            if not self.pending or self.pending[0].queued_at >= cutoff:
                return out
            if key is not None and self.pending[0].queued_at + self.wait_s > time.monotonic():
                ready = 0
                for gen in self.pending:
                    if ready == room or gen.key != key or gen.queued_at >= cutoff:
                        break
                    ready += not gen.left
                if min(ready, room) < self.group:
                    return out
            while self.pending and len(out) < room:
                head = self.pending[0]
                if head.left:
                    self.pending.popleft().drop()
                    continue
                if key is None:
                    key = head.key
                elif head.key != key or head.queued_at >= cutoff:
                    break
                out.append(self.pending.popleft())
        return out

    def _run(self) -> None:
        """One engine run: the head of the queue, then whatever joins it, until its rows are done."""
        with self.lock:
            first = self._take(self.max_size, None)
            if not first:
                return
            taken = list(first)
            self.batches += 1

            def more(room: int) -> list[Generation]:
                got = self._take(room, first[0].key)
                taken.extend(got)
                return got
            try:
                self.engine.generate_rolling(first, more, first[0].sampling, max_rows=self.max_size)
            except Exception:
                log.exception("an engine run failed; its %d unfinished generations are retried one by one",
                              sum(not g.ended for g in taken))
                for gen in taken:
                    if not gen.ended:
                        self._alone(gen)
            finally:
                self.items += len(taken)
                for gen in taken:  # a row the engine never ended (it cannot: it ends every row it starts)
                    if not gen.ended:
                        gen.fail(RuntimeError("the engine ended without answering this generation"))

    def _alone(self, gen: Generation) -> None:
        """``gen`` on its own engine call (the lock held): its own failure fails it alone."""
        if gen.left:
            gen.drop()
            return
        gen.replay, gen.replayed = len(gen.sent), 0
        try:
            res = self.engine.generate_forced([gen.prompt], [gen.spec], gen.sampling, seeds=[gen.seed],
                                              on_token=lambda row, token, phase: gen.on_token(token, phase),
                                              cancelled=lambda row: gen.left or gen.diverged)
        except Exception as e:
            gen.fail(e)
            return
        if gen.diverged:  # what it sent and its retry disagree (a near-tie broken the other way): not spliced
            gen.fail(RuntimeError("the stream's generation failed and its retry did not reproduce the tokens "
                                  "already sent; send the request again"))
            return
        gen.finish(res[0])


class MicroBatcher:
    """Micro-batches for an engine with only ``generate_forced`` (module docstring): ``run(prompts, specs,
    sampling, seeds=..., cancelled=...)`` is called once per batch and sampling setting, in a worker thread."""

    def __init__(self, run, max_size: int, wait_s: float, max_queued: int = 1024):
        self.run, self.max_size, self.wait_s, self.max_queued = run, max_size, wait_s, max_queued
        self.queue: Optional[asyncio.Queue] = None
        self.task: Optional[asyncio.Task] = None
        self.batches, self.items = 0, 0

    def submit(self, prompt: list[int], spec: BudgetSpec, sampling: Sampling,
               release: Callable[[], None], on_token: Optional[OnToken] = None) -> asyncio.Future:
        """The future of one generation; cancelling it marks the item gone (the engine stops its row)."""
        if on_token is not None:
            raise ValueError("a MicroBatcher does not stream: run a stream as its own engine call")
        if self.task is None:
            self.queue = asyncio.Queue(maxsize=self.max_queued)
            self.task = asyncio.get_running_loop().create_task(self._loop())
        item = _new_generation(prompt, spec, sampling, release, None)
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:  # the caller gives its capacity back
            raise _busy(self.max_queued) from None
        return item.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_size:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    break
            for it in batch:
                if it.future.done():  # its caller went away before the engine saw it
                    it.release()
            batch = [it for it in batch if not it.future.done()]
            if not batch:
                continue
            self.batches, self.items = self.batches + 1, self.items + len(batch)
            groups: dict[tuple, list[Generation]] = {}  # one generate call per sampling setting, each row its seed
            for it in batch:
                groups.setdefault(it.key, []).append(it)
            for items in groups.values():
                try:
                    await self._run_group(items)
                finally:
                    for it in items:
                        it.release()

    async def _run_group(self, items: list[Generation]) -> None:
        loop = asyncio.get_running_loop()
        try:
            res = await loop.run_in_executor(None, functools.partial(
                self.run, [i.prompt for i in items], [i.spec for i in items], items[0].sampling,
                seeds=[i.seed for i in items], cancelled=lambda row: items[row].left))
        except Exception as e:
            if len(items) == 1:
                if not items[0].future.done():
                    items[0].future.set_exception(e)
                return
            for it in items:  # isolate: each alone, so only the bad one fails
                if not it.left:
                    await self._run_group([it])
            return
        for it, r in zip(items, res):
            if not it.future.done():
                it.future.set_result(r)
