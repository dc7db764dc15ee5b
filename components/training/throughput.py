"""Training throughput: tokens per second and model FLOPs utilisation (MFU).

Formula (PaLM, Chowdhery et al. 2022, Appendix B; also Korthikanti et al. 2022): training
one token of an example of length ``n`` costs

    6 * N  +  12 * layers * hidden * n        FLOPs (forward + backward),

``N`` the parameters that do matmuls (non-embedding parameters plus the LM head: the input
embedding is a lookup, the head is a matmul even when tied), ``12*layers*hidden*n`` the
attention scores and their product with the values. Attention is per example: a packed row
of examples of lengths n_1..n_k costs sum(n_i^2), not block_size^2, and padding costs nothing
useful. So over a run

    model FLOPs = 6 * N * sum(n_i) + 12 * layers * hidden * sum(n_i^2)
    MFU         = model FLOPs / (training seconds * devices * peak)

with the training seconds the Trainer's own ``train_runtime`` (no model saving, no loading)
and ``peak`` the device's dense bf16/fp16 peak (no sparsity) from :data:`PEAK_FLOPS`, chosen
by the name and memory the device reports (an H100 PCIe is 756 TF, not the SXM's 989).
Recomputation under gradient checkpointing is not counted (that would be HFU). On a CPU
there is no meaningful peak: MFU is None there.

    mfu(model_flops(N, layers, hidden, lengths), seconds, devices=16, peak=device_peak_flops())
"""
from __future__ import annotations

from typing import Optional

from components.training.memory import param_counts

# (name contains, min GiB, max GiB, dense bf16 peak FLOP/s per device), first match wins. From the
# vendors' datasheets (sparsity halved away): H100 SXM5 989.4 TF, H100 PCIe 756 TF, H100 NVL
# (94 GB) 835 TF, H200 SXM (141 GB) 989.4 TF, H200 NVL 835 TF, A100 312 TF, L40S 362 TF, A10 125 TF.
PEAK_FLOPS: list[tuple[str, float, float, float]] = [
    ("H100 PCIe", 0, 1e9, 756e12),
    ("H100 NVL", 0, 1e9, 835e12),
    ("H100", 90, 1e9, 835e12),          # 94 GB parts are NVL boards whatever their name says
    ("H100", 0, 90, 989.4e12),          # "NVIDIA H100 80GB HBM3": SXM5
    ("H200 NVL", 0, 1e9, 835e12),
    ("H200", 0, 1e9, 989.4e12),         # "NVIDIA H200": SXM, 141 GB
    ("A100", 0, 1e9, 312e12),
    ("L40S", 0, 1e9, 362e12),
    ("A10", 0, 1e9, 125e12),
]


def peak_flops(name: str, memory_gib: float) -> Optional[float]:
    """Dense bf16 peak for a device by its reported name and memory; None when unknown."""
    return next((peak for key, lo, hi, peak in PEAK_FLOPS if key in name and lo <= memory_gib < hi), None)


def device_peak_flops() -> Optional[float]:
    import torch
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return peak_flops(props.name, props.total_memory / 2**30)


def matmul_params(c) -> int:
    """Parameters that do a matmul per token: everything but the input embedding, plus the LM head."""
    total, _ = param_counts(c)
    embed = c.vocab_size * c.hidden_size
    head = embed if getattr(c, "tie_word_embeddings", False) else 0  # tied: counted once in total, used twice
    return total - embed + head


def model_flops(n_params: int, layers: int, hidden: int, lengths_sum: int, lengths_sq_sum: int) -> float:
    """FLOPs to train on examples with these token counts: sum(n_i) and sum(n_i^2) (see the module doc)."""
    return 6.0 * n_params * lengths_sum + 12.0 * layers * hidden * lengths_sq_sum


def mfu(flops: float, seconds: float, devices: int, peak: Optional[float] = None) -> Optional[float]:
    peak = peak if peak is not None else device_peak_flops()
    if not peak or seconds <= 0:
        return None
    return flops / (seconds * devices * peak)
