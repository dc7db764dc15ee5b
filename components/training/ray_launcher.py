"""Multi-node SFT with Ray Train: ``sft.world_size`` workers, one process (GPU) each.

A ``TorchTrainer`` starts the workers on the Ray cluster (``RAY_ADDRESS``, see
``infra/ray/cluster-h100.yaml``: 2 nodes x 8 H100 for s1-32b), sets up the
process group (NCCL on GPUs, gloo on CPUs) and runs the same :func:`train_sft` in
each; the HF Trainer sees the group and shards data (and, with DeepSpeed, ZeRO-3
states) across it. Gradient accumulation is derived from the world size so the
global batch stays ``sft.global_batch_size``.

Nothing crosses nodes through a node-local file (rank 0 may land on any node):

* the tokenized examples go to the workers as a Ray Dataset (read by the driver, every
  worker gets all of it: the HF Trainer shards it itself, in the same order as a local run);
* a base model given as a local directory (the tiny profile) goes through the object store
  (a hub name, as for s1-32b, or a path on shared storage is passed as is);
* the results come back through Ray Train: rank 0 reports the summary as metrics and the
  final model (+ the loss history) as a ``ray.train.Checkpoint`` persisted to the run's
  storage (``sft.ray_storage``: ``s3://...`` on a cluster); the driver copies it into
  ``out_dir``/``work_dir``. Training checkpoints for resume go to ``sft.checkpoint_uri``.

A lost worker (its node gone, OOM-killed, an NCCL error) fails the whole worker group: the survivors are
stuck in the collective it left. With ``sft.max_failures`` > 0 Ray Train (``FailureConfig``) tears the group
down and starts a new one, up to that many times, in the same ``fit()``; every new worker runs
:func:`_worker_loop` from the top, and :func:`train_sft` resumes from the newest complete checkpoint, on the
node's disk or in ``sft.checkpoint_uri`` (components/training/checkpoints.py). Not from
``ray.train.get_checkpoint()``: Ray Train hands back only what ``ray.train.report`` persisted, here only the
final model; the training checkpoints are the Trainer's, sharded per rank (ZeRO-3), and each rank uploads its
own files, so nothing is written twice and a rerun of the stage resumes the same way. The summary counts
the attempts (``attempts``, ``restarts``) and says where the last one resumed (``resumed_from``).

    summary = train_with_ray(cfg.sft, base_dir, tokens_file, out_dir, work_dir, dtype)
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from components.common.raycluster import ensure_ray
from components.config import SFTConfig
from components.formatting import TokenizedExample
from components.records import iter_jsonl

SHIP_LIMIT = 2 * 1024 ** 3  # local base models up to this size travel through the object store


def _ship_model(base: str):
    """A local model directory as {file name: bytes} in the object store; anything else as is."""
    import ray
    path = Path(base)
    if not path.is_dir():
        return base
    files = [f for f in path.iterdir() if f.is_file()]
    if sum(f.stat().st_size for f in files) > SHIP_LIMIT:
        raise ValueError(f"sft: base model {base} is a local directory of > 2 GiB; Ray workers on other nodes "
                         "cannot read it: use a hub name or a path on storage every node mounts")
    return ray.put({f.name: f.read_bytes() for f in files})


def _unship_model(base, into: Path) -> str:
    import ray
    if isinstance(base, str):
        return base
    into.mkdir(parents=True, exist_ok=True)
    for name, data in ray.get(base).items():
        (into / name).write_bytes(data)
    return str(into)


class AttemptLog:
    """A Ray actor the driver owns for one ``fit()``: each worker group's rank 0 records its start here, so the
    driver can count the attempts Ray Train made."""

    def __init__(self):
        self.attempts: list[dict] = []

    def started(self, record: dict) -> int:
        self.attempts.append(record)
        return len(self.attempts)

    def all(self) -> list[dict]:
        return self.attempts


def _worker_loop(config: dict) -> None:
    import json
    import os
    import tempfile

    import ray.train

    from components.training.sft import train_sft  # lazy: imports torch, transformers (only the workers train)

    cfg = SFTConfig.model_validate_json(config["cfg"])
    os.environ.update(config.get("env", {}))  # the MLflow run rank 0 streams into (live_metrics.py)
    os.environ.setdefault("S1FLOW_NO_PROGRESS", "1")
    ctx = ray.train.get_context()
    if ctx.get_world_rank() == 0 and config.get("attempts") is not None:
        ray.get(config["attempts"].started.remote({"rank0_node_id": ray.get_runtime_context().get_node_id(),
                                                   "pid": os.getpid()}))
    rows = ray.train.get_dataset_shard("train").iter_rows()  # the whole dataset on every worker (not split)
    examples = sorted(((r["index"], TokenizedExample(list(r["input_ids"]), list(r["labels"]), int(r["prompt_tokens"])))
                       for r in rows), key=lambda t: t[0])
    local = Path(tempfile.mkdtemp(prefix="s1flow-sft-"))  # this worker's scratch space, on its own node
    base = _unship_model(config["base"], local / "base")
    if config["deepspeed"] is not None:  # the DeepSpeed config's content travels with the run, not its path
        (local / "deepspeed.json").write_text(config["deepspeed"])
        cfg = cfg.model_copy(update={"deepspeed_config": str(local / "deepspeed.json")})
    summary = train_sft(cfg, base, [e for _, e in examples], local / "model", config["work_dir"], config["dtype"],
                        revision=config.get("revision"))
    summary["rank0_node_id"] = ray.get_runtime_context().get_node_id()
    if ctx.get_world_rank() == 0:
        history = Path(config["work_dir"], "loss_history.json")
        shutil.copy(history, local / "model" / "loss_history.json")
        (local / "model" / "summary.json").write_text(json.dumps(summary))
        ray.train.report(summary, checkpoint=ray.train.Checkpoint.from_directory(str(local / "model")))
    else:
        ray.train.report({})
    shutil.rmtree(local, ignore_errors=True)


def train_with_ray(cfg: SFTConfig, base: str, tokens_file: Path, out_dir: Path, work_dir: Path,
                   dtype: str = "float32", revision: Optional[str] = None) -> dict:
    """Train on ``cfg.world_size`` Ray Train workers; ``revision``: the pinned commit of a hub id ``base``."""
    import json
    import os

    import ray
    from ray.train import DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from components.training.live_metrics import RUN_ENV, URI_ENV  # lazy: imports transformers
    ensure_ray()
    work_dir, out_dir = Path(work_dir).resolve(), Path(out_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    deepspeed = Path(cfg.deepspeed_config).read_text() if Path(cfg.deepspeed_config).exists() else None
    examples = ray.data.from_items([{"index": i, **d} for i, d in enumerate(iter_jsonl(tokens_file))])
    storage = cfg.ray_storage or str(work_dir / "ray_results")
    attempts = ray.remote(num_cpus=0)(AttemptLog).remote()
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg.model_dump_json(), "base": _ship_model(str(base)), "work_dir": str(work_dir),
                           "dtype": dtype, "revision": revision, "deepspeed": deepspeed, "attempts": attempts,
                           "env": {k: os.environ[k] for k in (RUN_ENV, URI_ENV) if k in os.environ}},
        datasets={"train": examples},
        dataset_config=DataConfig(datasets_to_split=[]),
        scaling_config=ScalingConfig(num_workers=cfg.world_size, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if cfg.use_gpu else {}),
                                                           **cfg.ray_resources_per_worker}),
        run_config=RunConfig(name=f"s1flow-sft-{work_dir.name}", storage_path=storage,
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
    )
    try:
        result = trainer.fit()
        started = ray.get(attempts.all.remote())
    finally:
        ray.kill(attempts)
    if result.error:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("Ray Train run finished without rank 0's checkpoint")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    result.checkpoint.to_directory(str(out_dir))
    shutil.move(str(out_dir / "loss_history.json"), work_dir / "loss_history.json")
    summary = json.loads((out_dir / "summary.json").read_text())
    (out_dir / "summary.json").unlink()
    summary.update(attempts=len(started), restarts=max(0, len(started) - 1), attempt_nodes=[
        a["rank0_node_id"] for a in started])
    return summary
