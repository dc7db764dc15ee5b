"""SFT stage: full fine-tuning on the selected traces with the HF Trainer.

Loss only on the assistant turn (see :mod:`components.formatting`). DeepSpeed
ZeRO-3 (``infra/deepspeed/zero3.json``) is used when ``sft.deepspeed`` is
``always``, or ``auto`` on a CUDA machine; otherwise the plain Trainer runs
the same arguments. Checkpoints are safetensors; a rerun resumes from the newest
complete checkpoint (``COMPLETE`` marker) in ``work_dir`` or, with
``sft.checkpoint_uri``, in durable storage (components/training/checkpoints.py).

    train_sft(cfg.sft, base_dir, examples, out_dir, work_dir)
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from components.common.network import free_port
from components.config import SFTConfig
from components.formatting import IGNORE_INDEX, TokenizedExample
from components.modeling import load_model
from components.training.checkpoint_trust import deepspeed_weights_only
from components.training.checkpoints import CheckpointSync, restored_from, resume_checkpoint
from components.training.live_metrics import live_callbacks, show_tqdm
from components.training.packing import PackedCollator, pack
from components.training.throughput import matmul_params, mfu, model_flops


class ListDataset(torch.utils.data.Dataset):
    """Examples (``TokenizedExample``) or packed rows (``PackedRow``) as dicts for a collator."""

    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return dict(vars(self.items[i]))


class SortedStepsSampler(torch.utils.data.Sampler):
    """Random sampling with each optimizer step's examples sorted by length (``sft.train_sampling: sorted_steps``).

    The order is the permutation the Trainer's random sampler draws (accelerate's seedable sampler:
    ``randperm`` seeded with ``seed + epoch``), so every step trains on the examples it would at random;
    within a step of ``step_size`` examples (the global batch: per-device batch x accumulation x
    data-parallel ranks) they come shortest first, so each micro-batch is padded only to its own longest example. The Trainer
    normalises the loss by the step's tokens over all micro-batches, so the step's gradient is that of
    one batch up to float rounding. (With several ranks and examples not a multiple of the step,
    accelerate fills the last step with the epoch's first positions: here the first step's shortest
    examples, not random's first draws.) Not with Ulysses (refused by the config): it regroups the
    micro-batches and averages each one's loss on its own."""

    def __init__(self, lengths: list[int], step_size: int, seed: int):
        self.lengths, self.step_size, self.seed, self.epoch = lengths, step_size, seed, 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls it at every epoch (also when it resumes)
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        order = order.tolist()
        for start in range(0, len(order), self.step_size):
            yield from sorted(order[start:start + self.step_size], key=self.lengths.__getitem__)


class SFTTrainer(Trainer):
    """The Trainer, sampling with :class:`SortedStepsSampler` when given the examples per optimizer step."""

    def __init__(self, *args, sorted_step_size: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sorted_step_size = sorted_step_size

    def _get_train_sampler(self, train_dataset=None):
        if not self.sorted_step_size:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        self._sorted_sampler = SortedStepsSampler([len(dataset[i]["input_ids"]) for i in range(len(dataset))],
                                                  self.sorted_step_size, seed)
        return self._sorted_sampler

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        if self.sorted_step_size and hasattr(loader, "set_sampler"):
            # as accelerate does for its seedable random sampler: the sampler also hangs on each rank's batch shard,
            # where set_epoch finds it after a resume's skip (else a resumed rank would replay epoch 0's order)
            loader.set_sampler(self._sorted_sampler)
        return loader

    def _prepare_for_training(self, *args, **kwargs):
        model, loader = super()._prepare_for_training(*args, **kwargs)
        if type(loader).__name__ == "UlyssesSPDataLoaderAdapter":
            loader = EpochedUlyssesLoader(loader)
        return model, loader

    def _run_epoch(self, *args, **kwargs):
        # A resumed epoch starts with accelerate's skip_first_batches on the epoch's loader (transformers'
        # trainer.py, _run_epoch), which rebuilds a plain DataLoader from the loader's dataset and batch sampler:
        # Ulysses' adapter has neither. For the length of the epoch the Trainer's name for it skips in the
        # adapter's own units instead (EpochedUlyssesLoader.skip_first); every other loader goes to accelerate's.
        if not isinstance(kwargs.get("train_dataloader"), EpochedUlyssesLoader):
            return super()._run_epoch(*args, **kwargs)
        import transformers.trainer as hf_trainer
        skip = hf_trainer.skip_first_batches
        hf_trainer.skip_first_batches = lambda loader, n: (
            loader.skip_first(n) if isinstance(loader, EpochedUlyssesLoader) else skip(loader, n))
        try:
            return super()._run_epoch(*args, **kwargs)
        finally:
            hf_trainer.skip_first_batches = skip


class EpochedUlyssesLoader:
    """DeepSpeed's Ulysses data loader adapter, started afresh every epoch.

    ``UlyssesSPDataLoaderAdapter`` (deepspeed/runtime/sequence_parallel/ulysses_sp.py) is its own iterator over
    one iterator of the rank's loader, made when it is built; it starts a new one only after raising
    StopIteration. The Trainer takes exactly an epoch's micro-batches per epoch, so that StopIteration comes as
    the first batch of the second epoch, which the Trainer reads as an empty epoch and stops: every run trained
    one epoch. Neither does the adapter have ``set_epoch``, so the rank's sampler never reshuffled. Here each
    epoch sets the epoch on the rank's loader (and on the batch sampler accelerate's shard wraps, as the Trainer
    does) and then starts a new iterator over it.

    The adapter turns one batch of every rank's loader into ``sp`` micro-batches (each rank's batch in turn,
    every rank computing its slice of it), so micro-batch ``k`` of an epoch comes from batch ``k // sp`` of each
    rank's loader. :meth:`skip_first` resumes an epoch after ``n`` micro-batches: ``n // sp`` batches of each
    rank's loader are skipped unread (accelerate's skip_first_batches, as the Trainer does without Ulysses),
    then ``n % sp`` micro-batches of the next gathered batch are dropped, on every rank alike."""

    def __init__(self, adapter, drop: int = 0):
        self.adapter, self.drop = adapter, drop

    def __len__(self) -> int:
        return len(self.adapter)

    def set_epoch(self, epoch: int) -> None:
        loader = self.adapter.dl
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        inner = getattr(getattr(loader, "batch_sampler", None), "batch_sampler", None)
        if hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)

    def skip_first(self, micro_batches: int) -> "EpochedUlyssesLoader":
        """The loader for the epoch a resume starts in: its first ``micro_batches`` micro-batches left out. A copy
        of the adapter over a skipping copy of the rank's loader; the later epochs use this one, whole."""
        import copy
        from collections import deque

        from accelerate import skip_first_batches
        whole, part = divmod(micro_batches, self.adapter.sp_world_size)
        adapter = copy.copy(self.adapter)
        adapter.dl = skip_first_batches(self.adapter.dl, whole) if whole else self.adapter.dl
        adapter.micro_batches = deque()
        return EpochedUlyssesLoader(adapter, drop=part)

    def __iter__(self):
        self.adapter.micro_batches.clear()
        self.adapter.iter = iter(self.adapter.dl)
        for _ in range(self.drop):  # a collective (the adapter's all_gather): every rank drops as many
            next(self.adapter)
        return self.adapter

    def __getattr__(self, name):
        return getattr(self.adapter, name)


class CountingCollator:
    """Wraps a collator and counts real vs computed (padded) tokens: the padding efficiency."""

    def __init__(self, inner):
        self.inner, self.real, self.computed, self.real_sq = inner, 0, 0, 0

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        out = self.inner(batch)
        self.real += sum(len(b["input_ids"]) for b in batch)
        # sum of squared example lengths: attention is per example (packed rows carry their examples' lengths)
        self.real_sq += sum(n * n for b in batch for n in b.get("lengths", [len(b["input_ids"])]))
        self.computed += out["input_ids"].numel()
        return out

    @property
    def efficiency(self) -> float:
        return self.real / self.computed if self.computed else 1.0


@dataclass
class PadCollator:
    """Right-padded batch with ``position_ids`` (Ulysses needs them in every batch: it shards the sequence
    before the model could number it) and a length padded to a multiple of ``pad_to_multiple_of`` (the
    Ulysses degree: every rank gets an equal slice)."""

    pad_id: int
    pad_to_multiple_of: int = 1
    min_length: int = 0  # Ulysses over gloo: every rank's batch the same length (gloo all_gathers equal shapes only)

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(self.min_length, *(len(b["input_ids"]) for b in batch))
        width = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):  # right padding for training
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        positions = torch.arange(width).expand(len(batch), width).clone()
        return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": positions}


class LossHistory(TrainerCallback):
    def __init__(self):
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.rows.append({"step": state.global_step, **{k: float(v) for k, v in logs.items()
                                                            if isinstance(v, (int, float))}})


def use_deepspeed(cfg: SFTConfig) -> bool:
    if cfg.deepspeed == "always":
        return True
    return cfg.deepspeed == "auto" and torch.cuda.is_available()


@contextmanager
def single_process_group(enabled: bool):
    """DeepSpeed wants a process group even for one process; torchrun/Ray set one up otherwise.

    Sets RANK/WORLD_SIZE/MASTER_* (on a free port) only when no launcher did, and afterwards
    restores the environment and tears the group and accelerate's singletons down, so nothing
    leaks into later work in this process or into its child processes.
    """
    if not enabled or "RANK" in os.environ:
        yield
        return
    saved = dict(os.environ)  # accelerate adds ACCELERATE_USE_DEEPSPEED & co. too
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(free_port())})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        from accelerate.state import AcceleratorState, PartialState
        AcceleratorState._reset_state(True)
        PartialState._reset_state()


def gradient_accumulation(cfg: SFTConfig, world: int) -> int:
    """Steps to accumulate so the global batch stays ``global_batch_size`` for this many processes."""
    per_step = cfg.samples_per_step(world)
    if cfg.global_batch_size % per_step:
        raise ValueError(f"sft.global_batch_size: {cfg.global_batch_size} is not a multiple of "
                         f"per_device_batch_size*data-parallel size = {per_step} with {world} processes")
    return cfg.global_batch_size // per_step


def sequence_parallelism(cfg: SFTConfig, world: int):
    """DeepSpeed Ulysses through accelerate: ``sp_size`` GPUs share each sequence (all-to-all over heads),
    the rest are data-parallel. None when sequence parallelism is off."""
    if cfg.sequence_parallel_size <= 1:
        return None
    from accelerate import ParallelismConfig
    from accelerate.utils.dataclasses import DeepSpeedSequenceParallelConfig
    return ParallelismConfig(
        sp_backend="deepspeed", sp_size=cfg.sequence_parallel_size,
        dp_shard_size=world // cfg.sequence_parallel_size,
        sp_handler=DeepSpeedSequenceParallelConfig(sp_seq_length_is_variable=True,
                                                   sp_attn_implementation=cfg.attn_implementation))


def training_arguments(cfg: SFTConfig, work_dir: Path, steps_per_epoch: int) -> TrainingArguments:
    world = int(os.environ.get("WORLD_SIZE", cfg.world_size))
    accum = gradient_accumulation(cfg, world)
    extra = {"parallelism_config": sp} if (sp := sequence_parallelism(cfg, world)) else {}
    ds = cfg.deepspeed_config if use_deepspeed(cfg) else None
    save_every = cfg.save_steps or max(1, steps_per_epoch)
    total_steps = max(1, int(steps_per_epoch * cfg.epochs))
    return TrainingArguments(
        output_dir=str(work_dir), num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2, weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.per_device_batch_size, gradient_accumulation_steps=accum,
        bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing, deepspeed=ds,
        use_cpu=not torch.cuda.is_available(), logging_steps=max(1, total_steps // 50), save_strategy="steps",
        save_steps=save_every, save_total_limit=2, report_to="none", seed=cfg.seed, data_seed=cfg.seed,
        dataloader_num_workers=0, remove_unused_columns=False,  # packed rows carry "lengths" for the collator
        disable_tqdm=not show_tqdm(), log_level="warning",  # off a TTY: ProgressLines (live_metrics.py)
        **extra,
    )


def _mfu(model, collator: CountingCollator, seconds: float, devices: int):
    """MFU over the training time (components/training/throughput.py): matmul parameters from the config
    (ZeRO-3 leaves the local parameters empty), attention over each example's own length, every rank's tokens
    (each rank counted its own batches; under Ulysses its group computes each of them once)."""
    c = model.config
    flops = model_flops(matmul_params(c), c.num_hidden_layers, c.hidden_size, collator.real * devices,
                        collator.real_sq * devices)
    value = mfu(flops, seconds, devices)
    return None if value is None else round(value, 4)


def _deepspeed_comm(args: TrainingArguments) -> None:
    """deepspeed.comm over the process group the Trainer set up. accelerate initialises it only off the CPU
    (state.py); without it, zero.Init inside from_pretrained sees world size 1 and refuses the batch sizes
    transformers derived for the real world size."""
    import deepspeed.comm as dist
    _ = args.world_size  # sets up torch.distributed (gloo on a CPU, NCCL on GPUs)
    if not dist.is_initialized():
        dist.init_distributed(dist_backend="gloo" if args.use_cpu else "nccl", auto_mpi_discovery=False)


def make_collator(cfg: SFTConfig, pad_id: int, dtype: torch.dtype) -> CountingCollator:
    """The collator for this config: position ids always, lengths padded to the Ulysses degree, and
    packed examples kept apart on every attention path (components/training/packing.py)."""
    sp = cfg.sequence_parallel_size
    # DeepSpeed's UlyssesSPDataLoaderAdapter all_gathers each rank's batch: NCCL takes uneven lengths, gloo does not,
    # so on a CPU every batch is padded to the longest it can be
    fixed = sp > 1 and not torch.cuda.is_available()
    if cfg.packing:
        flat = cfg.attn_implementation == "flash_attention_2"
        return CountingCollator(PackedCollator(
            pad_id, cfg.attn_implementation, dtype, pad_to_multiple_of=sp, flash_kwargs=sp == 1,
            min_length=(cfg.block_size * (cfg.per_device_batch_size if flat else 1)) if fixed else 0))
    return CountingCollator(PadCollator(pad_id, pad_to_multiple_of=sp, min_length=cfg.block_size if fixed else 0))


def train_sft(cfg: SFTConfig, base_dir: str | Path, examples: list[TokenizedExample], out_dir: str | Path,
              work_dir: str | Path, dtype: str = "float32", max_steps: Optional[int] = None,
              revision: Optional[str] = None) -> dict:
    """Fine-tune ``base_dir`` on ``examples``; save the final model to ``out_dir``. ``revision``: the pinned
    commit of a hub id (``model.revision``); a local directory ignores it."""
    if not examples:
        raise ValueError("no training examples: the selection is empty (check the filter report)")
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    if cfg.packing:
        items = pack(examples, cfg.block_size)
    else:
        items = examples
    steps_per_epoch = max(1, len(items) // cfg.global_batch_size)
    with single_process_group(use_deepspeed(cfg)):
        # TrainingArguments first: with ZeRO-3 it registers the DeepSpeed config (HfTrainerDeepSpeedConfig), so
        # from_pretrained partitions the weights as it loads them (deepspeed.zero.Init) instead of every rank
        # materialising the whole model in CPU RAM first; `args` must stay alive (transformers holds a weakref)
        args = training_arguments(cfg, work_dir, steps_per_epoch)
        if max_steps is not None:
            args.max_steps = max_steps
        if args.deepspeed:
            _deepspeed_comm(args)
        model, tokenizer = load_model(base_dir, dtype, cfg.attn_implementation, revision=revision)
        model.train()
        collator = make_collator(cfg, tokenizer.pad_token_id, model.dtype)
        history = LossHistory()
        sync = CheckpointSync(cfg.checkpoint_uri)  # marks complete checkpoints; mirrors them when a URI is set
        callbacks = [history, sync, *live_callbacks(tokens=lambda: collator.real, model=model)]
        trainer = SFTTrainer(model=model, args=args, train_dataset=ListDataset(items), data_collator=collator,
                             callbacks=callbacks,
                             # the examples of one optimizer step, over micro-batches and ranks
                             sorted_step_size=cfg.global_batch_size if cfg.train_sampling == "sorted_steps" else None)
        trainer.remove_callback(PrinterCallback)  # the loss history goes to train.json / MLflow instead
        started = time.time()
        resume = resume_checkpoint(work_dir, sync)  # the newest complete one, local or remote, behind a barrier
        source = restored_from(resume)  # read now: the Trainer's rotation may delete it before the end
        try:
            # DeepSpeed unpickles its ZeRO shards: only as weights (components/training/checkpoint_trust.py)
            with deepspeed_weights_only() if args.deepspeed else nullcontext():
                result = trainer.train(resume_from_checkpoint=resume)
            trainer.save_model(str(out_dir))
        finally:
            if args.deepspeed:
                # transformers keeps a process-global ZeRO-3 flag that would make every later
                # from_pretrained in this process partition its weights
                from transformers.integrations.deepspeed import unset_hf_deepspeed_config
                unset_hf_deepspeed_config()
    rank0 = int(os.environ.get("RANK", 0)) == 0
    if rank0:
        tokenizer.save_pretrained(out_dir)
        # the published model holds safetensors and JSON only: no pickled training_args.bin
        (out_dir / "training_args.bin").unlink(missing_ok=True)
        (out_dir / "training_args.json").write_text(args.to_json_string())
    seconds = time.time() - started
    train_seconds = float(result.metrics.get("train_runtime", seconds))  # the Trainer's: no saving, no loading
    world = int(os.environ.get("WORLD_SIZE", 1))
    tokens_per_second = collator.real * world / max(train_seconds, 1e-9)  # every rank saw as many tokens
    summary = {"train_loss": float(result.training_loss), "final_loss": history.rows[-1]["loss"] if history.rows else None,
               "steps": int(result.global_step), "seconds": round(seconds, 1),
               "tokens_per_second": round(tokens_per_second, 1), "padding_efficiency": round(collator.efficiency, 4),
               "packing": cfg.packing, "rows": len(items), "mfu": _mfu(model, collator, train_seconds, world),
               "train_seconds": round(train_seconds, 2),
               "deepspeed": use_deepspeed(cfg), "world_size": world, "resumed_from": resume,
               "restored_from": source, "examples": len(examples)}
    if rank0:
        (work_dir / "loss_history.json").write_text(json.dumps(history.rows))
    return summary
