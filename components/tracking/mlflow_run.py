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
import re
import subprocess
from pathlib import Path
from typing import Any, Optional

import mlflow
import mlflow.pyfunc

from components.config import ProfileConfig, TrackingConfig

CHAMPION = "champion"


def tracking_uri(cfg: TrackingConfig, root: Path) -> str:
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / 'mlflow.db').resolve()}"


MASK = "***"
_SECRET_NAME = re.compile(r"(^|[_.\-])(api[_-]?key|apikey|key|token|access[_-]?token|secret|password|passwd|pwd|"
                          r"auth|authorization|credential|credentials|signature|sig|session[_-]?token|"
                          r"x-amz-signature|x-amz-credential|x-amz-security-token)$", re.I)
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<userinfo>[^/@\s?#]+)@", re.I)
_QUERY_PAIR = re.compile(r"(?P<sep>[?&;])(?P<key>[^=&;#\s]+)=(?P<value>[^&;#\s]*)")


def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not name.lower().endswith("_env")


def redact(value: Any) -> Any:
    """``value`` with credentials masked (strings only; other types unchanged)."""
    if not isinstance(value, str):
        return value
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", value)
    return _QUERY_PAIR.sub(lambda m: f"{m['sep']}{m['key']}={MASK if _secret_name(m['key']) else m['value']}", out)


def safe_params(params: dict[str, Any]) -> dict[str, str]:
    """Flattened params ready for MLflow: secrets masked, values cut to 500 characters."""
    out = {}
    for k, v in params.items():
        leaf = k.rsplit(".", 1)[-1]
        out[k] = MASK if _secret_name(leaf) and v not in (None, "") else str(redact(v if not isinstance(v, (list, tuple))
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


class BudgetForcedModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict(DataFrame[question, max_thinking_tokens?])`` -> answers + thinking."""

    def load_context(self, context):
        from components.inference.hf_engine import HFEngine
        self.engine = HFEngine.from_pretrained(context.artifacts["model"])

    def predict(self, context, model_input, params: Optional[dict] = None):
        import pandas as pd

        from components.formatting import thinking_prompt
        from components.inference.budget_forcing import BudgetSpec

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        budgets = df["max_thinking_tokens"] if "max_thinking_tokens" in df else [None] * len(df)
        specs = [BudgetSpec(max_thinking_tokens=None if pd.isna(b) else int(b), final_answer_prefix="Answer:")
                 for b in budgets]
        prompts = [thinking_prompt(self.engine.tokenizer, q) for q in df["question"]]
        res = self.engine.generate_forced(prompts, specs)
        return pd.DataFrame({"answer": [r.answer for r in res], "thinking": [r.thinking for r in res],
                             "thinking_tokens": [r.thinking_tokens for r in res]})


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


def log_pipeline_run(cfg: ProfileConfig, root: Path, metrics: dict[str, float], artifacts: list[Path],
                     model_dir: Path, tags: dict[str, str],
                     step_metrics: Optional[list[dict]] = None,
                     version_tags: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """``step_metrics``: per-step rows ({"step": n, "loss": ..., ...}) logged as MLflow histories;
    ``version_tags`` go on the registered model version (e.g. the dataset's DVC hash)."""
    mlflow.set_tracking_uri(tracking_uri(cfg.tracking, root))
    mlflow.set_experiment(cfg.tracking.experiment)
    commit = git_commit(root)
    with mlflow.start_run(run_name=f"{cfg.name}-{cfg.selection.strategy}-{cfg.selection.size}") as run:
        run_tags = {"profile": cfg.name, "git_commit": commit, **tags}
        if str(tags.get("eval.contaminated", "")).lower() == "true":
            run_tags["contaminated"] = "true"  # evaluate.allow_contaminated let a non-decontaminated task through
        mlflow.set_tags({k: redact(str(v)) for k, v in run_tags.items()})
        mlflow.log_params(safe_params(flatten(cfg.model_dump(mode="json"))))
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        for row in step_metrics or []:
            mlflow.log_metrics({f"train/{k}": float(v) for k, v in row.items() if k != "step"}, step=int(row["step"]))
        for a in artifacts:
            if a.exists():
                mlflow.log_artifact(str(a))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=BudgetForcedModel(), artifacts={"model": str(model_dir)},
            registered_model_name=cfg.tracking.registered_model,
            pip_requirements=["s1flow", "torch==2.13.0", "transformers>=5.19,<5.20"],
        )
        version = info.registered_model_version
    client = mlflow.MlflowClient()
    for key, value in {**(version_tags or {}), "git_commit": commit, "run_id": run.info.run_id}.items():
        client.set_model_version_tag(cfg.tracking.registered_model, str(version), key, value)
    decision = promote_if_better(client, cfg.tracking.registered_model, str(version),
                                 cfg.tracking.champion_metric, metrics.get(cfg.tracking.champion_metric))
    return {"run_id": run.info.run_id, "experiment": cfg.tracking.experiment,
            "registered_model": cfg.tracking.registered_model, "model_version": version,
            "tracking_uri": redact(mlflow.get_tracking_uri()), **decision}
