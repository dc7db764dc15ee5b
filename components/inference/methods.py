"""The test-time scaling methods s1 compares, selectable by name (``evaluate.method``).

Sequential control: ``budget_forcing`` (s1; ``wait_extension`` sweeps its number
of forced "Wait"s instead of the maximum), ``token_conditional`` (budget stated
in the prompt), ``step_conditional`` (budget in steps of ~``step_tokens``),
``class_conditional`` (think short / long), ``rejection_sampling`` (sample until
the thinking fits the budget, at most ``rejection_max_tries``). Parallel:
``majority_voting`` over N samples (its sweep value is N) with answers
normalised and grouped by math-verify equivalence; ``rebase``, reward-balanced
tree search over lines of thinking (its sweep value is the width: leaves per
question; ``evaluate.rebase_*``), its thinking tokens every expanded node's.
Parallel methods report thinking tokens summed over their samples / nodes, so
every method sits on one compute axis (s1's Fig. 7).

    results = run_method("budget_forcing", engine, questions, budget=64, cfg=cfg.evaluate)
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

from components.common.grading import extract_answer, grade
from components.config import EvaluateConfig
from components.formatting import thinking_prompt
from components.inference.budget_forcing import BudgetSpec, ForcedResult
from components.inference.budget_sweep import budget_sweep, shares_thinking
from components.inference.engine import Sampling
from components.inference.rebase import RebaseSpec, configured_reward, rebase


def budget_spec(cfg: EvaluateConfig, max_tokens: Optional[int]) -> BudgetSpec:
    return BudgetSpec(max_thinking_tokens=max_tokens, min_thinking_tokens=cfg.min_thinking_tokens,
                      num_waits=cfg.num_waits, wait_strings=tuple(cfg.wait_strings),
                      final_answer_prefix=cfg.final_answer_prefix, max_answer_tokens=cfg.max_answer_tokens)


def _greedy(cfg: EvaluateConfig) -> Sampling:
    return Sampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)


def _prompt_conditioned(engine, questions, hint: str, cfg, progress):
    """Control by prompt only: the hint is appended to each question; the model decides when to stop."""
    prompts = [thinking_prompt(engine.tokenizer, f"{q}\n{hint}") for q in questions]
    return engine.generate_forced(prompts, [budget_spec(cfg, None)] * len(prompts), _greedy(cfg), progress)


def budget_forcing(engine, questions, budget, cfg, progress=None):
    prompts = [thinking_prompt(engine.tokenizer, q) for q in questions]
    return engine.generate_forced(prompts, [budget_spec(cfg, budget)] * len(prompts), _greedy(cfg), progress)


def budget_forcing_sweep(engine, questions, budgets: Sequence[Optional[int]], cfg: EvaluateConfig,
                         progress=None) -> dict[Optional[int], list[ForcedResult]]:
    """Budget forcing at each of ``budgets`` (None: only the unlimited cap). Greedy forcing that only cuts
    thinks each budget's run as a prefix of one capped run, so that run is generated once and each budget
    adds only its answers (:mod:`components.inference.budget_sweep`); otherwise one run per budget."""
    spec, sampling = budget_spec(cfg, None), _greedy(cfg)
    if not shares_thinking(spec, sampling, budgets, engine.unlimited):
        last = len(budgets) - 1  # the caller's bar counts the questions once: it advances with the last budget
        return {b: budget_forcing(engine, questions, b, cfg, progress if i == last else None)
                for i, b in enumerate(budgets)}
    prompts = [thinking_prompt(engine.tokenizer, q) for q in questions]
    return budget_sweep(engine, prompts, budgets, spec, sampling, progress)


def wait_extension(engine, questions, num_waits, cfg, progress=None):
    """Budget forcing's other direction: suppress end-of-thinking ``num_waits`` times (no maximum)."""
    prompts = [thinking_prompt(engine.tokenizer, q) for q in questions]
    spec = dataclasses.replace(budget_spec(cfg, None), num_waits=num_waits)
    return engine.generate_forced(prompts, [spec] * len(prompts), _greedy(cfg), progress)


def token_conditional(engine, questions, budget, cfg, progress=None):
    return _prompt_conditioned(engine, questions, f"Think for up to {budget} tokens.", cfg, progress)


def step_conditional(engine, questions, budget, cfg, progress=None):
    steps = max(1, budget // cfg.step_tokens)
    return _prompt_conditioned(engine, questions, f"Think for up to {steps} steps.", cfg, progress)


def class_conditional(engine, questions, budget, cfg, progress=None):
    hint = "Think briefly." if budget <= cfg.class_threshold else "Think step by step, thoroughly."
    return _prompt_conditioned(engine, questions, hint, cfg, progress)


def rejection_sampling(engine, questions, budget, cfg, progress=None):
    """Sample at ``sample_temperature`` until thinking fits ``budget``; keep the last try otherwise."""
    prompts = [thinking_prompt(engine.tokenizer, q) for q in questions]
    chosen: list[Optional[ForcedResult]] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt in range(cfg.rejection_max_tries):
        sampling = Sampling(temperature=cfg.sample_temperature, top_p=cfg.top_p, seed=cfg.seed + 1000 * attempt)
        results = engine.generate_forced([prompts[i] for i in pending], [budget_spec(cfg, None)] * len(pending), sampling)
        still = []
        for i, r in zip(pending, results):
            chosen[i] = r.model_copy(update={"tries": attempt + 1})
            if r.thinking_tokens > budget:
                still.append(i)
        if progress:
            progress(len(pending) - len(still))
        pending = still
        if not pending:
            break
    if progress and pending:
        progress(len(pending))
    return chosen


def equivalent(a: str, b: str) -> bool:
    """Grading equivalence of two answers, from any thread (the server votes off the main thread)."""
    return grade(a, b)


def vote_groups(answers: Sequence[str], same: Optional[Callable[[str, str], bool]] = None) -> list[list[int]]:
    """Indices of ``answers`` grouped by ``same`` (default: math-verify equivalence) against each group's first
    member (empty answers vote for nothing), groups in order of first appearance."""
    same = same or equivalent
    groups: list[list[int]] = []
    for i, a in enumerate(answers):
        if not a:
            continue
        for g in groups:
            if same(a, answers[g[0]]):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def vote(answers: Sequence[str]) -> str:
    """Most common answer, grouping equivalent forms (``1/2`` and ``0.5``); ties go to the first seen."""
    groups = vote_groups(answers)
    return answers[max(groups, key=len)[0]] if groups else ""


def voting_samples(engine, questions, n_samples, cfg) -> list[list[ForcedResult]]:
    """``n_samples`` sampled runs over ``questions``; sample ``k`` is the same whatever ``n_samples`` is
    (its own seed), so a sweep over N draws its largest N once."""
    prompts = [thinking_prompt(engine.tokenizer, q) for q in questions]
    return [engine.generate_forced(prompts, [budget_spec(cfg, None)] * len(prompts),
                                   Sampling(temperature=cfg.sample_temperature, top_p=cfg.top_p, seed=cfg.seed + 1000 * k))
            for k in range(n_samples)]


def voted(samples: list[list[ForcedResult]]) -> list[ForcedResult]:
    """Per question, the majority answer over ``samples`` (one list per sample), thinking tokens summed."""
    out = []
    for mine in zip(*samples):
        winner = vote([extract_answer(r.answer) for r in mine])
        first = next((r for r in mine if extract_answer(r.answer) == winner), mine[0])
        out.append(first.model_copy(update={
            "thinking_tokens": sum(r.thinking_tokens for r in mine), "tries": len(mine),
            "answer": f"Answer: {winner}" if winner else first.answer,
        }))
    return out


def majority_voting(engine, questions, n_samples, cfg, progress=None):
    out = voted(voting_samples(engine, questions, n_samples, cfg))
    if progress:
        progress(len(questions))
    return out


def majority_voting_sweep(engine, questions, sample_counts: Sequence[int], cfg,
                          progress=None) -> dict[int, list[ForcedResult]]:
    """Majority voting at each N of ``sample_counts`` from one set of max(N) samples (N votes over the first N)."""
    samples = voting_samples(engine, questions, max(sample_counts), cfg)
    if progress:
        progress(len(questions))
    return {n: voted(samples[:n]) for n in sample_counts}


def wait_extensions(engine, questions, runs: Sequence[tuple[tuple[str, ...], int]], cfg,
                    progress=None) -> list[list[ForcedResult]]:
    """``wait_extension`` for several (wait strings, number of waits) runs. Greedy: one ``generate_forced``
    call over every run's rows (each its own spec), so the engine batches across runs; sampling: run by run
    (each run's rows keep their seeds)."""
    prompts = [thinking_prompt(engine.tokenizer, q) for q in questions]
    specs = [dataclasses.replace(budget_spec(cfg, None), num_waits=k, wait_strings=strings) for strings, k in runs]
    if cfg.temperature > 0:
        out = [engine.generate_forced(prompts, [spec] * len(prompts), _greedy(cfg)) for spec in specs]
    else:
        flat = engine.generate_forced(prompts * len(specs), [spec for spec in specs for _ in prompts], _greedy(cfg))
        out = [flat[i * len(prompts):(i + 1) * len(prompts)] for i in range(len(specs))]
    if progress:
        progress(len(questions))
    return out


def rebase_spec(cfg: EvaluateConfig, width: int, max_thinking_tokens: int) -> RebaseSpec:
    return RebaseSpec(width=width, temperature=cfg.rebase_temperature, sample_temperature=cfg.sample_temperature,
                      top_p=cfg.top_p, max_step_tokens=cfg.rebase_step_tokens, max_thinking_tokens=max_thinking_tokens,
                      max_answer_tokens=cfg.max_answer_tokens, vote=cfg.rebase_vote, seed=cfg.seed)


def rebase_search(engine, questions, width, cfg, progress=None):
    """REBASE with ``width`` leaves per question, rewarded by ``configured_reward(cfg)``; each branch
    thinks at most the engine's unlimited cap."""
    out = rebase(engine, questions, rebase_spec(cfg, width, engine.unlimited), configured_reward(cfg))
    if progress:
        progress(len(questions))
    return out


METHODS: dict[str, Callable[..., list[ForcedResult]]] = {
    "budget_forcing": budget_forcing,
    "wait_extension": wait_extension,
    "token_conditional": token_conditional,
    "step_conditional": step_conditional,
    "class_conditional": class_conditional,
    "rejection_sampling": rejection_sampling,
    "majority_voting": majority_voting,
    "rebase": rebase_search,
}
PARALLEL_METHODS = {"majority_voting", "rebase"}
UNBOUNDED_METHODS = PARALLEL_METHODS | {"wait_extension"}  # sweep values are not token budgets


def sweep_values(method: str, cfg: EvaluateConfig) -> list[int]:
    """What a sweep varies: samples (voting), leaves (REBASE), forced waits (wait_extension), budgets otherwise."""
    if method == "rebase":
        return sorted(cfg.rebase_widths)
    if method in PARALLEL_METHODS:
        return sorted(cfg.voting_samples)
    if method == "wait_extension":
        return sorted(cfg.wait_counts)
    return sorted(cfg.budgets)


def run_method(name: str, engine, questions: Sequence[str], budget: int, cfg: EvaluateConfig,
               progress: Optional[Callable[[int], None]] = None) -> list[ForcedResult]:
    if name not in METHODS:
        raise ValueError(f"evaluate.method: {name!r} unknown; choose from {sorted(METHODS)}")
    return METHODS[name](engine, list(questions), budget, cfg, progress)
