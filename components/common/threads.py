"""The torch thread count for CPU work: ``$S1FLOW_THREADS``, else every core; shared among ``workers``
processes that run side by side (each Ray Data actor of a stage gets its share, at least one)."""
from __future__ import annotations

import os


def torch_threads(workers: int = 1) -> int:
    return max(1, int(os.environ.get("S1FLOW_THREADS", os.cpu_count() or 1)) // max(1, workers))


def use_threads(workers: int = 1) -> None:
    import torch
    torch.set_num_threads(torch_threads(workers))
