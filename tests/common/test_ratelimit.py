"""Token buckets: waits for the refill, books the real usage."""
import asyncio

import pytest

from components.common.ratelimit import TokenBucket


def test_token_bucket_waits_for_refill_and_books_real_usage():
    now = [0.0]
    bucket = TokenBucket(per_minute=60, capacity=2, clock=lambda: now[0])  # 1 per second, burst 2
    assert bucket.wait_time(1) == 0
    asyncio.run(bucket.acquire(2))
    assert bucket.wait_time(1) == pytest.approx(1.0)
    now[0] = 0.5
    assert bucket.wait_time(1) == pytest.approx(0.5)
    bucket.settle(reserved=1, actual=0)  # a reservation that used nothing comes back
    assert bucket.wait_time(1) == 0
