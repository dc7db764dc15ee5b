"""The selection report: what each filter left, where the chosen examples come from, how long they are.

JSON for machines (metrics/<profile>/selection_report.json, logged to MLflow)
and one PNG for people (plots/<profile>/selection_report.png): the filter
funnel, the per-domain histogram of the selection, and its trace lengths.

    report = selection_report(filter_report, chosen, available, strategy); plot_selection_report(report, png)
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from statistics import mean, median

from components.data.domains import msc_domains
from components.records import Example


def selection_report(filter_report: dict, chosen: list[Example], available: int, strategy: str) -> dict:
    lengths = sorted(e.trace_tokens for e in chosen)
    titles = msc_domains()
    funnel = dict(filter_report.get("counts", {}))
    funnel["selected"] = len(chosen)
    return {
        "strategy": strategy, "selected": len(chosen), "available": available, "funnel": funnel,
        "drop_reasons": filter_report.get("drop_reasons", {}),
        "per_domain": {f"{code} {titles.get(code, {}).get('title', '?')}": n
                       for code, n in sorted(Counter(e.question.msc for e in chosen).items())},
        "domains": len({e.question.msc for e in chosen}),
        "trace_tokens": lengths,
        "trace_tokens_median": median(lengths) if lengths else 0,
        "trace_tokens_mean": round(mean(lengths), 2) if lengths else 0,
    }


# The funnel in pipeline order (JSON reports keep keys sorted); a step not listed goes by its count.
FUNNEL_ORDER = ("pool", "after_quality", "after_decontamination", "after_difficulty", "selected")


def funnel_steps(funnel: dict) -> list[tuple[str, int]]:
    """``(step, questions left)`` from the pool to the selection: counts never grow along the pipeline."""
    rank = {k: i for i, k in enumerate(FUNNEL_ORDER)}
    return sorted(funnel.items(), key=lambda kv: (-kv[1], rank.get(kv[0], len(FUNNEL_ORDER))))


def plot_selection_report(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    funnel = dict(funnel_steps(report["funnel"]))
    axes[0].barh(list(funnel)[::-1], list(funnel.values())[::-1], color="#4c72b0")
    for y, v in enumerate(list(funnel.values())[::-1]):
        axes[0].text(v, y, f" {v}", va="center", fontsize=8)
    axes[0].set_title("Questions left after each step")
    domains = report["per_domain"]
    axes[1].bar(range(len(domains)), list(domains.values()), color="#55a868")
    axes[1].set_xticks(range(len(domains)), [d[:28] for d in domains], rotation=60, ha="right", fontsize=7)
    axes[1].set_title(f"Selected per MSC domain ({report['domains']} domains)")
    axes[2].hist(report["trace_tokens"], bins=30, color="#c44e52")
    axes[2].axvline(report["trace_tokens_median"], color="black", linestyle="--", label="median")
    axes[2].set_title("Trace length of the selection (tokens)")
    axes[2].legend()
    fig.suptitle(f"Selection: {report['strategy']}, {report['selected']} of {report['available']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plot_data(report: dict, funnel: Path, domains: Path) -> None:
    """The funnel (questions left after each step) and the per-domain counts of the selection as JSON lists
    for ``dvc plots show`` (bar charts beside the scaling curve; DVC reads JSON, YAML, CSV, TSV, not JSONL)."""
    import json
    for path, rows in ((funnel, [{"step": k, "questions": v} for k, v in funnel_steps(report["funnel"])]),
                       (domains, [{"domain": k, "selected": v} for k, v in report["per_domain"].items()])):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1) + "\n")
