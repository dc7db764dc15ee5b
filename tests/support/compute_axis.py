"""A tiny compute-matched comparison whose intervals, compute and tests can be worked out by hand.

Eight questions q0..q7, one sample each:

* budget forcing (sequential, ``B=``): B=10 right on q0 only, 10 thinking tokens each (accuracy 1/8, compute
  10); B=20 right on all eight, 20 thinking tokens each and 8 probe tokens on q0 (compute 21);
* majority voting (parallel, ``N=``, tokens summed over samples): N=1 right on q0, q1, 12 tokens each (0.25 at
  12); N=2 right on q0..q2, 24 tokens each (0.375 at 24).
"""
from __future__ import annotations

QUESTIONS = [f"q{i}" for i in range(8)]
POINTS = {  # (method, value) -> (questions right, thinking tokens per question)
    ("budget_forcing", 10): ({"q0"}, 10),
    ("budget_forcing", 20): (set(QUESTIONS), 20),
    ("majority_voting", 1): ({"q0", "q1"}, 12),
    ("majority_voting", 2): ({"q0", "q1", "q2"}, 24),
}
PROBES = {("budget_forcing", 20, "q0"): 8}


def tiny_samples() -> list[dict]:
    """The samples as the evaluate stage writes them (one record per question and point)."""
    return [{"task": "heldout", "method": m, "budget": v, "seed": 0, "question_id": q, "correct": q in right,
             "thinking_tokens": tokens, **({"probe_tokens": PROBES[(m, v, q)]} if (m, v, q) in PROBES else {})}
            for (m, v), (right, tokens) in POINTS.items() for q in QUESTIONS]


def tiny_eval() -> dict:
    """The ``eval.json`` the samples belong to (its points as the sweep reports them: thinking tokens only)."""
    methods = {"budget_forcing": {"kind": "sequential", "value_label": "B=", "points": []},
               "majority_voting": {"kind": "parallel", "value_label": "N=", "points": []}}
    for (m, v), (right, tokens) in POINTS.items():
        methods[m]["points"].append({"budget": v, "avg_thinking_tokens": float(tokens),
                                     "accuracy": len(right) / len(QUESTIONS)})
    return {"task": "heldout", "questions": len(QUESTIONS), "method": "budget_forcing",
            "compute_matched": {"questions": len(QUESTIONS), "methods": methods, "table": []}}


def write_tiny_comparison(paths, samples: list[dict]) -> None:
    """Replace the run's compute-matched comparison (``paths``: a run's :class:`components.paths.Paths` with an
    ``eval.json``) by the tiny one, and its eval samples by ``samples``."""
    import json

    from components.records import write_jsonl
    ev = json.loads(paths.metric("eval.json").read_text())
    ev["compute_matched"] = tiny_eval()["compute_matched"]
    paths.metric("eval.json").write_text(json.dumps(ev))
    write_jsonl(paths.eval_samples, samples)
