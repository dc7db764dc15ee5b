"""What a flow run shows in the Prefect UI (its Artifacts tab): results, links, the selection funnel.

After its stages, each flow run publishes what they left on disk:

- ``s1-results-<profile>`` (markdown): accuracy per thinking budget for every method evaluated
  (and with no budget), the base model, Control/Scaling/Performance per method, where the plots are;
- ``s1-mlflow-run-<profile>`` and ``s1-model-<profile>`` (links): the MLflow run and the registered
  model version (the tracking server's URL, or ``S1FLOW_MLFLOW_UI``, default the ``mlflow ui`` of docs/operations.md);
- ``s1-selection-funnel-<profile>`` and ``s1-selection-domains-<profile>`` (tables): questions left after
  each filter, and the selection per MSC domain.

Each only when the flow ran the stage that writes it (``s1-curate`` publishes the funnel, ``s1-evaluate``
the results and links). Keys repeat across runs, so the Artifacts page keeps their history.

    publish(paths, ["select", "evaluate", "register"])        # inside a flow run
"""
from __future__ import annotations

import json
import os
from typing import Optional

from components.curation.selection_report import funnel_steps
from components.method_index import REFERENCE, value_name
from components.paths import Paths

DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"  # `mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000`


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def results_markdown(ev: dict, reg: Optional[dict], paths: Paths) -> str:
    """The evaluation as markdown tables: per method, accuracy per budget value; then the summary per method."""
    methods = ev.get("methods") or {ev.get("method", REFERENCE): ev}
    lines = [f"# s1 results: profile `{paths.profile}`, task `{ev.get('task', '?')}`", "",
             f"Base model (no thinking): **{_pct(ev.get('base_accuracy'))}**; "
             f"{ev.get('questions', '?')} questions.", ""]
    for name, res in methods.items():
        unit = value_name(res)
        lines += [f"## {name}", "", f"| {unit} | accuracy | avg thinking tokens |", "|---:|---:|---:|"]
        lines += [f"| {p['budget']} | {_pct(p['accuracy'])} | {p['avg_thinking_tokens']:.1f} |" for p in res["points"]]
        if name == ev.get("method") and ev.get("unlimited"):
            u = ev["unlimited"]
            lines.append(f"| no budget | {_pct(u['accuracy'])} | {u['avg_thinking_tokens']:.1f} |")
        lines.append("")
    lines += ["## Control, Scaling, Performance", "", "| method | control | scaling (per token) | performance |",
              "|---|---:|---:|---:|"]
    for name, res in methods.items():
        scaling = "n/a" if res.get("scaling") is None else f"{res['scaling']:.4f}"
        lines.append(f"| {name} | {_pct(res.get('control'))} | {scaling} | {_pct(res.get('performance'))} |")
    lines += ["", f"Scaling plot: `{paths.plot('scaling.png')}` (`dvc plots show`); "
                  f"samples: `{paths.eval_samples}`."]
    if reg:
        lines += ["", f"MLflow run `{reg['run_id']}` (experiment `{reg['experiment']}`), model "
                      f"`{reg['registered_model']}` version {reg['model_version']}"
                      f"{' (champion)' if reg.get('champion') else ''}: {reg.get('champion_reason', '')}."]
    return "\n".join(lines)


def mlflow_ui(reg: dict) -> str:
    uri = str(reg.get("tracking_uri", ""))
    if uri.startswith(("http://", "https://")) and "***" not in uri:
        return uri.rstrip("/")
    return os.environ.get("S1FLOW_MLFLOW_UI", DEFAULT_MLFLOW_UI).rstrip("/")


def mlflow_links(reg: dict) -> dict[str, str]:
    ui = mlflow_ui(reg)
    out = {"model": f"{ui}/#/models/{reg['registered_model']}/versions/{reg['model_version']}"}
    if reg.get("experiment_id"):
        out["run"] = f"{ui}/#/experiments/{reg['experiment_id']}/runs/{reg['run_id']}"
    return out


def funnel_rows(report: dict) -> list[dict]:
    rows, before = [], None
    for step, n in funnel_steps(report["funnel"]):
        rows.append({"step": step, "questions": n, "dropped": "" if before is None else before - n})
        before = n
    return rows


def publish(paths: Paths, stages: list[str]) -> list[str]:
    """Create this flow run's artifacts from the files its stages wrote; returns their keys."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
    key, made = paths.profile.lower().replace("_", "-").replace(".", "-"), []
    selection, ev_file, reg_file = (paths.metric(n) for n in ("selection_report.json", "eval.json", "mlflow_run.json"))
    if "select" in stages and selection.exists():
        report = json.loads(selection.read_text())
        create_table_artifact(funnel_rows(report), key=f"s1-selection-funnel-{key}",
                              description=f"Selection ({report['strategy']}): questions left after each step")
        create_table_artifact([{"domain": d, "selected": n} for d, n in report["per_domain"].items()],
                              key=f"s1-selection-domains-{key}", description="The selection per MSC domain")
        made += [f"s1-selection-funnel-{key}", f"s1-selection-domains-{key}"]
    reg = json.loads(reg_file.read_text()) if "register" in stages and reg_file.exists() else None
    if "evaluate" in stages and ev_file.exists():
        create_markdown_artifact(results_markdown(json.loads(ev_file.read_text()), reg, paths),
                                 key=f"s1-results-{key}", description="Accuracy per budget and per method")
        made.append(f"s1-results-{key}")
    if reg:
        links = mlflow_links(reg)
        if "run" in links:
            create_link_artifact(links["run"], link_text=f"MLflow run {reg['run_id']}", key=f"s1-mlflow-run-{key}",
                                 description="The MLflow run: params, metrics, live training curves, system metrics")
            made.append(f"s1-mlflow-run-{key}")
        create_link_artifact(links["model"], link_text=f"{reg['registered_model']} v{reg['model_version']}",
                             key=f"s1-model-{key}", description="The registered model version (alias champion if best)")
        made.append(f"s1-model-{key}")
    if "evaluate" in stages and ev_file.exists():  # last: the results page (docs/results.md) and its tables
        made += publish_results_page(paths, key)
    return made


def publish_results_page(paths: Paths, key: str) -> list[str]:
    """The page `s1flow report` writes, as a markdown artifact, and its comparison tables as table artifacts."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    # lazy: the evaluation package imports torch; the flow's module stays light to import (flows/startup.py)
    from components.evaluation.report import load_results, results_markdown, tables
    results = load_results(paths)
    create_markdown_artifact(results_markdown(results), key=f"s1-results-page-{key}",
                             description="The results page: budget forcing, data ablation, trace swap, sequential vs "
                                         "parallel at equal compute, wait-string and number-of-waits ablations")
    made = [f"s1-results-page-{key}"]
    described = {"compute_matched": "Sequential vs parallel at equal compute: best accuracy within each compute level",
                 "wait_strings": "Extrapolation with each wait string ((none): delimiter suppressed only)",
                 "num_waits": "Extrapolation by the number of forced waits",
                 "data_ablation": "Selection strategies at equal size, accuracy per seed, mean and SE, paired difference from s1",
                 "sampled": "The sampled protocol: avg@k and pass@k per task and budget",
                 "trace_swap": "The same questions trained on two teachers' traces: paired difference at each budget",
                 "compute_axis": "Every method and setting: accuracy (95% bootstrap interval) against average "
                                 "compute tokens per question",
                 "compute_best": "The best method at each compute level, against the runner-up (paired test)"}
    for name, rows in tables(results).items():
        if name in described and rows:
            create_table_artifact(rows, key=f"s1-{name.replace('_', '-')}-{key}", description=described[name])
            made.append(f"s1-{name.replace('_', '-')}-{key}")
    return made
