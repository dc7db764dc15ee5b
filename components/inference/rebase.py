"""REBASE: reward-balanced tree search over reasoning steps (Wu et al. 2024), behind a reward interface.

A step is one line of thinking. Every round, the unfinished nodes of the frontier
are scored by a process reward model; the round's expansion budget (``width``
minus the leaves already finished) is split over the frontier in proportion to
``softmax(reward / temperature)``; each expansion samples one more line. A leaf
is finished when the model closes its thinking (or reaches ``max_thinking_tokens``).
The answer is a vote over the finished leaves: ``majority`` or ``weighted`` (by
reward). Compute is counted as in s1's Fig. 7: every thinking token generated
for the question, over all branches, pruned ones included (the token closing
thinking is the delimiter and, as in budget forcing, not a thinking token).

Rewards are any :class:`ProcessReward` (a ``name`` and ``score(question,
steps)``). :func:`build_reward` resolves a name: a reward registered under it
(:func:`register_reward`; the evaluation package registers ``programmatic``,
the procedural world's verifier); any other name is a process reward model
loaded by name at its pinned revision, in the recipe the profile declares
(``evaluate.methods.rebase.reward_recipe``): ``qwen_math_prm`` (Qwen2.5-Math-PRM's
step-separator recipe, s1-32b) or ``sequence_classification`` (a Hugging Face
sequence-classification model scoring the question plus the steps so far).
A model runs its repository's own code only when the profile lists its name in
``evaluate.trust_remote_code``; the name itself never decides.

    reward = build_reward("programmatic")   # or a process reward model: name, device, revision, recipe
    results = rebase(engine, questions, RebaseSpec(width=8), reward)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence

from components.common.grading import extract_answer, grade
from components.formatting import ANSWER_START, IM_END, IM_START, thinking_prompt
from components.inference.budget_forcing import ForcedResult
from components.inference.engine import Sampling


class ProcessReward(Protocol):
    name: str

    def score(self, question: str, steps: Sequence[str]) -> float:
        """Reward in [0, 1] of a partial trace (its steps so far)."""


class ModelProcessReward:
    """A process reward model from the hub (sequence classification; the last logit's sigmoid is the reward)."""

    def __init__(self, name: str, device: str = "cpu", revision: Optional[str] = None,
                 trust_remote_code: bool = False):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        self.name = name
        hub = {"revision": revision, "trust_remote_code": trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(name, **hub)
        self.model = AutoModelForSequenceClassification.from_pretrained(name, **hub).to(device).eval()
        self.device = device

    def score(self, question: str, steps: Sequence[str]) -> float:
        import torch
        enc = self.tokenizer(question, "\n".join(steps), return_tensors="pt", truncation=True).to(self.device)
        with torch.no_grad():
            logits = self.model(**enc).logits[0]
        return float(torch.sigmoid(logits[-1]))


class QwenMathPRM:
    """Qwen2.5-Math-PRM (``Qwen/Qwen2.5-Math-PRM-7B``/``-72B``; remote code): the steps joined by ``<extra_0>``
    in the assistant turn of the chat template; a step's reward is the probability of the positive class at its
    ``<extra_0>`` token (the model card's recipe). A partial trace's reward is its last step's."""

    SEP = "<extra_0>"
    SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

    def __init__(self, name: str, device: str = "cpu", revision: Optional[str] = None,
                 trust_remote_code: bool = False):
        import torch
        from transformers import AutoModel, AutoTokenizer
        self.name = name
        self.device = device
        hub = {"revision": revision, "trust_remote_code": trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(name, **hub)
        dtype = torch.bfloat16 if self.device != "cpu" else torch.float32
        self.model = AutoModel.from_pretrained(name, torch_dtype=dtype, **hub).to(self.device).eval()

    def text(self, question: str, steps: Sequence[str]) -> str:
        messages = [{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": question},
                    {"role": "assistant", "content": self.SEP.join(steps) + self.SEP}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def score(self, question: str, steps: Sequence[str]) -> float:
        import torch
        if not steps:
            return 0.5
        ids = self.tokenizer.encode(self.text(question, steps), return_tensors="pt").to(self.device)
        sep = self.tokenizer.encode(self.SEP)[0]
        with torch.no_grad():
            logits = self.model(input_ids=ids)[0]  # (1, seq, 2)
        positive = torch.softmax(logits[0].float(), dim=-1)[ids[0] == sep, 1]
        return float(positive[-1]) if len(positive) else 0.5


REWARDS: dict[str, ProcessReward] = {}  # by name: the registered ones and each model loaded (once per process)


def register_reward(reward: ProcessReward) -> None:
    """Make ``reward`` the one :func:`build_reward` returns for ``reward.name``."""
    REWARDS[reward.name] = reward


RECIPES = ("sequence_classification", "qwen_math_prm")  # evaluate.methods.rebase.reward_recipe


def build_reward(name: str, device: str = "cpu", revision: Optional[str] = None,
                 recipe: str = "sequence_classification", trust_remote_code: bool = False) -> ProcessReward:
    """The reward registered as ``name``; else the process reward model ``name`` at ``revision`` in ``recipe``
    (one of :data:`RECIPES`), loaded on ``device`` on first use, then kept until :func:`release_reward`.
    ``trust_remote_code``: the caller's decision from its allow-list (evaluate.trust_remote_code); without
    it a model whose repository ships its own code does not load. ``device``: ``evaluate.methods.rebase.reward_device``,
    never a GPU chosen here: the engine's GPUs may have no room for it."""
    if name not in REWARDS:
        if recipe not in RECIPES:
            raise ValueError(f"evaluate.methods.rebase.reward_recipe: {recipe!r}; choose one of {sorted(RECIPES)}")
        loader = QwenMathPRM if recipe == "qwen_math_prm" else ModelProcessReward
        REWARDS[name] = loader(name, device, revision=revision, trust_remote_code=trust_remote_code)
    return REWARDS[name]


def release_reward(name: str) -> None:
    """Drop a loaded reward model (its memory freed); a registered reward stays registered."""
    reward = REWARDS.get(name)
    if isinstance(reward, (QwenMathPRM, ModelProcessReward)):
        del REWARDS[name]
        reward.model = None


@dataclass(frozen=True)
class RebaseSpec:
    width: int = 8                 # finished leaves wanted per question (= expansions per round at the start)
    temperature: float = 0.2       # softmax temperature over rewards when splitting the expansions
    sample_temperature: float = 1.0
    top_p: float = 1.0
    max_step_tokens: int = 64      # one line
    max_thinking_tokens: int = 400
    max_answer_tokens: int = 16
    vote: str = "majority"         # majority | weighted
    seed: int = 0

    def __post_init__(self):
        if self.width < 1 or self.temperature <= 0:
            raise ValueError("width must be >= 1 and temperature > 0")
        if self.vote not in ("majority", "weighted"):
            raise ValueError(f"vote must be 'majority' or 'weighted', got {self.vote!r}")


@dataclass
class Node:
    steps: list[str] = field(default_factory=list)
    tokens: int = 0
    reward: float = 0.5
    done: bool = False


def allocate(rewards: Sequence[float], budget: int, temperature: float) -> list[int]:
    """Split ``budget`` expansions over nodes by softmax(reward / T), largest remainders first."""
    if budget <= 0 or not rewards:
        return [0] * len(rewards)
    m = max(rewards)
    w = [math.exp((r - m) / temperature) for r in rewards]
    total = sum(w)
    raw = [budget * x / total for x in w]
    out = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[: budget - sum(out)]:
        out[i] += 1
    return out


def _newline_ids(tokenizer) -> tuple[int, ...]:
    return tuple(i for t, i in tokenizer.get_vocab().items()
                 if tokenizer.convert_tokens_to_string([t]).endswith("\n"))


def _vote(answers: Sequence[str], weights: Sequence[float]) -> str:
    groups: list[tuple[str, float]] = []
    for a, w in zip(answers, weights):
        if not a:
            continue
        for k, (rep, tot) in enumerate(groups):
            if grade(a, rep):
                groups[k] = (rep, tot + w)
                break
        else:
            groups.append((a, w))
    return max(groups, key=lambda g: g[1])[0] if groups else ""


def rebase(engine, questions: Sequence[str], spec: RebaseSpec, reward: ProcessReward) -> list[ForcedResult]:
    """Tree search per question (all questions' expansions batched per round)."""
    tok = engine.tokenizer
    think_end, im_end = tok.convert_tokens_to_ids(IM_START), tok.convert_tokens_to_ids(IM_END)
    stops = _newline_ids(tok) + (think_end, im_end)
    prompts = [thinking_prompt(tok, q) for q in questions]
    frontier: list[list[Node]] = [[Node()] for _ in questions]
    finished: list[list[Node]] = [[] for _ in questions]
    spent = [0] * len(questions)
    rnd = 0
    while any(frontier):
        jobs: list[tuple[int, Node]] = []
        for qi, nodes in enumerate(frontier):
            want = spec.width - len(finished[qi])
            for node, k in zip(nodes, allocate([n.reward for n in nodes], want, spec.temperature)):
                jobs += [(qi, node)] * k
        if not jobs:
            break
        texts = [prompts[qi] + "".join(s + "\n" for s in node.steps) for qi, node in jobs]
        sampling = Sampling(temperature=spec.sample_temperature, top_p=spec.top_p, seed=spec.seed + 7919 * rnd,
                            max_new_tokens=spec.max_step_tokens, stop_token_ids=stops)
        outs = engine.generate(texts, sampling)
        new_frontier: list[list[Node]] = [[] for _ in questions]
        for (qi, node), out in zip(jobs, outs):
            # Every expanded node's tokens count, pruned branches included; the token that closes thinking is
            # the delimiter, which budget forcing does not count as thinking either.
            closed = bool(out.token_ids) and out.token_ids[-1] in (think_end, im_end)
            thought = out.completion_tokens - closed
            spent[qi] += thought
            line = out.text.split("\n")[0].replace(IM_START, "").strip()
            child = Node(steps=node.steps + ([line] if line else []), tokens=node.tokens + thought)
            child.done = closed or child.tokens >= spec.max_thinking_tokens or (not line and not closed)
            child.reward = reward.score(questions[qi], child.steps)
            (finished[qi] if child.done else new_frontier[qi]).append(child)
        frontier = [f if len(finished[qi]) < spec.width else [] for qi, f in enumerate(new_frontier)]
        rnd += 1
    # Answers for every finished leaf (greedy, after the end-of-thinking delimiter).
    leaves = [(qi, n) for qi in range(len(questions)) for n in finished[qi]]
    answer_texts = [prompts[qi] + "\n".join(n.steps) + "\n" + ANSWER_START for qi, n in leaves]
    outs = engine.generate(answer_texts, Sampling(max_new_tokens=spec.max_answer_tokens, stop_token_ids=(im_end,)))
    by_q: dict[int, list[tuple[Node, str]]] = {}
    for (qi, n), out in zip(leaves, outs):
        by_q.setdefault(qi, []).append((n, out.text.replace(IM_END, "").strip()))
    results = []
    for qi in range(len(questions)):
        mine = by_q.get(qi, [])
        answers = [extract_answer(a) for _, a in mine]
        weights = [n.reward if spec.vote == "weighted" else 1.0 for n, _ in mine]
        winner = _vote(answers, weights)
        best = max(mine, key=lambda x: x[0].reward, default=(Node(), ""))
        results.append(ForcedResult(
            thinking="\n".join(best[0].steps), answer=f"Answer: {winner}" if winner else best[1],
            thinking_tokens=spent[qi], answer_tokens=0, waits_used=0, hit_budget=False, token_ids=[],
            tries=len(mine)))
    return results
