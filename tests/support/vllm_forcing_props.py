"""Property checks of the vLLM budget-forcing logits processor against vLLM's real batch-update protocol.

Run in the vLLM venv (``python -m tests.support.vllm_forcing_props``; it prints ``FORCING_PROPS {json}``, one
verdict per check; tests/inference/test_vllm_forcing.py reads them). The processor is driven the way vLLM's
V1 model runner drives it (``vllm/v1/worker/gpu_input_batch.py``: removals first, an added request fills
the lowest freed row, ``condense`` moves the last rows into the holes, the attention backend may swap
rows; ``BatchUpdateBuilder`` builds the update) by a stand-in model whose logits are a function of the
request's tokens. A clean pass admits every request once and never interrupts it; a stressed pass, drawn
by hypothesis, chunks prefills (the row is in the batch, its sampled token is thrown away), preempts and
re-adds requests (same or a fresh output list), leaves running ones unscheduled, swaps rows, and withdraws
tokens. Every decision (the processed logits row a kept token was drawn from), every output and every
shared-memory wait count must equal the clean pass's.
"""
from __future__ import annotations

import argparse
import importlib
import json
import random
import traceback
import zlib
from dataclasses import dataclass, field
from typing import Optional

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import MoveDirectionality
from vllm.v1.sample.logits_processor.state import BatchUpdateBuilder

from components.inference.budget_forcing import BudgetSpec, ForcingVocab

V = 24  # vocabulary of the stand-in model
IM_START, IM_END, EOT = 1, 2, 3
STRINGS = {"Wait": (6, 7), " Hmm": (8,), "Answer:": (9, 10), "": ()}
VOCAB = ForcingVocab(stop_ids=(IM_START, IM_END), delimiter_ids=(IM_START, 4, 5), end_id=IM_END, banned_ids=(EOT,),
                     tokenizer=None, encoded=STRINGS)
WAIT_CHOICES = [("Wait",), ("Wait", " Hmm"), ("",), ("", "Wait")]
MAX_BATCH = 6


def model_logits(prompt: int, output: list[int]) -> torch.Tensor:
    """The stand-in model: logits a function of the request's prompt and output tokens only."""
    key = zlib.crc32(repr((prompt, output[-3:], len(output))).encode())
    gen = torch.Generator().manual_seed(key)
    logits = torch.randn(V, generator=gen)
    if key % 5 == 0:  # the model wants to stop here
        logits[IM_START if key % 2 else IM_END] += 6.0
    return logits


def garbage_logits(rng: random.Random) -> torch.Tensor:
    """A partly prefilled row's logits (for some prompt position): often 'stop'."""
    logits = torch.randn(V, generator=torch.Generator().manual_seed(rng.randrange(1 << 30)))
    if rng.random() < 0.5:
        logits[rng.choice([IM_START, IM_END])] += 8.0
    return logits


def pick(processed: torch.Tensor, seed: Optional[int], pos: int) -> int:
    """vLLM's sampler: greedy, or a draw that depends only on the request's seed and position (vLLM rewinds a
    discarded row's generator)."""
    if seed is None:
        return int(processed.argmax())
    gen = torch.Generator().manual_seed(seed * 100_003 + pos)
    return int(torch.multinomial(torch.softmax(processed, -1), 1, generator=gen))


@dataclass
class Req:
    prompt: int
    spec: BudgetSpec
    do_sample: bool
    seed: int
    cap: int  # max_tokens
    params: Optional[SamplingParams] = None
    output: list[int] = field(default_factory=list)
    decisions: dict[int, torch.Tensor] = field(default_factory=dict)
    chunks_left: int = 0  # prefill steps still to run; all but the last discard their token
    done: bool = False


def make_params(req: Req, encode_request, slots) -> SamplingParams:
    slot = (slots.name, slots.take()) if slots is not None else None
    payload = encode_request(req.spec, VOCAB, req.do_sample, req.seed, slot)
    return SamplingParams(max_tokens=req.cap, extra_args={"s1flow_budget": payload}).clone()  # vLLM clones


class Batch:
    """vLLM's persistent batch, as far as logits processors see it."""

    def __init__(self, proc):
        self.proc, self.rows, self.builder = proc, [], BatchUpdateBuilder()

    def remove(self, req: Req) -> None:
        i = self.rows.index(req)
        self.rows[i] = None
        self.builder.removed_append(i)

    def add(self, req: Req, output: list[int]) -> None:
        i = self.builder.pop_removed()
        if i is None:
            i = len(self.rows)
            self.rows.append(None)
        self.rows[i] = req
        self.builder.added.append((i, req.params, [req.prompt], output))

    def condense_and_swap(self, rng: Optional[random.Random]) -> None:
        """``InputBatch.condense`` (the last rows slide into the lowest holes), then maybe a reordering swap."""
        empty = self.builder.removed  # descending; the holes left after the adds
        n = sum(r is not None for r in self.rows)
        if empty and n:
            last = n + len(empty) - 1
            while empty:
                while last in empty:
                    last -= 1
                hole = self.builder.peek_removed()
                if hole >= last:
                    break
                self.builder.pop_removed()
                self.rows[hole], self.rows[last] = self.rows[last], None
                self.builder.moved.append((last, hole, MoveDirectionality.UNIDIRECTIONAL))
                last -= 1
        del self.rows[n:]
        assert None not in self.rows
        if rng is not None and n > 1 and rng.random() < 0.3:
            a, b = rng.sample(range(n), 2)
            self.rows[a], self.rows[b] = self.rows[b], self.rows[a]
            self.builder.moved.append((a, b, MoveDirectionality.SWAP))

    def step(self, rng: Optional[random.Random]) -> None:
        self.proc.update_state(self.builder.get_and_reset(len(self.rows)))
        if not self.rows:
            return
        logits = torch.stack([model_logits(r.prompt, r.output) if r.chunks_left <= 1 else garbage_logits(rng)
                              for r in self.rows])
        processed = self.proc.apply(logits.clone())
        for i, r in enumerate(self.rows):
            if r.chunks_left > 1:  # a prefill chunk: vLLM throws the sampled token away
                r.chunks_left -= 1
                continue
            r.chunks_left = 0
            pos = len(r.output)
            r.decisions.setdefault(pos, []).append(processed[i].clone())
            r.output.append(pick(processed[i], r.seed if r.do_sample else None, pos))
            r.done = r.output[-1] == VOCAB.end_id or len(r.output) >= r.cap


def run(proc_cls, encode_request, slots, reqs: list[Req], rng: Optional[random.Random]) -> None:
    """All requests to the end; ``rng`` None: the clean schedule (admitted once, never interrupted)."""
    proc = proc_cls(None, torch.device("cpu"), False)
    batch = Batch(proc)
    for r in reqs:
        r.params = make_params(r, encode_request, slots)
    waiting = list(reqs)  # (re)admission order
    for _ in range(10_000):
        for r in [r for r in batch.rows if r is not None]:
            if r.done:
                batch.remove(r)
            elif rng is not None and rng.random() < 0.08:  # preempted: KV freed, recomputed on return
                batch.remove(r)
                r.chunks_left = rng.randint(1, 3)
                waiting.append(r)
            elif rng is not None and rng.random() < 0.08:  # not scheduled this step (KV kept)
                batch.remove(r)
                r.chunks_left = 1
                waiting.append(r)
            elif rng is not None and rng.random() < 0.03 and len(r.output) > 1:  # tokens withdrawn
                del r.output[-rng.randint(1, len(r.output) - 1):]
        room = MAX_BATCH - sum(r is not None for r in batch.rows)
        while waiting and room and (rng is None or rng.random() < 0.7):
            r = waiting.pop(0)
            if rng is not None and not r.output and r.chunks_left == 0:
                r.chunks_left = rng.randint(1, 4)  # a new request's prompt, in chunks
            fresh_list = rng is not None and rng.random() < 0.5  # a resumed request may bring a new list
            if fresh_list:
                r.output = list(r.output)
            batch.add(r, r.output)
            room -= 1
        batch.condense_and_swap(rng)
        if not batch.rows and not waiting:
            return
        batch.step(rng)
    raise AssertionError("requests did not finish")


requests_st = st.lists(
    st.builds(
        lambda prompt, budget, waits, min_think, wait_strings, prefix, answer, do_sample, seed: Req(
            prompt=prompt, do_sample=do_sample, seed=seed, cap=(16 if budget is None else budget) + 3 + 2 + answer + 1,
            spec=BudgetSpec(max_thinking_tokens=budget, min_thinking_tokens=min(min_think, 16 if budget is None else budget),
                            num_waits=waits, wait_strings=wait_strings, final_answer_prefix=prefix,
                            max_answer_tokens=answer)),
        prompt=st.integers(0, 50), budget=st.one_of(st.none(), st.integers(0, 14)), waits=st.integers(0, 3),
        min_think=st.integers(0, 4), wait_strings=st.sampled_from(WAIT_CHOICES),
        prefix=st.sampled_from(["", "Answer:"]), answer=st.integers(1, 4), do_sample=st.booleans(),
        seed=st.integers(0, 1000)),
    min_size=1, max_size=9)


def check_decisions_ignore_chunking_preemption_and_moves(proc_cls, encode_request, WaitSlots, max_examples):
    @settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(reqs=requests_st, rng=st.integers(0, 2**32 - 1).map(random.Random))
    def prop(reqs, rng):
        clean = [Req(r.prompt, r.spec, r.do_sample, r.seed, r.cap) for r in reqs]
        slots = WaitSlots(64)
        try:
            run(proc_cls, encode_request, slots, clean, None)
            run(proc_cls, encode_request, slots, reqs, rng)
            for i, (c, s) in enumerate(zip(clean, reqs)):
                assert s.output == c.output, (i, c.output, s.output)
                for pos, rows in s.decisions.items():
                    for row in rows:
                        assert torch.equal(row, c.decisions[pos][0]), (i, pos, row, c.decisions[pos][0])
                cs, ss = (r.params.extra_args["s1flow_budget"]["slot"][1] for r in (c, s))
                assert slots.counts[cs] == slots.counts[ss], (i, slots.counts[cs], slots.counts[ss])
        finally:
            slots.close()

    prop()


def check_a_resumed_request_keeps_its_controller(proc_cls, encode_request, WaitSlots, max_examples):
    """Preempted mid-answer, a request is not sent through the delimiter a second time."""
    spec = BudgetSpec(max_thinking_tokens=3, max_answer_tokens=4)
    for chunks in (1, 2, 3):  # back at once (its cache kept), or recomputed in chunks that decide nothing
        r = Req(prompt=7, spec=spec, do_sample=False, seed=0, cap=12)
        batch = Batch(proc_cls(None, torch.device("cpu"), False))
        r.params = make_params(r, encode_request, None)
        batch.add(r, r.output)
        for _ in range(5):  # 3 thinking tokens, 2 of the delimiter's 3
            batch.step(None)
        batch.remove(r)
        batch.condense_and_swap(None)
        batch.step(None)
        batch.add(r, list(r.output))
        r.chunks_left = chunks
        while not r.done:
            batch.step(random.Random(0))
        assert r.output[3:6] == list(VOCAB.delimiter_ids) and IM_START not in r.output[6:], (chunks, r.output)


CHECKS = {name: fn for name, fn in sorted(globals().items()) if name.startswith("check_")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", default="components.inference.vllm_forcing",
                    help="the module holding BudgetForcingLogitsProcessor, encode_request and WaitSlots")
    ap.add_argument("--max-examples", type=int, default=60)
    args = ap.parse_args()
    mod = importlib.import_module(args.module)
    verdicts = {}
    for name, fn in CHECKS.items():
        try:
            fn(mod.BudgetForcingLogitsProcessor, mod.encode_request, mod.WaitSlots, args.max_examples)
            verdicts[name] = "ok"
        except Exception:
            verdicts[name] = traceback.format_exc()[-3000:]
    print("FORCING_PROPS " + json.dumps(verdicts), flush=True)


if __name__ == "__main__":
    main()
