"""The scaling curve: accuracy vs average thinking tokens, one line per method."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from components.inference.methods import PARALLEL_METHODS


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(6, 4), dpi=120)


def _method_line(ax, method: str, pts: list[dict], style: str, label: str) -> None:
    """One method's points, each annotated with its sweep value (B= budget, N= samples, w= width, W= waits)."""
    ax.plot([p["avg_thinking_tokens"] for p in pts], [100 * p["accuracy"] for p in pts], style, label=label)
    prefix = VALUE_LABEL.get(method, "B=")
    for p in pts:
        ax.annotate(f"{prefix}{p['budget']}", (p["avg_thinking_tokens"], 100 * p["accuracy"]),
                    textcoords="offset points", xytext=(4, -12), fontsize=7)


def _save(fig, ax, path: str | Path, title: str, xlabel: str, legend: str = "upper left") -> None:
    import matplotlib.pyplot as plt
    if ax is not None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc=legend, fontsize=8)
        fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_scaling(report: dict, path: str | Path, title: str = "Budget forcing on the held-out set") -> None:
    fig, ax = _figure()
    for method, res in report.get("methods", {report.get("method", "budget_forcing"): report}).items():
        _method_line(ax, method, res["points"], "o-", f"SFT + {method.replace('_', ' ')}")
    u = report["unlimited"]
    ax.plot([u["avg_thinking_tokens"]], [100 * u["accuracy"]], "s", label="SFT, no budget")
    if report.get("base_accuracy") is not None:
        ax.axhline(100 * report["base_accuracy"], ls="--", color="gray", label="base model (no thinking)")
    _save(fig, ax, path, title, "average thinking tokens")


VALUE_LABEL = {"majority_voting": "N=", "rebase": "w=", "wait_extension": "W="}


def plot_compute_matched(result: Optional[dict], path: str | Path,
                         title: str = "Sequential vs parallel scaling on the held-out set") -> None:
    """s1's Fig. 7: accuracy vs average thinking tokens per question (parallel samples and REBASE's expanded
    nodes summed), one line per method of the compute-matched comparison (None: a figure saying it did not run)."""
    fig, ax = _figure()
    if result is None:
        ax.text(0.5, 0.5, "not run (evaluate.compute_matched is empty)", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, None, path, title, "")
        return
    for method, res in result.get("methods", {}).items():
        kind = "parallel" if method in PARALLEL_METHODS else "sequential"
        _method_line(ax, method, sorted(res["points"], key=lambda p: p["avg_thinking_tokens"]),
                     "o--" if kind == "parallel" else "o-", f"{method.replace('_', ' ')} ({kind})")
    # accuracy rises with compute and the parallel methods spend the most: the lower right stays free
    _save(fig, ax, path, title, "average thinking tokens per question (parallel: summed)", legend="lower right")
