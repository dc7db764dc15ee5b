"""The compute-matched plot: one line per method from the report's kind and value label, dashed for parallel and
search methods, each accuracy with its interval as an error bar."""
import ast
from pathlib import Path

import pytest

from components.evaluation import plot
from components.evaluation.compute_axis import compute_axis
from tests.support.compute_axis import tiny_eval, tiny_samples


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Draw the tiny comparison and keep the axes instead of only saving them."""
    kept = {}
    save = plot._save

    def keep(fig, ax, path, *a, **k):
        save(fig, ax, path, *a, **k)
        kept.update(ax=ax, title=ax.get_title())

    monkeypatch.setattr(plot, "_save", keep)
    ev = tiny_eval()
    ev["compute_matched"]["methods"]["rebase"] = {"kind": "search", "value_label": "w=", "points": [
        {"budget": 2, "avg_thinking_tokens": 30.0, "accuracy": 0.5}]}
    plot.plot_compute_matched(ev["compute_matched"], tmp_path / "cm.png", axis=compute_axis(ev, tiny_samples()))
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"
    return kept


def test_parallel_and_search_methods_are_dashed(drawn):
    styles = {bars.get_label(): bars.lines[0].get_linestyle() for bars in drawn["ax"].containers}
    assert styles == {"budget forcing (sequential)": "-", "majority voting (parallel)": "--",
                      "rebase (search)": "--"}
    assert {t.get_text() for t in drawn["ax"].texts} >= {"B=10", "B=20", "N=1", "N=2", "w=2"}


def test_each_accuracy_carries_its_interval_as_an_error_bar(drawn):
    bars = {c.get_label(): c for c in drawn["ax"].containers}
    forcing = bars["budget forcing (sequential)"]
    segments = forcing.lines[2][0].get_segments()  # one vertical segment per point, at its compute
    # B=10: 12.5% [0.0%, 37.5%] at 10 compute tokens; B=20: 100% [100%, 100%] at 21 (probes counted)
    assert [[tuple(map(float, end)) for end in seg] for seg in segments] == [[(10.0, 0.0), (10.0, 37.5)],
                                                                           [(21.0, 100.0), (21.0, 100.0)]]
    rebase = bars["rebase (search)"].lines[2][0].get_segments()  # no samples: eval.json's point, no width
    assert [[tuple(map(float, end)) for end in seg] for seg in rebase] == [[(30.0, 50.0), (30.0, 50.0)]]
    assert drawn["title"].endswith("(95% intervals)")


def test_plot_reads_methods_from_the_report_not_from_inference():
    tree = ast.parse(Path(plot.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
        [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("components.inference")]
