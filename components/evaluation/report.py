"""The results page: every table of a run's metrics as markdown (``s1flow report`` writes ``docs/results.md``).

Read from ``metrics/<profile>/``: ``eval.json`` (the budget sweep per method, the compute-matched comparison,
the extrapolation ablations), ``data_ablation.json`` (the data ablation, written by the miniature benchmark;
"not run" when absent), ``mlflow_run.json`` (the MLflow run, when registered) and ``base_model.json`` (its
warning heads the page when the run went on with an unready base model, ``pretrain.allow_unready``). The same tables go to MLflow
(register stage) and to the Prefect flow's artifacts.

``data_ablation.json`` (schema ``DATA_ABLATION_SCHEMA``)::

    {"task": "heldout", "budget": 240,            # the thinking budget the accuracies are taken at (optional)
     "rows": [{"strategy": "s1", "size": 600, "seeds": [0, 1, 2],
               "accuracy": [0.81, 0.78, 0.84],     # per seed, aligned with "seeds"
               "mean": 0.81, "se": 0.017,          # se = sample sd / sqrt(n seeds) (null for one seed)
               "per_question": {"q1": [2, 3], ...}}, ...]}  # optional: seeds right / seeds, per question

A bare list of rows is accepted too; :func:`data_ablation_row` computes ``mean``, ``se`` and ``per_question``.
With ``per_question`` on the rows, the page compares each strategy with s1 over the same questions (the
difference, its paired bootstrap interval and a paired test: :func:`data_ablation_pairs`).

Every accuracy of an evaluation carries its 95% interval (:mod:`components.evaluation.statistics`), from the
per-question samples behind it in ``data/<profile>/eval_samples.jsonl`` (Clopper-Pearson with one sample per
question, a question bootstrap for avg@k). Without that file, or where a number's samples cannot be told apart
in it (a point scored on a subset of its questions), the interval comes from the count: accuracy x questions
correct, one sample per question (the in-process protocol); a count that is no whole number gets none.

    page = results_markdown(load_results(Paths.for_profile("tiny")), plots="results")
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from datetime import date
from pathlib import Path
from typing import Any, Optional, Sequence

from components.data.base_model_readiness import base_model_warning
from components.data.tasks import TASKS, possibly_seen
from components.evaluation.compare import read_samples
from components.evaluation.compute_axis import ALPHA, INTERVAL, TEST, compute_axis
from components.evaluation.provenance_text import commit_text, provenance_rows, source_line
from components.evaluation.statistics import (
    Interval,
    Paired,
    QuestionMismatch,
    accuracy,
    accuracy_interval,
    clopper_pearson,
    paired_comparison,
    per_question,
)
from components.method_index import REFERENCE, value_name
from components.paths import Paths

DATA_ABLATION = "data_ablation.json"
TRACE_SWAP = "trace_swap.json"  # the same selected questions trained on two teachers' traces (s1 against s1.1)
DATA_ABLATION_SCHEMA = {"task": "str (optional)", "budget": "int (optional)",
                        "rows": [{"strategy": "str", "size": "int", "seeds": "[int]", "accuracy": "[float], per seed",
                                  "mean": "float", "se": "float | null",
                                  "per_question": "{question id: [right, samples]} over the seeds (optional)"}]}
PLOTS = ("scaling.png", "compute_matched.png")
NOT_RUN = "_not run_"
SEEN = "possibly seen in pre-training"


def git_commit(root: Path | str = ".") -> str:
    """HEAD of the working tree at ``root``, ``+dirty`` when it has uncommitted changes; ``unknown`` outside git."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True,  # noqa: E731
                                        check=True).stdout.strip()
        return run("rev-parse", "HEAD") + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except Exception:
        return "unknown"


def data_ablation_row(strategy: str, size: int, seeds: Sequence[int], accuracy: Sequence[float],
                      correct: Optional[Sequence[dict[str, Any]]] = None) -> dict:
    """One row of ``data_ablation.json``: mean and standard error over the seeds (none for one seed: a single run
    has no spread to estimate, and "± 0.0%" would claim one). ``correct``: per seed, each question's result, 0/1
    or ``[right, samples]`` (several samples per question), summed over the seeds into ``per_question`` when every
    seed ran the same questions."""
    if len(seeds) != len(accuracy) or not seeds:
        raise ValueError(f"data ablation {strategy}: {len(seeds)} seeds but {len(accuracy)} accuracies")
    n, mean = len(accuracy), sum(accuracy) / len(accuracy)
    se = math.sqrt(sum((a - mean) ** 2 for a in accuracy) / (n - 1)) / math.sqrt(n) if n > 1 else None
    row = {"strategy": strategy, "size": size, "seeds": list(seeds), "accuracy": list(accuracy), "mean": mean, "se": se}
    if correct is not None:
        if len(correct) != n or any(set(c) != set(correct[0]) for c in correct):
            raise ValueError(f"data ablation {strategy}: per-question results must cover the same questions for "
                             f"each of its {n} seeds")
        pairs = [{q: (int(v), 1) if isinstance(v, (bool, int)) else (int(v[0]), int(v[1])) for q, v in c.items()}
                 for c in correct]
        row["per_question"] = {q: [sum(p[q][0] for p in pairs), sum(p[q][1] for p in pairs)] for q in sorted(pairs[0])}
    return row


def data_ablation_pairs(rows: Sequence[dict], reference: str = "s1") -> dict[str, Optional[Paired]]:
    """Each other strategy against ``reference``, paired over the questions both ran (their ``per_question``: a
    question's share of seeds right): other minus reference, with its interval and paired test. None for a row
    (or with a reference) that carries no per-question results."""
    ref = next((r for r in rows if r["strategy"] == reference), None)
    if ref is None or not ref.get("per_question"):
        return {r["strategy"]: None for r in rows if r["strategy"] != reference}
    table = lambda r: {q: (int(right), int(n)) for q, (right, n) in r["per_question"].items()}  # noqa: E731

    def paired(r: dict) -> Optional[Paired]:
        if not r.get("per_question"):
            return None
        try:
            return paired_comparison(table(ref), table(r))
        except QuestionMismatch:  # runs on other questions: nothing to pair, the row shows none
            return None
    return {r["strategy"]: paired(r) for r in rows if r["strategy"] != reference}


def _paired_fields(pair: Optional[Paired]) -> dict:
    """A table row's paired comparison with s1 (``minus_s1`` and its interval, ``p_value``), empty without one."""
    if pair is None:
        return {}
    return {"minus_s1": pair.difference, "minus_s1_low": pair.low, "minus_s1_high": pair.high,
            "p_value": pair.p_value, "significant": pair.p_value < ALPHA}


def difference_text(estimate: float, low: float, high: float) -> str:
    """``-4.5 points [-7.0, -2.0]``: a paired difference of accuracies with its interval."""
    return f"{100 * estimate:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}]"


def p_text(p: float) -> str:
    """``0.003 (significant)``: a paired test's p-value, marked below the significance level."""
    return f"{p:.2g}" + (" (significant)" if p < ALPHA else "")


def paired_text(pair: Optional[Paired]) -> str:
    """``-4.5 points [-7.0, -2.0], p = 0.003 (significant)`` for the page; "—" without one."""
    if pair is None:
        return "—"
    return f"{difference_text(pair.difference, pair.low, pair.high)}, p = {p_text(pair.p_value)}"


def mean_and_se(row: dict) -> str:
    """``96.3% ± 0.4%``; a one-seed row (whatever its ``se``) says it has no SE."""
    if len(row["seeds"]) < 2:
        return f"{_pct(row['mean'])} (one seed: no SE)"
    if row.get("se") is None:
        return f"{_pct(row['mean'])} (no SE)"
    return f"{_pct(row['mean'])} ± {_pct(row['se'])}"


def read_data_ablation(path: Path) -> Optional[dict]:
    """The data ablation file, checked against the schema (None when absent)."""
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    data = {"rows": raw} if isinstance(raw, list) else raw
    for i, row in enumerate(data.get("rows", [])):
        missing = {"strategy", "size", "seeds", "accuracy", "mean", "se"} - set(row)
        if missing or len(row["seeds"]) != len(row["accuracy"]):
            raise ValueError(f"{path}: row {i} does not follow the schema (missing {sorted(missing)} or seeds and "
                             f"accuracy differ in length); expected {DATA_ABLATION_SCHEMA}")
    return data


SampleKey = tuple[Any, str, Optional[int]]  # (task, method, budget)


def sample_tables(records: list[dict]) -> dict[SampleKey, dict[str, tuple[int, int]]]:
    """The per-question table of every (task, method, budget) in an eval samples file's records."""
    groups: dict[SampleKey, list[dict]] = {}
    for r in records:
        groups.setdefault((r["task"], r["method"], r["budget"]), []).append(r)
    return {key: table for key, rs in groups.items() if (table := per_question(rs))}


def load_results(paths: Paths) -> dict[str, Any]:
    """Every metrics file the page reads (absent ones as None), the per-question samples (``samples``) and the
    compute axis computed from them (``compute_axis``, None without a compute-matched comparison)."""
    def read(name: str) -> Optional[dict]:
        p = paths.metric(name)
        return json.loads(p.read_text()) if p.exists() else None
    ev = read("eval.json")
    if ev is None:
        raise FileNotFoundError(f"{paths.metric('eval.json')} not found: run the evaluate stage first "
                                f"(s1flow stage evaluate, or make demo)")
    records = read_samples(paths.eval_samples, required=False) if paths.eval_samples.exists() else []
    return {"profile": paths.profile, "eval": ev, "data_ablation": read_data_ablation(paths.metric(DATA_ABLATION)),
            "trace_swap": read(TRACE_SWAP),
            "mlflow": read("mlflow_run.json"), "metrics_dir": f"metrics/{paths.profile}",
            "warning": base_model_warning(paths), "samples": sample_tables(records),
            "compute_axis": compute_axis(ev, records)}


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def interval(results: dict, acc: Optional[float], n: Optional[int], key: Optional[SampleKey] = None,
             k: int = 1) -> Optional[Interval]:
    """The 95% interval of accuracy ``acc`` over ``n`` questions: from the samples of ``key`` when they are the
    ones the number was scored on (n questions, the same accuracy), else from the count with one sample per
    question (``k`` = 1); None when neither applies."""
    if acc is None or not n:
        return None
    table = (results.get("samples") or {}).get(key) if key else None
    if table and len(table) == n and abs(accuracy(table) - acc) < 1e-9:
        return accuracy_interval(table)
    correct = acc * n
    if k == 1 and abs(correct - round(correct)) < 1e-6:
        return clopper_pearson(round(correct), n)
    return None


def _acc(results: dict, acc: Optional[float], n: Optional[int], key: Optional[SampleKey] = None, k: int = 1) -> str:
    """``80.0% [73.8%, 85.4%]``: the accuracy and its 95% interval (the accuracy alone when it has none)."""
    iv = interval(results, acc, n, key, k)
    return _pct(acc) if iv is None else f"{_pct(acc)} [{_pct(iv.low)}, {_pct(iv.high)}]"


def _ci(results: dict, acc: Optional[float], n: Optional[int], key: Optional[SampleKey] = None, k: int = 1) -> dict:
    """The interval as table columns (``ci_low``, ``ci_high``; None without one)."""
    iv = interval(results, acc, n, key, k)
    return {"ci_low": iv and iv.low, "ci_high": iv and iv.high}


def _shape(report: dict, budget: Optional[int], questions: Optional[int]) -> tuple[Optional[int], int]:
    """Questions scored and samples per question at ``budget`` of a sweep report (a served sweep records both
    per budget in ``scores``; an in-process sweep takes one sample of each of its ``questions``)."""
    scored = (report.get("scores") or {}).get(str(budget)) or {}
    return scored.get("questions", questions), scored.get("samples_per_question", 1)


def _point(results: dict, report: dict, questions: Optional[int], task: Any, method: str,
           point: Optional[dict]) -> tuple:
    """``interval``'s arguments for a sweep point."""
    if point is None:
        return results, None, None
    n, k = _shape(report, point["budget"], questions)
    return results, point["accuracy"], n, (task, method, point["budget"]), k


def _at(row: dict, task: Any, m: str) -> Optional[SampleKey]:
    """The samples key of method ``m``'s point in a compute-matched row (None when the row does not say)."""
    at = (row.get("at") or {}).get(m)
    return (task, m, at["value"]) if at else None


def _performance(results: dict, report: dict, questions: Optional[int], task: Any, method: str) -> str:
    """Performance with the interval of the sweep point that sets it (the best accuracy)."""
    best = max(report.get("points") or [], key=lambda p: p["accuracy"], default=None)
    if best is None or best["accuracy"] != report.get("performance"):
        return _acc(results, report.get("performance"), questions)
    return _acc(*_point(results, report, questions, task, method, best))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "---:"}
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(marks[a] for a in align) + " |",
            *["| " + " | ".join(str(c) for c in r) + " |" for r in rows], ""]


def tables(results: dict) -> dict[str, list[dict]]:
    """The page's tables as rows of plain values (for MLflow ``log_table`` and Prefect table artifacts)."""
    ev = results["eval"]
    out: dict[str, list[dict]] = {}
    methods = ev.get("methods") or {ev.get("method", REFERENCE): ev}
    out["summary"] = [{"method": m, "control": r.get("control"), "scaling": r.get("scaling"),
                       "performance": r.get("performance")} for m, r in methods.items()]
    task, n = ev.get("task"), ev.get("questions")
    out["budgets"] = [{"method": m, "value": p["budget"], "avg_thinking_tokens": p["avg_thinking_tokens"],
                       "accuracy": p["accuracy"], **_ci(*_point(results, r, n, task, m, p))}
                      for m, r in methods.items() for p in r["points"]]
    if ev.get("unlimited"):
        main = ev.get("method", REFERENCE)
        out["budgets"].append({"method": main, "value": "no budget",
                               "avg_thinking_tokens": ev["unlimited"]["avg_thinking_tokens"],
                               "accuracy": ev["unlimited"]["accuracy"],
                               **_ci(*_point(results, ev, n, task, main, {**ev["unlimited"], "budget": None}))})
    if results.get("data_ablation"):
        rows = results["data_ablation"]["rows"]
        pairs = data_ablation_pairs(rows)
        out["data_ablation"] = [{**{k: v for k, v in r.items() if k != "per_question"},
                                 **_paired_fields(pairs.get(r["strategy"]))} for r in rows]
    sampled = [{"task": t, "k": r["sampled"]["k"], **p,
                **_ci(results, p["accuracy"], r["sampled"]["questions"], (t, r["sampled"]["method"], p["budget"]),
                      r["sampled"]["k"])}
               for t, r in _task_reports(ev).items() if r.get("sampled") for p in r["sampled"]["points"]]
    if sampled:
        out["sampled"] = sampled
    if results.get("trace_swap"):
        out["trace_swap"] = [{"budget": c["budget"], "standard": c["a"]["accuracy"], "thorough": c["b"]["accuracy"],
                              "thorough_minus_standard": c["difference"]["estimate"],
                              "low": c["difference"]["low"], "high": c["difference"]["high"],
                              "p_value": c["p_value"], "test": c["test"], "questions": c["questions"]}
                             for c in results["trace_swap"]["comparisons"]]
    cm = ev.get("compute_matched")
    if cm:
        axis = axis_of(results)
        out["compute_axis"] = [dict(p) for p in axis["points"]]
        out["compute_best"] = [dict(r) for r in axis["best"]]
        out["compute_matched"] = [{"thinking_tokens": row["thinking_tokens"],
                                   **{m: row["accuracy"][m] for m in cm["methods"]}} for row in cm["table"]]
    ab = ev.get("ablations") or {}
    if ab.get("wait_strings"):
        out["wait_strings"] = [{**{k: r[k] for k in ("label", "wait_string", "num_waits", "accuracy",
                                                     "avg_thinking_tokens", "avg_waits_used")},
                                **_ci(results, r["accuracy"], r.get("questions", ab.get("questions")))}
                               for r in ab["wait_strings"]]
    if ab.get("num_waits"):
        out["num_waits"] = [{**{k: r[k] for k in ("num_waits", "accuracy", "avg_thinking_tokens", "avg_waits_used")},
                             **_ci(results, r["accuracy"], r.get("questions", ab.get("questions")))}
                            for r in ab["num_waits"]]
    return out


def base_released(ev: dict) -> Optional[date]:
    """The base model's release date an evaluation recorded (``model.released``), or None."""
    day = (ev.get("provenance") or {}).get("base_model_released")
    return date.fromisoformat(day) if day else None


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def day_text(day: date) -> str:
    """``7 Feb 2024``: a day as the page writes it (in English, whatever the locale)."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def _released_text(prov: dict) -> str:
    if "base_model_released" not in prov:
        return "not recorded"
    day = prov["base_model_released"]
    return (f"{day_text(date.fromisoformat(day))} (a task public before it is flagged: {SEEN})" if day
            else "not given (`model.released`): no task is flagged")


def public_since(task: Any, released: Optional[date]) -> str:
    """The day task's questions became public, flagged when that is before the base model's release."""
    spec = TASKS.get(task)
    if spec is None or spec.public_since is None:
        return "—"
    day = day_text(spec.public_since)
    return f"{day}, **{SEEN}**" if possibly_seen(task, released) else day


def _provenance(results: dict, commit: Optional[str]) -> list[str]:
    ev, reg = results["eval"], results.get("mlflow")
    prov = ev.get("provenance", {})
    rows = [("profile", f"`{results['profile']}`"),
            ("evaluated at commit", commit_text(prov, ev.get("git_commit"))),
            ("model hash (SFT weights)", f"`{ev.get('model_hash', '?')}`"),
            ("base model released", _released_text(prov)),
            ("engine", f"{prov.get('engine', ev.get('engine', '?'))} ({prov.get('engine_version', '?')}), "
                       f"dtype {prov.get('dtype', '?')}"),
            *provenance_rows(prov),
            ("MLflow run", f"`{reg['run_id']}` (experiment `{reg['experiment']}`), model "
                           f"`{reg['registered_model']}` v{reg['model_version']}" if reg else "not registered"),
            ("metrics", f"`{results.get('metrics_dir', '')}/`")]
    if commit:
        rows.append(("page rendered at commit", f"`{commit}`"))
    return _table(["", ""], rows, "ll")


def axis_of(results: dict) -> dict:
    """The compute axis of ``results`` (computed when a caller built them without :func:`load_results`)."""
    axis = results.get("compute_axis")
    return axis if axis is not None else compute_axis(results["eval"], [])


def _range(value: Optional[float], low: Optional[float], high: Optional[float], fmt) -> str:
    return "n/a" if value is None else fmt(value) + ("" if low is None else f" [{fmt(low)}, {fmt(high)}]")


def _tokens(x: float) -> str:
    return f"{x:.1f}"


def _points(x: float) -> str:
    return f"{100 * x:+.1f} pts"


def _significance(row: dict) -> str:
    if row["significant"] is None:
        return "—"
    return ("**yes**" if row["significant"] else "no") + f" (p = {row['p_value']:.3g}, {row['test']})"


def compute_axis_markdown(axis: dict) -> list[str]:
    """The compute axis as markdown: every point with its intervals, what is missing, and the best method at
    each compute level with its test against the runner-up."""
    lines = [f"{axis['questions']} questions. Compute is the average number of tokens a point spent per question: "
             "its thinking tokens plus the tokens of any trial answer it probed; parallel methods sum their "
             "samples, REBASE every node it expanded (pruned branches included). Intervals: "
             f"{INTERVAL}, from the eval samples (a point all right or all wrong has nothing to resample: its "
             "interval has zero width; read it with the number of questions).", ""]
    lines += _table(["method", "kind", "setting", "avg compute tokens", "accuracy", "questions"],
                    [(p["method"], p["kind"], p["setting"],
                      _range(p["compute"], p["compute_low"], p["compute_high"], _tokens),
                      _range(p["accuracy"], p["accuracy_low"], p["accuracy_high"], _pct),
                      p["questions"] if p["questions"] == p["of"] else f"{p['questions']} of {p['of']}")
                     for p in axis["points"]], "lllrrr")
    if axis["missing"]:
        lines += ["**Missing from the samples:**", "", *[f"- {m}" for m in axis["missing"]], ""]
    lines += ["**Best method at each compute level**: at each compute any point reached, the most accurate point "
              "spending no more, against the runner-up (the most accurate point of another method within the same "
              f"compute). Test: {TEST}; the difference's interval is the paired bootstrap over questions.", ""]
    lines += _table(["compute ≤", "best", "accuracy", "runner-up", "runner-up accuracy", "difference",
                     "significant"],
                    [(_tokens(r["compute_level"]), f"{r['method']} {r['setting']}",
                      _range(r["accuracy"], r["accuracy_low"], r["accuracy_high"], _pct),
                      "—" if r["runner_up"] is None else f"{r['runner_up']} {r['runner_up_setting']}",
                      _pct(r["runner_up_accuracy"]) if r["runner_up"] else "—",
                      "—" if r["difference"] is None else _range(r["difference"], r["difference_low"],
                                                                 r["difference_high"], _points),
                      _significance(r) if r["note"] is None else r["note"])
                     for r in axis["best"]], "rlrlrrl")
    return lines


def results_markdown(results: dict, plots: Optional[str] = None, commit: Optional[str] = None) -> str:
    """The results page. ``plots``: the folder (relative to the page) holding the PNGs, or None for no images."""
    ev = results["eval"]
    main = ev.get("method", REFERENCE)
    methods = ev.get("methods") or {main: ev}
    lines = ["# s1flow results", "",
             "<!-- Generated by `s1flow report` from the run's metrics files; do not edit by hand. -->", "",
             *([f"> **WARNING:** {results['warning']}", ""] if results.get("warning") else []),
             f"Where these numbers come from: the run this page was rendered from "
             f"(`s1flow report --profile {results['profile']}`).", "",
             *_provenance(results, commit)]
    where = [source_line(ev.get("provenance"), ev.get("git_commit")), ""]

    # 1. Budget forcing and the other methods.
    task, n, released = ev.get("task"), ev.get("questions"), base_released(ev)
    lines += [f"## Test-time scaling on `{ev.get('task', '?')}` ({ev.get('questions', '?')} questions)", ""]
    if possibly_seen(task, released):
        lines += [f"> **{SEEN.capitalize()}:** `{task}`'s questions were public on "
                  f"{day_text(TASKS[task].public_since)}, before the base model's release ({day_text(released)}).", ""]
    lines += [f"Base model without thinking: **{_acc(results, ev.get('base_accuracy'), n)}**. "
              "Control: share of runs within the thinking budget asked for; Scaling: mean slope of accuracy vs "
              "thinking tokens (per token); Performance: best accuracy over the sweep. Accuracies are given with "
              "their 95% interval in brackets (exact Clopper-Pearson with one sample per question; a bootstrap "
              "over questions for the mean of k samples).", ""]
    lines += _table(["method", "Control", "Scaling (/token)", "Performance"],
                    [(m, _pct(r.get("control")), "n/a" if r.get("scaling") is None else f"{r['scaling']:.4f}",
                      _performance(results, r, n, task, m)) for m, r in methods.items()])
    for m, r in methods.items():
        rows = [(p["budget"], f"{p['avg_thinking_tokens']:.1f}", _acc(*_point(results, r, n, task, m, p)))
                for p in r["points"]]
        if m == main and ev.get("unlimited"):
            unlimited = {**ev["unlimited"], "budget": None}
            rows.append(("no budget", f"{unlimited['avg_thinking_tokens']:.1f}",
                         _acc(*_point(results, ev, n, task, m, unlimited))))
        lines += [f"**{m}**", ""] + _table([value_name(r), "avg thinking tokens", "accuracy"], rows)
    if plots:
        lines += [f"![accuracy vs thinking tokens]({plots}/scaling.png)", ""]
    others = {t: r for t, r in (ev.get("tasks") or {}).items() if t != ev.get("task")}
    if others:
        lines += ["Other tasks (public since: the day a task's questions became public):", ""] + _table(
            ["task", "questions", "public since", "base", "Control", "Scaling (/token)", "Performance"],
            [(t, r.get("questions", "?"), public_since(t, released),
              _acc(results, r.get("base_accuracy"), r.get("questions")),
              _pct(r.get("control")), "n/a" if r.get("scaling") is None else f"{r['scaling']:.4f}",
              _performance(results, r, r.get("questions"), t, r.get("method", main))) for t, r in others.items()])
    lines += where

    lines += sampled_markdown(results, [source_line(ev.get("provenance"), ev.get("git_commit"), sampled=True), ""])

    # 2. Data ablation.
    lines += ["## Data: selection strategies at equal size (s1 Table 2)", ""]
    da = results.get("data_ablation")
    if not da:
        lines += [f"{NOT_RUN} (`{DATA_ABLATION}` absent; the miniature benchmark writes it).", ""]
    else:
        at = f" at budget {da['budget']}" if da.get("budget") is not None else ""
        lines += [f"Accuracy{at} on `{da.get('task', ev.get('task', '?'))}`, mean ± standard error over "
                  "selection seeds.", ""]
        pairs = data_ablation_pairs(da["rows"])
        lines += _table(["strategy", "size", "seeds", "accuracy per seed", "mean ± SE", "minus s1, paired"],
                        [(r["strategy"], r["size"], len(r["seeds"]), ", ".join(_pct(a) for a in r["accuracy"]),
                          mean_and_se(r), "(reference)" if r["strategy"] not in pairs else paired_text(pairs[r["strategy"]]))
                         for r in da["rows"]])
        if any(p is not None for p in pairs.values()):
            test = next(p.test for p in pairs.values() if p is not None)
            lines += [f"Minus s1: each strategy's accuracy minus s1's over the same questions (a question counts the "
                      f"share of selection seeds that got it right), with a paired bootstrap 95% interval and a "
                      f"{test} test; significant: p < {ALPHA:.2f}.", ""]
        lines += [source_line(da.get("provenance")) if da.get("provenance") else
                  f"_Where these numbers come from: `{DATA_ABLATION}` (the miniature benchmark's own runs; it "
                  "records no provenance)._", ""]

    lines += trace_swap_markdown(results.get("trace_swap"))

    # 3. Sequential vs parallel at equal compute.
    lines += ["## Sequential vs parallel scaling at equal compute (s1 Fig. 7)", ""]
    cm = ev.get("compute_matched")
    if not cm:
        lines += [f"{NOT_RUN} (`evaluate.compute_matched` is empty).", ""]
    else:
        ms = list(cm["methods"])
        lines += compute_axis_markdown(axis_of(results))
        lines += ["Matched, per method (eval.json's accuracies and compute, exact Clopper-Pearson intervals): at each "
                  "compute level reached, each method's best accuracy using no more compute tokens (thinking and "
                  "probes) per question (— : it never spends that little).", ""]
        lines += _table(["compute tokens ≤", *ms],
                        [(f"{row['thinking_tokens']:.1f}",
                          *("—" if row["accuracy"][m] is None else
                            _acc(results, row["accuracy"][m], cm["questions"], _at(row, task, m)) for m in ms))
                         for row in cm["table"]])
        lines += where
        if plots:
            lines += [f"![accuracy vs compute tokens per question, sequential and parallel, 95% intervals]"
                      f"({plots}/compute_matched.png)", ""]

    # 4. Extrapolation ablations.
    ab = ev.get("ablations") or {}
    n = f"{ab['questions']} questions; " if ab else ""
    lines += ["## Extrapolation: wait strings (s1 Table 4)", ""]
    if not ab.get("wait_strings"):
        lines += [f"{NOT_RUN} (`evaluate.wait_string_ablation` is empty).", ""]
    else:
        lines += [f"{n}end of thinking suppressed N times, the string appended each time ((none): nothing "
                  "appended, the model continues on its own).", ""]
        lines += _table(["extrapolation", "accuracy", "avg thinking tokens", "avg waits used"],
                        [(r["label"], _acc(results, r["accuracy"], r.get("questions", ab["questions"])),
                          f"{r['avg_thinking_tokens']:.1f}", f"{r['avg_waits_used']:.2f}") for r in ab["wait_strings"]])
        lines += where
    lines += ["## Extrapolation: number of waits", ""]
    if not ab.get("num_waits"):
        lines += [f"{NOT_RUN} (`evaluate.num_waits_ablation` is empty).", ""]
    else:
        strings = ", ".join(f'"{w}"' for w in ab["num_waits"][0].get("wait_strings", []))
        lines += [f"{n}wait strings {strings}.", ""]
        lines += _table(["waits", "accuracy", "avg thinking tokens", "avg waits used"],
                        [(r["num_waits"], _acc(results, r["accuracy"], r.get("questions", ab["questions"])),
                          f"{r['avg_thinking_tokens']:.1f}", f"{r['avg_waits_used']:.2f}") for r in ab["num_waits"]])
        lines += where
    return "\n".join(lines).rstrip() + "\n"


def _task_reports(ev: dict) -> dict[Any, dict]:
    """Every task's report (the headline's is eval.json itself when it lists no tasks)."""
    return ev.get("tasks") or {ev.get("task"): ev}


def sampled_markdown(results: dict, where: list[str]) -> list[str]:
    """The sampled protocol's section: per task and budget, avg@k with its question-bootstrap interval, pass@k
    and the average thinking tokens over every sample (nothing when the run sampled nothing); ``where``: the
    evaluation's source line."""
    sections = {t: r["sampled"] for t, r in _task_reports(results["eval"]).items() if r.get("sampled")}
    if not sections:
        return []
    first = next(iter(sections.values()))
    lines = ["## Sampled protocol: avg@k beside the greedy sweep", "",
             f"Each question sampled k times at temperature {first['temperature']}, top-p {first['top_p']} "
             "(every sample its own seed): avg@k is the mean accuracy over the samples, with a 95% interval "
             "from resampling questions; pass@k counts a question solved when any sample is right.", ""]
    for task, sec in sections.items():
        k, n = sec["k"], sec["questions"]
        lines += [f"`{task}`: {n} questions, k = {k}, method `{sec['method']}`.", ""]
        lines += _table(["budget", f"avg@{k}", f"pass@{k}", "avg thinking tokens"],
                        [("no budget" if p["budget"] is None else p["budget"],
                          _acc(results, p["accuracy"], n, (task, sec["method"], p["budget"]), k),
                          _pct(p["pass_at_k"]), f"{p['avg_thinking_tokens']:.1f}") for p in sec["points"]])
    return lines + where


def _side(side: dict) -> str:
    iv = side["interval"]
    return f"{_pct(side['accuracy'])} [{_pct(iv['low'])}, {_pct(iv['high'])}]"


def trace_swap_markdown(swap: Optional[dict]) -> list[str]:
    """The trace swap's section: each arm's traces, then at every budget both accuracies with their intervals and
    the paired difference thorough minus standard (``benchmarks/trace_swap.py`` writes ``trace_swap.json``)."""
    lines = ["## Traces: the same questions, another teacher's traces (s1 against s1.1)", ""]
    if not swap:
        return lines + [f"{NOT_RUN} (`{TRACE_SWAP}` absent; `benchmarks/trace_swap.py` writes it after a run).", ""]
    arms = swap.get("arms", {})
    lines += ["Each arm trains on the same selected questions; only the teacher that wrote the traces differs "
              "(`teacher.style`). " + "; ".join(
                  f"{arm}: {a['traces']['examples']} examples, {a['traces']['mean_trace_chars']} characters per trace "
                  f"on average, {a['traces']['rechecks']} re-checks" for arm, a in arms.items() if "traces" in a) + ".",
              ""]
    comparisons = swap.get("comparisons", [])
    test = comparisons[0]["test"] if comparisons else "paired"
    lines += _table(["budget", "standard traces", "thorough traces", "thorough − standard", "p"],
                    [("no budget" if c["budget"] is None else c["budget"], _side(c["a"]), _side(c["b"]),
                      difference_text(c["difference"]["estimate"], c["difference"]["low"], c["difference"]["high"]),
                      p_text(c["p_value"]))
                     for c in comparisons])
    n = comparisons[0]["questions"] if comparisons else "?"
    return lines + [f"Paired over the same {n} `{swap.get('task', 'heldout')}` questions: 95% intervals per arm, "
                    f"the difference's paired bootstrap interval, {test} test; significant: p < {ALPHA:.2f}.", "",
                    f"_Where these numbers come from: `{TRACE_SWAP}` (the trace-swap benchmark's own two runs, "
                    "each arm's samples named in it)._", ""]


def plot_compute_matched_with_intervals(results: dict, path: Path) -> None:
    """The compute-matched plot drawn from the compute axis: each accuracy with its 95% interval."""
    from components.evaluation.plot import plot_compute_matched
    ev = results["eval"]
    plot_compute_matched(ev.get("compute_matched"), path, title=f"Sequential vs parallel scaling on {ev.get('task')}",
                         axis=results.get("compute_axis"))


def write_results_page(paths: Paths, out: Path, commit: Optional[str] = None) -> list[Path]:
    """Write the page to ``out`` and copy the run's plots beside it (``<out stem>/``); returns what was written."""
    results = load_results(paths)
    plot_dir = out.parent / out.stem
    written = []
    copied = [name for name in PLOTS if paths.plot(name).exists()]
    if copied:
        plot_dir.mkdir(parents=True, exist_ok=True)
        for name in copied:
            if name == "compute_matched.png" and results.get("compute_axis"):
                plot_compute_matched_with_intervals(results, plot_dir / name)  # the run's plot, with error bars
            else:
                shutil.copyfile(paths.plot(name), plot_dir / name)
            written.append(plot_dir / name)
    page = results_markdown(results, plots=out.stem if copied else None, commit=commit)
    for name in PLOTS:  # a plot the run did not make is not linked
        if name not in copied:
            page = "\n".join(ln for ln in page.splitlines() if f"/{name})" not in ln) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return [out, *written]
