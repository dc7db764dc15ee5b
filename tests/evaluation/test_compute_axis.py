"""The compute axis: accuracy against compute per question with bootstrap intervals, and the best method at each
compute level (fixtures: tests/support/compute_axis.py, worked by hand; tests/fixtures/compute_axis, the demo's
compute-matched comparison: its eval.json section and its methods' samples, budget forcing's first 40 of 200
questions)."""
import json
from pathlib import Path

import pytest

from components.evaluation.compare import read_samples
from components.evaluation.compute_axis import compute_axis, matched_questions
from components.evaluation.report import compute_axis_markdown
from tests.support.compute_axis import tiny_eval, tiny_samples

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "compute_axis"


def _point(axis: dict, method: str, value: int) -> dict:
    return next(p for p in axis["points"] if p["method"] == method and p["value"] == value)


def test_the_demo_samples_reproduce_every_compute_matched_point():
    """The comparison's questions are the first 20 asked, though budget forcing's samples cover more: every
    point's accuracy and compute from the samples equal eval.json's."""
    ev = json.loads((DEMO / "eval.json").read_text())
    axis = compute_axis(ev, read_samples(DEMO / "eval_samples.jsonl"))
    assert axis["missing"] == [] and len(axis["points"]) == 11
    for m, report in ev["compute_matched"]["methods"].items():
        for p in report["points"]:
            got = _point(axis, m, p["budget"])
            assert (got["questions"], got["of"]) == (20, 20)
            assert got["accuracy"] == pytest.approx(p["accuracy"], abs=1e-12)
            assert got["compute"] == pytest.approx(p["avg_thinking_tokens"], abs=1e-9)
            assert got["accuracy_low"] <= got["accuracy"] <= got["accuracy_high"]
    assert _point(axis, "rebase", 4)["setting"] == "w=4" and _point(axis, "rebase", 4)["kind"] == "search"
    top = axis["best"][-1]  # at 527.7 tokens: REBASE w=4 (20/20) over budget forcing B=240 (18/20)
    assert (top["method"], top["setting"], top["runner_up"], top["runner_up_setting"]) == \
        ("rebase", "w=4", "budget_forcing", "B=240")
    # two discordant questions, both REBASE's: exact McNemar p = 2 * (1/2)^2
    assert (top["test"], top["p_value"], top["significant"]) == ("exact McNemar", 0.5, False)


def test_intervals_and_compute_worked_by_hand():
    axis = compute_axis(tiny_eval(), tiny_samples())
    b10, b20 = _point(axis, "budget_forcing", 10), _point(axis, "budget_forcing", 20)
    # 1 of 8 right: a resampled mean is j/8, j ~ Binomial(8, 1/8); P(j = 0) = 0.34 > 2.5%, P(j >= 4) = 1.1% < 2.5%
    # < P(j >= 3) = 6.7%: the 95% interval is [0/8, 3/8]
    assert (b10["accuracy"], b10["accuracy_low"], b10["accuracy_high"]) == (0.125, 0.0, 0.375)
    # the probe tokens count: q0 spent 20 + 8, the others 20 -> 21 per question; resampled: 20 + j (j draws of q0)
    assert (b20["compute"], b20["compute_low"], b20["compute_high"]) == (21.0, 20.0, 23.0)
    assert (b20["accuracy_low"], b20["accuracy_high"]) == (1.0, 1.0)  # all right: nothing to resample
    assert _point(axis, "majority_voting", 2)["compute"] == 24.0  # parallel samples come summed per question
    assert compute_axis(tiny_eval(), tiny_samples()) == axis  # seeded: the same samples, the same intervals


def test_the_best_method_at_each_compute_level_and_its_paired_test():
    best = compute_axis(tiny_eval(), tiny_samples())["best"]
    assert [(r["compute_level"], r["method"], r["setting"], r["runner_up_setting"]) for r in best] == [
        (10.0, "budget_forcing", "B=10", None), (12.0, "majority_voting", "N=1", "B=10"),
        (21.0, "budget_forcing", "B=20", "N=1"), (24.0, "budget_forcing", "B=20", "N=2")]
    assert best[0]["note"] == "no other method spends this little" and best[0]["significant"] is None
    # exact McNemar from the discordant questions, all on the best's side: 1 -> p 1; 6 -> 2/2^6; 5 -> 2/2^5
    assert [r["p_value"] for r in best[1:]] == [1.0, 0.03125, 0.0625]
    assert [r["significant"] for r in best[1:]] == [False, True, False]
    assert {r["test"] for r in best[1:]} == {"exact McNemar"}
    assert best[2]["difference"] == pytest.approx(0.75) and best[2]["paired_questions"] == 8
    # the difference's interval: 6 of 8 questions differ by 1, a resampled mean is j/8 with j ~ Binomial(8, 3/4);
    # P(j <= 2) = 0.4% < 2.5% < P(j <= 3) = 2.7%: [3/8, 8/8]
    assert (best[2]["difference_low"], best[2]["difference_high"]) == (0.375, 1.0)
    page = "\n".join(compute_axis_markdown(compute_axis(tiny_eval(), tiny_samples())))
    assert ("| 21.0 | budget_forcing B=20 | 100.0% [100.0%, 100.0%] | majority_voting N=1 | 25.0% | "
            "+75.0 pts [+37.5 pts, +100.0 pts] | **yes** (p = 0.0312, exact McNemar) |") in page


def test_avg_at_k_points_pair_with_the_sign_flip_test():
    """Two seeds per question: each question's compute is the mean over its samples, and the paired test is the
    sign-flip permutation (exact over 8 questions)."""
    samples = tiny_samples()
    samples += [{**r, "seed": 1, "thinking_tokens": r["thinking_tokens"] + 2} for r in samples]
    axis = compute_axis(tiny_eval(), samples)
    assert _point(axis, "budget_forcing", 10)["compute"] == 11.0
    row = next(r for r in axis["best"] if r["setting"] == "B=20" and r["runner_up_setting"] == "N=1")
    # 6 questions differ by +1, 2 by 0: |mean| is extreme only for all six flipped alike: 2 * 4 / 256 patterns
    assert row["test"] == "sign-flip permutation" and row["p_value"] == pytest.approx(2 / 64)


def test_missing_samples_are_said_not_guessed():
    ev = tiny_eval()
    ev["compute_matched"]["methods"]["rebase"] = {"kind": "search", "value_label": "w=", "points": [
        {"budget": 1, "avg_thinking_tokens": 30.0, "accuracy": 0.5}]}
    samples = [r for r in tiny_samples() if not (r["method"] == "majority_voting" and r["budget"] == 2
                                                 and r["question_id"] == "q7")]
    axis = compute_axis(ev, samples)
    n2, rebase = _point(axis, "majority_voting", 2), _point(axis, "rebase", 1)
    assert (n2["questions"], n2["of"], n2["accuracy"]) == (7, 8, pytest.approx(3 / 7))
    assert "no samples for 1 of 8 questions (q7): scored on the other 7" in n2["missing"]
    assert (rebase["accuracy"], rebase["accuracy_low"], rebase["compute"]) == (0.5, None, 30.0)
    assert axis["missing"] == ["`majority_voting` N=2: no samples for 1 of 8 questions (q7): scored on the other 7",
                               "`rebase`: no samples (eval.json's numbers, no intervals)"]
    top = next(r for r in axis["best"] if r["compute_level"] == 30.0)
    assert top["method"] == "budget_forcing" and top["runner_up"] == "rebase" and top["note"] == "no samples to pair"
    page = "\n".join(compute_axis_markdown(axis))
    assert "| majority_voting | parallel | N=2 | 24.0 [24.0, 24.0] | 42.9% [" in page and "| 7 of 8 |" in page
    assert "| rebase | search | w=1 | 30.0 | 50.0% | 0 of 8 |" in page

    bare = compute_axis(ev, [])  # no samples file at all
    assert bare["missing"] == ["no eval samples for this task: the numbers are eval.json's, without intervals"]
    assert all(p["accuracy_low"] is None for p in bare["points"]) and bare["best"][0]["note"]
    no_tokens = [{k: v for k, v in r.items() if k != "thinking_tokens"} for r in tiny_samples()]
    b20 = _point(compute_axis(tiny_eval(), no_tokens), "budget_forcing", 20)
    assert b20["compute"] == 20.0 and b20["compute_low"] is None and "without token counts" in b20["missing"]
    assert compute_axis({"task": "heldout"}, tiny_samples()) is None  # no comparison: nothing to draw


def test_a_question_missing_from_one_point_keeps_its_place():
    """The comparison's questions are the first asked: a question absent from the first point listed (q1) is
    still one of them, from its place in the next point."""
    cm = {"questions": 3, "methods": {"budget_forcing": {}}}
    rows = [{"task": "t", "method": "budget_forcing", "budget": b, "question_id": q}
            for b, qs in ((48, ["q0", "q2", "q3", "q4"]), (96, ["q0", "q1", "q2", "q3", "q4"])) for q in qs]
    assert sorted(matched_questions(cm, rows, "t")) == ["q0", "q1", "q2"]
    assert matched_questions({**cm, "question_ids": ["q4"]}, rows, "t") == ["q4"]
