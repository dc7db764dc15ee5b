"""MLflow: one run per pipeline, params flattened, metrics per budget, plot, model.

The model is logged as a pyfunc (:class:`BudgetForcedModel`) whose ``predict``
takes questions and budget-forcing fields, and is registered under
``tracking.registered_model``. With no tracking URI, a SQLite store in the
working directory is used (artifacts under ``./mlruns``).

Nothing secret reaches the tracking server: every param and tag value goes
through :func:`redact` (URL userinfo ``https://user:pass@host`` and query values
of keys such as ``key=``, ``token=``, ``sig=`` become ``***``; a field whose own
name says secret, e.g. ``extra_body.api_key``, is masked whole). Keys that name an
environment variable (``api_key_env``) are kept: they hold a name, not a secret.

    info = log_pipeline_run(cfg, params, metrics, artifacts, model_dir)
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Optional

import mlflow
import mlflow.pyfunc

from components.common.redaction import MASK, redact, secret_name
from components.config import ProfileConfig, TrackingConfig
from components.formatting import thinking_prompt
from components.tracking.lineage import log_dataset

CHAMPION = "champion"


def tracking_uri(cfg: TrackingConfig, root: Path) -> str:
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def safe_params(params: dict[str, Any]) -> dict[str, str]:
    """Flattened params ready for MLflow: secrets masked, values cut to 500 characters."""
    out = {}
    for k, v in params.items():
        leaf = k.rsplit(".", 1)[-1]
        out[k] = MASK if secret_name(leaf) and v not in (None, "") else str(redact(v if not isinstance(v, (list, tuple))
                                                                                    else [redact(x) for x in v]))[:500]
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown"


# Per-row budget-forcing fields the served model takes beside ``question`` (all optional; a negative or
# missing ``max_thinking_tokens`` means no cap).
BUDGET_COLUMNS = ("max_thinking_tokens", "min_thinking_tokens", "num_waits", "max_answer_tokens")
OUTPUT_COLUMNS = {"answer": "string", "thinking": "string", "thinking_tokens": "long", "waits_used": "long",
                  "hit_budget": "boolean"}
INPUT_EXAMPLE = [{"question": "What is 12 + 30?", "max_thinking_tokens": 64, "min_thinking_tokens": 0, "num_waits": 0,
                  "max_answer_tokens": 16},
                 {"question": "What is 7 * 8?", "max_thinking_tokens": 128, "min_thinking_tokens": 16, "num_waits": 1,
                  "max_answer_tokens": 16}]
COMPONENTS_DIR = Path(__file__).resolve().parents[1]  # shipped with the model (code_paths): no package to install
# what ``components`` imports when the model loads (versions pinned to this environment when logged)
MODEL_REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "accelerate", "pydantic", "pyyaml",
                      "pandas", "numpy", "mlflow")


def model_signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema
    inputs = Schema([ColSpec("string", "question"), *[ColSpec("long", c, required=False) for c in BUDGET_COLUMNS]])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(t, c) for c, t in OUTPUT_COLUMNS.items()]))


def model_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version
    out = []
    for name in MODEL_REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


class BudgetForcedModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict(DataFrame[question, max_thinking_tokens?, min_thinking_tokens?, num_waits?,
    max_answer_tokens?])`` -> DataFrame[answer, thinking, thinking_tokens, waits_used, hit_budget]."""

    def load_context(self, context):
        from components.inference.hf_engine import HFEngine
        self.engine = HFEngine.from_pretrained(context.artifacts["model"])

    def predict(self, context, model_input, params: Optional[dict] = None):
        import pandas as pd

        from components.inference.budget_forcing import BudgetSpec

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)

        def field(row, name):
            v = row.get(name)
            return None if v is None or pd.isna(v) else int(v)

        specs = []
        for row in df.to_dict("records"):
            cap = field(row, "max_thinking_tokens")
            specs.append(BudgetSpec(max_thinking_tokens=None if cap is None or cap < 0 else cap,
                                    min_thinking_tokens=field(row, "min_thinking_tokens") or 0,
                                    num_waits=field(row, "num_waits") or 0,
                                    max_answer_tokens=field(row, "max_answer_tokens") or 64,
                                    final_answer_prefix="Answer:"))
        prompts = [thinking_prompt(self.engine.tokenizer, q) for q in df["question"]]
        res = self.engine.generate_forced(prompts, specs)
        return pd.DataFrame({"answer": [r.answer for r in res], "thinking": [r.thinking for r in res],
                             "thinking_tokens": [int(r.thinking_tokens) for r in res],
                             "waits_used": [int(r.waits_used) for r in res],
                             "hit_budget": [bool(r.hit_budget) for r in res]})


def promote_if_better(client, name: str, version: str, metric: str, value: Optional[float]) -> dict[str, Any]:
    """Give ``version`` the alias ``champion`` when its ``metric`` beats the current champion's; say why."""
    current = None
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        pass
    best = None
    if current is not None:
        run_metrics = client.get_run(current.run_id).data.metrics
        best = run_metrics.get(metric)
    if value is None:
        promoted, reason = False, f"{metric} missing for this run"
    elif current is None:
        promoted, reason = True, f"first version with {metric}={value:.4f}"
    elif best is None or value > best:
        promoted = True
        reason = (f"{metric}={value:.4f} beats champion v{current.version} ({best:.4f})" if best is not None
                  else f"{metric}={value:.4f}; champion v{current.version} has no {metric}")
    else:
        promoted, reason = False, f"{metric}={value:.4f} does not beat champion v{current.version} ({best:.4f})"
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "champion_decision", reason)
    return {"champion": promoted, "champion_reason": reason}


REGISTERED_TAG = "s1flow.registered"        # on a run once the register stage completed it
TRAINING_RUN_TAG = "s1flow.training_run_id"  # on a register run that could not complete the training's own run
WARNING_TAG = "s1flow.warning"              # on a run whose results come with a warning (an unready base model)
# Larger models are logged without an input example: MLflow would load them once just to check it.
EXAMPLE_CHECK_MAX_BYTES = 2 * 2**30


def resumable_training_run(client, run_id: Optional[str], experiment_id: str) -> bool:
    """The training stage's run can be completed by this register stage: same store and experiment,
    not completed before (a later evaluation of the same training gets a new run linked to it)."""
    if not run_id:
        return False
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return run.info.experiment_id == experiment_id and REGISTERED_TAG not in run.data.tags


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def log_model_version(model_dir: Path, registered_model: str):
    """The pyfunc model: the weights as an artifact, the ``components`` package as code (``code_paths``:
    nothing to install but public packages), a signature with per-row budget fields and an input example."""
    small = _dir_bytes(model_dir) <= EXAMPLE_CHECK_MAX_BYTES
    return mlflow.pyfunc.log_model(
        name="model", python_model=BudgetForcedModel(), artifacts={"model": str(model_dir)},
        code_paths=[str(COMPONENTS_DIR)], registered_model_name=registered_model,
        signature=model_signature(), input_example=INPUT_EXAMPLE if small else None,
        pip_requirements=model_requirements(),
    )


def log_pipeline_run(cfg: ProfileConfig, root: Path, metrics: dict[str, float], artifacts: list[Path],
                     model_dir: Path, tags: dict[str, str],
                     step_metrics: Optional[list[dict]] = None,
                     version_tags: Optional[dict[str, str]] = None,
                     training_run_id: Optional[str] = None,
                     datasets: Optional[list[dict]] = None, warning: Optional[str] = None) -> dict[str, Any]:
    """``step_metrics``: per-step rows ({"step": n, "loss": ..., ...}) logged as MLflow histories (unless the
    training already streamed them into the run); ``version_tags`` go on the registered model version (e.g. the
    dataset's DVC hash). ``training_run_id``: the run the train stage streamed its metrics into; it is completed
    here when it can be (:func:`resumable_training_run`), else a new run is tagged with it.
    ``datasets``: :func:`components.tracking.lineage.log_dataset` keyword arguments. ``warning``: what the run's
    results must be read with (an unready base model): tag :data:`WARNING_TAG`, the run's description and
    ``warning.txt``."""
    mlflow.set_tracking_uri(tracking_uri(cfg.tracking, root))
    experiment = mlflow.set_experiment(cfg.tracking.experiment)
    client = mlflow.MlflowClient()
    commit = git_commit(root)
    resume = resumable_training_run(client, training_run_id, experiment.experiment_id)
    streamed = resume and bool(client.get_metric_history(training_run_id, "train/loss"))
    start = {"run_id": training_run_id} if resume else {
        "run_name": f"{cfg.name}-{cfg.selection.strategy}-{cfg.selection.size}"}
    with mlflow.start_run(**start) as run:
        run_tags = {"profile": cfg.name, "git_commit": commit, REGISTERED_TAG: "true", **tags}
        notes = [f"WARNING: {warning}"] if warning else []
        if warning:
            run_tags[WARNING_TAG] = warning
            mlflow.log_text(warning + "\n", "warning.txt")
        if training_run_id and not resume:
            run_tags[TRAINING_RUN_TAG] = training_run_id
            notes.append(f"Evaluation and registration of the training run {training_run_id} (its live metrics "
                         "and system metrics are there).")
        if notes:
            mlflow.set_tag("mlflow.note.content", "\n\n".join(notes))
        if str(tags.get("eval.contaminated", "")).lower() == "true":
            run_tags["contaminated"] = "true"  # evaluate.allow_contaminated let a non-decontaminated task through
        mlflow.set_tags({k: redact(str(v)) for k, v in run_tags.items()})
        mlflow.log_params(safe_params(flatten(cfg.model_dump(mode="json"))))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        if not streamed:
            for row in step_metrics or []:
                mlflow.log_metrics({f"train/{k}": float(v) for k, v in row.items() if k != "step"},
                                   step=int(row["step"]))
        for ds in datasets or []:
            if not (resume and ds.get("context") == "training"):  # the training run logged its own input
                log_dataset(**ds)
        for a in artifacts:
            if a.exists():
                mlflow.log_artifact(str(a))
        info = log_model_version(model_dir, cfg.tracking.registered_model)
        version = info.registered_model_version
    for key, value in {**(version_tags or {}), **({WARNING_TAG: warning} if warning else {}), "git_commit": commit,
                       "run_id": run.info.run_id}.items():
        client.set_model_version_tag(cfg.tracking.registered_model, str(version), key, value)
    decision = promote_if_better(client, cfg.tracking.registered_model, str(version),
                                 cfg.tracking.champion_metric, metrics.get(cfg.tracking.champion_metric))
    return {"run_id": run.info.run_id, "experiment": cfg.tracking.experiment,
            "experiment_id": experiment.experiment_id, "training_run_id": training_run_id,
            "completed_training_run": resume,
            "registered_model": cfg.tracking.registered_model, "model_version": version,
            "tracking_uri": redact(mlflow.get_tracking_uri()), **decision}
