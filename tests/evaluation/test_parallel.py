"""The evaluation's parts in worker processes give exactly the one-process evaluation's report and generations."""
from components.config import EngineConfig, EvaluateConfig
from components.evaluation.parallel import evaluate_in_parallel, largest_first
from components.evaluation.plan import TaskPlan, plan_tasks
from components.evaluation.sweep import evaluate_sweep, evaluation_parts
from components.inference.engine import build_engine
from components.records import Question

QS = ["What is 12 + 34?", "What is the digit sum of 987?", "Solve for x: x - 5 = 7. What is x?"]


def test_parts_skip_the_methods_the_sweep_covers():
    qs = [Question(id=str(i), source="t", question=q, answer="46") for i, q in enumerate(QS)]
    cfg = EvaluateConfig(compute_matched=["budget_forcing", "majority_voting", "rebase"],
                         wait_string_ablation=["Wait"])
    # REBASE runs point by point, a part per width (a method whose sweep shares no work); one process keeps the
    # order, workers take the costliest first
    # (in generated sequences: REBASE 3 questions x width x 2, the ablation's two runs 3 x (1 + waits): no
    # extrapolation and 2x Wait, voting 3 x 4, the sweep 3; ties in the one-process order)
    parts = evaluation_parts(cfg, qs)
    assert parts == [("sweep", None, None), ("matched", "rebase", 2), ("matched", "rebase", 4),
                     ("matched", "rebase", 8), ("ablations", None, None), ("matched", "majority_voting", None)]
    assert [j.part for j in largest_first([TaskPlan("t", qs, parts, True)], cfg)] == [
        ("matched", "rebase", 8), ("matched", "rebase", 4), ("matched", "rebase", 2), ("ablations", None, None),
        ("matched", "majority_voting", None), ("sweep", None, None)]
    voting = EvaluateConfig(compare_methods=["majority_voting"], compute_matched=["majority_voting"])
    assert evaluation_parts(voting, qs) == [("sweep", None, None)]
    # repeated question ids: the sweep's generations cannot be matched to questions, so the method is rerun
    assert evaluation_parts(voting, qs + qs[:1]) == [("sweep", None, None), ("matched", "majority_voting", None)]


def test_two_workers_equal_one_process(tiny_model_dir):
    engine = EngineConfig(backend="hf", batch_size=8, unlimited_thinking_tokens=16)
    qs = [Question(id=str(i), source="t", question=q, answer="46") for i, q in enumerate(QS)]
    cfg = EvaluateConfig(budgets=[4, 8], max_answer_tokens=4,
                         methods={"majority_voting": {"samples": [1, 2]}, "rebase": {"widths": [1, 2], "step_tokens": 8}},
                         compute_matched=["budget_forcing", "majority_voting", "rebase"],
                         wait_string_ablation=["Wait", ""], ablation_num_waits=2, num_waits_ablation=[0, 1],
                         ablation_limit=2)
    report, gens = evaluate_sweep(build_engine(engine, "float32", str(tiny_model_dir)), qs, cfg)
    par_report, par_gens = evaluate_in_parallel(engine, "float32", str(tiny_model_dir), qs, cfg, workers=2)
    assert par_report == report
    assert [g.model_dump() for g in par_gens] == [g.model_dump() for g in gens]
    assert {"budget_forcing", "majority_voting", "rebase", "wait_extension[(none)]"} <= {g.method for g in gens}
    assert list(report["compute_matched"]["methods"]) == ["budget_forcing", "majority_voting", "rebase"]


def test_a_failed_part_is_raised_and_this_process_keeps_its_threads(tiny_model_dir, monkeypatch):
    """This process runs parts too (a worker fewer to spawn), on its share of the torch threads: its failure is
    the evaluation's, its own thread count comes back afterwards, and no part starts after the failure."""
    import pytest
    import torch

    from components.common.threads import torch_threads
    from components.evaluation import parallel

    engine = EngineConfig(backend="hf", batch_size=8, unlimited_thinking_tokens=16)
    qs = [Question(id=str(i), source="t", question=q, answer="46") for i, q in enumerate(QS)]
    cfg = EvaluateConfig(budgets=[4], max_answer_tokens=4,
                         methods={"majority_voting": {"samples": [1, 2]}, "rebase": {"widths": [1, 2], "step_tokens": 8}},
                         compute_matched=["budget_forcing", "majority_voting", "rebase"],
                         ablation_limit=2)
    ran = []

    def failing(engine, part, questions, cfg):
        ran.append((part, torch.get_num_threads()))
        raise RuntimeError(f"part {part.kind} failed")

    monkeypatch.setattr(parallel, "run_part", failing)
    before = torch.get_num_threads()
    probe = torch_threads(2) + 1  # surely not the share the evaluation sets
    torch.set_num_threads(probe)
    try:
        with pytest.raises(RuntimeError, match="failed"):
            parallel.evaluate_in_parallel(engine, "float32", str(tiny_model_dir), qs, cfg, workers=2)
        assert torch.get_num_threads() == probe
    finally:
        torch.set_num_threads(before)
    largest = largest_first([TaskPlan("t", qs, evaluation_parts(cfg, qs), True)], cfg)[0].part
    # this process is ready first and takes the largest part, on its share; the failure stops it taking more
    assert ran == [(largest, torch_threads(2))]


def test_the_plan_runs_each_tasks_sweep_and_the_headlines_extras():
    qs = [Question(id=str(i), source="t", question=q, answer="46") for i, q in enumerate(QS)]
    cfg = EvaluateConfig(compare_methods=["majority_voting"], compute_matched=["budget_forcing", "majority_voting"],
                         wait_string_ablation=["Wait"])
    head, other = plan_tasks(cfg, {"heldout": qs, "aime24": qs[:2]})
    # in process, the sweep covers both compute-matched methods: they are scored from its generations
    assert (head.task, head.parts, head.headline) == ("heldout", [("sweep", None, None), ("ablations", None, None)], True)
    assert (other.task, other.parts, other.headline) == ("aime24", [("sweep", None, None)], False)
    # through Serve, whose records carry no generations to score them from, each is a part of its own
    head, other = plan_tasks(cfg, {"heldout": qs, "aime24": qs[:2]}, sweep_in_process=False)
    assert head.parts == [("sweep", None, None), ("ablations", None, None), ("matched", "budget_forcing", None),
                          ("matched", "majority_voting", None)]
    assert other.parts == [("sweep", None, None)]


def test_two_tasks_over_two_workers_equal_one_process(tiny_model_dir):
    """Every task's parts are shared out over the workers; each task's report and generations are those of the
    one-process evaluation, and only the headline task carries the compute-matched comparison."""
    from components.evaluation.executors import run_in_process
    from components.evaluation.parallel import run_in_parallel
    from components.evaluation.sweep import assemble

    engine = EngineConfig(backend="hf", batch_size=8, unlimited_thinking_tokens=16)
    qs = [Question(id=str(i), source="t", question=q, answer="46") for i, q in enumerate(QS)]
    cfg = EvaluateConfig(budgets=[4], max_answer_tokens=4, methods={"majority_voting": {"samples": [1, 2]}},
                         compute_matched=["budget_forcing", "majority_voting"])
    plans = plan_tasks(cfg, {"heldout": qs, "other": qs[1:]})
    one = run_in_process(build_engine(engine, "float32", str(tiny_model_dir)), plans, cfg)
    two = run_in_parallel(engine, "float32", str(tiny_model_dir), plans, cfg, workers=2)
    for plan in plans:
        report, gens = assemble(plan.questions, cfg, one[plan.task], extras=plan.headline)
        par_report, par_gens = assemble(plan.questions, cfg, two[plan.task], extras=plan.headline)
        assert par_report == report
        assert [g.model_dump() for g in par_gens] == [g.model_dump() for g in gens]
        assert ("compute_matched" in report) == plan.headline
        assert {g.question_id for g in gens} == {q.id for q in plan.questions}
