"""Decontamination by benchmark name, and the evaluate stage's refusal to report a task the training data
was not decontaminated against."""
import json
import logging
from pathlib import Path

import pytest

from components.config import DecontaminationConfig, EngineConfig, EvaluateConfig, ModelConfig, ServeConfig
from components.curation.decontamination import NgramIndex
from components.curation.filter_stage import eval_texts
from components.evaluation.evaluate_stage import ContaminationError, contamination_check, evaluate_stage
from components.inference.methods.registry import configured
from components.paths import Paths
from components.records import write_json

EVAL = Path(__file__).resolve().parents[1] / "fixtures/eval"
FILES = {n: str(EVAL / f"{n}.jsonl") for n in ("aime24", "amc23", "math500")}


def test_decontamination_tasks_load_the_evaluation_loaders(tmp_path, monkeypatch):
    gpqa = [{"Record ID": "r1", "Question": "Which of these noble gases has the highest first ionisation energy of all?",
             "Correct Answer": "Helium", "Incorrect Answer 1": "Neon", "Incorrect Answer 2": "Argon",
             "Incorrect Answer 3": "Xenon"}]
    import datasets
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split, revision: gpqa)
    cfg = DecontaminationConfig(tasks=["aime24", "amc23", "math500", "gpqa_diamond"], include_heldout=False)
    texts, against = eval_texts(cfg, Paths.for_profile("t", tmp_path), FILES)
    assert {k: v["questions"] for k, v in against.items()} == {"aime24": 30, "amc23": 40, "math500": 500,
                                                               "gpqa_diamond": 1}
    assert against["aime24"]["source"] == FILES["aime24"] and against["gpqa_diamond"]["source"] == "Idavidrein/gpqa"
    index = NgramIndex.build(texts, 8)
    assert index.contaminated("Which of these noble gases has the highest first ionisation energy of all?")
    with pytest.raises(ValueError, match="decontamination.tasks: unknown task 'aime23'"):
        eval_texts(DecontaminationConfig(tasks=["aime23"], include_heldout=False), Paths.for_profile("t", tmp_path))


def test_the_fresh_contests_are_decontaminated_by_name(tmp_path, monkeypatch):
    """HMMT February 2025, BRUMO 2025, AIME 2026: from a local copy, or from the hub at the pinned commit."""
    fresh = {n: str(EVAL / f"{n}.jsonl") for n in ("hmmt_feb25", "brumo25", "aime26")}
    cfg = DecontaminationConfig(tasks=sorted(fresh), include_heldout=False)
    texts, against = eval_texts(cfg, Paths.for_profile("t", tmp_path), fresh)
    assert against == {n: {"questions": 5, "source": fresh[n]} for n in sorted(fresh)}
    index = NgramIndex.build(texts, 8)
    assert index.contaminated("Compute the sum of all positive divisors of $36$.")
    assert not index.contaminated("Find the product of the two roots of the polynomial $x^2 - 5x + 6$.")
    import datasets
    asked = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split, revision: asked.append(
        (name, revision)) or [{"problem_idx": 1, "problem": "Find the area of the unit square.", "answer": 1}])
    _, against = eval_texts(DecontaminationConfig(tasks=["aime26"], include_heldout=False),
                            Paths.for_profile("t", tmp_path))
    assert against == {"aime26": {"questions": 1, "source": "MathArena/aime_2026"}}
    assert asked == [("MathArena/aime_2026", "10b4e45b7a503075d4da8a0d57916a4f06ce6bd2")]


def test_s1_32b_decontaminates_against_every_reported_benchmark():
    from components.config import load_config
    cfg = load_config(Path(__file__).resolve().parents[2] / "params.yaml", profile="s1-32b")
    assert {"aime24", "aime25", "math500", "gpqa_diamond", "amc23", "hmmt_feb25", "brumo25", "aime26"} <= \
        set(cfg.decontamination.tasks)
    assert set(cfg.evaluate.tasks) <= set(cfg.decontamination.tasks)
    assert cfg.selection.strategy == "s1"


def _report(tmp_path, against):
    paths = Paths.for_profile("t", tmp_path)
    write_json(paths.metric("filter_report.json"), {"decontaminated_against": {n: {} for n in against}})
    return paths


def test_evaluate_refuses_a_task_the_training_data_was_not_decontaminated_against(tmp_path):
    paths = _report(tmp_path, ["heldout", "math500"])
    ev = EvaluateConfig(tasks=["math500", "aime24"], task_files=FILES)
    with pytest.raises(ContaminationError, match=r"\['aime24'\] not in the training data's decontamination"):
        evaluate_stage(ev, EngineConfig(), ModelConfig(), ServeConfig(), paths)
    assert contamination_check(["heldout", "math500"], paths.metric("filter_report.json"), allow=False) == []
    with pytest.raises(ContaminationError, match="none"):  # no filter report: nothing was decontaminated
        contamination_check(["heldout"], tmp_path / "missing.json", allow=False)


def test_allow_contaminated_warns_and_names_the_tasks(tmp_path, caplog):
    paths = _report(tmp_path, ["heldout"])
    with caplog.at_level(logging.WARNING):
        missing = contamination_check(["heldout", "aime24", "amc23"], paths.metric("filter_report.json"), allow=True)
    assert missing == ["aime24", "amc23"] and "CONTAMINATED" in caplog.text
    assert json.loads(paths.metric("filter_report.json").read_text())  # untouched


class GPURegistry:
    """Which engines hold the GPUs: the s1-32b cluster's in-process engines (TP 8) and Serve's replicas
    (2 x 8 GPUs, one on the driver's node) share one GPU set, so at most one may be alive at a time."""

    def __init__(self):
        self.alive: list[str] = []
        self.started: list[tuple[str, tuple[str, ...]]] = []  # (engine, what was alive when it started)
        self.rewards: list[tuple[str, str, tuple[str, ...]]] = []  # (reward model, device, engines alive)

    def start(self, what: str) -> None:
        self.started.append((what, tuple(self.alive)))
        self.alive.append(what)

    def stop(self, what: str) -> None:
        self.alive.remove(what)


def test_the_s1_32b_evaluation_never_runs_two_engines_on_one_gpu_set(tmp_path, monkeypatch):
    from contextlib import contextmanager

    import components.evaluation.evaluate_stage as stage
    import components.evaluation.executors as executors
    import components.inference.rebase as rebase
    from components.config import load_config
    from components.evaluation.plan import SWEEP
    from components.records import Question

    cfg = load_config(Path(__file__).resolve().parents[2] / "params.yaml", profile="s1-32b")
    ev = cfg.evaluate
    assert ev.via == "serve" and cfg.engine.tensor_parallel_size == 8 and "rebase" in ev.compute_matched
    gpus = GPURegistry()

    class FakeEngine:
        def __init__(self, model, options):
            self.label, self.options = f"engine({model})", options
            gpus.start(self.label)

        def shutdown(self):
            gpus.stop(self.label)

    class FakePRM:
        def __init__(self, name, device, revision, trust_remote_code):
            self.name, self.model = name, object()
            gpus.rewards.append((name, device, tuple(gpus.alive)))
            assert (revision, trust_remote_code) == (configured(ev, "rebase").reward_revision, True)  # pinned, trusted

    built = []

    def build_engine(engine_cfg, dtype, model, **options):
        built.append(options)
        return FakeEngine(model, options)

    @contextmanager
    def launch_endpoint(serve, engine, dtype, model_path):
        gpus.start("serve")
        try:
            yield "http://127.0.0.1:1"
        finally:
            gpus.stop("serve")

    point = {"budget": 512, "avg_thinking_tokens": 100.0, "accuracy": 0.5}
    tasks = {name: [Question(id=f"{name}-0", source=name, question="1+1?", answer="2")] for name in ev.tasks}
    monkeypatch.setattr(executors, "build_engine", build_engine)
    monkeypatch.setattr(stage, "eval_questions", lambda evaluate, paths: tasks)
    monkeypatch.setattr(stage, "base_model_accuracy", lambda engine, qs, n: (gpus.alive == [engine.label]) * 0.25)
    monkeypatch.setattr(executors, "evaluate_via_serve", lambda *a, **k: ({"points": [point]}, []))
    # the parts after Serve: which engine each ran on, as the report's sections
    monkeypatch.setattr(executors, "run_in_process", lambda engine, plans, evaluate: {
        plan.task: {p: ({"on": engine.label}, []) for p in plan.parts} for plan in plans})
    monkeypatch.setattr(stage, "assemble", lambda qs, evaluate, results, extras=True: (
        {**results[SWEEP][0], "extras_on": sorted({r["on"] for p, (r, _) in results.items() if p != SWEEP}),
         "in_process": sorted(((p.kind, p.value) for p in results if p != SWEEP), key=str)}, []))
    monkeypatch.setattr(executors, "engine_version", lambda backend: "vllm 0.32.0")
    monkeypatch.setattr(stage, "provenance", lambda *a: {})
    monkeypatch.setattr(stage, "plot_scaling", lambda *a, **k: None)
    monkeypatch.setattr(stage, "plot_compute_matched", lambda *a, **k: None)
    monkeypatch.setattr(rebase, "QwenMathPRM", FakePRM)
    paths = _report(tmp_path, ev.tasks)

    report = stage.evaluate_stage(ev, cfg.engine, cfg.model, cfg.serve, paths, launch_endpoint)

    assert [what for what, _ in gpus.started] == [f"engine({cfg.model.name})", "serve", f"engine({paths.sft_model})"]
    assert all(alive == () for _, alive in gpus.started), gpus.started  # nothing else held the GPUs
    assert gpus.alive == []  # every engine shut down at the end
    assert {t: r["base_accuracy"] for t, r in report["tasks"].items()} == {t: 0.25 for t in ev.tasks}
    # the sweeps through Serve; after it, on the in-process engine, the headline's extras and every task's sampled
    # protocol with its own k (64 samples per AIME question, 4 per MATH500 one)
    assert {r["extras_on"][0] for r in report["tasks"].values()} == {f"engine({paths.sft_model})"}
    assert {"matched", "ablations", "sampled"} == {kind for kind, _ in report["tasks"][ev.tasks[0]]["in_process"]}
    assert {t: report["tasks"][t]["in_process"] for t in ("aime25", "math500")} == {
        "aime25": [("sampled", 64)], "math500": [("sampled", 4)]}
    # the PRM: on the configured device, beside the extras engine only, and released afterwards
    assert gpus.rewards == [("Qwen/Qwen2.5-Math-PRM-7B", "cuda:0", (f"engine({paths.sft_model})",))]
    assert configured(ev, "rebase").reward not in rebase.REWARDS
    # the share that leaves the PRM its room; the base model at its pinned commit
    assert built == [{"gpu_memory_utilization": 0.75, "revision": cfg.model.revision},
                     {"gpu_memory_utilization": 0.75, "revision": None}]
