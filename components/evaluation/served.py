"""The evaluation sweep run through a running Serve endpoint: sweep, score.

    report, records = evaluate_via_serve(evaluate, serve, "http://127.0.0.1:8000", questions, out_path, model_hash)
"""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Optional

from components.config import EvaluateConfig, ServeConfig
from components.evaluation.client import EndpointSweep, run_endpoint_sweep
from components.evaluation.metrics import Run, SweepPoint, sweep_metrics
from components.evaluation.scoring import current_sweep, failures, score_by_budget
from components.method_index import REFERENCE

log = logging.getLogger(__name__)


def report_from_records(records: list[dict], budgets: list[int], min_tokens: int) -> dict:
    """The report of one sweep's records; failed requests are counted (``failed_requests``), never scored."""
    failed = failures(records)
    if failed:
        log.warning("%d of %d requests failed (recorded; the next run retries them), e.g. %s", len(failed),
                    len(records), failed[0].get("error", "")[:200])
    table = score_by_budget(records)
    if not table:
        raise RuntimeError(f"every request of the sweep failed ({len(failed)}), e.g. {failed[0].get('error', '')}")
    k = next(iter(table.values()))["k"]
    points = [SweepPoint(b, table[str(b)]["avg_thinking_tokens"], table[str(b)][f"avg@{k}"])
              for b in sorted(budgets) if str(b) in table]
    ok = [r for r in records if not r.get("failed")]
    runs = [Run(r["thinking_tokens"], min_tokens, r["budget"]) for r in ok if r["budget"] is not None]
    unlimited = table.get("None")
    return {
        "method": REFERENCE, "points": [p.__dict__ for p in points], **sweep_metrics(points, runs),
        "failed_requests": len(failed), "complete": not failed,
        "scores": table, "accuracy_by_budget": {str(p.budget): p.accuracy for p in points},
        "unlimited": {"budget": None, "avg_thinking_tokens": unlimited["avg_thinking_tokens"],
                      "accuracy": unlimited[f"avg@{k}"]} if unlimited else None,
    }


def check_budgets(budgets: list[int], thinking_cap: Optional[int]) -> None:
    """Every budget the server accepts: none above its thinking cap (it would answer each with a 400)."""
    over = sorted(b for b in budgets if thinking_cap is not None and b > thinking_cap)
    if over:
        raise ValueError(f"evaluate.budgets: {over} exceed engine.unlimited_thinking_tokens ({thinking_cap}), the "
                         "largest budget the Serve endpoint accepts; lower them or raise the cap")


def evaluate_via_serve(evaluate: EvaluateConfig, serve: ServeConfig, url: str, questions, out_path: Path,
                       model_hash: str, engine: str = "", thinking_cap: Optional[int] = None, client=None):
    """Sweep through the running endpoint at ``url`` (resumable: graded samples are appended to ``out_path``).
    ``engine``: backend and version; ``thinking_cap``: the engine's unlimited_thinking_tokens (both in the run key)."""
    ev = evaluate
    check_budgets(ev.budgets, thinking_cap)
    budgets = tuple(sorted(ev.budgets)) + (None,)  # None: the server caps it to what each prompt leaves
    sweep = EndpointSweep(
        base_url=f"{url}/v1", model=serve.model_name, budgets=budgets,
        seeds=tuple(ev.seeds), temperature=ev.temperature, top_p=ev.top_p,
        max_answer_tokens=ev.max_answer_tokens, final_answer_prefix=ev.final_answer_prefix,
        min_thinking_tokens=ev.min_thinking_tokens, num_waits=ev.num_waits, wait_strings=tuple(ev.wait_strings),
        concurrency=ev.concurrency, model_hash=model_hash, engine=engine, thinking_cap=thinking_cap,
        api_key=os.environ.get(serve.api_key_env, ""))
    records = asyncio.run(run_endpoint_sweep(questions, sweep, out_path, client=client))
    records = current_sweep(records, [q.id for q in questions], ev.seeds, budgets)
    return report_from_records(records, ev.budgets, ev.min_thinking_tokens), records
