"""Budget forcing as a per-sequence state machine applied at the logit level.

One generation call per sequence, no re-prompting: at every step the
controller looks at the token just emitted, updates that sequence's phase
(thinking -> delimiter -> answer -> done) and either lets the model choose or
forces one token:

* thinking reaches ``max_thinking_tokens``: force ``<|im_start|>answer\\n``
  and the final-answer prefix, token by token (the model answers now);
* the model would end thinking (pick ``<|im_start|>``/``<|im_end|>``) before
  ``min_thinking_tokens`` or while waits remain: force the wait string's tokens
  instead (rotating ``wait_strings``), counted as thinking tokens; the empty
  wait string (:data:`NO_WAIT_STRING`, s1's "no string" ablation) only
  suppresses the delimiter for that step: nothing is appended and the model
  chooses among the other tokens;
* the answer reaches ``max_answer_tokens``: force ``<|im_end|>``.

Under sampling, "the model would stop" is a uniform draw against the stop
tokens' probability (HF engine: in the tempered top-p distribution the token is
drawn from, exactly as the sampler would; vLLM applies logits processors before
temperature, so there it is the untempered one); otherwise the stop tokens are
removed and the rest renormalised, which is the model's distribution conditioned
on continuing. Engine-agnostic: the HF engine's decoding loop
(:meth:`BudgetForcer.apply` on each step's active rows) and the vLLM logits
processor both drive :class:`BudgetForcer`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Optional, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from components.formatting import ANSWER_START, ENDOFTEXT, IM_END, IM_START
from components.records import Thought

NO_WAIT_STRING = ""  # a wait that suppresses the end of thinking and appends nothing


@dataclass(frozen=True)
class BudgetSpec:
    """Per-request budget-forcing parameters (s1 semantics)."""

    max_thinking_tokens: Optional[int] = None
    min_thinking_tokens: int = 0
    num_waits: int = 0
    wait_strings: tuple[str, ...] = ("Wait",)
    final_answer_prefix: str = ""
    max_answer_tokens: int = 64

    def __post_init__(self):
        if self.max_thinking_tokens is not None and self.max_thinking_tokens < 0:
            raise ValueError(f"max_thinking_tokens must be >= 0, got {self.max_thinking_tokens}")
        if self.min_thinking_tokens < 0 or self.num_waits < 0:
            raise ValueError("min_thinking_tokens and num_waits must be >= 0")
        if self.max_thinking_tokens is not None and self.min_thinking_tokens > self.max_thinking_tokens:
            raise ValueError(f"min_thinking_tokens ({self.min_thinking_tokens}) > "
                             f"max_thinking_tokens ({self.max_thinking_tokens})")
        if not self.wait_strings:
            raise ValueError("wait_strings must hold at least one string ('' = suppress the delimiter only)")
        if self.max_answer_tokens <= 0:
            raise ValueError("max_answer_tokens must be > 0")


@dataclass(frozen=True)
class ForcingVocab:
    """Token ids the controller needs, derived once from the tokenizer."""

    stop_ids: tuple[int, ...]
    delimiter_ids: tuple[int, ...]
    end_id: int
    banned_ids: tuple[int, ...]
    tokenizer: object = field(repr=False, compare=False)
    encoded: dict = field(default_factory=dict, repr=False, compare=False)  # pre-encoded strings (no tokenizer)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "ForcingVocab":
        ids = tokenizer.convert_tokens_to_ids
        im_start, im_end = ids(IM_START), ids(IM_END)
        banned = tuple(i for i in {ids(ENDOFTEXT), tokenizer.pad_token_id} if i is not None and i >= 0)
        delim = tuple(tokenizer(ANSWER_START, add_special_tokens=False)["input_ids"])
        return cls((im_start, im_end), delim, im_end, banned, tokenizer)

    def encode(self, text: str) -> tuple[int, ...]:
        if text in self.encoded:
            return self.encoded[text]
        if self.tokenizer is None:
            raise KeyError(f"{text!r} was not pre-encoded and there is no tokenizer here")
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class Phase(Enum):
    THINKING = "thinking"
    DELIMITER = "delimiter"
    ANSWER = "answer"
    DONE = "done"


@dataclass
class SequenceState:
    spec: BudgetSpec
    wait_ids: list[tuple[int, ...]]
    prefix_ids: tuple[int, ...]
    phase: Phase = Phase.THINKING
    thinking_tokens: int = 0
    answer_tokens: int = 0
    waits_used: int = 0
    hit_budget: bool = False
    delimiter_left: int = 0
    queue: deque = field(default_factory=deque)
    generator: Optional[torch.Generator] = None


class BudgetForcer:
    """Drives a batch of sequences, each in its own phase."""

    def __init__(self, specs: Sequence[BudgetSpec], vocab: ForcingVocab, do_sample: bool = False,
                 seeds: Optional[Sequence[int]] = None,
                 on_token: Optional[Callable[[int, int, "Phase"], None]] = None):
        """``on_token(row, token, phase)`` sees every token as it is emitted (used for streaming)."""
        self.vocab, self.do_sample, self.on_token = vocab, do_sample, on_token
        self._encoded: dict[str, tuple[int, ...]] = {}
        self.states: list[SequenceState] = []
        for i, spec in enumerate(specs):
            self.add(spec, int(seeds[i]) if seeds is not None else i)
        self._stop = torch.tensor(vocab.stop_ids)

    def _enc(self, text: str) -> tuple[int, ...]:
        if text not in self._encoded:
            self._encoded[text] = self.vocab.encode(text)
        return self._encoded[text]

    def add(self, spec: BudgetSpec, seed: int) -> int:
        """A sequence joins (continuous batching); its row index."""
        gen = torch.Generator().manual_seed(seed) if self.do_sample else None
        self.states.append(SequenceState(
            spec=spec, wait_ids=[self._enc(w) for w in spec.wait_strings],
            prefix_ids=self._enc(spec.final_answer_prefix) if spec.final_answer_prefix else (), generator=gen))
        return len(self.states) - 1

    # -- state updates -------------------------------------------------------------
    def observe(self, row: int, token: int) -> None:
        """Account for the token sequence ``row`` emitted at the previous step."""
        st = self.states[row]
        if self.on_token is not None:
            self.on_token(row, token, st.phase)
        if st.phase is Phase.THINKING:
            st.thinking_tokens += 1
        elif st.phase is Phase.DELIMITER:
            st.delimiter_left -= 1
            if st.delimiter_left == 0:
                st.phase = Phase.ANSWER
        elif st.phase is Phase.ANSWER:
            if token == self.vocab.end_id:
                st.phase = Phase.DONE
            else:
                st.answer_tokens += 1

    def _end_thinking(self, st: SequenceState, forced: bool) -> int:
        st.phase = Phase.DELIMITER
        st.delimiter_left = len(self.vocab.delimiter_ids)
        st.queue = deque(self.vocab.delimiter_ids + (st.prefix_ids if forced else ()))
        return st.queue.popleft()

    def _would_stop(self, st: SequenceState, stop_signal: float) -> bool:
        """Greedy: ``stop_signal`` is 1.0 when a stop token is the argmax. Sampling: it is P(stop)."""
        if not self.do_sample:
            return stop_signal > 0.5
        return float(torch.rand((), generator=st.generator)) < stop_signal

    # Actions: a token id to force, BAN_STOPS (thinking: the model chooses, minus stop tokens),
    # BAN_TURN (answer: the model chooses, minus <|im_start|>).
    BAN_STOPS, BAN_TURN = -1, -2

    @classmethod
    def partition(cls, actions) -> tuple[list[int], list[int], list[int], list[int]]:
        """``(row, action)`` pairs split into rows whose stops are banned, rows whose turn end is banned,
        and forced rows with their tokens (the shape both the HF decoding loop and the vLLM processor apply)."""
        stop_rows, turn_rows, forced_rows, forced_tokens = [], [], [], []
        for row, action in actions:
            if action == cls.BAN_STOPS:
                stop_rows.append(row)
            elif action == cls.BAN_TURN:
                turn_rows.append(row)
            else:
                forced_rows.append(row)
                forced_tokens.append(action)
        return stop_rows, turn_rows, forced_rows, forced_tokens

    def _decide(self, st: SequenceState, stop_signal: float) -> int:
        spec = st.spec
        if st.phase is Phase.DONE:
            return self.vocab.end_id
        if st.phase is Phase.THINKING:
            if spec.max_thinking_tokens is not None and st.thinking_tokens >= spec.max_thinking_tokens:
                st.hit_budget = True
                return self._end_thinking(st, forced=True)
            if st.queue:
                return st.queue.popleft()
            if self._would_stop(st, stop_signal):
                if st.thinking_tokens < spec.min_thinking_tokens or st.waits_used < spec.num_waits:
                    wait = st.wait_ids[st.waits_used % len(st.wait_ids)]
                    st.waits_used += 1
                    if not wait:  # the empty wait string: no end of thinking here, nothing appended
                        return self.BAN_STOPS
                    st.queue = deque(wait)
                    return st.queue.popleft()
                return self._end_thinking(st, forced=False)
            return self.BAN_STOPS
        if st.queue:  # rest of the delimiter / answer prefix
            return st.queue.popleft()
        if st.answer_tokens >= spec.max_answer_tokens:
            return self.vocab.end_id
        return self.BAN_TURN

    def stop_signals(self, scores: torch.Tensor) -> list[float]:
        """Per row: argmax-is-a-stop-token (greedy) or P(stop) (sampling), for a (batch, vocab) tensor."""
        if not self.do_sample:
            return torch.isin(scores.argmax(-1), self._stop.to(scores.device)).float().tolist()
        return torch.softmax(scores.float(), dim=-1)[:, self._stop].sum(-1).tolist()

    def apply(self, rows: Sequence[int], scores: torch.Tensor,
              signal_scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Decide the next token's action for ``rows`` (whose scores are ``scores``' rows, in order) and apply
        it in place; each row's previous token already observed. A batch whose finished rows left it.
        ``signal_scores`` (default ``scores``): the distribution "would the model stop" is read from."""
        signals = self.stop_signals(scores if signal_scores is None else signal_scores)
        ban_stop_rows, ban_turn_rows, forced_rows, forced_tokens = self.partition(
            (i, self._decide(self.states[row], signals[i])) for i, row in enumerate(rows))
        neg = float("-inf")
        if ban_stop_rows:
            cols = list(self.vocab.stop_ids) + list(self.vocab.banned_ids)
            scores[torch.tensor(ban_stop_rows)[:, None], torch.tensor(cols)[None, :]] = neg
        if ban_turn_rows:
            cols = [self.vocab.stop_ids[0], *self.vocab.banned_ids]
            scores[torch.tensor(ban_turn_rows)[:, None], torch.tensor(cols)[None, :]] = neg
        if forced_rows:
            rows = torch.tensor(forced_rows)
            scores[rows] = neg
            scores[rows, torch.tensor(forced_tokens)] = 0.0
        return scores

    def decide(self, row: int, scores: torch.Tensor) -> Optional[int]:
        """Single-row form (per-request processors): the token to force, or None after banning in place."""
        action = self._decide(self.states[row], self.stop_signals(scores[None, :])[0])
        if action == self.BAN_STOPS:
            scores[list(self.vocab.stop_ids) + list(self.vocab.banned_ids)] = float("-inf")
            return None
        if action == self.BAN_TURN:
            scores[[self.vocab.stop_ids[0], *self.vocab.banned_ids]] = float("-inf")
            return None
        return action


class PhaseTracker:
    """The phase of each emitted token, read from the tokens alone (engines whose forcing runs elsewhere).

    Reports what :meth:`BudgetForcer.observe` reports for the same token: thinking tokens
    THINKING, the delimiter's tokens DELIMITER, answer tokens (and the closing ``<|im_end|>``)
    ANSWER, anything after it DONE. Thinking bans ``<|im_start|>``, so its first appearance
    opens the delimiter.
    """

    def __init__(self, vocab: ForcingVocab):
        self.vocab, self.phase, self.left = vocab, Phase.THINKING, 0

    def push(self, token: int) -> Phase:
        phase = self.phase
        if phase is Phase.THINKING and token == self.vocab.delimiter_ids[0]:
            phase, self.phase, self.left = Phase.DELIMITER, Phase.DELIMITER, len(self.vocab.delimiter_ids)
        if phase is Phase.DELIMITER:
            self.left -= 1
            if self.left == 0:
                self.phase = Phase.ANSWER
        elif phase is Phase.ANSWER and token == self.vocab.end_id:
            self.phase = Phase.DONE
        return phase


class Probe(BaseModel):
    """One trial answer taken in a side branch during thinking (answer-probing controllers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thinking_tokens: int  # thinking tokens before the probe
    answer: str           # the trial answer as the final answer would read (its forced prefix included)
    mean_prob: float      # mean probability of the trial answer's generated tokens
    tokens: int           # tokens the probe cost: forced delimiter and prefix, and the trial answer's tokens


class ForcedResult(Thought):
    """A :class:`~components.records.Thought` with the tokens generated for it (thinking, delimiter, answer)."""

    token_ids: list[int]
    tries: int = 1  # samples drawn for this result (rejection sampling, majority voting)
    probes: list[Probe] = Field(default_factory=list)  # trial answers taken during thinking, in order
    exited: bool = False  # a probing controller's stop rule ended thinking (not the budget, not the model)


def split_result(state: SequenceState, generated: Sequence[int], vocab: ForcingVocab) -> ForcedResult:
    """Cut one sequence's generated ids into thinking and answer using its final state."""
    n_think, n_delim = state.thinking_tokens, len(vocab.delimiter_ids)
    answer_ids = list(generated[n_think + n_delim:])
    if vocab.end_id in answer_ids:
        answer_ids = answer_ids[: answer_ids.index(vocab.end_id)]
    answer_ids = [t for t in answer_ids if t not in vocab.banned_ids]
    decode = vocab.tokenizer.decode
    return ForcedResult(
        thinking=decode(list(generated[:n_think])), answer=decode(answer_ids),
        thinking_tokens=n_think, answer_tokens=len(answer_ids), waits_used=state.waits_used,
        hit_budget=state.hit_budget, token_ids=list(generated),
    )


def max_new_tokens_for(specs: Sequence[BudgetSpec], vocab: ForcingVocab, unlimited: int) -> int:
    """Enough steps for every sequence to finish: thinking + delimiter + prefix + answer + end."""
    longest = 0
    for s in specs:
        think = s.max_thinking_tokens if s.max_thinking_tokens is not None else unlimited
        prefix = len(vocab.encode(s.final_answer_prefix)) if s.final_answer_prefix else 0
        longest = max(longest, think + len(vocab.delimiter_ids) + prefix + s.max_answer_tokens + 1)
    return longest
