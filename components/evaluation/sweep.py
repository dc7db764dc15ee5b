"""Evaluation: sweeps of a test-time method over thinking budgets on a held-out set.

For each budget the model thinks under ``evaluate.method`` (budget forcing by
default: ``max_thinking_tokens=budget``), plus one run capped only by
``unlimited_thinking_tokens``; methods in ``compare_methods`` are swept too.
Answers are graded by the question's kind (math-verify, or the final option
letter). The base model answers in its own chat format as the reference.
Produces per-sample records, per-budget points, Control/Scaling/Performance
and the scaling-curve PNG; optionally (config lists, empty = off) the
compute-matched comparison of sequential and parallel methods (s1 Fig. 7) and
the extrapolation ablations (wait strings, number of waits; s1 Table 4).

    report = evaluate_sweep(engine, questions, cfg.evaluate)
"""
from __future__ import annotations

from dataclasses import asdict
from typing import NamedTuple, Optional, Sequence

import components.evaluation.rewards  # noqa: F401 - registers REBASE's programmatic reward
from components.common.grading import grade_response
from components.common.progress import progress_bar
from components.config import EvaluateConfig
from components.evaluation.metrics import Run, SweepPoint, point_compute, sweep_metrics
from components.inference.attempts import student_attempts
from components.inference.methods.base import Forcing, Method
from components.inference.methods.registry import REFERENCE, build
from components.inference.methods.wait_extension import WaitExtension
from components.records import Example, Generation, Question, Trace


def forcing(cfg: EvaluateConfig) -> Forcing:
    """The decoding and forcing settings every method shares, from evaluate's keys."""
    return Forcing(**{k: getattr(cfg, k) for k in Forcing.model_fields})


def method(cfg: EvaluateConfig, name: str) -> Method:
    """Method ``name`` as the evaluate section configures it (``methods.<name>``, the shared settings, budgets)."""
    return build(name, forcing(cfg), cfg.methods.get(name), cfg.budgets, cfg.trust_remote_code)


def sweep_values(name: str, cfg: EvaluateConfig) -> list[int]:
    """What method ``name``'s sweep varies, as configured."""
    return method(cfg, name).values()


def graded(questions: list[Question], results, method: str, budget: Optional[int]) -> list[Generation]:
    """One sweep point's results as graded generations (by the question's kind; GPQA: the option letter)."""
    return [Generation.from_forced(r, q, budget, grade_response(q, r.answer), method)
            for q, r in zip(questions, results)]


def run_point(engine, questions: list[Question], cfg: EvaluateConfig, name: str,
              budget: Optional[int]) -> list[Generation]:
    """One sweep point of method ``name``: its value ``budget`` (None: the no-budget reference run, budget
    forcing capped only by the engine's unlimited cap, recorded under ``name``)."""
    label = f"{name} {'no budget' if budget is None else budget}"
    runner = method(cfg, REFERENCE if budget is None else name)
    with progress_bar(f"evaluating ({label})", total=len(questions)) as advance:
        results = runner.run(engine, [q.question for q in questions], budget, progress=advance)
    return graded(questions, results, name, budget)


def run_points(engine, questions: list[Question], cfg: EvaluateConfig, name: str,
               values: list[Optional[int]]) -> dict[Optional[int], list[Generation]]:
    """A method's sweep points by value: a method whose sweep shares work (budget forcing's thinking, voting's
    samples) runs it at once, any other point by point."""
    m = method(cfg, name)
    if not m.shares_sweep:
        return {v: run_point(engine, questions, cfg, name, v) for v in values}
    with progress_bar(f"evaluating ({name} {len(values)} points)", total=len(questions)) as advance:
        by_value = m.run_sweep(engine, [q.question for q in questions], values, progress=advance)
    return {v: graded(questions, by_value[v], name, v) for v in values}


def summarise(generations: list[Generation]) -> SweepPoint:
    n = len(generations)
    return SweepPoint(budget=generations[0].budget, avg_thinking_tokens=sum(g.thinking_tokens for g in generations) / n,
                      accuracy=sum(g.correct for g in generations) / n)


def sweep_report(gens_by_value: dict[int, list[Generation]], cfg: EvaluateConfig, name: str) -> dict:
    """Points and Control/Scaling/Performance of one method's generations, by sweep value, with what the method
    is (its kind, how its values are shown)."""
    points, runs, compute = [], [], []
    m = method(cfg, name)
    for value, gens in gens_by_value.items():
        points.append(summarise(gens))
        compute.append(sum(g.compute_tokens for g in gens) / len(gens))
        runs += [Run(g.thinking_tokens, cfg.min_thinking_tokens, value if m.budgeted else None) for g in gens]
    return {"points": [{**asdict(p), "avg_compute_tokens": c} for p, c in zip(points, compute)],
            **sweep_metrics(points, runs), **m.describe()}


def sweep(engine, questions: list[Question], cfg: EvaluateConfig, name: str) -> tuple[dict, list[Generation]]:
    """Sweep one method over its values; Control/Scaling/Performance for it."""
    by_value = run_points(engine, questions, cfg, name, sweep_values(name, cfg))
    return sweep_report(by_value, cfg, name), [g for gens in by_value.values() for g in gens]


def base_model_accuracy(engine, questions: list[Question], max_new_tokens: int) -> float:
    """The base model answering in its own chat format, no thinking phase (s1's baseline)."""
    examples = [Example(question=q, trace=Trace(question_id=q.id, teacher="none")) for q in questions]
    with progress_bar("evaluating base model", total=len(examples)) as advance:
        solved = student_attempts(engine, examples, max_new_tokens, progress=advance)
    return sum(solved) / len(solved)


def _ablation_row(gens: list[Generation]) -> dict:
    n = len(gens)
    return {"accuracy": sum(g.correct for g in gens) / n,
            "avg_thinking_tokens": sum(g.thinking_tokens for g in gens) / n,
            "avg_waits_used": sum(g.waits_used for g in gens) / n, "questions": n}


def wait_label(s: str) -> str:
    """How a wait string is shown in tables: ``''`` is s1's "no string" (the delimiter suppressed only)."""
    return "(none)" if s == "" else s


def _run_key(strings: tuple[str, ...], k: int) -> tuple[tuple[str, ...], int]:
    return ((), 0) if k == 0 else (strings, k)  # no wait is forced: the strings do not matter


def ablation_runs(cfg: EvaluateConfig) -> list[tuple[tuple[str, ...], int]]:
    """The distinct (wait strings, number of waits) runs of the extrapolation ablations, in report order: the
    no-extrapolation run once, a run both ablations ask for once."""
    wanted: list[tuple[tuple[str, ...], int]] = []
    if cfg.wait_string_ablation:
        wanted += [((), 0)] + [((w,), cfg.ablation_num_waits) for w in cfg.wait_string_ablation]
    if cfg.num_waits_ablation:
        wanted += [(tuple(cfg.wait_strings), k) for k in sorted(set(cfg.num_waits_ablation))]
    return list(dict.fromkeys(_run_key(*w) for w in wanted))


def extrapolation_ablations(engine, questions: list[Question], cfg: EvaluateConfig) -> tuple[dict, list[Generation]]:
    """s1's extrapolation ablations, each a ``wait_extension`` run (no maximum; end of thinking suppressed
    ``num_waits`` times): the wait strings of ``wait_string_ablation`` at ``ablation_num_waits`` waits, after a
    no-extrapolation row (0 waits); and the numbers of waits of ``num_waits_ablation`` with ``wait_strings``.
    Every distinct run is generated once, all in one engine call (``wait_extensions``)."""
    keys = ablation_runs(cfg)
    with progress_bar(f"evaluating (extrapolation ablations, {len(keys)} runs)", total=len(questions)) as advance:
        results = method(cfg, WaitExtension.name).run_many(
            engine, [q.question for q in questions], [(strings or tuple(cfg.wait_strings), k) for strings, k in keys],
            advance)
    runs: dict[tuple[tuple[str, ...], int], list[Generation]] = {}
    for (strings, k), res in zip(keys, results):
        tag = "+".join(wait_label(w) for w in strings) if k else "none"
        runs[(strings, k)] = graded(questions, res, f"{WaitExtension.name}[{tag}]", k)

    def run(strings: tuple[str, ...], k: int) -> list[Generation]:
        return runs[_run_key(strings, k)]

    out: dict = {}
    if cfg.wait_string_ablation:
        rows = [{"wait_string": None, "label": "no extrapolation", "num_waits": 0, **_ablation_row(run((), 0))}]
        for w in cfg.wait_string_ablation:
            rows.append({"wait_string": w, "label": f"{cfg.ablation_num_waits}x {wait_label(w)}",
                         "num_waits": cfg.ablation_num_waits, **_ablation_row(run((w,), cfg.ablation_num_waits))})
        out["wait_strings"] = rows
    if cfg.num_waits_ablation:
        strings = tuple(cfg.wait_strings)
        out["num_waits"] = [{"num_waits": k, "wait_strings": list(strings), **_ablation_row(run(strings, k))}
                            for k in sorted(set(cfg.num_waits_ablation))]
    return out, [g for gens in runs.values() for g in gens]


def matched_table(per_method: dict[str, dict]) -> list[dict]:
    """At each compute level any method reached (a point's average compute tokens per question, under the key
    ``thinking_tokens``: thinking plus probes), every method's best accuracy among its points that spend no more;
    None where a method never spends that little."""
    rows = []
    for level in sorted({point_compute(p) for res in per_method.values() for p in res["points"]}):
        row: dict = {"thinking_tokens": level, "accuracy": {}, "at": {}}
        for m, res in per_method.items():
            fit = [p for p in res["points"] if point_compute(p) <= level + 1e-9]
            best = max(fit, key=lambda p: (p["accuracy"], -point_compute(p)), default=None)
            row["accuracy"][m] = None if best is None else best["accuracy"]
            row["at"][m] = None if best is None else {"value": best["budget"], "avg_thinking_tokens": point_compute(best)}
        rows.append(row)
    return rows


def compute_matched_method(engine, questions: list[Question], cfg: EvaluateConfig, method: str,
                           done: Optional[list[Generation]] = None) -> tuple[dict, list[Generation]]:
    """One method of the compute-matched comparison: scored from ``done`` (generations of sweeps already run)
    when they hold every question and value, else swept on ``questions`` (the new generations returned)."""
    ids = {q.id for q in questions}
    by_value = {v: [g for g in done or [] if g.method == method and g.budget == v and g.question_id in ids]
                for v in sweep_values(method, cfg)}
    if all(len({g.question_id for g in gens}) == len(ids) == len(gens) for gens in by_value.values()):
        return sweep_report(by_value, cfg, method), []  # the main sweep's generations on these questions
    return sweep(engine, questions, cfg, method)


def matched_report(questions: list[Question], per_method: dict[str, dict]) -> dict:
    """The compute-matched section: the questions it ran on (ids, to pair points question by question), every
    method's points and the best-within-each-compute-level table."""
    return {"questions": len(questions), "question_ids": [q.id for q in questions], "methods": per_method,
            "table": matched_table(per_method)}


def swept_methods(cfg: EvaluateConfig) -> list[str]:
    """The methods the headline sweep runs: ``method``, then ``compare_methods``."""
    return [cfg.method] + [m for m in cfg.compare_methods if m != cfg.method]


def headline_sweep(engine, questions: list[Question], cfg: EvaluateConfig) -> tuple[dict, list[Generation]]:
    """The main method's sweep (top-level keys, and its no-budget reference) plus every method in
    ``compare_methods``."""
    per_method, all_gens, unlimited = {}, [], None
    for m in swept_methods(cfg):
        values = sweep_values(m, cfg)
        # the no-budget reference (budget forcing at the engine's cap) is generated within the main method's sweep
        # when that method answers without a budget
        reference = [None] if m == cfg.method and method(cfg, m).answers_unbudgeted else []
        by_value = run_points(engine, questions, cfg, m, values + reference)
        unlimited = by_value.pop(None, unlimited)
        per_method[m] = sweep_report(by_value, cfg, m)
        all_gens += [g for gens in by_value.values() for g in gens]
    if unlimited is None:
        unlimited = run_point(engine, questions, cfg, cfg.method, None)
    all_gens += unlimited
    main = per_method[cfg.method]
    report = {
        "method": cfg.method, **main, "methods": per_method,
        "unlimited": asdict(summarise(unlimited)),
        "accuracy_by_budget": {str(p["budget"]): p["accuracy"] for p in main["points"]},
        "questions": len(questions),
    }
    return report, all_gens


class Part(NamedTuple):
    """One independent piece of an evaluation: the headline sweep, the ablations, a compute-matched method, or
    the sampled protocol (``value``: its k); a method swept point by point (REBASE) is one part per point
    (``value``), so workers can share it out."""
    kind: str  # "sweep" | "matched" | "ablations" | "sampled"
    method: Optional[str] = None
    value: Optional[int] = None


def part_cost(part: Part, cfg: EvaluateConfig, questions: int) -> int:
    """A part's cost for scheduling, in generated sequences (a method's own estimate: a shared sweep costs its
    largest value's; a forced wait makes a sequence think again, so an extrapolation run counts once plus once per
    wait)."""
    subset = min(questions, cfg.ablation_limit or questions)
    if part.kind == "sweep":
        return sum(method(cfg, m).sweep_cost(questions) for m in swept_methods(cfg))
    if part.kind == "ablations":
        return subset * sum(1 + k for _, k in ablation_runs(cfg))
    if part.kind == "sampled":
        from components.evaluation.sampled import sample_cost  # the protocol builds on this module
        return sample_cost(cfg, questions, part.value)
    m = method(cfg, part.method)
    return m.sweep_cost(subset) if part.value is None else m.cost(subset, part.value)


def evaluation_parts(cfg: EvaluateConfig, questions: list[Question], headline: bool = True) -> list[Part]:
    """The evaluation's independent parts, in the order one process runs them: the headline sweep, REBASE (a part
    per width: it runs point by point), the ablations, then each other compute-matched method the sweep does not
    cover. A compute-matched method the sweep runs is scored from the sweep's generations, which needs every
    question id distinct (else it is rerun). Workers take them largest first
    (:func:`components.evaluation.parallel.largest_first`)."""
    distinct = len({q.id for q in questions}) == len(questions)
    covered = set(swept_methods(cfg)) if headline and distinct else set()
    matched = [m for m in cfg.compute_matched if m not in covered]

    shared = {m for m in matched if method(cfg, m).shares_sweep}

    def method_parts(m: str) -> list[Part]:
        return [Part("matched", m)] if m in shared else [Part("matched", m, v) for v in sweep_values(m, cfg)]

    parts = ([Part("sweep")] if headline else []) + [p for m in matched if m not in shared for p in method_parts(m)]
    if has_ablations(cfg):
        parts.append(Part("ablations"))
    return parts + [p for m in matched if m in shared for p in method_parts(m)]


def run_part(engine, part: Part, questions: list[Question], cfg: EvaluateConfig) -> tuple[dict, list[Generation]]:
    """One part on ``engine`` (in this process or a worker's), its methods asked first whether they have a meaning
    for the engine's model."""
    check_methods(engine, cfg, part_methods([part], cfg))
    if part.kind == "sweep":
        return headline_sweep(engine, questions, cfg)
    if part.kind == "matched" and part.value is not None:
        return {}, run_point(engine, extras_subset(questions, cfg), cfg, part.method, part.value)
    if part.kind == "matched":
        return compute_matched_method(engine, extras_subset(questions, cfg), cfg, part.method)
    if part.kind == "sampled":
        from components.evaluation.sampled import sampled_sweep  # the protocol builds on this module
        return sampled_sweep(engine, questions, cfg, part.value)
    return ablations_section(engine, extras_subset(questions, cfg), cfg)


def assemble(questions: list[Question], cfg: EvaluateConfig,
             results: dict[Part, tuple[dict, list]], extras: bool = True) -> tuple[dict, list]:
    """The report and generations from the parts' results (:func:`evaluation_parts`, run anywhere): the sweep's
    report (empty without one) with ``compute_matched`` and ``ablations`` added (with ``extras``: the headline
    task) and ``sampled`` (the sampled protocol's part, when planned); generations in the order sweep,
    compute-matched methods as configured, ablations, sampled. A sweep run through
    Serve gives its records as dicts; every compute-matched method then has its own part."""
    report, gens = results.get(Part("sweep"), ({}, []))
    report, gens = dict(report), list(gens)
    extra: list[Generation] = []
    if extras and cfg.compute_matched:
        subset = extras_subset(questions, cfg)
        per_method = {}
        for m in cfg.compute_matched:
            points = [Part("matched", m, v) for v in sweep_values(m, cfg)]
            if Part("matched", m) in results:
                per_method[m], more = results[Part("matched", m)]
                extra += more
            elif all(p in results for p in points):  # swept point by point: the points as sweep() reports them
                by_value = {p.value: results[p][1] for p in points}
                per_method[m] = sweep_report(by_value, cfg, m)
                extra += [g for p in points for g in by_value[p.value]]
            else:  # scored from the headline sweep's generations
                swept = [g for g in gens if g.budget is not None]
                per_method[m], _ = compute_matched_method(None, subset, cfg, m, swept)
        report["compute_matched"] = matched_report(subset, per_method)
    if extras and has_ablations(cfg):
        report["ablations"], more = results[Part("ablations")]
        extra += more
    sampled = next((p for p in results if p.kind == "sampled"), None)
    if sampled is not None:
        report["sampled"], more = results[sampled]
        extra += more
    return report, gens + extra


def evaluate_sweep(engine, questions: list[Question], cfg: EvaluateConfig,
                   extras: bool = True) -> tuple[dict, list[Generation]]:
    """The headline sweep (:func:`headline_sweep`); with ``extras``, the compute-matched comparison (s1 Fig. 7:
    each method in ``compute_matched`` over its values, on one axis of average thinking tokens per question,
    parallel samples and REBASE's expanded nodes summed) and the extrapolation ablations, on the first
    ``ablation_limit`` questions."""
    parts = evaluation_parts(cfg, questions) if extras else [Part("sweep")]
    check_methods(engine, cfg, part_methods(parts, cfg))  # all before the first part generates
    return assemble(questions, cfg, run_parts(engine, parts, questions, cfg), extras)


def extras_subset(questions: list[Question], cfg: EvaluateConfig) -> list[Question]:
    """The questions of the compute-matched comparison and the ablations: the first ``ablation_limit``."""
    return questions[: cfg.ablation_limit] if cfg.ablation_limit else questions


def check_methods(engine, cfg: EvaluateConfig, names: Sequence[str]) -> None:
    """Methods ``names``, each asked whether it has a meaning for the engine's model (raises
    :class:`~components.inference.methods.base.MethodRefused` naming the setting), before their generations."""
    for name in names:
        method(cfg, name).check(engine)


def part_methods(parts: Sequence[Part], cfg: EvaluateConfig) -> list[str]:
    """The methods ``parts`` run: the sweep's (``method`` and ``compare_methods``), each compute-matched part's."""
    names: list[str] = []
    for part in parts:
        names += swept_methods(cfg) if part.kind == "sweep" else [part.method] if part.kind in ("matched", "sampled") \
            else []
    return list(dict.fromkeys(names))


def run_parts(engine, parts: Sequence[Part], questions: list[Question],
              cfg: EvaluateConfig) -> dict[Part, tuple[dict, list[Generation]]]:
    """Each of ``parts`` on ``engine``, in order."""
    return {p: run_part(engine, p, questions, cfg) for p in parts}


def has_ablations(cfg: EvaluateConfig) -> bool:
    return bool(cfg.wait_string_ablation or cfg.num_waits_ablation)


def ablations_section(engine, subset: list[Question], cfg: EvaluateConfig) -> tuple[dict, list[Generation]]:
    """The report's ``ablations`` section: :func:`extrapolation_ablations` on ``subset``."""
    ablations, gens = extrapolation_ablations(engine, subset, cfg)
    return {"questions": len(subset), **ablations}, gens
