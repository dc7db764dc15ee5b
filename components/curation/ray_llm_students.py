"""The difficulty filter's ``runner: ray_llm`` path: a student answers every question through ray.data.llm's
vLLM processor (chat template, batching, tensor parallelism inside).

Lengths: vLLM refuses an engine whose ``max_model_len`` exceeds what the model's config allows (its
``max_position_embeddings``) unless ``VLLM_ALLOW_LONG_MAX_MODEL_LEN`` is set, and positions past it give
garbage on RoPE models. So the driver tokenizes every prompt first; the engine length is the longest prompt
plus ``max_new_tokens``, capped at the model's positions, and each question's generation budget is what its
prompt leaves of that length (all of ``max_new_tokens`` unless the cap cut the length).

Cut-off rows: ray.data.llm (2.60) hands back ``generated_tokens``, ``num_input_tokens`` and
``num_generated_tokens`` but not vLLM's finish reason, so :func:`finish_reason` recomputes it with vLLM's own
rule (``v1/core/sched/utils.py:check_stop``): a row whose last token is a stop token stopped; otherwise one
that used its whole budget or reached the engine length was cut ("length") and gave no answer unless it had
already written one.

Judged rows: with ``judge`` on, a row whose reference is a whole solution is not graded here; its attempt's
text comes back for the LLM judge in the driver ('' when cut off before an answer: not solved, never sent).
Every other row carries an empty ``attempt``.

    settings = engine_settings(model, cfg, longest_prompt=812)
    solved, attempts = ray_llm_attempts(examples, model, cfg, judge=True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from components.common.grading import attempt_answer, grade_question
from components.config import DifficultyConfig
from components.curation.judge import attempt_to_judge, solution_reference
from components.records import Example, Question


@dataclass(frozen=True)
class EngineSettings:
    max_model_len: int
    positions: int
    stop_token_ids: frozenset[int]

    def budget(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """New tokens a prompt of this length may generate: at most ``max_new_tokens``, and prompt + new tokens
        within the engine length (0: the prompt alone fills it)."""
        return max(0, min(max_new_tokens, self.max_model_len - prompt_tokens))


def model_positions(hf_config) -> int:
    """The positions a model's config allows (a multimodal config keeps them in its ``text_config``)."""
    for cfg in (hf_config, getattr(hf_config, "text_config", None)):
        n = getattr(cfg, "max_position_embeddings", None) if cfg is not None else None
        if isinstance(n, int) and n > 0:
            return n
    raise ValueError(f"difficulty.students: model config {type(hf_config).__name__} has no max_position_embeddings; "
                     "the difficulty filter needs the model's context length to size its vLLM engine")


def _stop_ids(*values) -> frozenset[int]:
    out: set[int] = set()
    for v in values:
        out.update([v] if isinstance(v, int) else [i for i in (v or []) if isinstance(i, int)])
    return frozenset(out)


def engine_settings(model: str, cfg: DifficultyConfig, longest_prompt: int) -> EngineSettings:
    """The engine length and stop tokens for a student, read from its config, tokenizer and generation config:
    ``longest_prompt`` (tokens) plus ``cfg.max_new_tokens``, capped at the model's positions."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig
    hub = hub_kwargs(model, cfg)
    positions = model_positions(AutoConfig.from_pretrained(model, **hub))
    tokenizer = AutoTokenizer.from_pretrained(model, **hub)
    try:
        generation_eos = GenerationConfig.from_pretrained(model, revision=hub["revision"]).eos_token_id
    except OSError:  # no generation_config.json: vLLM then stops on the tokenizer's EOS alone
        generation_eos = None
    return EngineSettings(max_model_len=min(positions, longest_prompt + cfg.max_new_tokens), positions=positions,
                          stop_token_ids=_stop_ids(tokenizer.eos_token_id, generation_eos))


def hub_kwargs(model: str, cfg: DifficultyConfig) -> dict:
    """How a student loads: at its pinned commit (``difficulty.revisions``; None for a local directory), never
    running the repository's own code."""
    return {"revision": cfg.revisions.get(model), "trust_remote_code": False}


def prompt_tokens(model: str, questions: list[Question], revision: Optional[str] = None) -> list[list[int]]:
    """Each question's chat prompt as token ids, by the student's tokenizer at its pinned commit. The driver
    tokenizes (the processor's chat-template, tokenize and detokenize stages are off): those stages load the
    tokenizer by name alone, at the repository's latest commit, which need not be the one the engine runs."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model, revision=revision, trust_remote_code=False)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q.question}], tokenize=False,
                                           add_generation_prompt=True) for q in questions]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def prompt_lengths(model: str, questions: list[Question], revision: Optional[str] = None) -> list[int]:
    """Tokens of each question's chat prompt."""
    return [len(ids) for ids in prompt_tokens(model, questions, revision)]


def finish_reason(row: dict, max_tokens: int, max_model_len: int, stop_token_ids: frozenset[int]) -> str:
    """vLLM's finish reason for a generated row: 'stop' on a stop token, else 'length' when the row used its
    budget or reached the engine length (vLLM checks in that order), else 'stop'."""
    tokens = list(row.get("generated_tokens") or [])
    if tokens and int(tokens[-1]) in stop_token_ids:
        return "stop"
    generated = int(row["num_generated_tokens"])
    if generated >= max_tokens or int(row["num_input_tokens"]) + generated >= max_model_len:
        return "length"
    return "stop"


def processor_config(model: str, cfg: DifficultyConfig, settings: EngineSettings):
    """The vLLMEngineProcessorConfig of one student (what ray.data.llm starts its vLLM engines with)."""
    from ray.data.llm import vLLMEngineProcessorConfig
    memory = {"gpu_memory_utilization": cfg.gpu_memory_utilization} if cfg.gpu_memory_utilization else {}
    hub = hub_kwargs(model, cfg)
    return vLLMEngineProcessorConfig(
        model_source=model, concurrency=cfg.workers, batch_size=cfg.batch_size,
        # prompts arrive as token ids (prompt_tokens); vLLM writes the generated text with its pinned tokenizer
        chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
        engine_kwargs={"tensor_parallel_size": max(1, int(cfg.num_gpus)), "enable_prefix_caching": True,
                       "max_model_len": settings.max_model_len, "revision": hub["revision"],
                       "tokenizer_revision": hub["revision"], "trust_remote_code": False, **memory})


def _preprocess(row: dict) -> dict:
    return {"id": row["id"], "question": row["question"], "gold": row["gold"], "max_tokens": row["max_tokens"],
            "judge": row["judge"], "tokenized_prompt": list(row["prompt_tokens"]),
            "sampling_params": {"temperature": 0.0, "max_tokens": int(row["max_tokens"])}}


def postprocessor(settings: EngineSettings) -> Callable[[dict], dict]:
    """Grades one generated row: an attempt cut off at its length (finish reason 'length') before writing an
    answer has not answered. A row marked ``judge`` is not graded (``solved`` false): its ``attempt`` is the
    text the judge is sent, '' when the attempt gave no answer; other rows carry an empty ``attempt``."""
    def post(row: dict) -> dict:
        reason = finish_reason(row, int(row["max_tokens"]), settings.max_model_len, settings.stop_token_ids)
        text, done = row["generated_text"], reason != "length"
        if row["judge"]:
            return {"id": row["id"], "finish_reason": reason, "solved": False, "attempt": attempt_to_judge(text, done)}
        question = Question.model_validate_json(row["question"])
        return {"id": row["id"], "finish_reason": reason,
                "solved": grade_question(question, attempt_answer(text, done)), "attempt": ""}
    return post


def ray_llm_attempts(examples: list[Example], model: str, cfg: DifficultyConfig,
                     judge: bool = False) -> tuple[dict[str, bool], dict[str, str]]:
    """(question id -> whether this student solved it by rule, question id -> attempt text for the judge: with
    ``judge`` on, the rows whose reference is a whole solution and whose attempt gave an answer). A question
    whose prompt alone fills the engine length cannot be answered and counts as not solved (it is never sent)."""
    import ray.data
    from ray.data.llm import build_processor

    from components.common.raycluster import ensure_ray
    questions = [ex.question for ex in examples]
    tokens = prompt_tokens(model, questions, cfg.revisions.get(model))
    settings = engine_settings(model, cfg, longest_prompt=max(map(len, tokens), default=0))
    budgets = [settings.budget(len(ids), cfg.max_new_tokens) for ids in tokens]
    out = {q.id: False for q, b in zip(questions, budgets) if b < 1}
    rows = [{"id": q.id, "question": q.model_dump_json(), "prompt_tokens": ids, "gold": q.answer, "max_tokens": b,
             "judge": judge and solution_reference(q)} for q, ids, b in zip(questions, tokens, budgets) if b >= 1]
    if not rows:
        return out, {}
    # before build_processor, which calls ray.init with its own defaults when Ray is not up: Ray starts with this
    # project's settings and release_ray stops it (a pipeline run may have released its Ray after an earlier stage)
    ensure_ray()
    processor = build_processor(processor_config(model, cfg, settings), preprocess=_preprocess,
                                postprocess=postprocessor(settings))
    done = processor(ray.data.from_items(rows)).take_all()  # the postprocessor's columns alone
    out.update({r["id"]: bool(r["solved"]) for r in done})
    return out, {r["id"]: r["attempt"] for r in done if r["attempt"]}
