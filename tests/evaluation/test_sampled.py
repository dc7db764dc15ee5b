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
    return EvaluateConfig(budgets=[4, 8], max_answer_tokens=4, protocols=["paper", "sampled"], tasks=["heldout", "aime24"],
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
    with pytest.raises(ValidationError, match=r"sampled.k: \['aime'\] are not in evaluate.tasks"):  # a typo
        EvaluateConfig(tasks=["heldout", "aime24"], protocols=["paper", "sampled"],
                       sampled={"k": {"default": 4, "aime": 64}})
    with pytest.raises(ValidationError, match="lists a budget twice"):
        EvaluateConfig(budgets=[4, 8], sampled={"budgets": [8, 8]})
    with pytest.raises(ValidationError, match="at least 1 item"):
        EvaluateConfig(budgets=[4, 8], sampled={"budgets": []})
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
    # every (sample, question) its own seed, the same at each budget: row j * n + i
    for budget in (8, None):
        rows = [r for r in records if r["budget"] == budget]
        assert [(r["question_id"], r["seed"]) for r in rows] == [(q.id, 7 + j * 3 + i) for j in range(2)
                                                                 for i, q in enumerate(qs)]
    assert {r["method"] for r in records} == {"budget_forcing[sampled]"}
    assert all(r["thinking_tokens"] <= 8 for r in records if r["budget"] == 8)
    # sampled, not greedy: a question's two samples differ somewhere, and a rerun writes the same ones again
    unbudgeted = [r["thinking"] for r in records if r["budget"] is None]
    assert unbudgeted[:3] != unbudgeted[3:]
    assert sampled_sweep(tiny_engine, qs, c, k=2)[1] == records
    # each row is what the engine writes for that seed alone
    from components.evaluation.sweep import forcing
    from components.inference.methods.registry import build
    alone = build("budget_forcing", forcing(c).model_copy(update={"temperature": 0.6, "top_p": 0.95, "seed": 7 + 4}),
                  None, c.budgets).run(tiny_engine, [qs[1].question], None)
    assert alone[0].thinking == records[-2]["thinking"]  # sample 1 of question 1: seed 7 + 3 + 1
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


def test_a_method_that_cannot_be_sampled_at_budgets_is_refused_before_a_model_loads():
    from components.inference.methods.registry import section_problems
    for name, why in (("majority_voting", "samples its own answers"), ("wait_extension", "does not sweep thinking")):
        problems = section_problems(EvaluateConfig(method=name, protocols=["paper", "sampled"]))
        assert any(p.startswith("evaluate.protocols: 'sampled' samples evaluate.method") and why in p for p in problems)
    assert not section_problems(EvaluateConfig(method="early_exit", protocols=["paper", "sampled"]))
    assert not section_problems(EvaluateConfig(method="majority_voting"))  # greedy alone: nothing to refuse


def test_the_sampled_tables_name_their_own_settings_under_them():
    from components.evaluation.provenance_text import source_line
    prov = {"protocol": "paper", "temperature": 0.0, "seeds": [0], "params_digest": "2" * 64, "engine": "hf",
            "git": {"commit": "1" * 40}, "sampled": {"temperature": 0.6, "top_p": 0.95, "k": {"default": 4}}}
    assert "sampled protocol (temperature 0.6, top-p 0.95, k by task)" in source_line(prov, sampled=True)
    assert "paper protocol (temperature 0.0, seeds [0])" in source_line(prov)


def test_the_sampled_settings_wait_until_the_protocol_is_on():
    """A run that narrows the budgets without the sampled protocol (a data-ablation run at the top budget) is not
    held to the sampled budgets it does not use."""
    assert EvaluateConfig(budgets=[240], sampled={"budgets": [96]}).protocols == ["paper"]
