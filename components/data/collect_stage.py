"""Stage entry point: the question pool and the held-out test set (receives only ``pool`` and ``heldout``)."""
from __future__ import annotations

from components.config import HeldoutConfig, PoolConfig
from components.data.pool import generate_heldout
from components.data.pool_sources import load_pool
from components.paths import Paths
from components.records import write_json, write_jsonl


def collect_stage(pool: PoolConfig, heldout: HeldoutConfig, paths: Paths) -> dict:
    """Gather the question pool from its sources (schema-checked, deduplicated) and the held-out test set."""
    result = load_pool(pool)
    test = generate_heldout(heldout.seed, heldout.size, pool.domains, heldout.min_difficulty, heldout.max_difficulty)
    write_jsonl(paths.pool, result.questions)
    write_jsonl(paths.quarantine, result.quarantined)
    write_jsonl(paths.heldout, test)
    report = {**result.report, "pool": len(result.questions), "heldout": len(test),
              "malformed": sum(1 for q in result.questions if q.metadata.get("malformed"))}
    write_json(paths.metric("collect_report.json"), report)
    return report
