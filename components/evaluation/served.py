"""The evaluation sweep run through a running Serve endpoint: sweep, score.

    report, records = evaluate_via_serve(evaluate, serve, "http://127.0.0.1:8000", questions, out_path, model_hash)
"""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from components.config import EvaluateConfig, ServeConfig
from components.evaluation.client import EndpointSweep, run_endpoint_sweep
from components.evaluation.metrics import Run, SweepPoint, sweep_metrics
from components.evaluation.scoring import score_by_budget


def report_from_records(records: list[dict], budgets: list[int], min_tokens: int) -> dict:
    table = score_by_budget(records)
    k = next(iter(table.values()))["k"]
    points = [SweepPoint(b, table[str(b)]["avg_thinking_tokens"], table[str(b)][f"avg@{k}"]) for b in sorted(budgets)]
    runs = [Run(r["thinking_tokens"], min_tokens, r["budget"]) for r in records if r["budget"] is not None]
    unlimited = table.get("None")
    return {
        "method": "budget_forcing", "points": [p.__dict__ for p in points], **sweep_metrics(points, runs),
        "scores": table, "accuracy_by_budget": {str(p.budget): p.accuracy for p in points},
        "unlimited": {"budget": None, "avg_thinking_tokens": unlimited["avg_thinking_tokens"],
                      "accuracy": unlimited[f"avg@{k}"]} if unlimited else None,
    }


def evaluate_via_serve(evaluate: EvaluateConfig, serve: ServeConfig, url: str, questions, out_path: Path,
                       model_hash: str):
    """Sweep through the running endpoint at ``url`` (resumable: graded samples are appended to ``out_path``)."""
    ev = evaluate
    sweep = EndpointSweep(
        base_url=f"{url}/v1", model=serve.model_name, budgets=tuple(sorted(ev.budgets)) + (None,),
        seeds=tuple(ev.seeds), temperature=ev.temperature, top_p=ev.top_p,
        max_answer_tokens=ev.max_answer_tokens, final_answer_prefix=ev.final_answer_prefix,
        num_waits=ev.num_waits, wait_strings=tuple(ev.wait_strings), concurrency=ev.concurrency,
        model_hash=model_hash, api_key=os.environ.get(serve.api_key_env, ""))
    records = asyncio.run(run_endpoint_sweep(questions, sweep, out_path))
    return report_from_records(records, ev.budgets, ev.min_thinking_tokens), records
