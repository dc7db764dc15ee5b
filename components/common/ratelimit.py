"""Token buckets for API limits: requests per minute and tokens per minute.

Each Ray worker holds a bucket sized to its share of the global limit
(``limit / workers``), so the whole job stays under the provider's quota with
no coordinator. Token use is not known before a call: ``acquire`` reserves an
estimate and ``settle`` books the difference once the usage is reported.

    bucket = TokenBucket(per_minute=600); await bucket.acquire(1)
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class TokenBucket:
    per_minute: float
    capacity: Optional[float] = None  # burst size; defaults to one second's worth, at least 1
    clock: Callable[[], float] = time.monotonic
    _level: float = field(init=False)
    _stamp: float = field(init=False)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.per_minute <= 0:
            raise ValueError("per_minute: must be positive")
        self.capacity = self.capacity or max(1.0, self.per_minute / 60.0)
        self._level, self._stamp = self.capacity, self.clock()

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    def _refill(self) -> None:
        now = self.clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (0 when it can be now)."""
        self._refill()
        need = min(amount, self.capacity) - self._level
        return max(0.0, need / self.rate)

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:  # first come, first served
            while (delay := self.wait_time(amount)) > 0:
                await asyncio.sleep(delay)
            self._refill()
            self._level -= amount  # may go negative for amounts over capacity: later callers wait it off

    def settle(self, reserved: float, actual: float) -> None:
        """Book the real usage of a call that reserved an estimate."""
        self._refill()
        self._level = min(self.capacity, self._level + reserved - actual)


@dataclass
class Limits:
    """The request and token buckets one worker obeys (either may be absent)."""

    requests: Optional[TokenBucket] = None
    tokens: Optional[TokenBucket] = None

    @classmethod
    def share(cls, requests_per_minute: Optional[float], tokens_per_minute: Optional[float], workers: int) -> "Limits":
        return cls(TokenBucket(requests_per_minute / workers) if requests_per_minute else None,
                   TokenBucket(tokens_per_minute / workers) if tokens_per_minute else None)

    async def acquire(self, estimated_tokens: float) -> None:
        if self.requests:
            await self.requests.acquire(1)
        if self.tokens:
            await self.tokens.acquire(estimated_tokens)

    def settle(self, estimated_tokens: float, actual_tokens: float) -> None:
        if self.tokens:
            self.tokens.settle(estimated_tokens, actual_tokens)
