"""Typed configuration: params.yaml validated once, at the edge.

params.yaml holds one block per profile (``tiny``, ``s1-32b``) and a top-level
``profile`` key choosing the active one. ``load_config()`` returns the active
block as a :class:`ProfileConfig`; each stage receives only the sections (or
keys) its registry record declares (components/pipeline/registry.py).

    cfg = load_config("params.yaml", overrides=["sft.epochs=3"])
"""
from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.method_index import METHODS, REFERENCE


class ConfigError(ValueError):
    """A params.yaml problem, naming the key and how to fix it."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _commit_sha(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{40}", value):
        raise ValueError(f"{value!r} is not a commit: pin the 40-hex commit SHA of the hub repository (its "
                         "'Files and versions' history lists them); a branch or tag such as 'main' moves")
    return value


# A Hugging Face hub commit: every hub model and dataset a profile names is downloaded at one (pinned) commit.
Revision = Annotated[str, AfterValidator(_commit_sha)]


class ModelConfig(Section):
    """The base (student) model. ``embedded`` builds a tiny Qwen2 from this config."""

    source: Literal["embedded", "hub"] = "embedded"
    name: str = Field("tiny-qwen2", description="hub id or local directory when source=hub")
    revision: Optional[Revision] = Field(None, description="source=hub with a hub id: the commit of name every load "
                                         "of the base model reads (a local directory needs none)")
    hidden_size: int = Field(192, gt=0)
    num_layers: int = Field(4, gt=0)
    num_heads: int = Field(6, gt=0)
    num_kv_heads: int = Field(2, gt=0)
    intermediate_size: int = Field(512, gt=0)
    max_position_embeddings: int = Field(640, gt=0)
    vocab_size: int = Field(400, gt=64, description="target BPE vocabulary (embedded tokenizer)")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int = 0
    released: Optional[date] = Field(None, description="the base model's public release (YYYY-MM-DD): the results "
                                     "page flags each task whose questions were public before it as possibly seen "
                                     "in pre-training. None: none flagged (the embedded model pre-trains on the "
                                     "procedural corpus only)")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads: ({self.num_heads}) must be divisible by num_kv_heads ({self.num_kv_heads})")
        return self


class PretrainConfig(Section):
    """Brief pre-training of the embedded model on a procedural corpus (stands in for Qwen's)."""

    enabled: bool = True
    documents: int = Field(30000, gt=0, description="corpus documents generated")
    steps: int = Field(1500, gt=0)
    batch_size: int = Field(8, gt=0)
    block_size: int = Field(256, gt=8)
    whole_documents: bool = Field(True, description="pack whole documents into the blocks (a document never "
                                  "straddles two; the room left is filler that trains nothing); false: one token "
                                  "stream cut every block_size tokens")
    learning_rate: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    direct_answer_fraction: float = Field(0.15, ge=0, le=1, description="share of chat docs answering without thinking "
                                          "(among questions up to direct_answer_max_difficulty)")
    direct_answer_max_difficulty: Optional[int] = Field(None, ge=1, description="direct answers only for questions up "
                                                        "to this difficulty (an instruct model answers easy ones "
                                                        "outright); null: any")
    copy_fraction: float = Field(0.0, ge=0, le=2, description="copy-drill documents per corpus document (numbers "
                                 "written, then written again): dense practice for the digit copying every trace needs")
    running_sum_fraction: float = Field(0.0, ge=0, le=2, description="running-sum drills per corpus document "
                                        "(\"23+7=30\" lines): practice for the two-digit + one-digit facts a digit "
                                        "sum's trace needs at every step")
    extraction_fraction: float = Field(0.0, ge=0, le=2, description="extraction drills per corpus document (a "
                                       "sentence with numbers in it, then the numbers alone): practice for copying a "
                                       "number out of a context unlike the one it is copied into, as a word "
                                       "problem's trace does")
    probe_every: int = Field(0, ge=0, description="steps between skill probes; 0: a cosine schedule over all steps. "
                             ">0: warm-up, constant LR, and a cool-down once the probe passes (or at steps - cooldown)")
    probe_questions: int = Field(32, gt=0, description="fresh textbook problems (upper half of the difficulty range) "
                                 "the probe completes greedily")
    probe_target: float = Field(0.9, gt=0, le=1, description="probe accuracy that ends the constant-LR phase")
    probe_gate: Literal["mean", "every_domain"] = Field("mean", description="what must reach probe_target: the "
                                                        "accuracy over all probe questions, or every domain's own")
    correction_fraction: float = Field(0.0, ge=0, le=1, description="share of textbook solutions that slip once and "
                                       "correct themselves ('Wait, let me re-check: ...'), as the teacher's traces do")
    chat_solution_fraction: float = Field(0.0, ge=0, le=1, description="share of the harder questions' worked "
                                          "solutions (above direct_answer_max_difficulty) written as a chat turn (the "
                                          "question from the user, the solution from the assistant, as an instruct "
                                          "model shows its work) instead of a textbook page: SFT's prompts are chat "
                                          "turns, and copying numbers out of one is a skill of its own")
    cooldown_steps: int = Field(150, ge=0, description="LR decays to 10% over these steps, then pre-training stops")
    probe_average: float = Field(0.0, ge=0, lt=1, description="the probe reads an exponential moving average of the "
                                 "weights with this decay (0.99: about the last 100 steps), which sees a skill the "
                                 "constant-LR weights already hold under their noise; 0: the weights themselves")
    seed: int = 1
    allow_unready: bool = Field(False, description="go on when pre-training ends without passing the probe (the "
                                "base-model stage fails by default); the base model's summary, every later stage's "
                                "summary, the results page and the MLflow run then carry a warning")
    release: Optional[str] = Field(None, description="a shipped pre-trained model (directory with release.json, "
                                   "relative to the project root; `s1flow release-base` writes it): installed instead "
                                   "of pre-training when it was built from these params and code; null: always pre-train")

    @model_validator(mode="after")
    def _cooldown_fits(self) -> "PretrainConfig":
        if self.probe_every and self.cooldown_steps + self.warmup_steps >= self.steps:
            raise ValueError(f"steps: ({self.steps}) must exceed warmup_steps + cooldown_steps "
                             f"({self.warmup_steps} + {self.cooldown_steps}) when probe_every is set")
        return self


class PoolSource(Section):
    """One place questions come from; every source maps its rows onto the Question schema."""

    kind: Literal["procedural", "jsonl", "parquet", "hf"] = "procedural"
    name: str = Field("", description="source label in ids/reports; the dataset id for kind=hf")
    path: str = Field("", description="file (jsonl/parquet) or directory of them")
    config: Optional[str] = Field(None, description="HF dataset config")
    revision: Optional[Revision] = Field(None, description="kind=hf: the dataset's commit to download")
    split: str = "train"
    id_field: str = Field("", description="row field used as id ('' = source + row number)")
    question_field: str = "question"
    answer_field: str = "answer"
    answer_extract: Literal["none", "boxed", "boxed_or_solution"] = Field(
        "none", description="boxed: the last \\boxed{} of a solution field (a bare integer solution is kept as the "
        "answer; other rows are quarantined); boxed_or_solution: the same, else the whole solution is kept as the "
        "reference (metadata answer_format=solution: graded by an LLM judge against it, as s1 graded)")
    limit: Optional[int] = Field(None, gt=0, description="the first rows only (after where/exclude)")
    where: dict[str, list[str]] = Field(default_factory=dict, description="keep rows whose field equals one of the "
                                        "values, e.g. {source: [aops_forum]}")
    exclude: dict[str, list[str]] = Field(default_factory=dict, description="drop rows whose field equals one of "
                                          "the values")
    sample: Optional[int] = Field(None, gt=0, description="a seeded uniform sample of this many rows (after "
                                  "where/exclude), in dataset order")
    sample_seed: int = 0
    max_year: Optional[int] = Field(None, description="keep only rows whose year_field is <= this (s1: AIME <= 2022)")
    year_field: str = Field("Year", description="row field holding the year, for max_year")
    # a dataset that ships its traces (simplescaling/s1K-1.1: DeepSeek-R1's): distill takes them instead of a call
    thinking_field: str = Field("", description="row field holding a published reasoning trace (text, or a list "
                                "of texts joined by newlines); its rows reach distill with that trace, which takes it "
                                "instead of asking the teacher (teacher.use_published). A row whose field is empty "
                                "is answered by the teacher")
    attempt_field: str = Field("", description="row field holding the answer written after that trace (the "
                               "trace's answer part); '' = none")
    trace_teacher: str = Field("", description="the model that wrote the published traces, recorded as their "
                               "teacher (else the source's name)")
    # procedural sources only: a mix modelled on a real pool's sources (see params.yaml, tiny)
    size: Optional[int] = Field(None, gt=0, description="procedural: questions this source generates (else pool.size)")
    min_difficulty: Optional[int] = Field(None, ge=1, description="procedural: else pool.min_difficulty")
    max_difficulty: Optional[int] = Field(None, ge=1, description="procedural: else pool.max_difficulty")
    domain_weights: dict[str, float] = Field(default_factory=dict, description="procedural: relative share per "
                                             "domain (else uniform over pool.domains)")

    @field_validator("where", "exclude", mode="before")
    @classmethod
    def _values_listed(cls, value):
        """``{source: aops_forum}`` reads as ``{source: [aops_forum]}``."""
        if isinstance(value, dict):
            return {k: [str(v)] if isinstance(v, (str, int)) else [str(x) for x in v] for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _located(self) -> "PoolSource":
        if self.kind in ("jsonl", "parquet") and not self.path:
            raise ValueError(f"path: a {self.kind} source needs path (a file or a directory of *.{self.kind})")
        if self.kind == "hf" and not self.name:
            raise ValueError("name: an hf source needs the dataset id, e.g. AI-MO/NuminaMath-CoT")
        if self.revision and self.kind != "hf":
            raise ValueError(f"revision: only hf sources take it (a {self.kind} source is read from disk)")
        procedural_only = [k for k in ("size", "min_difficulty", "max_difficulty", "domain_weights")
                           if self.kind != "procedural" and getattr(self, k)]
        if procedural_only:
            raise ValueError(f"{procedural_only[0]}: only procedural sources take it (use limit for a {self.kind} source)")
        if self.min_difficulty and self.max_difficulty and self.min_difficulty > self.max_difficulty:
            raise ValueError(f"min_difficulty: ({self.min_difficulty}) > max_difficulty ({self.max_difficulty})")
        if self.sample and self.limit:
            raise ValueError("sample: give sample (a seeded sample) or limit (the first rows), not both")
        if self.kind == "procedural" and (self.where or self.exclude or self.sample):
            raise ValueError("where: where, exclude and sample filter rows of a dataset source, not a procedural one")
        if self.kind == "procedural" and self.thinking_field:
            raise ValueError("thinking_field: a procedural source has no published traces (the teacher writes them)")
        if not self.thinking_field and (self.attempt_field or self.trace_teacher):
            raise ValueError(f"{'attempt_field' if self.attempt_field else 'trace_teacher'}: describes the published "
                             "traces of thinking_field; set thinking_field too")
        if any(w < 0 for w in self.domain_weights.values()) or (self.domain_weights
                                                                 and not sum(self.domain_weights.values())):
            raise ValueError(f"domain_weights: must be non-negative with a positive sum, got {self.domain_weights}")
        return self


class PoolConfig(Section):
    sources: list[PoolSource] = Field(default_factory=lambda: [PoolSource()],
                                      description="procedural | jsonl | parquet | hf, concatenated then deduplicated")
    size: int = Field(3000, gt=0, description="questions the procedural source generates")
    seed: int = 2
    min_difficulty: int = Field(1, ge=1)
    max_difficulty: int = Field(6, ge=1)
    malformed_fraction: float = Field(0.02, ge=0, le=0.5)
    domains: list[str] = Field(default_factory=lambda: ["arithmetic", "algebra", "number_theory", "combinatorics"])

    @model_validator(mode="after")
    def _difficulty_range(self) -> "PoolConfig":
        if self.min_difficulty > self.max_difficulty:
            raise ValueError(f"min_difficulty: ({self.min_difficulty}) > max_difficulty ({self.max_difficulty})")
        if not self.sources:
            raise ValueError("sources: list at least one source (e.g. - kind: procedural)")
        for src in self.sources:
            unknown = sorted(set(src.domain_weights) - set(self.domains))
            if unknown:
                raise ValueError(f"domain_weights: domain(s) {unknown} of source {src.name or src.kind!r} are not in "
                                 f"pool.domains {self.domains}")
        names = [s.name or s.kind for s in self.sources if s.kind == "procedural"]
        if len(names) != len(set(names)):
            raise ValueError(f"sources: procedural sources need distinct names (ids are built from them), got {names}")
        return self


class ApiClientConfig(Section):
    """An OpenAI-compatible chat endpoint called at scale: limits, retries, timeouts, cost."""

    model: str = "programmatic-v1"
    base_url: Optional[str] = Field(None, description="e.g. https://api.openai.com/v1 or a vLLM server's /v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the env var holding the key (never the key)")
    max_tokens: int = Field(32768, gt=0, description="completion cap per call")
    temperature: float = Field(0.0, ge=0)
    timeout_s: float = Field(600.0, gt=0, description="per call")
    max_retries: int = Field(5, ge=0, description="on 429 / 5xx / timeouts / connection errors")
    backoff_base_s: float = Field(1.0, gt=0, description="exponential backoff base; full jitter")
    backoff_max_s: float = Field(60.0, gt=0)
    requests_per_minute: Optional[float] = Field(None, gt=0, description="token bucket over all workers")
    tokens_per_minute: Optional[float] = Field(None, gt=0, description="token bucket over all workers")
    concurrency: int = Field(16, gt=0, description="calls in flight over all workers")
    workers: int = Field(1, gt=0, description="Ray Data actors sharing the concurrency")
    batch_size: int = Field(16, gt=0, description="questions per Ray Data batch (= per result shard)")
    price_input_per_mtok: float = Field(0.0, ge=0, description="USD per 1M prompt tokens, for the cost estimate")
    price_output_per_mtok: float = Field(0.0, ge=0, description="USD per 1M completion tokens")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra request fields (e.g. reasoning_effort)")

    @property
    def calls_per_worker(self) -> int:
        """Each worker's share of ``concurrency`` (the validator keeps it >= 1)."""
        return max(1, self.concurrency // self.workers)

    @model_validator(mode="after")
    def _workers_share(self) -> "ApiClientConfig":
        if self.workers > self.concurrency:
            raise ValueError(f"workers: ({self.workers}) > concurrency ({self.concurrency}); "
                             "each worker needs at least one call in flight")
        return self


class TeacherConfig(ApiClientConfig):
    kind: Literal["programmatic", "openai", "gemini", "vllm"] = "programmatic"
    system_prompt: str = ""
    slip_probability: float = Field(0.05, ge=0, le=1, description="programmatic teacher only")
    style: Literal["standard", "thorough"] = Field("standard", description="programmatic teacher only: standard "
                                                   "(a trace slips at most once, with slip_probability, and re-checks "
                                                   "that step) | thorough (every step may slip, with slip_probability, "
                                                   "up to two re-checks per trace, and a closing check of the result: "
                                                   "longer traces with more self-correction)")
    use_published: bool = Field(True, description="a question that arrived with a published trace (a pool source's "
                                "thinking_field) takes it and is not asked; false: the teacher answers every question")
    seed: int = 3
    max_cost_usd: Optional[float] = Field(None, gt=0, description="spend cap over this teacher's shard set (every "
                                          "run, every attempt): distill stops, resumably, once it is reached")
    shard_uri: Optional[str] = Field(None, description="where the result shards (the record of paid answers) live, "
                                     "one set per teacher under it: s3://... or a path every node mounts; on a "
                                     "cluster of several nodes it must be set. null: runs/<profile>/distill, on "
                                     "the local disk of the node that runs each worker")
    require_thinking: Optional[bool] = Field(None, description="a response without thinking is a failed trace "
                                             "(error named), not an empty one; null: required for kind gemini (its "
                                             "thoughts are asked for), not for the others")

    @property
    def thinking_required(self) -> bool:
        return self.kind == "gemini" if self.require_thinking is None else self.require_thinking

    @model_validator(mode="after")
    def _style_programmatic(self) -> "TeacherConfig":
        if self.style != "standard" and self.kind != "programmatic":
            raise ValueError(f"style: only the programmatic teacher has a style (kind is {self.kind!r}); remove it")
        return self


class DomainConfig(ApiClientConfig):
    """MSC domain of each question: a deterministic classifier or an LLM given the MSC list."""

    classifier: Literal["deterministic", "llm"] = "deterministic"
    max_tokens: int = Field(16, gt=0)
    max_retries: int = Field(5, ge=0)
    max_unclassified_share: float = Field(0.05, ge=0, le=1, description="llm: the filter stage stops with an error "
                                          "(the share and the first causes) when more of the questions than this end "
                                          "unclassified (a failed call or a reply with no MSC code)")


class QualityConfig(Section):
    min_trace_chars: int = Field(20, ge=0)
    max_trace_chars: int = Field(200000, gt=0)


class DecontaminationConfig(Section):
    ngram: int = Field(8, ge=1)
    tasks: list[str] = Field(default_factory=list, description="benchmarks by name (aime24 | aime25 | math500 | amc23 | "
                             "gpqa_diamond | hmmt_feb25 | brumo25 | aime26), loaded by evaluation's task loaders "
                             "(evaluate.task_files, else the hub)")
    eval_sets: list[str] = Field(default_factory=list, description="extra JSONL files (field problem or question)")
    include_heldout: bool = True


class DifficultyConfig(Section):
    enabled: bool = True
    students: list[str] = Field(default_factory=lambda: ["base"], description="'base' or model paths/ids")
    revisions: dict[str, Revision] = Field(default_factory=dict, description="hub id of a student -> the commit "
                                           "it is downloaded at ('base' is model.name at model.revision)")
    runner: Literal["engine", "ray_llm"] = Field("engine", description="engine: the project's HF/vLLM engine in a "
                                                 "Ray Data actor; ray_llm: ray.data.llm's vLLM processor")
    workers: int = Field(1, gt=0, description="Ray Data actors (engine replicas) per student")
    num_gpus: float = Field(0, ge=0, description="per worker (tensor_parallel_size for vLLM)")
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(128, gt=0)
    gpu_memory_utilization: Optional[float] = Field(None, gt=0, le=1, description="runner: ray_llm: the share of "
                                                    "each GPU's memory a student's vLLM engine takes; None: "
                                                    "ray.data.llm's default. On a CPU vLLM reserves this share "
                                                    "of RAM and refuses to start when less is free")


class SelectionConfig(Section):
    strategy: Literal["s1", "diversity", "random", "longest", "diversity_only", "all"] = "diversity"
    size: int = Field(600, gt=0)
    seed: int = 4
    phase1_correct_sources: list[str] = Field(
        default_factory=lambda: ["qq8933/AIME_1983_2024", "Idavidrein/gpqa"],
        description="s1 phase 1: source_type values (a question's metadata source_type, else its source), matched "
                    "exactly; a value ending in '/' matches as a prefix. The ones the teacher answered correctly are "
                    "all taken")
    phase1_long_sources: list[str] = Field(
        default_factory=lambda: ["qfq/openaimath/"],
        description="s1 phase 1: source_type values for MATH (matched as phase1_correct_sources); taken when the "
                    "teacher is correct and the trace is long")
    phase1_min_trace_tokens: int = Field(5600, ge=0, description="s1 phase 1: 'long' MATH trace, in tokens")


class SFTConfig(Section):
    epochs: float = Field(3, gt=0)
    learning_rate: float = Field(2e-3, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    adam_beta1: float = Field(0.9, gt=0, lt=1)
    adam_beta2: float = Field(0.95, gt=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    global_batch_size: int = Field(16, gt=0)
    per_device_batch_size: int = Field(16, gt=0)
    block_size: int = Field(512, gt=8)
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: Literal["auto", "never", "always"] = "auto"
    deepspeed_config: str = "infra/deepspeed/zero3.json"
    world_size: int = Field(1, gt=0, description="training processes (GPUs) in all")
    packing: bool = Field(False, description="pack examples into block_size rows (global batch counts rows)")
    train_sampling: Literal["random", "sorted_steps"] = Field(
        "random", description="sorted_steps: random sampling's examples per optimizer step, sorted by length, so "
        "gradient accumulation's micro-batches (per_device_batch_size below the global batch) are each padded "
        "only to their own longest example; the same examples per step, the loss over all their tokens")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    sequence_parallel_size: int = Field(1, gt=0, description="DeepSpeed Ulysses: GPUs sharing one sequence")
    launcher: Literal["local", "ray"] = Field("local", description="ray: Ray Train TorchTrainer over world_size workers")
    use_gpu: bool = Field(False, description="Ray Train workers take one GPU each")
    ray_resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="more Ray resources per training worker, e.g. {p5: 1} (infra/ray)")
    ray_storage: Optional[str] = Field(None, description="Ray Train run storage every node reaches (s3://...); "
                                       "default: under the work dir (one machine)")
    checkpoint_uri: Optional[str] = Field(None, description="also keep checkpoints here (s3://... or a path); resume from it")
    save_steps: Optional[int] = Field(None, gt=0, description="checkpoint every N optimizer steps (default: each epoch)")
    max_failures: int = Field(0, ge=0, description="launcher ray: worker-group failures (a lost node, an OOM-killed "
                              "or NCCL-failed worker) Ray Train recovers from by restarting every worker; each "
                              "restart resumes from the newest complete checkpoint (0: the first failure ends the run)")
    seed: int = 5

    def samples_per_step(self, world: int) -> int:
        """Examples one forward/backward takes over ``world`` processes: per-device batch x data-parallel
        groups (Ulysses puts sequence_parallel_size processes on each sequence)."""
        return self.per_device_batch_size * max(1, world // self.sequence_parallel_size)

    @model_validator(mode="after")
    def _batch_divides(self) -> "SFTConfig":
        if self.world_size % self.sequence_parallel_size:
            raise ValueError(f"sequence_parallel_size: ({self.sequence_parallel_size}) must divide world_size "
                             f"({self.world_size})")
        if self.sequence_parallel_size > 1 and self.deepspeed == "never":
            raise ValueError("sequence_parallel_size: Ulysses needs DeepSpeed; set deepspeed to auto or always")
        if self.sequence_parallel_size > 1 and self.attn_implementation not in ("sdpa", "flash_attention_2"):
            raise ValueError(f"attn_implementation: {self.attn_implementation!r} does not run under DeepSpeed Ulysses "
                             "(sequence_parallel_size > 1; DeepSpeed refuses eager: it needs a 4D mask); "
                             "use sdpa or flash_attention_2")
        if self.sequence_parallel_size > 1 and self.train_sampling == "sorted_steps":
            raise ValueError("train_sampling: sorted_steps keeps each step's examples only without sequence parallelism "
                             "(Ulysses regroups the micro-batches and averages each one's loss on its own); set "
                             "train_sampling: random or sequence_parallel_size: 1")
        if self.sequence_parallel_size > 1 and self.packing and self.attn_implementation != "flash_attention_2":
            raise ValueError("attn_implementation: packing under DeepSpeed Ulysses needs flash_attention_2 (Ulysses "
                             "drops the block-diagonal mask sdpa would use, so packed examples would attend to each "
                             "other); set attn_implementation: flash_attention_2 or packing: false")
        if self.global_batch_size % self.samples_per_step(self.world_size):
            raise ValueError(
                f"global_batch_size: ({self.global_batch_size}) must be a multiple of per_device_batch_size * "
                f"data-parallel size ({self.per_device_batch_size}*{self.world_size // self.sequence_parallel_size}); "
                "change per_device_batch_size or world_size so the global batch stays the same"
            )
        return self


def _method_name(name: str) -> str:
    if name not in METHODS:
        raise ValueError(f"{name!r} is not a test-time method; choose one of {sorted(METHODS)}")
    return name


MethodName = Annotated[str, AfterValidator(_method_name)]


class HeldoutConfig(Section):
    """The procedural held-out test set, generated by the collect stage (kept out of the pool)."""

    size: int = Field(200, gt=0)
    seed: int = 6
    min_difficulty: int = Field(3, ge=1)
    max_difficulty: int = Field(6, ge=1)

    @model_validator(mode="after")
    def _difficulty_range(self) -> "HeldoutConfig":
        if self.min_difficulty > self.max_difficulty:
            raise ValueError(f"min_difficulty: ({self.min_difficulty}) > max_difficulty ({self.max_difficulty})")
        return self


class EngineConfig(Section):
    """The inference engine every stage that generates builds (difficulty students, evaluation, Serve)."""

    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = Field(64, gt=0, description="prompts per generate call")
    tensor_parallel_size: int = Field(1, gt=0, description="vLLM only")
    unlimited_thinking_tokens: int = Field(400, gt=0, description="the thinking cap: the 'no budget' run and the "
                                           "largest budget a Serve request may ask for (a request without a budget "
                                           "is also capped to what its prompt leaves of the context)")
    gpu_memory_utilization: Optional[float] = Field(None, gt=0, le=1, description="vLLM: the share of each GPU's "
                                                    "memory an engine takes (weights + KV cache) in the evaluate "
                                                    "stage and the Serve replicas; None: vLLM's 0.9 (0.2 of RAM on "
                                                    "a CPU). Lower it to leave room for a process reward model on "
                                                    "the engine's GPUs (evaluate.methods.rebase.reward_device)")
    max_num_batched_tokens: Optional[int] = Field(None, gt=0, description="vLLM: tokens scheduled per engine "
                                                  "step, with chunked prefill on (a longer prompt is prefilled "
                                                  "over several steps); None: vLLM's default")
    kv_cache_blocks: Optional[int] = Field(None, gt=0, description="vLLM: KV cache blocks (of vLLM's block size: "
                                           "16 tokens on a GPU, 128 on a CPU) in place of what the memory share "
                                           "leaves; at least one request at the model's length must fit. Few "
                                           "enough and vLLM preempts requests and resumes them later. None: sized "
                                           "from the memory share")


class SampledProtocol(Section):
    """The ``sampled`` protocol (DeepSeek-R1 and open-r1's convention): the main method at each budget, ``k``
    samples per question at ``temperature`` / ``top_p``, reported as avg@k (pass@1 averaged over the samples)
    with pass@k and a per-question bootstrap interval."""

    temperature: float = Field(0.6, gt=0, description="sampling temperature (the convention: 0.6)")
    top_p: float = Field(0.95, gt=0, le=1, description="nucleus sampling (the convention: 0.95)")
    k: dict[str, int] = Field(default_factory=lambda: {"default": 4}, description="samples per question by task "
                              "name; 'default': every task not named (the convention: 64 for AIME, 4 for MATH500, "
                              "8 for GPQA)")
    budgets: Optional[list[int]] = Field(None, min_length=1, description="thinking budgets sampled at (a subset "
                                         "of evaluate.budgets, each once); None: all of them")
    question_limit: Optional[int] = Field(None, gt=0, description="each task's first N questions (None: all)")

    @model_validator(mode="after")
    def _k_positive(self) -> "SampledProtocol":
        bad = {t: k for t, k in self.k.items() if k < 1}
        if bad:
            raise ValueError(f"k: samples per question must be >= 1, got {bad}")
        if "default" not in self.k:
            raise ValueError("k: give a 'default' (samples per question for every task not named)")
        if self.budgets and len(set(self.budgets)) != len(self.budgets):
            raise ValueError(f"budgets: {self.budgets} lists a budget twice; list each once")
        return self

    def k_for(self, task: str) -> int:
        """Samples per question on ``task``."""
        return self.k.get(task, self.k["default"])


class EvaluateConfig(Section):
    via: Literal["in_process", "serve"] = Field("in_process", description="serve: sweep through the Serve endpoint")
    allow_contaminated: bool = Field(False, description="report a task the training data was not decontaminated "
                                     "against (warns; the MLflow run is tagged contaminated=true) instead of refusing")
    tasks: list[str] = Field(default_factory=lambda: ["heldout"],
                             description="heldout | aime24 | aime25 | math500 | amc23 | gpqa_diamond | hmmt_feb25 | "
                             "brumo25 | aime26")
    task_files: dict[str, str] = Field(default_factory=dict, description="local JSONL per task (else its HF dataset)")
    task_limit: Optional[int] = Field(None, gt=0)
    seeds: list[int] = Field(default_factory=lambda: [0], description="one sample per seed per question (via serve)")
    concurrency: int = Field(16, gt=0, description="requests in flight (via serve)")
    method: MethodName = REFERENCE
    compare_methods: list[MethodName] = Field(default_factory=list, description="also swept, for the comparison table")
    budgets: list[int] = Field(default_factory=lambda: [32, 64, 96, 128, 160, 192], description="max thinking tokens per run")
    min_thinking_tokens: int = Field(0, ge=0)
    num_waits: int = Field(0, ge=0)
    wait_strings: list[str] = Field(default_factory=lambda: ["Wait"])
    final_answer_prefix: str = "Answer:"
    max_answer_tokens: int = Field(24, gt=0)
    base_max_new_tokens: int = Field(48, gt=0, description="the base model's answer length (reference accuracy)")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 7
    sample_temperature: float = Field(1.0, gt=0, description="the temperature of every sampled method (voting, "
                                      "rejection sampling, REBASE's expansions)")
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict, description="each method's own settings by "
                                               "name (evaluate.methods.<name>.<setting>); defaults where absent")
    trust_remote_code: list[str] = Field(default_factory=list, description="models (hub ids or directories) "
                                         "allowed to run their repository's own Python code on load "
                                         "(transformers trust_remote_code); every other model loads without it. "
                                         "List one only after reading that code at its pinned revision")
    compute_matched: list[MethodName] = Field(default_factory=list, description="sequential vs parallel at equal "
                                              "compute (s1 Fig. 7): methods compared by average thinking tokens per "
                                              "question, parallel samples and REBASE's expanded nodes summed; [] = off")
    wait_string_ablation: list[str] = Field(default_factory=list, description="wait strings compared when "
                                            "extrapolating ('' = none: the delimiter suppressed, nothing appended); "
                                            "[] = off")
    ablation_num_waits: int = Field(2, gt=0, description="forced waits per question in the wait-string ablation")
    num_waits_ablation: list[int] = Field(default_factory=list, description="numbers of forced waits compared "
                                          "(extrapolation, s1 Table 4); [] = off")
    workers: int = Field(1, gt=0, description="in-process evaluation with the HF engine: processes running its "
                         "independent parts (headline sweep, voting, REBASE, ablations) side by side, each with the "
                         "model and its share of the threads; the numbers do not change")
    ablation_limit: Optional[int] = Field(None, gt=0, description="the compute-matched comparison and the ablations "
                                          "run on the headline task's first N questions (None: all)")
    protocols: list[Literal["paper", "sampled"]] = Field(default_factory=lambda: ["paper"], description="paper: "
                                                         "greedy, as s1 reports (every table); sampled: also avg@k "
                                                         "at temperature/top_p per task (evaluate.sampled)")
    sampled: SampledProtocol = SampledProtocol()

    @model_validator(mode="after")
    def _budgets_consistent(self) -> "EvaluateConfig":
        if not self.budgets:
            raise ValueError("budgets: must list at least one thinking budget")
        if any(b <= 0 for b in self.budgets):
            raise ValueError(f"budgets: must be positive token counts, got {self.budgets}")
        if self.min_thinking_tokens > min(self.budgets):
            raise ValueError(
                f"min_thinking_tokens: ({self.min_thinking_tokens}) > smallest budget ({min(self.budgets)}); "
                "lower it or raise the budgets"
            )
        if not self.wait_strings:
            raise ValueError("wait_strings: list at least one wait string ('' = none: nothing appended)")
        for key in ("wait_strings", "wait_string_ablation"):
            blank = [w for w in getattr(self, key) if w and not w.strip()]
            if blank:
                raise ValueError(f"{key}: whitespace-only wait strings {blank!r} are not allowed; write '' for none "
                                 "(the end-of-thinking delimiter suppressed, nothing appended)")
        if len(set(self.wait_string_ablation)) != len(self.wait_string_ablation):
            raise ValueError("wait_string_ablation: list each wait string once")
        if len(set(self.compute_matched)) != len(self.compute_matched):
            raise ValueError("compute_matched: list each method once")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"methods: {unknown} are not test-time methods; choose from {sorted(METHODS)}")
        if any(v < 0 for v in self.num_waits_ablation):
            raise ValueError(f"num_waits_ablation: numbers of waits are >= 0, got {self.num_waits_ablation}")
        if not self.tasks:
            raise ValueError("tasks: list at least one task (e.g. heldout)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: must be a non-empty list of distinct seeds")
        if "paper" not in self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols: {self.protocols} must list 'paper' (the greedy sweep every table is built "
                             "on) once, and 'sampled' at most once")
        stray = sorted(set(self.sampled.k) - {"default", *self.tasks})
        if "sampled" in self.protocols and stray:
            raise ValueError(f"sampled.k: {stray} are not in evaluate.tasks {self.tasks}; name a task the evaluation "
                             "runs (or 'default' for the rest)")
        off = sorted(set(self.sampled.budgets or []) - set(self.budgets))
        if "sampled" in self.protocols and off:
            raise ValueError(f"sampled.budgets: {off} are not in evaluate.budgets {self.budgets}; sample at budgets "
                             "the sweep has")
        if self.via == "serve" and self.method != REFERENCE:
            raise ValueError(f"method: the Serve sweep runs {REFERENCE}; use via: in_process for other methods")
        return self

    def used_methods(self) -> list[str]:
        """Every method the evaluation runs: the headline, the compared ones, the compute-matched ones."""
        return list(dict.fromkeys([self.method, *self.compare_methods, *self.compute_matched]))


class ServeConfig(Section):
    """The Ray Serve application (components/serving); its engine is the ``engine`` section."""

    model_name: str = "s1flow-tiny"
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    num_replicas: int = Field(1, gt=0)
    num_cpus: float = Field(1, gt=0, description="per replica")
    num_gpus: float = Field(0, ge=0, description="per replica (tensor_parallel_size GPUs for vLLM)")
    max_batch_size: int = Field(16, gt=0, description="HF engine: rows decoding at once")
    batching: Literal["continuous", "micro"] = Field(
        "continuous", description="HF engine: continuous (requests and streams join the running batch and answer "
        "as they end) or micro (one engine call per gathered batch, each stream its own call: more throughput for "
        "uniform non-streamed load, streams serialised)")
    batch_wait_timeout_s: float = Field(0.1, ge=0, description="HF engine: how long the first "
                                        "request of a batch waits for others (continuous: also how long a request "
                                        "waits to join a running batch in a group); closed-loop clients need ~0.1 s")
    default_answer_tokens: int = Field(32, gt=0)
    api_key_env: str = Field("S1FLOW_API_KEY", description="env var holding the bearer token; unset = no auth "
                             "(refused unless host is loopback)")
    max_queued_requests: int = Field(64, gt=0, description="generations (prompts x n) in flight per replica "
                                     "(streams included), each until the engine has stopped it; more get 429")
    max_request_bytes: int = Field(1 << 20, gt=0, description="request bodies over this get 413")
    model_uri: Optional[str] = Field(None, description="where every replica reads the model, on any node: an "
                                     "object-store prefix (s3://bucket/prefix: the model is published there under "
                                     "its content hash and each node downloads it once into model_cache_dir) or a "
                                     "directory every node mounts; None: the model directory as the driver sees "
                                     "it (one node)")
    model_cache_dir: Optional[str] = Field(None, description="node-local directory replicas download model_uri "
                                           "into; None: <system temp dir>/s1flow-models")


class TrackingConfig(Section):
    tracking_uri: Optional[str] = Field(None, description="None: a SQLite store in the working dir")
    experiment: str = "s1flow-tiny"
    registered_model: str = "s1flow-tiny"
    champion_metric: str = Field("performance", description="higher is better; decides the 'champion' alias")


class ProfileConfig(Section):
    name: str = "tiny"
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    pool: PoolConfig = PoolConfig()
    teacher: TeacherConfig = TeacherConfig()
    quality: QualityConfig = QualityConfig()
    domain: DomainConfig = DomainConfig()
    decontamination: DecontaminationConfig = DecontaminationConfig()
    difficulty: DifficultyConfig = DifficultyConfig()
    selection: SelectionConfig = SelectionConfig()
    sft: SFTConfig = SFTConfig()
    heldout: HeldoutConfig = HeldoutConfig()
    engine: EngineConfig = EngineConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    serve: ServeConfig = ServeConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _cross_section(self) -> "ProfileConfig":
        if self.selection.strategy != "all" and self.selection.size > self.pool.size:
            raise ValueError(f"selection.size: ({self.selection.size}) > pool.size ({self.pool.size}); "
                             "shrink the selection or grow the pool")
        if max(self.evaluate.budgets) > self.engine.unlimited_thinking_tokens:
            raise ValueError(f"evaluate.budgets: largest budget ({max(self.evaluate.budgets)}) > "
                             f"engine.unlimited_thinking_tokens ({self.engine.unlimited_thinking_tokens}); raise the cap")
        if self.model.source == "hub" and self.pretrain.enabled:
            raise ValueError("pretrain.enabled: must be false when model.source is 'hub' (hub models are already trained)")
        if self.evaluate.workers > 1 and self.engine.backend != "hf":
            raise ValueError(f"evaluate.workers: {self.evaluate.workers} processes would each load the model: for "
                             f"engine.backend 'hf' only (got {self.engine.backend!r}); set evaluate.workers: 1")
        return self


def _format_errors(err: ValidationError, prefix: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling (see params.yaml for the allowed keys)"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            # cross-field checks name their field first ("budgets: ..."): fold it into the key
            m = re.match(r"^([\w.]+): (.*)$", msg, re.S)
            if m and e["type"] == "value_error":
                key, msg = f"{key}.{m.group(1)}", m.group(2)
            elif "input" in e and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
        lines.append(f"  {key}: {msg}")
    return "invalid params:\n" + "\n".join(lines)


def _apply_override(data: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. sft.epochs=3")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {p} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def parse_profile(data: dict[str, Any], name: str, overrides: list[str] = ()) -> ProfileConfig:
    """Validate one profile's raw dict (plus KEY=VALUE overrides)."""
    data = dict(data or {})
    for o in overrides:
        _apply_override(data, o)
    data["name"] = name
    try:
        return ProfileConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, name)) from None


EXTENDS = "extends"  # a profile key: start from another profile's block, override section by section
# A profile key: {dotted.key: value}, each laid on the extended block after the section overrides. A profile that
# is its parent with a declared list of substitutions (s1-32b-rehearsal) keeps that list here and nothing else.
SUBSTITUTE = "substitute"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top: mappings merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def resolve_profiles(raw: dict[str, Any], source: str = "params.yaml") -> dict[str, dict[str, Any]]:
    """Every profile block of a params file, with ``extends: OTHER`` expanded into full blocks."""
    blocks = {k: v for k, v in raw.items() if k != "profile"}
    for name, block in blocks.items():
        if not isinstance(block, dict):
            raise ConfigError(f"{name}: must be a mapping of stage sections")

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        block = dict(blocks[name])
        parent = block.pop(EXTENDS, None)
        subs = block.pop(SUBSTITUTE, None)
        if subs is not None and parent is None:
            raise ConfigError(f"{name}.{SUBSTITUTE}: substitutions apply to an extended profile; "
                              f"add '{EXTENDS}: <profile>'")
        if parent is None:
            return block
        if parent not in blocks:
            raise ConfigError(f"{name}.{EXTENDS}: {parent!r} is not a profile in {source}; "
                              f"choose one of {sorted(set(blocks) - {name})}")
        if parent in chain:
            raise ConfigError(f"{name}.{EXTENDS}: profiles extend each other in a cycle "
                              f"({' -> '.join((*chain, parent))}); make one of them a full block")
        return substitute(deep_merge(resolve(parent, (*chain, parent)), block), subs or {}, name)

    return {name: resolve(name, (name,)) for name in blocks}


def substitute(block: dict[str, Any], substitutions: dict[str, Any], profile: str = "") -> dict[str, Any]:
    """``block`` with each ``{dotted.key: value}`` of ``substitutions`` set (a list or mapping value replaces the
    whole key); sections on the way are created, a key under a non-section value is an error naming it."""
    if not isinstance(substitutions, dict):
        raise ConfigError(f"{profile}.{SUBSTITUTE}: must be a mapping of dotted keys to values, "
                          "e.g. {sft.world_size: 2}")
    out = deep_merge(block, {})
    for key, value in substitutions.items():
        parts = str(key).split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{profile}.{SUBSTITUTE}.{key}: {'.'.join(parts[:i + 1])} is not a section")
            else:
                child = node[part] = dict(child)
            node = child
        node[parts[-1]] = value
    return out


def substitutions(raw: dict[str, Any], profile: str) -> dict[str, Any]:
    """The declared ``substitute`` list of a profile in a params mapping ({} when it declares none)."""
    return dict((raw.get(profile) or {}).get(SUBSTITUTE) or {})


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """params.yaml as a mapping ('profile' plus one block per profile), checked for shape only."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found; run from the project root or pass --params PATH")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping with 'profile' and one block per profile")
    return raw


def load_config(path: str | Path = "params.yaml", profile: str | None = None,
                overrides: list[str] = ()) -> ProfileConfig:
    """Read params.yaml and return the chosen profile, validated (every other profile is validated too)."""
    raw = read_params(path)
    profiles = resolve_profiles(raw, str(path))
    name = profile or raw.get("profile") or "tiny"
    if name not in profiles:
        raise ConfigError(f"profile: {name!r} is not defined in {path}; choose one of {sorted(profiles)}")
    for other, block in profiles.items():
        if other != name:  # every profile must stay valid, not just the active one
            parse_profile(block, other)
    return parse_profile(profiles[name], name, overrides)
