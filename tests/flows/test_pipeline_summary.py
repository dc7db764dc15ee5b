"""The summary `s1flow run` / `make demo` prints: every accuracy with its 95% interval."""
from flows.pipeline import summary_lines


def test_the_summary_prints_each_accuracy_with_its_exact_interval(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = {"profile": "tiny",
              "evaluate": {"base_accuracy": 0.0, "questions": 200, "control": 1.0, "scaling": 0.0157,
                           "performance": 0.955,
                           "points": [{"budget": 48, "accuracy": 0.005, "avg_thinking_tokens": 48.0},
                                      {"budget": 240, "accuracy": 0.955, "avg_thinking_tokens": 134.8}],
                           "unlimited": {"accuracy": 0.955, "avg_thinking_tokens": 134.8}},
              "register": {"run_id": "r", "experiment": "e", "tracking_uri": "sqlite:///m.db",
                           "registered_model": "m", "model_version": 1}}
    lines = summary_lines(result)
    assert "base model accuracy (no thinking): 0.0% [0.0%, 1.8%]" in lines
    assert any(line.startswith("budget   240 thinking tokens: accuracy 95.5% [91.6%, 97.9%]") for line in lines)
    assert any(line.startswith("no budget: accuracy 95.5% [91.6%, 97.9%]") for line in lines)
    assert not any(line.startswith("sampled") for line in lines)  # a run that sampled nothing says nothing of it


def test_the_summary_prints_the_sampled_protocol_with_its_bootstrap_interval(tmp_path, monkeypatch):
    from components.records import write_jsonl
    monkeypatch.chdir(tmp_path)
    label = "budget_forcing[sampled]"
    write_jsonl(tmp_path / "data/tiny/eval_samples.jsonl",
                [{"question_id": f"q{i}", "task": "heldout", "method": label, "budget": None, "seed": 7 + j,
                  "correct": i < 8 or j == 0} for i in range(10) for j in range(4)])
    result = {"profile": "tiny",
              "evaluate": {"task": "heldout", "base_accuracy": 0.0, "questions": 10, "control": 1.0, "scaling": None,
                           "performance": 0.9, "points": [], "unlimited": {"accuracy": 0.9, "avg_thinking_tokens": 9},
                           "sampled": {"method": label, "k": 4, "temperature": 0.6, "top_p": 0.95, "questions": 10,
                                       "points": [{"budget": None, "accuracy": 0.85, "pass_at_k": 1.0,
                                                   "avg_thinking_tokens": 9.0}]}},
              "register": {"run_id": "r", "experiment": "e", "tracking_uri": "sqlite:///m.db",
                           "registered_model": "m", "model_version": 1}}
    line = next(line for line in summary_lines(result) if line.startswith("sampled, no budget: avg@4 85.0% ["))
    low, high = (float(x.rstrip("%")) for x in line.split("[")[1].split("]")[0].split(", "))
    assert low < 85.0 < high and line.endswith("pass@4 100.0% (avg 9.0 thinking tokens)")
    assert "sampled: 4 samples of each of 10 questions at temperature 0.6, top-p 0.95; [low, high] from resampling " \
           "questions" in summary_lines(result)
