"""The ``s1flow`` command line: run one stage (what dvc.yaml calls) or the whole pipeline.

    s1flow stage collect            # one stage, active profile from params.yaml
    s1flow run --profile tiny       # the Prefect pipeline, end to end
    s1flow validate                 # check params.yaml, and that the profile can run where you are
    s1flow report                   # docs/results.md from metrics/<profile>/
    s1flow compare A B --budget 240 # two eval results (files or MLflow runs), paired, per question
    s1flow release-base             # pre-train the embedded base model and ship it (pretrain.release)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from components.common.raycluster import ensure_ray
from components.common.threads import use_threads
from components.config import ConfigError, load_config
from components.method_index import REFERENCE
from components.paths import Paths
from components.pipeline.deployments import register_deployments
from components.pipeline.dvc_yaml import render
from components.pipeline.registry import STAGES, run_stage
from components.serving.launch import start_server

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="s1flow: s1 test-time scaling pipeline. Stages: " + ", ".join(STAGES))

ParamsOpt = typer.Option("params.yaml", "--params", help="path to params.yaml")
ProfileOpt = typer.Option(None, "--profile", "-p", help="profile block in params.yaml (default: its 'profile' key)")
SetOpt = typer.Option(None, "--set", "-s", help="override KEY=VALUE, e.g. sft.epochs=3 (repeatable)")


def _config(params: str, profile: Optional[str], overrides: Optional[List[str]]):
    try:
        return load_config(params, profile, overrides or [])
    except ConfigError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def validate(params: str = ParamsOpt, profile: Optional[str] = ProfileOpt, set: Optional[List[str]] = SetOpt,
             stage: Optional[List[str]] = typer.Option(
                 None, "--stage", help="check only what these stages need (repeatable; default: every stage)"),
             params_only: bool = typer.Option(False, "--params-only",
                                              help="check params.yaml only, not whether the profile can run where you are")):
    """Validate params.yaml (all profiles), then check that the active profile can run here: API keys, engines,
    files, tokens (the checks `s1flow run` makes before any work). Exit 2 naming every problem found."""
    cfg = _config(params, profile, set)
    typer.echo(f"params OK; active profile: {cfg.name}")
    if params_only:
        return
    stages = list(stage or STAGES)
    if unknown := [s for s in stages if s not in STAGES]:
        typer.secho(f"--stage: unknown {unknown}; choose from: {', '.join(STAGES)}", fg="red", err=True)
        raise typer.Exit(2)
    from components.pipeline.preflight import preflight  # lazy: imports httpx and torch
    try:
        preflight(cfg, stages)
    except ConfigError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"profile {cfg.name!r} can run here: {', '.join(stages)}")


@app.command()
def stage(name: str = typer.Argument(..., help="one of: " + ", ".join(STAGES)),
          params: str = ParamsOpt, profile: Optional[str] = ProfileOpt, set: Optional[List[str]] = SetOpt):
    """Run one pipeline stage (this is what each dvc.yaml stage calls)."""
    if name not in STAGES:
        typer.secho(f"unknown stage {name!r}; choose one of: {', '.join(STAGES)}", fg="red", err=True)
        raise typer.Exit(2) from None
    cfg = _config(params, profile, set)
    from components.data.base_model_stage import BaseModelNotReady  # lazy: records, release hashing
    try:
        result = run_stage(name, cfg, Paths.for_profile(cfg.name))
    except (ConfigError, BaseModelNotReady) as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result, indent=2, default=str)[:4000])


@app.command()
def run(params: str = ParamsOpt, profile: Optional[str] = ProfileOpt, set: Optional[List[str]] = SetOpt):
    """Run the whole pipeline as a Prefect flow and print where the results are."""
    cfg = _config(params, profile, set)
    from components.pipeline.preflight import preflight  # lazy: imports httpx (~90 ms, a third of startup)
    try:
        preflight(cfg, STAGES)
    except ConfigError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    # Prefect's temporary server boots in its own process while Ray (for distill and filter) starts and the flow's
    # modules import here: side by side, not one after the other (flows/startup.py)
    from flows.startup import exit_after_cleanup, import_stage_libraries, prefect_api, start_prefect_server  # lazy: ssl (~20 ms)
    server = start_prefect_server()
    typer.echo("starting Ray and the Prefect API (a temporary server unless PREFECT_API_URL is set) side by side")
    ensure_ray()
    from flows.pipeline import s1_pipeline, summary_lines  # lazy: imports Prefect (1 s), while the server boots
    import_stage_libraries(server)  # while the server boots
    with prefect_api(server):
        result = s1_pipeline(profile=cfg.name, params_path=params, overrides=list(set or []))
    for line in summary_lines(result):
        typer.echo(line)
    exit_after_cleanup(0)  # every result is written; the exit handlers stop the server and Ray


@app.command()
def serve(model: Optional[str] = typer.Option(None, help="model dir or hub id (default: the profile's SFT model)"),
          port: Optional[int] = typer.Option(None, help="HTTP port (default: serve.port)"),
          params: str = ParamsOpt, profile: Optional[str] = ProfileOpt, set: Optional[List[str]] = SetOpt):
    """Serve the model with Ray Serve: OpenAI-compatible, budget fields per request (Ctrl-C stops)."""
    cfg = _config(params, profile, set)
    path = model or str(Paths.for_profile(cfg.name).sft_model)
    url = f"http://{cfg.serve.host}:{port or cfg.serve.port}/v1"
    typer.echo(f"serving {path} as '{cfg.serve.model_name}' at {url} (engine {cfg.engine.backend})")
    start_server(cfg.serve, cfg.engine, cfg.model.dtype, path, port=port, blocking=True)


@app.command()
def deploy(project: str = typer.Option(".", help="directory holding prefect.yaml (the flow code runs from here)")):
    """Register the Prefect deployments (work pools, training concurrency limit, `prefect deploy --all`)."""
    for name in register_deployments(Path(project)):
        typer.echo(f"deployment: {name}")
    typer.echo("start a worker: prefect worker start --pool s1flow-local; then: prefect deployment run 's1-pipeline/tiny'")


@app.command()
def report(out: str = typer.Option("docs/results.md", "--out", "-o", help="the page to write (plots go beside it, "
                                   "in a folder named after it)"),
           params: str = ParamsOpt, profile: Optional[str] = ProfileOpt, set: Optional[List[str]] = SetOpt):
    """Write the results page (budget table, data ablation, compute-matched comparison, wait ablations) from
    metrics/<profile>/, with the plots as PNGs beside it."""
    from components.evaluation.report import git_commit, write_results_page  # lazy: the evaluation package imports torch
    cfg = _config(params, profile, set)
    try:
        written = write_results_page(Paths.for_profile(cfg.name), Path(out), commit=git_commit("."))
    except (FileNotFoundError, ValueError) as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(f"wrote {path}")


def _side(both: Optional[str], one: Optional[str]) -> Optional[str]:
    return one if one is not None else both


@app.command()
def compare(a: str = typer.Argument(..., help="A: an eval samples file (data/<profile>/eval_samples.jsonl) or an "
                                    "MLflow run id"),
            b: str = typer.Argument(..., help="B: the same, on the same questions"),
            task: Optional[str] = typer.Option(None, help="task on both sides (default: each file's headline)"),
            method: str = typer.Option(REFERENCE, help="method on both sides"),
            budget: Optional[str] = typer.Option(None, help="thinking budget on both sides, or 'none' for the "
                                                 "no-budget run (default: the largest the method was run at)"),
            task_a: Optional[str] = typer.Option(None, help="task of A only"),
            task_b: Optional[str] = typer.Option(None, help="task of B only"),
            method_a: Optional[str] = typer.Option(None, help="method of A only"),
            method_b: Optional[str] = typer.Option(None, help="method of B only"),
            budget_a: Optional[str] = typer.Option(None, help="budget of A only"),
            budget_b: Optional[str] = typer.Option(None, help="budget of B only"),
            common_only: bool = typer.Option(False, "--common-only",
                                             help="compare on the questions both cover (default: refuse unless "
                                                  "they cover the same)"),
            as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
            tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store of run ids "
                                                       "(default: the profile's tracking.tracking_uri)"),
            params: str = ParamsOpt, profile: Optional[str] = ProfileOpt, set: Optional[List[str]] = SetOpt):
    """Compare two evaluation results question by question: each accuracy with its 95% interval, the difference
    B - A with its paired interval and the paired test's p-value (exact McNemar for one sample per question,
    sign-flip permutation for avg@k)."""
    from components.evaluation.compare import RUN_ID, CompareError, Point, format_result, parse_budget
    from components.evaluation.compare import compare as compare_results  # lazy: the evaluation package imports torch
    try:
        points = [Point(_side(task, t), _side(method, m), parse_budget(_side(budget, bd)))
                  for t, m, bd in ((task_a, method_a, budget_a), (task_b, method_b, budget_b))]
        if tracking_uri is None and any(RUN_ID.match(s) and not Path(s).exists() for s in (a, b)):
            from components.tracking.mlflow_run import tracking_uri as profile_uri
            tracking_uri = profile_uri(_config(params, profile, set).tracking, Path("."))
        result = compare_results(a, b, *points, tracking_uri=tracking_uri, common_only=common_only)
    except CompareError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result, indent=2) if as_json else format_result(result))


@app.command("release-base")
def release_base(params: str = ParamsOpt, profile: Optional[str] = ProfileOpt, set: Optional[List[str]] = SetOpt):
    """Pre-train the embedded base model and write it where pretrain.release points: the base-model stage installs
    it instead of pre-training while params and code stay as they were (commit the directory to ship it)."""
    # lazy: records, release hashing (~20 ms at startup)
    from components.data.base_model_stage import BaseModelNotReady, release_base_model
    cfg = _config(params, profile, set)
    use_threads()
    try:
        path = release_base_model(cfg.model, cfg.pretrain, cfg.pool.domains, cfg.pool.min_difficulty,
                                  cfg.pool.max_difficulty, Paths.for_profile(cfg.name))
    except (ConfigError, BaseModelNotReady) as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {path}")


@app.command()
def stages():
    """List the pipeline stages in order."""
    for name, stage in STAGES.items():
        typer.echo(f"{name:12s} {stage.doc}")


@app.command("dvc-yaml")
def dvc_yaml():
    """Print dvc.yaml as the stage registry defines it (redirect it to dvc.yaml after changing the registry)."""
    typer.echo(render(), nl=False)


if __name__ == "__main__":
    app()
