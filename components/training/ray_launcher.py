"""Multi-node SFT with Ray Train: ``sft.world_size`` workers, one process (GPU) each.

A ``TorchTrainer`` starts the workers on the Ray cluster (``RAY_ADDRESS``, see
``infra/ray/cluster-h100.yaml``: 2 nodes x 8 H100 for s1-32b), sets up the
process group (NCCL on GPUs, gloo on CPUs) and runs the same :func:`train_sft` in
each; the HF Trainer sees the group and shards data (and, with DeepSpeed, ZeRO-3
states) across it. Gradient accumulation is derived from the world size so the
global batch stays ``sft.global_batch_size``. Rank 0 writes the model.

    summary = train_with_ray(cfg.sft, base_dir, tokens_file, out_dir, work_dir, dtype)
"""
from __future__ import annotations

from pathlib import Path

from components.config import SFTConfig


def _worker_loop(config: dict) -> None:
    import json
    import os

    import ray.train

    from components.formatting import TokenizedExample
    from components.records import iter_jsonl
    from components.training.sft import train_sft

    cfg = SFTConfig.model_validate_json(config["cfg"])
    os.environ.update(config.get("env", {}))  # the MLflow run rank 0 streams into (live_metrics.py)
    os.environ.setdefault("S1FLOW_NO_PROGRESS", "1")
    examples = [TokenizedExample(**d) for d in iter_jsonl(config["tokens_file"])]
    summary = train_sft(cfg, config["base"], examples, config["out_dir"], config["work_dir"], config["dtype"])
    if ray.train.get_context().get_world_rank() == 0:
        Path(config["work_dir"], "ray_summary.json").write_text(json.dumps(summary))
    ray.train.report({"train_loss": summary["train_loss"], "steps": summary["steps"]})


def train_with_ray(cfg: SFTConfig, base: str, tokens_file: Path, out_dir: Path, work_dir: Path,
                   dtype: str = "float32") -> dict:
    import json
    import os

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from components.common.raycluster import ensure_ray
    from components.training.live_metrics import RUN_ENV, URI_ENV
    ensure_ray()
    work_dir, out_dir = Path(work_dir).resolve(), Path(out_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    base = str(Path(base).resolve()) if Path(base).exists() else base  # workers have another cwd
    if Path(cfg.deepspeed_config).exists():
        cfg = cfg.model_copy(update={"deepspeed_config": str(Path(cfg.deepspeed_config).resolve())})
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg.model_dump_json(), "base": base, "tokens_file": str(Path(tokens_file).resolve()),
                           "env": {k: os.environ[k] for k in (RUN_ENV, URI_ENV) if k in os.environ},
                           "out_dir": str(out_dir), "work_dir": str(work_dir), "dtype": dtype},
        scaling_config=ScalingConfig(num_workers=cfg.world_size, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if cfg.use_gpu else {})}),
        run_config=RunConfig(name="s1flow-sft", storage_path=str(work_dir / "ray_results")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return json.loads((work_dir / "ray_summary.json").read_text())
