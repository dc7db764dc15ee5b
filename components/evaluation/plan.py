"""The plan of an evaluation: for each task, the parts it runs.

The first task is the headline: its sweep, then the compute-matched methods and the extrapolation ablations
(:func:`components.evaluation.sweep.evaluation_parts`); every other task runs its sweep. With the ``sampled``
protocol every task also runs its avg@k part (:mod:`components.evaluation.sampled`), k by task. An executor
(:mod:`components.evaluation.executors`) runs the parts wherever it runs them and hands back each part's result;
:func:`components.evaluation.sweep.assemble` builds each task's report from them.

    plans = plan_tasks(cfg.evaluate, {"heldout": questions, "aime24": aime}, sweep_in_process=True)
"""
from __future__ import annotations

from typing import NamedTuple

from components.config import EvaluateConfig
from components.evaluation.sweep import Part, evaluation_parts
from components.records import Question

SWEEP = Part("sweep")


class TaskPlan(NamedTuple):
    task: str
    questions: list[Question]
    parts: list[Part]
    headline: bool  # the compute-matched comparison and the ablations are reported on this task


PlanResults = dict[str, dict[Part, tuple[dict, list]]]  # task -> part -> (report section, generations or records)


def plan_tasks(cfg: EvaluateConfig, tasks: dict[str, list[Question]], sweep_in_process: bool = True) -> list[TaskPlan]:
    """Each task's parts, the headline (first) task's extras included. ``sweep_in_process`` false (the sweeps go
    through Serve, whose records a compute-matched method cannot be scored from): every compute-matched method of
    the headline task is a part of its own."""
    plans = []
    for i, (name, questions) in enumerate(tasks.items()):
        if i == 0 and sweep_in_process:
            parts = evaluation_parts(cfg, questions, headline=True)
        elif i == 0:
            parts = [SWEEP, *evaluation_parts(cfg, questions, headline=False)]
        else:
            parts = [SWEEP]
        if "sampled" in cfg.protocols:  # avg@k beside the greedy sweep: k by task
            parts.append(Part("sampled", cfg.method, cfg.sampled.k_for(name)))
        plans.append(TaskPlan(name, questions, parts, headline=i == 0))
    return plans


def without_sweeps(plans: list[TaskPlan]) -> list[TaskPlan]:
    """The plans' parts other than the sweeps (tasks left with none dropped)."""
    rest = [plan._replace(parts=[p for p in plan.parts if p != SWEEP]) for plan in plans]
    return [plan for plan in rest if plan.parts]
