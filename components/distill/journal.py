"""The spend journal: every paid teacher call booked durably before its answer is used, replayed into the cap.

Each HTTP attempt a worker makes is a *call* with two entries: ``reserve`` (its worst case, written before
the request leaves) and ``settle`` (what the provider billed, written before the response is handed back).
Replaying the journal counts a settled call at its settled cost and an unsettled one at its worst case: a
call cut off by a crash, a SIGKILL or a timeout may still have been billed. What an attempt may cost
(:func:`worst_case_usd`): the request body's bytes as prompt tokens (no tokenizer makes more tokens than
bytes, and the JSON around the messages covers the chat template) plus ``max_tokens`` of output, at the
teacher's prices. What a finished attempt costs (:func:`billed_usd`): the ``usage`` its response reports; a
2xx response reporting none is booked at the worst case (billed, by an amount not told), an HTTP error
reporting none at zero; an attempt that never left (connection refused, a request the HTTP stack refused)
at zero.

Local stores keep one append-only file per writer (``<shards>/journal/<writer>.jsonl``), each entry
written and fsynced before the call goes on; on object stores each entry is its own object, named
``<shards>/journal/<writer>/<seq>-<kind>-<usd>`` (an object exists only once written whole; the replay
lists names and reads no bodies).

    journal = SpendJournal(store); call = journal.reserve(0.3); ...; journal.settle(call, 0.01)
    replay(store).spent_usd
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional

import httpx

from components.common.chat_client import _billed_usage
from components.config import TeacherConfig
from components.distill.shards import ShardStore

JOURNAL_DIR = "journal"
log = logging.getLogger(__name__)


def price_usd(prompt_tokens: int, completion_tokens: int, cfg: TeacherConfig) -> float:
    return (prompt_tokens * cfg.price_input_per_mtok + completion_tokens * cfg.price_output_per_mtok) / 1e6


def worst_case_usd(request_bytes: int, cfg: TeacherConfig) -> float:
    """The most one attempt may be billed: every request byte a prompt token, ``max_tokens`` of output."""
    return price_usd(request_bytes, cfg.max_tokens, cfg)


def billed_usd(status: int, body: str, worst: float, cfg: TeacherConfig) -> float:
    """What a finished attempt was billed: its reported usage; else the worst case for a 2xx, zero otherwise."""
    prompt, completion = _billed_usage(body)
    if prompt or completion:
        return price_usd(prompt, completion, cfg)
    return worst if 200 <= status < 300 else 0.0


class SpendJournal:
    """One writer's journal (a worker process); entries are durable when the call returns."""

    def __init__(self, store: ShardStore, writer: Optional[str] = None):
        self.store = store
        self.writer = writer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.root = f"{store.root}/{JOURNAL_DIR}"
        self._seq, self._mu = 0, threading.Lock()
        self._fd: Optional[int] = None
        if store.local:
            os.makedirs(self.root, exist_ok=True)
            self._fd = os.open(f"{self.root}/{self.writer}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _append(self, call: str, kind: str, usd: float) -> None:
        if self.store.local:
            line = json.dumps({"call": call, "kind": kind, "usd": usd}) + "\n"
            with self._mu:
                if self._fd is None:
                    raise ValueError(f"spend journal {self.writer} is closed")
                os.write(self._fd, line.encode())
                os.fsync(self._fd)
        else:
            seq = call.rsplit(":", 1)[1]
            self.store.fs.pipe(f"{self.root}/{self.writer}/{seq}-{kind}-{usd:.9f}", b"")

    def reserve(self, worst_usd: float) -> str:
        """Book a call at its worst case before it is made; returns the call's id."""
        with self._mu:
            self._seq += 1
            call = f"{self.writer}:{self._seq:012d}"
        self._append(call, "reserve", worst_usd)
        return call

    def settle(self, call: str, usd: float) -> None:
        """Book what the call was billed (replaces its worst case in the replay)."""
        self._append(call, "settle", usd)

    def close(self) -> None:
        with self._mu:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@dataclass
class JournalTotals:
    spent_usd: float = 0.0  # settled calls at their cost, unsettled ones at their worst case
    calls: int = 0
    unsettled: int = 0
    unsettled_usd: float = 0.0


def _entries(store: ShardStore):
    root = f"{store.root}/{JOURNAL_DIR}"
    store.fs.invalidate_cache(root)
    if not store.fs.exists(root):
        return
    if store.local:
        for name in sorted(os.listdir(root)):
            if not name.endswith(".jsonl"):
                continue
            with open(f"{root}/{name}") as f:
                for line in f:
                    try:
                        e = json.loads(line)
                        yield e["call"], e["kind"], float(e["usd"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line: its call was never made (reserve) or counts at worst (settle)
        return
    for path in store.fs.find(root):
        writer, name = path.rsplit("/", 2)[-2:]
        try:
            seq, kind, usd = name.split("-", 2)
            yield f"{writer}:{seq}", kind, float(usd)
        except ValueError:
            continue


def replay(store: ShardStore) -> JournalTotals:
    """What the journal of a shard set says was spent, over every run and writer."""
    reserved: dict[str, float] = {}
    settled: dict[str, float] = {}
    for call, kind, usd in _entries(store):
        (settled if kind == "settle" else reserved)[call] = usd
    totals = JournalTotals()
    for call in reserved.keys() | settled.keys():
        totals.calls += 1
        if call in settled:
            totals.spent_usd += settled[call]
        else:
            totals.unsettled += 1
            totals.unsettled_usd += reserved[call]
            totals.spent_usd += reserved[call]
    return totals


class SpendRefused(RuntimeError):
    """A paid call was not made: the run stopped paying (spend cap, lost lock, no ledger) or could not journal it."""


@dataclass
class AttemptUsage:
    """What the HTTP attempts made for one question added up to: attempts that left, tokens their responses
    reported. A question refused on a retry keeps what its earlier attempts were billed."""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


# set by whoever asks one question (a task of its own); the transport adds each attempt of that task to it
attempt_usage: ContextVar[Optional[AttemptUsage]] = ContextVar("attempt_usage", default=None)


def _count_attempt(body: str = "") -> None:
    usage = attempt_usage.get()
    if usage is not None:
        prompt, completion = _billed_usage(body)
        usage.attempts += 1
        usage.prompt_tokens += prompt
        usage.completion_tokens += completion


# errors of attempts that never reached the provider: nothing can have been billed
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.LocalProtocolError,
             httpx.UnsupportedProtocol)


def environment_proxy(url: str) -> Optional[str]:
    """The proxy HTTPS_PROXY / HTTP_PROXY / ALL_PROXY name for ``url`` (None when NO_PROXY covers its host): what
    httpx applies by itself to a client without a transport of its own."""
    import urllib.request
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


class MeteredTransport(httpx.AsyncBaseTransport):
    """Every HTTP attempt of a teacher client, journaled: refused unless ``gate(worst)`` reserves the attempt's
    worst case with the run's ledger (it returns why not, or None), journaled at that worst case before it
    leaves, settled before its response is used; ``book(worst, usd)`` tells the ledger what the reservation
    turned out to cost (its billed cost, or its worst case when it ended unsettled). Journal writes (an fsync,
    an object-store PUT) run on a thread, so the event loop and every other call of the worker go on meanwhile."""

    def __init__(self, cfg: TeacherConfig, journal: SpendJournal,
                 gate: Callable[[float], Awaitable[Optional[str]]], book: Callable[[float, float], Awaitable[None]],
                 inner: Optional[httpx.AsyncBaseTransport] = None):
        self.cfg, self.journal, self.gate, self.book = cfg, journal, gate, book
        self.inner = inner  # built at the first request, with the proxy the environment names for its host

    def _transport(self, url: httpx.URL) -> httpx.AsyncBaseTransport:
        if self.inner is None:
            self.inner = httpx.AsyncHTTPTransport(proxy=environment_proxy(str(url)),
                                                  limits=httpx.Limits(max_connections=self.cfg.calls_per_worker + 4))
        return self.inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        inner = self._transport(request.url)
        worst = worst_case_usd(len(request.content), self.cfg)
        if reason := await self.gate(worst):
            raise SpendRefused(f"not calling the teacher: {reason}")
        try:
            call = await asyncio.to_thread(self.journal.reserve, worst)
        except BaseException as e:
            await self.book(worst, 0.0)  # never sent: the reservation goes back
            if not isinstance(e, Exception):
                raise
            raise SpendRefused(f"not calling the teacher: the spend journal cannot be written "
                               f"({type(e).__name__}: {e})") from None
        try:
            response = await inner.handle_async_request(request)
            raw = b"".join([chunk async for chunk in response.stream])
            await response.aclose()
        except _NOT_SENT:
            _count_attempt()
            await self._settle(call, worst, 0.0)
            raise
        except BaseException:  # timed out or cut off: the provider may bill it in full
            _count_attempt()
            await self.book(worst, worst)
            raise
        out = httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(raw),
                             extensions=response.extensions, request=request)
        try:
            decoded = httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(raw))
            await decoded.aread()
            text = decoded.text
        except Exception:
            text = ""
        _count_attempt(text)
        await self._settle(call, worst, billed_usd(response.status_code, text, worst, self.cfg))
        return out

    async def _settle(self, call: str, worst: float, usd: float) -> None:
        try:
            await asyncio.to_thread(self.journal.settle, call, usd)
        except Exception as e:  # the reserve entry stands: the call counts at its worst case, never at less
            log.warning("spend journal: settling %s failed (%s: %s); it counts at its worst case", call,
                        type(e).__name__, e)
            usd = worst
        except BaseException:  # cancelled meanwhile: the reservation still ends (at its worst case)
            await self.book(worst, worst)
            raise
        await self.book(worst, usd)

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()
