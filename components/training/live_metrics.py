"""What a training shows while it runs: live MLflow metrics and, off a terminal, plain progress lines.

:class:`MLflowLive` (rank 0 only, every launcher: plain, DeepSpeed, Ray Train) logs at each
Trainer log step ``train/loss``, ``train/learning_rate``, ``train/grad_norm``,
``train/tokens_per_second`` (since the previous log, all ranks) and, on GPUs with a known
peak, ``train/mfu`` (6·N FLOPs per token, attention left out) into the MLflow run named by the
environment: :data:`RUN_ENV` and :data:`URI_ENV`, set by the pipeline around the train stage
(components/tracking/training_run.py; this package never imports tracking). Without them it
does nothing. A tracking error is reported once and never stops the training.

:class:`ProgressLines`: off a terminal the Trainer's tqdm bar is off (:func:`show_tqdm`) and one
line is printed at every 10% of the steps instead, as components/common/progress.py does.

    callbacks = live_callbacks(tokens=lambda: collator.real, model=model)
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from transformers import TrainerCallback

from components.common.progress import PlainLines, interactive, quiet_foreign_bars
from components.training.memory import param_counts
from components.training.throughput import device_peak_flops

RUN_ENV = "S1FLOW_MLFLOW_RUN_ID"
URI_ENV = "S1FLOW_MLFLOW_TRACKING_URI"
LOGGED = {"loss": "train/loss", "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm"}


def show_tqdm() -> bool:
    """The Trainer's own tqdm bar only on a terminal (off it, carriage-return fragments fill the log)."""
    return interactive()


class MLflowLive(TrainerCallback):
    def __init__(self, run_id: str, uri: str, tokens: Callable[[], int], n_params: int, world: int):
        self.run_id, self.uri, self.tokens, self.n_params, self.world = run_id, uri, tokens, n_params, world
        self.client = None
        self.last: Optional[tuple[float, int]] = None
        self.failed = False

    def on_train_begin(self, args, state, control, **kw):
        self.last = (time.time(), self.tokens())

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or self.failed or not logs or "loss" not in logs:
            return
        metrics = {name: float(logs[k]) for k, name in LOGGED.items() if isinstance(logs.get(k), (int, float))}
        now, seen = time.time(), self.tokens()
        # the collator counts a batch when the loader fetches it (one ahead): an interval may see none
        if self.last is not None and now > self.last[0] and seen > self.last[1]:
            tps = (seen - self.last[1]) * self.world / (now - self.last[0])  # every rank sees as many tokens
            metrics["train/tokens_per_second"] = tps
            if peak := device_peak_flops():
                metrics["train/mfu"] = 6.0 * self.n_params * tps / (self.world * peak)
        self.last = (now, seen)
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Metric
            self.client = self.client or MlflowClient(self.uri)
            stamp = int(now * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, int(state.global_step))
                                                        for k, v in metrics.items()])
        except Exception as e:
            self.failed = True
            print(f"MLflow live metrics off for this training: {type(e).__name__}: {e}", file=sys.stderr)


class ProgressLines(TrainerCallback):
    """Off a terminal: ``sft: 20/50 (40%) elapsed 12s eta 18s loss=1.234 lr=2.0e-05`` at every 10%."""

    def __init__(self):
        self.lines: Optional[PlainLines] = None
        self.fields: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kw):
        if state.is_world_process_zero:
            self.lines = PlainLines("sft steps", state.max_steps, done=state.global_step)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.fields = {"loss": f"{logs['loss']:.4f}", **({"lr": f"{logs['learning_rate']:.2e}"}
                                                            if isinstance(logs.get("learning_rate"), float) else {})}

    def on_step_end(self, args, state, control, **kw):
        if self.lines is not None:
            self.lines.advance(state.global_step - self.lines.done, **self.fields)


def live_callbacks(tokens: Callable[[], int], model) -> list[TrainerCallback]:
    """The callbacks a training gets here: MLflow when the pipeline opened a run, lines when off a terminal."""
    quiet_foreign_bars()  # off a TTY: no tqdm from transformers (e.g. saving shards) either
    out: list[TrainerCallback] = []
    if os.environ.get(RUN_ENV) and os.environ.get(URI_ENV):
        n_params, _ = param_counts(model.config)  # from the config: ZeRO-3 leaves local parameters empty
        out.append(MLflowLive(os.environ[RUN_ENV], os.environ[URI_ENV], tokens, n_params,
                              int(os.environ.get("WORLD_SIZE", 1))))
    if not show_tqdm() and os.environ.get("S1FLOW_NO_PROGRESS") != "1":
        out.append(ProgressLines())
    return out


def write_loss_plot(work_dir: Path, path: Path) -> None:
    """The per-step loss history (``loss_history.json``, written by rank 0) as a DVC plot file (a JSON list)."""
    history = Path(work_dir) / "loss_history.json"
    rows = json.loads(history.read_text()) if history.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("step", "loss", "learning_rate", "grad_norm")
    path.write_text(json.dumps([{k: r[k] for k in keep if k in r} for r in rows], indent=1) + "\n")
