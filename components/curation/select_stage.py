"""Stage entry point: choose s1K (receives only ``selection``).

``s1`` and ``diversity`` draw from the filtered pool (every filter); the ablations
``random``, ``longest``, ``diversity_only`` and ``all`` from the quality pool
(after quality and decontamination, before difficulty), as in the paper.
"""
from __future__ import annotations

import json

from components.config import SelectionConfig
from components.curation.selection import ABLATION_POOL, select
from components.curation.selection_report import plot_selection_report, selection_report, write_plot_data
from components.paths import Paths
from components.records import Example, read_jsonl, write_json, write_jsonl


def select_stage(selection: SelectionConfig, paths: Paths) -> dict:
    """Choose the training set (s1K) from the filtered pool by the selection strategy; report and plot it."""
    pool = paths.quality_pool if selection.strategy in ABLATION_POOL else paths.filtered
    examples = read_jsonl(pool, Example)
    chosen = select(examples, selection.strategy, selection.size, selection.seed, selection)
    write_jsonl(paths.selected, chosen)
    filter_report = json.loads(paths.metric("filter_report.json").read_text())
    report = selection_report(filter_report, chosen, len(examples), selection.strategy)
    report["pool"] = pool.name
    write_json(paths.metric("selection_report.json"), report)
    plot_selection_report(report, paths.plot("selection_report.png"))
    write_plot_data(report, paths.plot("selection_funnel.json"), paths.plot("selection_domains.json"))
    return {k: v for k, v in report.items() if k != "trace_tokens"}
