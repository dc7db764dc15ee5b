"""The scaling curve: accuracy vs average thinking tokens, one line per method.

Each method's entry in the report says how its sweep values read (``value_label``: B= budget, N= samples,
w= width, W= waits) and its ``kind`` (sequential, parallel or search); the plots draw from those alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from components.evaluation.metrics import point_compute
from components.method_index import REFERENCE


def _figure():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(6, 4), dpi=120)


def _method_line(ax, res: dict, pts: list[dict], style: str, label: str,
                 errors: Optional[list[tuple[float, float]]] = None) -> None:
    """One method's points, each annotated with its sweep value (the method's ``value_label`` and the value);
    ``errors``: each point's accuracy interval (low, high), drawn as error bars."""
    x, y = [p["avg_thinking_tokens"] for p in pts], [100 * p["accuracy"] for p in pts]
    if errors is None:
        ax.plot(x, y, style, label=label)
    else:
        yerr = [[max(0.0, a - 100 * lo) for a, (lo, _) in zip(y, errors)],
                [max(0.0, 100 * hi - a) for a, (_, hi) in zip(y, errors)]]
        ax.errorbar(x, y, yerr=yerr, fmt=style, capsize=3, elinewidth=0.8, label=label)
    prefix = res.get("value_label", "B=")
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
    for method, res in report.get("methods", {report.get("method", REFERENCE): report}).items():
        _method_line(ax, res, res["points"], "o-", f"SFT + {method.replace('_', ' ')}")
    u = report["unlimited"]
    ax.plot([u["avg_thinking_tokens"]], [100 * u["accuracy"]], "s", label="SFT, no budget")
    if report.get("base_accuracy") is not None:
        ax.axhline(100 * report["base_accuracy"], ls="--", color="gray", label="base model (no thinking)")
    _save(fig, ax, path, title, "average thinking tokens")


def _axis_points(result: dict, axis: Optional[dict], method: str) -> tuple[list[dict], Optional[list]]:
    """A method's points on the compute axis (compute and accuracy from the samples, with the accuracy's
    interval) when ``axis`` has them, else the report's points without intervals."""
    rows = [r for r in (axis or {}).get("points", []) if r["method"] == method]
    if not rows:
        pts = [{**p, "avg_thinking_tokens": point_compute(p)}
               for p in result["methods"][method]["points"]]
        return sorted(pts, key=lambda p: p["avg_thinking_tokens"]), None
    rows = sorted(rows, key=lambda r: r["compute"])
    pts = [{"budget": r["value"], "avg_thinking_tokens": r["compute"], "accuracy": r["accuracy"]} for r in rows]
    errors = [(r["accuracy"], r["accuracy"]) if r["accuracy_low"] is None else (r["accuracy_low"], r["accuracy_high"])
              for r in rows]
    return pts, errors


def plot_compute_matched(result: Optional[dict], path: str | Path,
                         title: str = "Sequential vs parallel scaling on the held-out set",
                         axis: Optional[dict] = None) -> None:
    """s1's Fig. 7: accuracy vs average compute tokens per question (thinking and probe tokens; parallel samples
    and REBASE's expanded nodes summed), one line per method of the compute-matched comparison, dashed for
    parallel and search methods (None: a figure saying it did not run). ``axis``
    (:func:`components.evaluation.compute_axis.compute_axis`): the points as the samples give them, each
    accuracy with its 95% interval as an error bar."""
    fig, ax = _figure()
    if result is None:
        ax.text(0.5, 0.5, "not run (evaluate.compute_matched is empty)", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, None, path, title, "")
        return
    for method, res in result.get("methods", {}).items():
        kind = res.get("kind", "sequential")
        pts, errors = _axis_points(result, axis, method)
        _method_line(ax, res, pts, "o-" if kind == "sequential" else "o--",
                     f"{method.replace('_', ' ')} ({kind})", errors)
    # accuracy rises with compute and the parallel methods spend the most: the lower right stays free
    xlabel = "average compute tokens per question (thinking + probes; parallel: summed)"
    if any(p["accuracy_low"] is not None for p in (axis or {}).get("points", [])):
        title += " (95% intervals)"
    _save(fig, ax, path, title, xlabel, legend="lower right")
