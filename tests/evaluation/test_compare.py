"""`s1flow compare A B`: two eval samples files (or the MLflow runs that logged them) compared per question."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.evaluation.compare import CompareError, Point, compare, format_result, parse_budget
from components.evaluation.statistics import clopper_pearson
from components.records import Generation, write_jsonl
from flows.cli import app

REPO = Path(__file__).resolve().parents[2]
BUDGETS = (48, 96, None)


def sample(task: str, qid: str, budget, correct: bool, seed: int = 107, method: str = "budget_forcing") -> dict:
    """One line of eval_samples.jsonl as the evaluate stage writes it: a graded Generation with seed and task."""
    g = Generation(thinking="12 + 30 = 42", answer="Answer: 42", thinking_tokens=10, answer_tokens=3, waits_used=0,
                   hit_budget=budget is not None, question_id=qid, budget=budget, method=method,
                   prompt=f"question {qid}", predicted="42", gold="42" if correct else "41", correct=correct)
    return {**g.model_dump(), "seed": seed, "task": task}


def samples_file(path: Path, right: dict, questions: int = 20, seeds=(107,), tasks=("heldout", "aime24")) -> Path:
    """A samples file: every task x budget x question x seed; ``right[budget]`` = the question indices answered
    correctly (on every seed) on the first task; none right on the others."""
    write_jsonl(path, [sample(t, f"{t}-{i}", b, t == tasks[0] and i in right.get(b, ()), s)
                       for t in tasks for b in BUDGETS for i in range(questions) for s in seeds])
    return path


@pytest.fixture
def files(tmp_path):
    a = samples_file(tmp_path / "a.jsonl", {96: range(4), None: range(5)})      # 4/20 at 96
    b = samples_file(tmp_path / "b.jsonl", {96: range(1, 11), None: range(5)})  # 10/20 at 96: 1 lost, 7 gained
    return a, b


def test_two_files_compare_per_question(files):
    a, b = files
    r = compare(str(a), str(b), Point(budget=96), Point(budget=96))
    assert r["questions"] == 20 and r["a"]["accuracy"] == 0.2 and r["b"]["accuracy"] == 0.5
    assert r["a"]["interval"]["low"] == pytest.approx(clopper_pearson(4, 20).low)
    assert r["difference"]["estimate"] == pytest.approx(0.3) and r["difference"]["low"] < 0.3 < r["difference"]["high"]
    assert r["test"] == "exact McNemar" and r["p_value"] == pytest.approx(2 * (1 + 8) / 256)
    assert (r["a_better"], r["b_better"]) == (1, 7)
    text = format_result(r)
    assert "B - A: +30.0 points" in text and "exact McNemar" in text and "questions: 20" in text
    default = compare(str(a), str(b), Point(), Point())  # the largest budget of the headline task
    assert default["a"]["budget"] == 96 and default["a"]["task"] == "heldout"
    same = compare(str(a), str(a), Point(budget=None), Point(budget=None))
    assert same["difference"]["estimate"] == 0 and same["p_value"] == 1.0


def test_avg_at_k_sides_report_pass_at_k_and_use_sign_flips(tmp_path):
    a = samples_file(tmp_path / "a.jsonl", {96: range(4)}, seeds=(0, 1, 2, 3))
    b = samples_file(tmp_path / "b.jsonl", {96: range(8)}, seeds=(0, 1, 2, 3))
    r = compare(str(a), str(b), Point(budget=96), Point(budget=96))
    assert r["a"]["k"] == 4 and r["a"]["pass@4"] == 0.2 and r["a"]["interval"]["method"] == "bootstrap"
    assert r["test"] == "sign-flip permutation" and r["difference"]["estimate"] == pytest.approx(0.2)


def test_cli_prints_the_table_and_json(files):
    a, b = files
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--budget", "96"])
    assert res.exit_code == 0, res.output
    assert "20.0% [5.7%, 43.7%] (clopper-pearson)" in res.output and "p = 0.07031" in res.output
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--budget-a", "96", "--budget-b", "none", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["a"]["budget"], out["b"]["budget"], out["b"]["accuracy"]) == (96, None, 0.25)
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--task", "aime24", "--json"])
    assert json.loads(res.stdout)["a"]["accuracy"] == 0.0


@pytest.mark.parametrize("args,message", [
    (["missing.jsonl", "{b}"], "missing.jsonl: no such file, and not an MLflow run id"),
    (["{a}", "{b}", "--budget", "200"], "A: budget 200 not in the results for task 'heldout', method "
                                        "'budget_forcing'; they have: 48, 96, none"),
    (["{a}", "{b}", "--budget", "lots"], "--budget 'lots': give a thinking budget"),
    (["{a}", "{b}", "--task-b", "gpqa"], "B: task 'gpqa' not in the results; they have: heldout, aime24"),
    (["{a}", "{b}", "--method", "rebase"], "A: method 'rebase' not run on task 'heldout'"),
    (["{a}", "{b}", "--task-b", "aime24"], "share no question ids"),
])
def test_cli_errors_name_the_problem(files, args, message):
    a, b = files
    res = CliRunner().invoke(app, ["compare", *[x.format(a=a, b=b) for x in args]])
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output


def test_results_on_different_questions_are_refused_unless_asked(files, tmp_path):
    a, _ = files
    fewer = samples_file(tmp_path / "fewer.jsonl", {96: range(4)}, questions=15)
    with pytest.raises(CompareError, match="5 only in A"):
        compare(str(a), str(fewer), Point(budget=96), Point(budget=96))
    r = compare(str(a), str(fewer), Point(budget=96), Point(budget=96), common_only=True)
    assert r["questions"] == 15 and r["a"]["questions"] == 15


def test_parse_budget():
    assert parse_budget(None) == Point().budget and parse_budget("none") is None and parse_budget("240") == 240


def test_two_mlflow_runs_compare_by_id(files, tmp_path):
    import mlflow
    from mlflow import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("compare-test", artifact_location=(tmp_path / "artifacts").as_uri())
    runs = []
    for path in files:
        run = client.create_run(experiment)
        client.log_artifact(run.info.run_id, str(path.rename(path.with_name("eval_samples.jsonl"))))
        client.set_terminated(run.info.run_id)
        runs.append(run.info.run_id)
    bare = client.create_run(experiment).info.run_id
    try:
        res = CliRunner().invoke(app, ["compare", *runs, "--budget", "96", "--json", "--tracking-uri", uri])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)  # MLflow logs its database setup on stderr
        assert (out["a"]["accuracy"], out["b"]["accuracy"], out["questions"]) == (0.2, 0.5, 20)
        assert out["a"]["source"] == runs[0]
        res = CliRunner().invoke(app, ["compare", runs[0], "0" * 32, "--tracking-uri", uri])
        assert res.exit_code == 2 and f"unknown MLflow run id {'0' * 32}" in res.output
        res = CliRunner().invoke(app, ["compare", runs[0], bare, "--tracking-uri", uri])
        assert res.exit_code == 2 and "has no eval_samples.jsonl artifact" in " ".join(res.output.split())
    finally:
        mlflow.set_tracking_uri(None)
