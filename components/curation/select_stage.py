"""Stage entry point: choose s1K from the filtered pool (receives only ``selection``)."""
from __future__ import annotations

import json

from components.config import SelectionConfig
from components.paths import Paths
from components.records import Example, read_jsonl, write_json, write_jsonl


def select_stage(selection: SelectionConfig, paths: Paths) -> dict:
    """Choose the training set (s1K) from the filtered pool by the selection strategy; report and plot it."""
    from components.curation.selection import select
    from components.curation.selection_report import plot_selection_report, selection_report
    examples = read_jsonl(paths.filtered, Example)
    chosen = select(examples, selection.strategy, selection.size, selection.seed)
    write_jsonl(paths.selected, chosen)
    filter_report = json.loads(paths.metric("filter_report.json").read_text())
    report = selection_report(filter_report, chosen, len(examples), selection.strategy)
    write_json(paths.metric("selection_report.json"), report)
    plot_selection_report(report, paths.plot("selection_report.png"))
    return {k: v for k, v in report.items() if k != "trace_tokens"}
