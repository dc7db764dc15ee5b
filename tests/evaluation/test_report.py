"""`s1flow report`: the results page rendered from a run's metrics files (fixture: tests/fixtures/report)."""
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.evaluation.plot import plot_compute_matched, plot_scaling
from components.evaluation.report import (
    data_ablation_row,
    mean_and_se,
    read_data_ablation,
    tables,
    write_results_page,
)
from components.paths import Paths

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "report"
REPO = Path(__file__).resolve().parents[2]


def run_dir(tmp_path: Path, plots: bool = True) -> Paths:
    shutil.copytree(FIXTURE / "metrics", tmp_path / "metrics")
    paths = Paths.for_profile("tiny", tmp_path)
    if plots:
        ev = json.loads(paths.metric("eval.json").read_text())
        plot_scaling(ev, paths.plot("scaling.png"))
        plot_compute_matched(ev["compute_matched"], paths.plot("compute_matched.png"))
    return paths


def test_the_page_is_what_the_fixture_metrics_render(tmp_path):
    paths = run_dir(tmp_path)
    out = tmp_path / "docs" / "results.md"
    written = write_results_page(paths, out)
    assert out.read_text() == (FIXTURE / "results.md").read_text()
    assert sorted(p.name for p in written) == ["compute_matched.png", "results.md", "scaling.png"]
    for name in ("scaling.png", "compute_matched.png"):
        assert (tmp_path / "docs" / "results" / name).read_bytes()[:4] == b"\x89PNG"
        assert f"](results/{name})" in out.read_text()


def test_what_a_run_did_not_do_reads_not_run(tmp_path):
    paths = run_dir(tmp_path, plots=False)
    ev = json.loads(paths.metric("eval.json").read_text())
    for key in ("compute_matched", "ablations"):
        ev.pop(key)
    paths.metric("eval.json").write_text(json.dumps(ev))
    paths.metric("data_ablation.json").unlink()
    paths.metric("trace_swap.json").unlink()
    out = tmp_path / "results.md"
    write_results_page(paths, out)
    page = out.read_text()
    assert page.count("_not run_") == 5 and "data_ablation.json` absent" in page and "trace_swap.json` absent" in page
    assert "](" not in page and not (tmp_path / "results").exists()  # no plots made, none linked
    assert "| budget_forcing | 100.0% | 0.0095 | 80.0% [73.8%, 85.3%] |" in page  # 160/200, Clopper-Pearson


def test_data_ablation_rows_and_schema(tmp_path):
    row = data_ablation_row("random", 600, [0, 1, 2], [0.7, 0.74, 0.69])
    assert row["mean"] == pytest.approx(0.71) and row["se"] == pytest.approx(0.0152753, abs=1e-6)
    one = data_ablation_row("all", 900, [0], [0.5])
    assert one["se"] is None and mean_and_se(one) == "50.0% (one seed: no SE)"  # never "± 0.0%" for one run
    assert mean_and_se(row) == f"{100 * row['mean']:.1f}% ± {100 * row['se']:.1f}%"
    assert mean_and_se({**one, "se": 0.0}) == "50.0% (one seed: no SE)"  # whatever its se says
    p = tmp_path / "data_ablation.json"
    p.write_text(json.dumps([row]))  # a bare list of rows is accepted
    assert read_data_ablation(p)["rows"] == [row]
    p.write_text(json.dumps({"rows": [{**row, "accuracy": [0.7]}]}))
    with pytest.raises(ValueError, match="schema"):
        read_data_ablation(p)


def test_tables_hold_every_section(tmp_path):
    from components.evaluation.report import load_results
    t = tables(load_results(run_dir(tmp_path, plots=False)))
    assert set(t) == {"summary", "budgets", "data_ablation", "trace_swap", "compute_axis", "compute_best",
                      "compute_matched", "wait_strings", "num_waits"}
    assert [r["budget"] for r in t["trace_swap"]] == [96, 240, None]
    assert t["trace_swap"][0]["thorough_minus_standard"] == pytest.approx(-0.25) and t["trace_swap"][0]["p_value"] < 0.05
    assert [r["label"] for r in t["wait_strings"]][-1] == "2x (none)"
    assert t["budgets"][-1]["value"] == "no budget"


def test_cli_report_writes_the_page(tmp_path, monkeypatch):
    from flows.cli import app
    run_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["report", "--params", str(REPO / "params.yaml"), "--profile", "tiny",
                                   "--out", "docs/results.md"])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "| page rendered at commit | `unknown` |" in page  # tmp_path is no git checkout
    assert (tmp_path / "docs" / "results" / "compute_matched.png").exists()
    shutil.rmtree(tmp_path / "metrics")
    res = CliRunner().invoke(app, ["report", "--params", str(REPO / "params.yaml"), "--profile", "tiny"])
    assert res.exit_code == 2 and "run the evaluate stage first" in res.output


def test_the_tables_go_to_the_mlflow_run(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from components.evaluation.report import load_results
    from components.tracking.results_log import log_results
    results = load_results(run_dir(tmp_path, plots=False))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        experiment = MlflowClient(uri).create_experiment("report-test",
                                                         artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:  # no set_experiment: it would outlive this test
            pass
        made = log_results(run.info.run_id, results)
        client = MlflowClient(uri)
        listed = {f.path for f in client.list_artifacts(run.info.run_id, "results")}
        assert set(made) == listed and "results/compute_matched.json" in listed and "results/results.md" in listed
        page = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/results/results.md")
        assert "## Sequential vs parallel scaling at equal compute" in page
        table = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/results/wait_strings.json")  # log_table's format
        labels = [row[table["columns"].index("label")] for row in table["data"]]
        assert labels == ["no extrapolation", "2x Wait", "2x Hmm", "2x (none)"]
    finally:
        mlflow.set_tracking_uri(None)


def _samples(paths: Paths, budget: int, outcomes: list[list[bool]]) -> None:
    """Eval samples of the headline's ``budget`` point: question i's samples (one per seed) in ``outcomes[i]``."""
    from components.records import write_jsonl
    write_jsonl(paths.eval_samples, [
        {"task": "heldout", "method": "budget_forcing", "budget": budget, "seed": s, "question_id": f"q{i}",
         "correct": c, "thinking_tokens": 10} for i, row in enumerate(outcomes) for s, c in enumerate(row)])


def test_every_accuracy_carries_its_interval_from_the_count(tmp_path):
    from components.evaluation.report import interval, load_results
    results = load_results(run_dir(tmp_path, plots=False))
    assert results["samples"] == {}  # no samples file: the count (one sample per question) gives the interval
    iv = interval(results, 0.8, 200)
    assert iv.method == "clopper-pearson" and iv.low == pytest.approx(0.73778, abs=1e-5)
    assert interval(results, 0.79, 50) is None  # 39.5 of 50 correct: no count, no interval
    assert interval(results, 0.5, 10, k=4) is None  # avg@4 without its samples: a count would be wrong
    t = tables(results)
    row = next(r for r in t["budgets"] if r["value"] == 144)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.73778, 0.85311), abs=1e-5)
    assert all("ci_low" in r for name in ("wait_strings", "num_waits") for r in t[name])
    assert all(r["accuracy_low"] is None for r in t["compute_axis"])  # the compute axis needs the samples


def test_avg_at_k_points_take_the_question_bootstrap_from_the_samples(tmp_path):
    from components.evaluation.report import load_results, results_markdown
    from components.evaluation.statistics import bootstrap_interval
    paths = run_dir(tmp_path, plots=False)
    ev = json.loads(paths.metric("eval.json").read_text())
    # a served sweep: 4 questions x 2 seeds at budget 48, avg@2 = 0.5
    ev.update(questions=4, scores={"48": {"questions": 4, "samples_per_question": 2, "k": 2}})
    ev["methods"]["budget_forcing"]["points"][0]["accuracy"] = 0.5
    paths.metric("eval.json").write_text(json.dumps(ev))
    _samples(paths, 48, [[True, True], [True, False], [False, False], [False, True]])
    iv = bootstrap_interval([1.0, 0.5, 0.0, 0.5])
    page = results_markdown(load_results(paths))
    assert f"| 48 | 47.5 | 50.0% [{100 * iv.low:.1f}%, {100 * iv.high:.1f}%] |" in page
    assert iv.method == "bootstrap" and 0 < iv.low < 0.5 < iv.high < 1


def test_a_task_public_before_the_base_models_release_is_flagged(tmp_path):
    """The fixture's base model (released in September 2024) may have read AIME 2024 (public in February 2024);
    a fresh contest headline is not flagged, an older one is, and a run without a release date flags nothing."""
    from components.evaluation.report import load_results, results_markdown
    results = load_results(run_dir(tmp_path, plots=False))
    ev = results["eval"]
    page = results_markdown(results)
    assert "| aime24 | 30 | 7 Feb 2024, **possibly seen in pre-training** |" in page
    assert "| base model released | 19 Sep 2024 (a task public before it is flagged" in page
    fresh = {**ev, "task": "hmmt_feb25", "tasks": {"hmmt_feb25": ev["tasks"]["heldout"]}}
    assert "public on" not in results_markdown({**results, "eval": fresh})
    old = {**ev, "task": "aime24", "tasks": {"aime24": ev["tasks"]["aime24"]}}
    assert ("> **Possibly seen in pre-training:** `aime24`'s questions were public on 7 Feb 2024, before the base "
            "model's release (19 Sep 2024).") in results_markdown({**results, "eval": old})
    undated = {**ev, "provenance": {**ev["provenance"], "base_model_released": None}}
    page = results_markdown({**results, "eval": undated})
    assert "possibly seen in pre-training**" not in page and "| aime24 | 30 | 7 Feb 2024 |" in page
    assert "| base model released | not given (`model.released`): no task is flagged |" in page


def test_the_compute_axis_on_the_page_comes_from_the_samples(tmp_path):
    from tests.support.compute_axis import tiny_samples, write_tiny_comparison
    paths = run_dir(tmp_path)
    write_tiny_comparison(paths, tiny_samples())
    out = tmp_path / "docs" / "results.md"
    write_results_page(paths, out)
    page = out.read_text()
    assert "| budget_forcing | sequential | B=10 | 10.0 [10.0, 10.0] | 12.5% [0.0%, 37.5%] | 8 |" in page
    assert "| budget_forcing | sequential | B=20 | 21.0 [20.0, 23.0] | 100.0% [100.0%, 100.0%] | 8 |" in page
    assert "**yes** (p = 0.0312, exact McNemar)" in page and "Missing from the samples" not in page
    assert (tmp_path / "docs" / "results" / "compute_matched.png").read_bytes()[:4] == b"\x89PNG"


def test_a_point_or_method_without_samples_does_not_break_the_page(tmp_path):
    from tests.support.compute_axis import tiny_samples, write_tiny_comparison
    paths = run_dir(tmp_path)
    write_tiny_comparison(paths, [r for r in tiny_samples() if r["method"] != "majority_voting"
                             and not (r["budget"] == 10 and r["question_id"] in ("q6", "q7"))])
    out = tmp_path / "results.md"
    write_results_page(paths, out)
    page = out.read_text()
    assert "- `budget_forcing` B=10: no samples for 2 of 8 questions (q6, q7): scored on the other 6" in page
    assert "- `majority_voting`: no samples (eval.json's numbers, no intervals)" in page
    assert "| majority_voting | parallel | N=1 | 12.0 | 25.0% | 0 of 8 |" in page
    assert "| 12.0 | majority_voting N=1 | 25.0% | budget_forcing B=10 | 16.7% | +8.3 pts | no samples to pair |" in page


def test_the_data_ablation_compares_each_strategy_with_s1_over_the_same_questions(tmp_path):
    from components.evaluation.report import data_ablation_pairs, paired_text

    qs = [f"q{i}" for i in range(20)]
    s1 = data_ablation_row("s1", 600, [0, 1, 2], [1.0, 1.0, 0.95],
                           [{q: 1 for q in qs}, {q: 1 for q in qs}, {q: int(q != "q0") for q in qs}])
    assert s1["per_question"]["q0"] == [2, 3] and s1["per_question"]["q1"] == [3, 3]
    # random misses the first ten questions on every seed; diversity-only is s1 question for question
    random_ = data_ablation_row("random", 600, [0, 1, 2], [0.5] * 3, [{q: int(i >= 10) for i, q in enumerate(qs)}] * 3)
    same = data_ablation_row("diversity_only", 600, [0, 1, 2], s1["accuracy"],
                             [{q: 1 for q in qs}, {q: int(q != "q0") for q in qs}, {q: 1 for q in qs}])
    bare = data_ablation_row("longest", 600, [0], [0.4])  # a file written without per-question results
    pairs = data_ablation_pairs([s1, random_, same, bare])
    assert set(pairs) == {"random", "diversity_only", "longest"} and pairs["longest"] is None
    assert pairs["random"].difference == pytest.approx(-(10 - 1 / 3) / 20)  # q0: s1 2 of 3 seeds, random none
    assert pairs["random"].high < 0 and pairs["random"].p_value < 0.05 and "(significant)" in paired_text(pairs["random"])
    assert pairs["diversity_only"].difference == 0 and "(significant)" not in paired_text(pairs["diversity_only"])
    with pytest.raises(ValueError, match="same questions"):
        data_ablation_row("s1", 600, [0, 1], [1.0, 1.0], [{"q0": 1}, {"q1": 1}])
    # several samples per question (seeds through Serve): [right, samples] summed over the seeds
    assert data_ablation_row("s1", 600, [0, 1], [0.5, 0.75], [{"q0": [1, 2]}, {"q0": [3, 4]}])["per_question"] == \
        {"q0": [4, 6]}
    # a strategy run on other questions has nothing to pair with: no comparison, the page still renders
    other = data_ablation_row("random", 600, [0], [0.5], [{"x0": 1, "x1": 0}])
    assert data_ablation_pairs([s1, other]) == {"random": None}

    paths = run_dir(tmp_path, plots=False)
    paths.metric("data_ablation.json").write_text(json.dumps({"task": "heldout", "budget": 240,
                                                              "rows": [s1, random_, same, bare]}))
    write_results_page(paths, tmp_path / "results.md")
    page = (tmp_path / "results.md").read_text()
    assert "| s1 | 600 | 3 |" in page and "(reference) |" in page
    assert paired_text(pairs["random"]) + " |" in page and "sign-flip permutation test" in page


def test_the_data_ablation_table_carries_the_paired_comparison_not_the_questions(tmp_path):
    from components.evaluation.report import load_results

    qs = [f"q{i}" for i in range(12)]
    s1 = data_ablation_row("s1", 600, [0], [1.0], [{q: 1 for q in qs}])
    random_ = data_ablation_row("random", 600, [0], [0.5], [{q: int(i % 2) for i, q in enumerate(qs)}])
    paths = run_dir(tmp_path, plots=False)
    paths.metric("data_ablation.json").write_text(json.dumps({"rows": [s1, random_]}))
    rows = tables(load_results(paths))["data_ablation"]
    assert all("per_question" not in r for r in rows) and "minus_s1" not in rows[0]
    assert rows[1]["minus_s1"] == pytest.approx(-0.5) and rows[1]["significant"] is True  # exact McNemar, 6 vs 0


def test_the_sampled_protocol_has_its_section_with_avg_at_k_intervals(tmp_path):
    from components.evaluation.report import load_results, results_markdown
    from components.records import write_jsonl

    paths = run_dir(tmp_path, plots=False)
    ev = json.loads(paths.metric("eval.json").read_text())
    label, n = "budget_forcing[sampled]", 20
    records = [{"question_id": f"q{i}", "task": ev["task"], "method": label, "budget": 240, "seed": 7 + j,
                "correct": i < 15 or (i < 18 and j == 0), "thinking_tokens": 100} for i in range(n) for j in range(4)]
    write_jsonl(paths.eval_samples, records)
    ev["sampled"] = {"protocol": "sampled", "method": label, "k": 4, "temperature": 0.6, "top_p": 0.95,
                     "questions": n, "points": [{"budget": 240, "accuracy": (15 * 4 + 3) / 80, "pass_at_k": 0.9,
                                                 "avg_thinking_tokens": 100.0}]}
    ev["tasks"][ev["task"]]["sampled"] = ev["sampled"]  # the stage writes the headline's report into both
    paths.metric("eval.json").write_text(json.dumps(ev))
    results = load_results(paths)
    page = results_markdown(results)
    assert "## Sampled protocol: avg@k beside the greedy sweep" in page and "temperature 0.6, top-p 0.95" in page
    row = next(line for line in page.splitlines() if line.startswith("| 240 | 78.8% ["))
    assert row.endswith("| 90.0% | 100.0 |")  # pass@4, then thinking tokens
    row = tables(results)["sampled"][0]
    assert {k: row[k] for k in ("task", "k", "budget", "accuracy", "pass_at_k")} == {
        "task": ev["task"], "k": 4, "budget": 240, "accuracy": 63 / 80, "pass_at_k": 0.9}
    assert row["ci_low"] < 63 / 80 < row["ci_high"]  # the question bootstrap over each question's 4 samples
    assert "Sampled protocol" not in results_markdown(load_results(run_dir(tmp_path / "plain", plots=False)))
