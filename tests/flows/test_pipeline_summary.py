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
