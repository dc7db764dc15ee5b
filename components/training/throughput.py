"""Training throughput: tokens per second and model FLOPs utilisation (MFU).

FLOPs per token follow the PaLM appendix: 6·N for the dense weights plus
12·layers·hidden·seq for attention (forward + backward). MFU divides achieved by
the accelerators' dense peak for the dtype; on a CPU there is no meaningful peak,
so MFU is None there.

    mfu(tokens_per_second=..., n_params=..., layers=64, hidden=5120, seq=32768, devices=16)
"""
from __future__ import annotations

from typing import Optional

# dense peak FLOP/s per device for bf16/fp16 (no sparsity), from the vendors' datasheets
PEAK_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def flops_per_token(n_params: int, layers: int, hidden: int, seq: int) -> float:
    return 6.0 * n_params + 12.0 * layers * hidden * seq


def device_peak_flops() -> Optional[float]:
    import torch
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((peak for key, peak in PEAK_FLOPS.items() if key in name), None)


def mfu(tokens_per_second: float, n_params: int, layers: int, hidden: int, seq: int, devices: int,
        peak: Optional[float] = None) -> Optional[float]:
    peak = peak if peak is not None else device_peak_flops()
    if not peak:
        return None
    return tokens_per_second * flops_per_token(n_params, layers, hidden, seq) / (peak * devices)
