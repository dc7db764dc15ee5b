"""Base-model stage: the embedded stand-in for Qwen2.5-Instruct.

Builds a tiny Qwen2-architecture causal LM from params, trains its BPE
tokenizer, and pre-trains it briefly on a procedural corpus: worked solutions
written as plain "textbook" documents, and chat turns in which the assistant
answers easy questions directly and shows its work on the others (like an
instruct model). SFT later teaches it to think in the s1 format. Saved with ``save_pretrained`` (safetensors) and
loaded back with ``AutoModelForCausalLM``/``AutoTokenizer`` like a hub model.

    build_base_model(model_cfg, pretrain_cfg, corpus, out_dir="models/tiny/base")
"""
from __future__ import annotations

import math
import random
import re
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from components.common.progress import progress_bar
from components.config import ModelConfig, PretrainConfig
from components.data.problems import FAMILIES, parse_any, with_correction
from components.data.tokenizer import train_tokenizer
from components.formatting import ENDOFTEXT


def worked_solution(question: str, rng: Optional[random.Random] = None, correction_probability: float = 0.0) -> str:
    """The solution lines and "Answer: ..."; with ``rng``, a share of solutions slip once and correct themselves."""
    family, ops = parse_any(question)
    lines = family.solution_lines(ops)
    if rng is not None:
        lines = with_correction(lines, rng, correction_probability)
    return "\n".join(lines) + f"\nAnswer: {family.solve(*ops)}"


def textbook_document(question: str, rng: Optional[random.Random] = None, correction_probability: float = 0.0) -> str:
    """"Problem / Solution / Answer" text (see ``worked_solution``)."""
    return f"Problem: {question}\nSolution:\n" + worked_solution(question, rng, correction_probability)


def chat_solution(question: str, tokenizer, rng: Optional[random.Random] = None,
                  correction_probability: float = 0.0) -> str:
    """The worked solution as an assistant's chat reply to the question (an instruct model shows its work on the
    questions it does not answer outright)."""
    messages = [{"role": "user", "content": question},
                {"role": "assistant", "content": worked_solution(question, rng, correction_probability)}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


def _answers_directly(question: str, cfg: PretrainConfig) -> bool:
    if cfg.direct_answer_max_difficulty is None:
        return True
    family, ops = parse_any(question)
    return family.difficulty_of(ops) <= cfg.direct_answer_max_difficulty


def chat_direct_answer(question: str, answer: str, tokenizer) -> str:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": f"Answer: {answer}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


def corpus_questions(cfg: PretrainConfig, domains: list[str], min_difficulty: int,
                     max_difficulty: int) -> list[tuple[str, str]]:
    """Questions of the pool's domains and difficulty range, for the pre-training corpus."""
    rng = random.Random(cfg.seed)
    out = []
    for i in range(cfg.documents):
        fam = FAMILIES[domains[i % len(domains)]]
        p = fam.generate(rng, rng.randint(min_difficulty, max_difficulty))
        out.append((p.text, p.answer))
    return out


def probe_questions(cfg: PretrainConfig, domains: list[str], min_difficulty: int, max_difficulty: int,
                    corpus: list[tuple[str, str]]) -> list[str]:
    """Fresh problems for the pre-training probe: every domain, the upper half of the difficulty range (the
    long traces, where copying matters), none of them in the corpus."""
    seen = {q for q, _ in corpus}
    rng = random.Random(cfg.seed + 7919)
    hard = range((min_difficulty + max_difficulty + 1) // 2, max_difficulty + 1)
    out: list[str] = []
    while len(out) < cfg.probe_questions:
        p = FAMILIES[domains[len(out) % len(domains)]].generate(rng, rng.choice(hard))
        if p.text not in seen:
            out.append(p.text)
    return out


def build_model(cfg: ModelConfig, vocab_size: int, pad_id: int, eos_id: int) -> Qwen2ForCausalLM:
    torch.manual_seed(cfg.seed)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True, rope_theta=10000.0, pad_token_id=pad_id, eos_token_id=eos_id,
        bos_token_id=None, use_cache=True,
    )
    return Qwen2ForCausalLM(config)


_OPEN_ROWS = 16  # rows a document may still go into: first-fit over them leaves little room unfilled


def _packed_blocks(token_lists: list[list[int]], block: int, sep: int, whole: bool = True) -> torch.Tensor:
    """The documents, each followed by ``sep``, as rows of ``block`` tokens. ``whole``: a document never straddles
    two rows (first-fit into the last few open rows; the room a row keeps is filled with ``sep``, which
    :func:`block_labels` leaves out of the loss); a document longer than a row is cut into row-sized pieces.
    Otherwise one stream cut every ``block`` tokens, wherever that falls.

    Whole documents matter here: a worked solution copies its operands from the question, and a row that holds
    the solution without its question teaches nothing of that copy."""
    if not whole:
        flat: list[int] = []
        for ids in token_lists:
            flat.extend(ids)
            flat.append(sep)
        n = len(flat) // block
        return torch.tensor(flat[: n * block]).view(n, block)
    rows: list[list[int]] = []
    open_rows: list[list[int]] = []  # first-fit over the last few rows still open
    for ids in token_lists:
        doc = [*ids, sep]
        while len(doc) > block:
            rows.append(doc[:block])
            doc = doc[block:]
        row = next((r for r in open_rows if len(r) + len(doc) <= block), None)
        if row is None:
            if len(open_rows) == _OPEN_ROWS:
                fullest = max(open_rows, key=len)
                open_rows.remove(fullest)
                rows.append(fullest)
            row = []
            open_rows.append(row)
        row.extend(doc)
    rows.extend(open_rows)
    return torch.tensor([r + [sep] * (block - len(r)) for r in rows])


def block_labels(batch: torch.Tensor, sep: Optional[int]) -> torch.Tensor:
    """The labels of packed rows: the tokens themselves, but the filler after a row's last document (every
    ``sep`` that follows a ``sep``) trains nothing."""
    if sep is None:
        return batch
    filler = (batch == sep) & torch.nn.functional.pad(batch[:, :-1] == sep, (1, 0), value=False)
    return batch.masked_fill(filler, -100)


class WeightAverage:
    """An exponential moving average of a model's floating-point weights, for the skill probe to read.

    At a constant learning rate the weights scatter around what they have learned: a probe of the weights
    themselves can read 0.1 where a short cool-down from the same step reads 0.9 or more (on one seed, 0.125
    against every domain at 0.75 or above). Their average over the last ~1 / (1 - decay) steps sits near what a
    cool-down reaches, at no cost to training. The decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the
    first updates, so the average does not hold on to the initial weights."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(d).add_(v, alpha=1 - d)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """The model holds the average for the block, its own weights again after."""
        live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(live, strict=False)


def pretrain(model, blocks: torch.Tensor, cfg: PretrainConfig, checkpoint: Optional[Path] = None,
             checkpoint_every: int = 250, probe: Optional[Callable[[torch.nn.Module], float]] = None,
             history: Optional[dict] = None, sep: Optional[int] = None) -> list[float]:
    """Plain next-token pre-training over packed blocks; returns the loss curve.

    Schedule: with ``cfg.probe_every`` 0, warm-up then cosine over ``cfg.steps``. Otherwise
    warm-up-stable-decay: the LR stays constant while ``probe(model)`` (accuracy on fresh problems) is
    below ``cfg.probe_target``; once it passes, the LR decays over ``cfg.cooldown_steps`` and training
    stops, so every seed leaves pre-training with the skill, however late it arrived. At
    ``steps - cooldown_steps`` the cool-down starts regardless (``history["probe_passed"]`` says which). With
    ``cfg.probe_average`` the probe reads a moving average of the weights (:class:`WeightAverage`), not the
    constant-LR weights themselves.

    With ``checkpoint`` set, state (model, optimizer, schedule, data RNG, probe history) is saved every
    ``checkpoint_every`` steps and a rerun continues from it, replaying the same batches an
    uninterrupted run would have seen. ``history`` (if given) is filled with the probes and the stop.
    ``sep``: the document separator of the packed ``blocks`` (the filler after a row's last document trains
    nothing).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    hist = history if history is not None else {}
    hist.update({"probes": [], "decay_start": None, "probe_passed": False})

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if not cfg.probe_every:
            progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        elif hist["decay_start"] is None:
            return 1.0
        else:
            progress = min(1.0, (step - hist["decay_start"]) / max(1, cfg.cooldown_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start, losses = 0, []
    average = WeightAverage(model, cfg.probe_average) if probe is not None and cfg.probe_average else None
    if checkpoint is not None:  # safetensors + JSON, keyed by model, corpus and config (see save_pretrain_state)
        key = pretrain_state_key(model, blocks, cfg)
        restored = load_pretrain_state(checkpoint, key, model, opt, sched, gen, average)
        if restored:
            start, losses, saved = restored
            hist.update(saved)
    model.train()
    with progress_bar("pre-training base model", total=cfg.steps) as advance:
        advance(start)
        for step in range(start, cfg.steps):
            if cfg.probe_every and hist["decay_start"] is None and step >= cfg.steps - cfg.cooldown_steps:
                hist["decay_start"] = step  # the probe never passed: cool down in the steps left
            if hist["decay_start"] is not None and step >= hist["decay_start"] + cfg.cooldown_steps:
                break
            idx = torch.randint(0, blocks.shape[0], (cfg.batch_size,), generator=gen)
            batch = blocks[idx]
            loss = model(input_ids=batch, labels=block_labels(batch, sep)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
            if average is not None and hist["decay_start"] is None:  # read by the probe only, before the gate
                average.update(model)
            losses.append(loss.item())
            if probe is not None and cfg.probe_every and hist["decay_start"] is None and (step + 1) % cfg.probe_every == 0:
                with average.applied(model) if average is not None else nullcontext():
                    accuracy = probe(model)
                model.train()
                hist["probes"].append([step + 1, round(accuracy, 4)])
                if accuracy >= cfg.probe_target:
                    hist["decay_start"], hist["probe_passed"] = step + 1, True
            last_probe = hist["probes"][-1][1] if hist["probes"] else None
            advance(loss=f"{loss.item():.3f}", **({"probe": f"{last_probe:.2f}"} if last_probe is not None else {}))
            if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < cfg.steps:
                save_pretrain_state(checkpoint, key, step + 1, losses, model, opt, sched, gen, hist, average)
    model.eval()
    hist["steps"] = len(losses)
    return losses


def textbook_probe(tokenizer, questions: list[str], max_new_tokens: int,
                   every_domain: bool = False) -> Callable[[torch.nn.Module], float]:
    """Greedy completion of "Problem: Q\nSolution:\n" (the textbook format): share of exact final answers
    (``every_domain``: the lowest share of any domain, so a skill that lags holds the gate)."""
    parsed = [parse_any(q) for q in questions]
    answers = [str(fam.solve(*ops)) for fam, ops in parsed]
    domains = [fam.domain for fam, _ in parsed]
    enc = tokenizer([f"Problem: {q}\nSolution:\n" for q in questions], return_tensors="pt", padding=True,
                    padding_side="left")
    stop = tokenizer.convert_tokens_to_ids(ENDOFTEXT)

    def accuracy(model) -> float:
        model.eval()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                 pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        got = [t.split("Answer: ", 1)[1].split("\n")[0].split("Problem:")[0].strip() if "Answer: " in t else None
               for t in texts]
        right = [g == a for g, a in zip(got, answers)]
        if not every_domain:
            return sum(right) / len(right)
        return min(sum(r for r, d in zip(right, domains) if d == dom) / domains.count(dom) for dom in set(domains))
    return accuracy


def corpus_documents(corpus: list[tuple[str, str]], textbook: list[str], cfg: PretrainConfig, tokenizer,
                     corrections: random.Random) -> list[str]:
    """The pre-training documents, shuffled: per question its textbook page, or (among the easy ones) a chat turn
    answering directly, or (among the others, ``cfg.chat_solution_fraction``) a chat turn showing the work;
    then ``cfg.copy_fraction`` copy drills, ``cfg.running_sum_fraction`` running-sum drills and
    ``cfg.extraction_fraction`` extraction drills per question.
    The copy and extraction drills' numbers are as long as the corpus's longest (a digit sum's number has two
    digits more than its difficulty: 8 at difficulty 6), so every length a trace copies is drilled.
    ``corrections`` (the RNG that wrote ``textbook``) decides the chat solutions' slips. Each choice has its own
    RNG, so turning one on leaves the others' documents as they were."""
    rng = random.Random(cfg.seed + 1)
    docs = [chat_direct_answer(q, a, tokenizer) if _answers_directly(q, cfg) and
            rng.random() < cfg.direct_answer_fraction else t for (q, a), t in zip(corpus, textbook)]
    if cfg.chat_solution_fraction:
        chats = random.Random(cfg.seed + 3)
        docs = [chat_solution(q, tokenizer, corrections, cfg.correction_fraction)
                if d is t and not _answers_directly(q, cfg) and chats.random() < cfg.chat_solution_fraction else d
                for (q, _), d, t in zip(corpus, docs, textbook)]
    n, digits = len(docs), longest_number(corpus)
    docs += [copy_drill(rng, digits) for _ in range(round(n * cfg.copy_fraction))]
    sums = random.Random(cfg.seed + 5)
    docs += [running_sum_drill(sums) for _ in range(round(n * cfg.running_sum_fraction))]
    extractions = random.Random(cfg.seed + 6)
    docs += [extraction_drill(extractions, digits) for _ in range(round(n * cfg.extraction_fraction))]
    rng.shuffle(docs)
    return docs


DRILL_DIGITS = 7  # the length of a drill's numbers when no corpus sets it


def longest_number(corpus: list[tuple[str, str]]) -> int:
    """Digits of the longest number in the corpus's questions (:data:`DRILL_DIGITS` for a corpus without numbers)."""
    return max((len(n) for q, _ in corpus for n in re.findall(r"\d+", q)), default=DRILL_DIGITS)


def running_sum_drill(rng: random.Random) -> str:
    """A running-sum drill: a total and the digits added to it, one line each, as a digit sum's trace writes
    them ("23+7=30") without the digits it copies. A digit-sum trace needs a right total + one-digit fact at
    every step, and there are about 700 of them against the 200 one-digit facts of an addition; the textbook
    pages alone show each one ten times less often than an addition's. Half the drills start, as every digit
    sum does, from one digit ("4+7=11"): the one-digit + one-digit facts open every digit-sum trace, and a
    model drilled on two-digit totals alone gets one in eight to one in four of them wrong after SFT
    ("1+5=10"). The rest start from a total of 10 to 40."""
    total, lines = (rng.randint(0, 9) if rng.random() < 0.5 else rng.randint(10, 40)), []
    for _ in range(rng.randint(4, 8)):
        digit = rng.randint(0, 9)
        lines.append(f"{total}+{digit}={total + digit}")
        total += digit
    return "Running sum:\n" + "\n".join(lines)


def copy_drill(rng: random.Random, max_digits: int = DRILL_DIGITS) -> str:
    """A copy-drill document: one to three numbers of up to ``max_digits`` digits, then the same again (dense
    practice for digit copying)."""
    numbers = " + ".join(str(rng.randint(0, 10 ** rng.randint(1, max_digits) - 1)) for _ in range(rng.randint(1, 3)))
    return f"Copy: {numbers}\nAgain: {numbers}"


_FILLER = ("a", "the", "of", "or", "and", "in", "to", "is", "are", "with", "from", "red", "blue", "cards", "coins",
           "books", "chess", "go", "players", "boxes", "x", "y", "=", "-", "*", "/", "was", "has", "there", "each")
_ENDINGS = ("", "", ".", ",", "?", ";")


def extraction_drill(rng: random.Random, max_digits: int = DRILL_DIGITS) -> str:
    """An extraction drill: two or three numbers inside a sentence of filler words, then the numbers alone, joined
    by " + " in their order ("Text: 742061 red or 449829 go players?" / "Numbers: 742061 + 449829").

    A word problem's trace copies its operands out of the question, where each is followed by words ("449829 go
    players"), into a line where it is followed by something else ("+", a newline). Copying its last digit then
    cannot lean on what follows it in the question; copy drills, whose copy repeats the whole context, never
    practise that. Each number takes the drill's length with probability 0.6 (else a length of its own), so a
    third of the drills or more hold numbers all of one length, told apart by their place, not their size.
    Numbers have up to ``max_digits`` digits."""
    digits = rng.randint(1, max_digits)
    numbers = [_drill_number(rng, digits if rng.random() < 0.6 else rng.randint(1, max_digits))
               for _ in range(rng.randint(2, 3))]
    words: list[str] = []
    for number in numbers:
        words += rng.choices(_FILLER, k=rng.randint(0, 3))
        words.append(str(number) + rng.choice(_ENDINGS))
    words += rng.choices(_FILLER, k=rng.randint(1, 3))
    return f"Text: {' '.join(words)}\nNumbers: {' + '.join(map(str, numbers))}"


def _drill_number(rng: random.Random, digits: int) -> int:
    return rng.randint(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits - 1)


def build_base_model(model_cfg: ModelConfig, pretrain_cfg: PretrainConfig, corpus: list[tuple[str, str]],
                     out_dir: str | Path, checkpoint: Optional[Path] = None,
                     probe_set: Optional[list[str]] = None) -> dict:
    """Train tokenizer + pre-train the embedded model on ``corpus`` (question, answer) pairs; save both
    to ``out_dir``. ``checkpoint``: where to keep resumable pre-training state (removed when done).
    ``probe_set``: the questions of the pre-training probe (needed when ``pretrain_cfg.probe_every`` is set)."""
    out_dir = Path(out_dir)
    if model_cfg.source == "hub":
        raise ValueError("model.source is 'hub': nothing to build; the model is loaded by name")
    started = time.time()
    corrections = random.Random(pretrain_cfg.seed + 2)
    textbook = [textbook_document(q, corrections, pretrain_cfg.correction_fraction) for q, _ in corpus]
    tokenizer = train_tokenizer(textbook, model_cfg.vocab_size)
    docs = corpus_documents(corpus, textbook, pretrain_cfg, tokenizer, corrections)
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    model = build_model(model_cfg, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    sep = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    blocks = _packed_blocks(ids, pretrain_cfg.block_size, sep, whole=pretrain_cfg.whole_documents)
    history: dict = {}
    probe = None
    if pretrain_cfg.probe_every:
        if not probe_set:
            raise ValueError("pretrain.probe_every: set, but no probe questions were given (probe_set)")
        longest = max(len(tokenizer(textbook_document(q))["input_ids"]) for q in probe_set)
        probe = textbook_probe(tokenizer, probe_set, longest + 8, every_domain=pretrain_cfg.probe_gate == "every_domain")
    losses = pretrain(model, blocks, pretrain_cfg, checkpoint, probe=probe, history=history,
                      sep=sep) if pretrain_cfg.enabled else []
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
            "corpus_tokens": int(sum(len(x) for x in ids)),
            # documents longer than a block, cut into pieces (with whole_documents; a stream cuts any)
            "documents_cut": sum(len(x) + 1 > pretrain_cfg.block_size for x in ids)
            if pretrain_cfg.whole_documents else None, "final_loss": losses[-1] if losses else None,
            "steps": len(losses), "probes": history.get("probes", []), "probe_passed": history.get("probe_passed"),
            "seconds": round(time.time() - started, 1)}


# --- resumable pre-training state: one safetensors file with a JSON header, nothing ever unpickled.
# Keyed by everything that shapes the model: model config and initial weights (architecture, seed),
# the token blocks (tokenizer and corpus) and the pre-training config; a state under another key is
# ignored, never loaded into a model it does not fit.
_STATE_FORMAT = "s1flow-pretrain-state/1"


def _tensor_digest(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def pretrain_state_key(model: torch.nn.Module, blocks: torch.Tensor, cfg) -> str:
    """sha256 of (model config, initial weights, token blocks, pre-training config)."""
    import hashlib
    import json
    h = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if k != "transformers_version"}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        _tensor_digest(h, p)
    _tensor_digest(h, blocks)
    h.update(cfg.model_dump_json().encode())
    return h.hexdigest()


def save_pretrain_state(path: Path, key: str, step: int, losses: list[float], model: torch.nn.Module,
               opt: torch.optim.Optimizer, sched, gen: torch.Generator, history: Optional[dict] = None,
               average: Optional[WeightAverage] = None) -> None:
    """Write the state atomically (temp file, then rename); ``average``: the probe's weight average with it."""
    import json

    from safetensors.torch import save_file
    tensors = {f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    slots: dict[str, dict[str, Optional[list]]] = {}
    for idx, entry in opt_state["state"].items():
        slots[str(idx)] = {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{name}"] = value.detach().cpu().clone().contiguous()
                slots[str(idx)][name] = None
            else:
                slots[str(idx)][name] = [value]  # plain numbers stay in JSON
    tensors["generator"] = gen.get_state()
    if average is not None:
        tensors.update({f"average.{k}": v.clone().contiguous() for k, v in average.shadow.items()})
    header = {"format": _STATE_FORMAT, "key": key, "step": step, "losses": losses, "optimizer_slots": slots,
              "param_groups": opt_state["param_groups"], "scheduler": sched.state_dict(),
              "history": {k: v for k, v in (history or {}).items() if k in ("probes", "decay_start", "probe_passed")},
              "average_updates": average.updates if average is not None else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"s1flow": json.dumps(header)})
    tmp.replace(path)


def load_pretrain_state(path: Path, key: str, model: torch.nn.Module, opt: torch.optim.Optimizer, sched,
               gen: torch.Generator, average: Optional[WeightAverage] = None) -> Optional[tuple[int, list[float], dict]]:
    """Restore model, optimizer, schedule and generator from ``path`` if it holds a state under ``key``;
    returns (step, losses, schedule history), or None when there is no usable state (missing, foreign,
    unreadable)."""
    import json

    from safetensors import SafetensorError, safe_open
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            header = json.loads((f.metadata() or {}).get("s1flow", "{}"))
            if header.get("format") != _STATE_FORMAT or header.get("key") != key:
                return None
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError):
        return None  # a torn or foreign file: start over rather than crash
    if average is not None and (header.get("average_updates") is None
                                or any(f"average.{k}" not in tensors for k in average.shadow)):
        return None  # a state written without the probe's weight average: start over rather than crash
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state = {}
    for idx, entry in header["optimizer_slots"].items():
        state[int(idx)] = {name: tensors[f"optimizer.{idx}.{name}"] if v is None else v[0]
                           for name, v in entry.items()}
    opt.load_state_dict({"state": state, "param_groups": header["param_groups"]})
    sched.load_state_dict(header["scheduler"])
    gen.set_state(tensors["generator"])
    if average is not None:
        average.shadow = {k: tensors[f"average.{k}"] for k in average.shadow}
        average.updates = int(header["average_updates"])
    return int(header["step"]), list(header["losses"]), dict(header.get("history", {}))
