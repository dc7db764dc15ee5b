"""What a checkpoint from durable storage may do to the run that loads it: nothing but be loaded as data.

Three guards, each applied before any file of the checkpoint is read by the Trainer or DeepSpeed:

* every key of a manifest is a plain relative path that stays inside the directory it is downloaded to
  (:func:`safe_key`, :func:`inside`): no ``..``, no absolute path, no empty or ``.`` segment, no backslash;
* every downloaded file has the size and SHA-256 the manifest of the run that saved it lists
  (:func:`sha256_file`), else the checkpoint is refused, naming the file;
* DeepSpeed reads its ZeRO shards with ``torch.load(weights_only=True)`` (:func:`deepspeed_weights_only`).

DeepSpeed 0.19.8 loads every ZeRO model and optimizer shard through
``TorchCheckpointEngine.load`` (deepspeed/runtime/checkpoint_engine/torch_checkpoint_engine.py), which calls
``torch.load(path, weights_only=False)`` and has no option to change it (an allow-list registered with
``torch.serialization.add_safe_globals`` is ignored when ``weights_only=False``): a shard can run any code
when it is unpickled. The shards a ZeRO-3 run saves hold tensors, dicts, ``torch.Size`` and two DeepSpeed
objects, ``ZeroStageEnum`` and the loss scaler (``LossScaler``, or ``DynamicLossScaler`` under fp16), so
while the Trainer resumes, that method loads with ``weights_only=True`` and exactly those classes allowed:
a shard that names any other global fails to load (``UnpicklingError``) instead of running it. The
transformers Trainer reads its own files (RNG state, scheduler, optimizer) with ``weights_only=True``.
Universal checkpoints (DeepSpeed's ``load_universal_checkpoint``) still unpickle ``optimizer_state.pt``
with ``weights_only=False``; the SFT config never turns them on.

    with deepspeed_weights_only():
        trainer.train(resume_from_checkpoint=resume)
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from components.common.hashing import file_digest


class CheckpointRefused(RuntimeError):
    """A checkpoint in durable storage that is not loaded: a key outside its directory, or a file whose bytes
    are not the ones the run that saved it listed."""


def sha256_file(path: str | Path) -> str:
    return file_digest(path, "sha256")


def safe_key(key: str, where: str) -> str:
    """``key`` (a file of a checkpoint, relative to it) if it names a file inside the checkpoint; else
    CheckpointRefused naming it and ``where`` it was found."""
    parts = key.split("/") if isinstance(key, str) else [""]
    if (not parts[0] or "\\" in key or ":" in parts[0] or any(p in ("", ".", "..") for p in parts)):
        raise CheckpointRefused(f"{where}: refusing the key {key!r}: a checkpoint file must be a relative path "
                                f"inside the checkpoint (no '..', no absolute path, no empty segment)")
    return key


def inside(root: Path, key: str, where: str) -> Path:
    """``root/key``, once :func:`safe_key` accepts ``key`` and the path resolves inside ``root``."""
    path = root / safe_key(key, where)
    if not path.resolve().is_relative_to(root.resolve()):
        raise CheckpointRefused(f"{where}: refusing the key {key!r}: it resolves outside {root}")
    return path


def deepspeed_safe_globals() -> list:
    """The classes a DeepSpeed ZeRO checkpoint shard holds besides tensors and containers."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    return [ZeroStageEnum, LossScaler, DynamicLossScaler]


@contextmanager
def deepspeed_weights_only():
    """While it is open, DeepSpeed's checkpoint engine loads shards with ``weights_only=True`` and only the
    classes of :func:`deepspeed_safe_globals` allowed (see the module docstring)."""
    import torch
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    allowed = deepspeed_safe_globals()

    def load(self, path: str, map_location=None):
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)

    unsafe = TorchCheckpointEngine.load
    TorchCheckpointEngine.load = load
    try:
        yield
    finally:
        TorchCheckpointEngine.load = unsafe
