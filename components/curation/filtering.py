"""The s1K filters as Ray Data transforms: quality, decontamination, difficulty, domain.

Each transform is a plain function or callable class over a batch of examples
(serialised as JSON in an ``example`` column), so the same code runs on one
laptop core or a Ray cluster. A dropped example keeps its ``drop_reason``;
the driver counts reasons for the filter report.

- quality and decontamination: one stateless ``map_batches`` (the n-gram
  index travels to the workers with the transform; its hashes are stable
  across processes);
- difficulty: each student attempts every question, as Ray Data batch
  inference: the project's HF/vLLM engine in actors (``runner: engine``) or
  ``ray.data.llm``'s vLLM processor (``runner: ray_llm``, the s1-32b profile).
  Attempts are graded by rule where they come out; with ``judge`` on, a row
  whose reference is a whole solution comes back as the attempt's text instead
  (only those rows carry text), for the LLM judge in the driver;
- domain: the deterministic classifier, or an LLM given the MSC list through
  the same OpenAI-compatible client as the teacher;
- trace length: the thinking in tokens of the target tokenizer.

    kept, reasons = quality_and_decontamination(examples, cfg.quality, index)
    n = trace_length(tokenizer, example)
"""
from __future__ import annotations

import asyncio
from collections import Counter
from typing import Callable, Optional

from components.common.chat_client import ApiError, ChatClient
from components.common.raycluster import actor_pool, ensure_ray
from components.common.threads import use_threads
from components.config import DifficultyConfig, DomainConfig, QualityConfig
from components.curation.judge import attempt_to_judge, solution_reference
from components.curation.quality import quality_reason
from components.curation.ray_llm_students import ray_llm_attempts
from components.data.domains import classification_messages, classify, parse_msc
from components.records import Example


def _dataset(examples: list[Example], batch_size: int):
    import ray.data
    ensure_ray()
    rows = [{"id": ex.question.id, "example": ex.model_dump_json()} for ex in examples]
    return ray.data.from_items(rows, override_num_blocks=max(1, min(64, -(-len(rows) // batch_size))))


def _examples(batch: dict) -> list[Example]:
    return [Example.model_validate_json(s) for s in batch["example"]]


def quality_and_decontamination_transform(batch: dict, cfg_json: str, index) -> dict:
    """Both checks in one pass over the batch; returns only each id's drop reason ('' = kept)."""
    cfg = QualityConfig.model_validate_json(cfg_json)
    reasons = []
    for ex in _examples(batch):
        reasons.append(quality_reason(ex, cfg) or ("contaminated" if index.contaminated(ex.question.question) else ""))
    return {"id": list(batch["id"]), "reason": reasons}


def quality_and_decontamination(examples: list[Example], cfg: QualityConfig, index,
                                batch_size: int = 2048) -> tuple[list[Example], list[Example]]:
    """(kept, dropped) after the quality checks and n-gram decontamination, as one Ray Data transform.

    Workers send back only (id, reason); the reason is set on the given examples (in place), so the driver
    never decodes the examples again."""
    ds = _dataset(examples, batch_size)
    ds = ds.map_batches(quality_and_decontamination_transform,
                        fn_kwargs={"cfg_json": cfg.model_dump_json(), "index": index},
                        batch_size=batch_size, batch_format="numpy")
    reasons: dict[str, str] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        reasons.update(zip(batch["id"].tolist(), batch["reason"].tolist()))
    done = sorted(examples, key=lambda ex: ex.question.id)
    for ex in done:
        ex.drop_reason = reasons[ex.question.id] or None
    return [ex for ex in done if not ex.drop_reason], [ex for ex in done if ex.drop_reason]


class StudentWorker:
    """A Ray Data actor holding one student engine; answers batches of questions greedily. Returns per question
    ``solved`` (graded by rule) and ``attempt``: with ``judge`` on, for a row whose reference is a whole solution,
    the attempt's text for the judge (``solved`` false; '' when it was cut off before an answer), else ''."""

    def __init__(self, engine_factory: Callable, max_new_tokens: int, workers: int = 1, judge: bool = False):
        use_threads(workers)  # the actors run side by side: each gets its share of the cores
        self.engine, self.max_new_tokens, self.judge = engine_factory(), max_new_tokens, judge

    def __call__(self, batch: dict) -> dict:
        from components.inference.attempts import finished, solves, student_completions
        examples = _examples(batch)
        solved, attempts = [], []
        for ex, c in zip(examples, student_completions(self.engine, examples, self.max_new_tokens)):
            if self.judge and solution_reference(ex.question):
                solved.append(False)
                attempts.append(attempt_to_judge(c.text, finished(c)))
            else:
                solved.append(solves(c, ex))
                attempts.append("")
        return {"id": list(batch["id"]), "solved": solved, "attempt": attempts}


def student_solves(examples: list[Example], engine_factory: Callable, model: str, cfg: DifficultyConfig,
                   progress: Optional[Callable[[int], None]] = None,
                   judge: bool = False) -> tuple[dict[str, bool], dict[str, str]]:
    """(question id -> whether this student solved it by rule, question id -> attempt text for the judge) as Ray
    Data batch inference. With ``judge`` off every row is graded by rule and the second map is empty; with it on,
    rows whose reference is a whole solution are left unsolved and their attempts (those that gave an answer)
    are in the second map."""
    if cfg.runner == "ray_llm":
        return ray_llm_attempts(examples, model, cfg, judge=judge)
    ds = _dataset(examples, cfg.batch_size)
    workers = cfg.workers if cfg.num_gpus else min(cfg.workers, _cluster_cpus())  # a CPU each: never wait for one
    ds = ds.map_batches(
        StudentWorker, fn_constructor_kwargs={"engine_factory": engine_factory, "max_new_tokens": cfg.max_new_tokens,
                                              "workers": workers, "judge": judge},
        batch_size=cfg.batch_size, batch_format="numpy", num_gpus=cfg.num_gpus or None,
        compute=actor_pool(workers))
    solved: dict[str, bool] = {}
    attempts: dict[str, str] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ids = batch["id"].tolist()
        solved.update(zip(ids, map(bool, batch["solved"])))
        attempts.update((i, str(a)) for i, a in zip(ids, batch["attempt"].tolist()) if a)
        if progress:
            progress(len(ids))
    return solved, attempts


def _cluster_cpus() -> int:
    import ray
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def trace_length(tokenizer, ex: Example) -> int:
    """The trace's thinking in tokens of the target tokenizer (the length the selection ranks by)."""
    return len(tokenizer(ex.trace.thinking, add_special_tokens=False)["input_ids"])


class DomainClassificationError(RuntimeError):
    """Too many questions left without a domain: the diversity phase would collapse onto 'unknown'."""


class DomainWorker:
    """A Ray Data actor classifying questions into MSC domains with an LLM; a question it cannot place comes
    back with an empty code and the cause (a failed call, or a reply with no MSC code).

    One client per actor, so its share of the rate limits holds across batches. Ray Data runs an async UDF's
    batches on one event loop in a thread of the actor and deletes the UDF when the pool shuts down gracefully:
    :meth:`close` (from ``__del__``) closes the client's connections on that loop."""

    CLOSE_TIMEOUT_S = 5.0

    def __init__(self, cfg_json: str):
        cfg = DomainConfig.model_validate_json(cfg_json)
        self.client: Optional[ChatClient] = ChatClient(cfg, kind="openai")
        self.loop: Optional[asyncio.AbstractEventLoop] = None  # the loop the client's connections belong to

    def close(self) -> None:
        """Close the client (best effort: an actor that is going away must not fail on it)."""
        client, self.client = getattr(self, "client", None), None
        if client is None:
            return
        loop = getattr(self, "loop", None)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        try:
            if running is not None and (loop is None or running is loop):
                running.create_task(client.aclose())  # on the loop's own thread: it must not wait for itself
            elif loop is not None and loop.is_running():
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(self.CLOSE_TIMEOUT_S)
            elif running is None:  # never used, or its loop has stopped
                asyncio.run(client.aclose())
        except Exception:  # noqa: BLE001  (a loop already closed, a connection already gone)
            pass

    def __del__(self) -> None:
        self.close()

    async def __call__(self, batch: dict) -> dict:
        self.loop = asyncio.get_running_loop()
        async def one(question: str) -> tuple[str, str]:
            try:
                reply = (await self.client.chat(classification_messages(question))).content
            except ApiError as e:
                return "", f"{e} {e.raw[:300]}".strip()
            code = parse_msc(reply)
            return code, "" if code else f"reply has no MSC code: {reply[:200]!r}"
        examples = _examples(batch)
        results = await asyncio.gather(*(one(ex.question.question) for ex in examples))
        return {"id": list(batch["id"]), "msc": [c for c, _ in results], "error": [e for _, e in results]}


def check_unclassified(outcome: Counter, errors: list[str], cfg: DomainConfig) -> None:
    """Raise when more than ``domain.max_unclassified_share`` of the questions were left unclassified."""
    total = outcome["classified"] + outcome["unclassified"]
    share = outcome["unclassified"] / total if total else 0.0
    if share > cfg.max_unclassified_share:
        causes = "; ".join(f"[{i + 1}] {e}" for i, e in enumerate(errors[:3]))
        raise DomainClassificationError(
            f"domain classifier ({cfg.model}) left {outcome['unclassified']} of {total} questions unclassified "
            f"({share:.1%}), over domain.max_unclassified_share = {cfg.max_unclassified_share:.1%}. First errors: "
            f"{causes}. Check domain.model, domain.base_url and the {cfg.api_key_env} key, or raise the share.")


def classify_domains(examples: list[Example], cfg: DomainConfig) -> Counter:
    """Set each example's MSC code in place; returns how many were classified and how many were not (those get
    'unknown'). Raises :class:`DomainClassificationError` past ``domain.max_unclassified_share``."""
    outcome: Counter = Counter()
    if cfg.classifier == "deterministic":
        for ex in examples:
            ex.question.msc = classify(ex.question.question)
        return outcome
    ds = _dataset(examples, cfg.batch_size).map_batches(
        DomainWorker, fn_constructor_kwargs={"cfg_json": cfg.model_dump_json()}, batch_size=cfg.batch_size,
        batch_format="numpy", num_cpus=0.1, compute=actor_pool(cfg.workers, 4))
    codes, errors = {}, {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        codes.update(zip(batch["id"].tolist(), batch["msc"].tolist()))
        errors.update(zip(batch["id"].tolist(), batch["error"].tolist()))
    for ex in examples:
        ex.question.msc = codes.get(ex.question.id) or "unknown"
        outcome["unclassified" if ex.question.msc == "unknown" else "classified"] += 1
    check_unclassified(outcome, [errors.get(ex.question.id) or "no result came back"
                                 for ex in examples if ex.question.msc == "unknown"], cfg)
    return outcome
