"""The torch thread count for CPU work: ``$S1FLOW_THREADS``, else every core."""
from __future__ import annotations

import os


def torch_threads() -> int:
    return max(1, int(os.environ.get("S1FLOW_THREADS", os.cpu_count() or 1)))


def use_threads() -> None:
    import torch
    torch.set_num_threads(torch_threads())
