"""The sampled protocol: k seeded samples per question at each sampled budget, avg@k and pass@k beside the
greedy sweep, planned for every task with its own k."""
import pytest
from pydantic import ValidationError

from components.config import EvaluateConfig
from components.evaluation.plan import plan_tasks
from components.evaluation.sampled import sampled_label, sampled_section, sampled_sweep
from components.evaluation.sweep import assemble, evaluation_parts, run_parts
from components.records import Question

QS = ["What is 12 + 34?", "What is the digit sum of 987?", "Solve for x: x - 5 = 7. What is x?"]


def cfg(**kw) -> EvaluateConfig:
    return EvaluateConfig(budgets=[4, 8], max_answer_tokens=4, protocols=["paper", "sampled"],
                          sampled={"k": {"default": 2, "aime24": 8}, "budgets": [8]}, **kw)


def test_the_protocols_and_their_settings_are_checked_where_they_are_written():
    with pytest.raises(ValidationError, match="protocols: .* must list 'paper'"):
        EvaluateConfig(protocols=["sampled"])
    with pytest.raises(ValidationError, match=r"sampled.budgets: \[9\] are not in evaluate.budgets"):
        EvaluateConfig(budgets=[4, 8], protocols=["paper", "sampled"], sampled={"budgets": [9]})
    with pytest.raises(ValidationError, match="'default'"):
        EvaluateConfig(sampled={"k": {"aime24": 64}})
    with pytest.raises(ValidationError, match="must be >= 1"):
        EvaluateConfig(sampled={"k": {"default": 0}})
    assert EvaluateConfig().protocols == ["paper"]  # greedy alone unless asked


def test_every_task_samples_with_its_own_k():
    qs = [Question(id=str(i), source="t", question=q, answer="46") for i, q in enumerate(QS)]
    head, other = plan_tasks(cfg(), {"heldout": qs, "aime24": qs[:1]})
    assert head.parts[-1] == ("sampled", "budget_forcing", 2) and other.parts == [("sweep", None, None),
                                                                                   ("sampled", "budget_forcing", 8)]
    assert plan_tasks(EvaluateConfig(), {"heldout": qs})[0].parts == evaluation_parts(EvaluateConfig(), qs)


def test_avg_at_k_and_pass_at_k_from_the_samples():
    c = cfg()
    label = sampled_label(c.method)
    right = {("a", 0): True, ("a", 1): False, ("b", 0): True, ("b", 1): True}
    records = [{"question_id": q, "method": label, "budget": 8, "seed": 7 + j, "correct": ok, "thinking_tokens": 8}
               for (q, j), ok in right.items()]
    records += [{"question_id": q, "method": label, "budget": None, "seed": 7 + j, "correct": False,
                 "thinking_tokens": 10 + j} for q in "ab" for j in range(2)]
    section = sampled_section(records, c, k=2, questions=2)
    assert section["points"] == [
        {"budget": 8, "accuracy": 0.75, "pass_at_k": 1.0, "avg_thinking_tokens": 8.0},
        {"budget": None, "accuracy": 0.0, "pass_at_k": 0.0, "avg_thinking_tokens": 10.5}]
    assert (section["k"], section["temperature"], section["top_p"]) == (2, 0.6, 0.95)


def test_k_seeded_samples_per_question_on_the_engine(tiny_engine):
    c = cfg()
    qs = [Question(id=str(i), source="t", question=q, answer="46") for i, q in enumerate(QS)]
    section, records = sampled_sweep(tiny_engine, qs, c, k=2)
    assert len(records) == 2 * len(qs) * 2  # k x questions x (budget 8, no budget)
    assert {(r["seed"], r["budget"]) for r in records} == {(7, 8), (8, 8), (7, None), (8, None)}
    assert {r["method"] for r in records} == {"budget_forcing[sampled]"}
    assert all(r["thinking_tokens"] <= 8 for r in records if r["budget"] == 8)
    # sampled, not greedy: the two seeds write different thoughts, and a rerun writes the same ones again
    by_seed = {s: [r["thinking"] for r in records if r["seed"] == s and r["budget"] is None] for s in (7, 8)}
    assert by_seed[7] != by_seed[8]
    assert sampled_sweep(tiny_engine, qs, c, k=2)[1] == records
    assert [p["budget"] for p in section["points"]] == [8, None] and section["questions"] == len(qs)
    # planned with the sweep, the section lands in the task's report and its records after the sweep's
    parts = plan_tasks(c, {"heldout": qs})[0].parts
    report, gens = assemble(qs, c, run_parts(tiny_engine, parts, qs, c))
    assert report["sampled"] == section and gens[-len(records):] == records


def test_the_record_names_both_protocols():
    from components.evaluation.provenance_text import protocol_text
    prov = {"protocol": "paper", "temperature": 0.0, "top_p": 1.0, "seeds": [0],
            "sampled": {"temperature": 0.6, "top_p": 0.95, "k": {"default": 4, "aime24": 64}}}
    assert protocol_text(prov) == ("paper: greedy, temperature 0.0, top-p 1.0, seeds [0]; and sampled: temperature "
                                   "0.6, top-p 0.95, k by task (default 4, aime24 64)")
    assert "sampled" not in protocol_text({**prov, "sampled": None})
