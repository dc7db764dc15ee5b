"""Budget forcing as a vLLM (V1) per-request logits processor.

Loaded by the vLLM engine (imports vllm at module level, so only the vLLM
engine imports it). A request opts in through ``SamplingParams.extra_args
["s1flow_budget"]``: the spec plus every token id the controller needs, encoded
in the driver, so the worker needs no tokenizer. Each request gets its own
:class:`BudgetForcer` (one row), driven exactly as the HF processor drives it.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from components.inference.budget_forcing import BudgetForcer, BudgetSpec, ForcingVocab

EXTRA_KEY = "s1flow_budget"


def encode_request(spec: BudgetSpec, vocab: ForcingVocab, do_sample: bool, seed: int) -> dict[str, Any]:
    """Everything a worker needs for one request, as plain data (goes in extra_args)."""
    strings = list(spec.wait_strings) + ([spec.final_answer_prefix] if spec.final_answer_prefix else [])
    return {
        "spec": {"max_thinking_tokens": spec.max_thinking_tokens, "min_thinking_tokens": spec.min_thinking_tokens,
                 "num_waits": spec.num_waits, "wait_strings": list(spec.wait_strings),
                 "final_answer_prefix": spec.final_answer_prefix, "max_answer_tokens": spec.max_answer_tokens},
        "vocab": {"stop_ids": list(vocab.stop_ids), "delimiter_ids": list(vocab.delimiter_ids),
                  "end_id": vocab.end_id, "banned_ids": list(vocab.banned_ids)},
        "encoded": {s: list(vocab.encode(s)) for s in strings},
        "do_sample": do_sample, "seed": seed,
    }


class RequestForcer:
    """Callable ``(output_ids, logits) -> logits`` for one request."""

    def __init__(self, payload: dict[str, Any]):
        spec = payload["spec"]
        spec = BudgetSpec(**{**spec, "wait_strings": tuple(spec["wait_strings"])})
        v = payload["vocab"]
        vocab = ForcingVocab(tuple(v["stop_ids"]), tuple(v["delimiter_ids"]), v["end_id"], tuple(v["banned_ids"]),
                             tokenizer=None, encoded={k: tuple(ids) for k, ids in payload["encoded"].items()})
        self.forcer = BudgetForcer([spec], vocab, do_sample=payload["do_sample"], seeds=[payload["seed"]])
        self.seen = 0

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        while self.seen < len(output_ids):
            self.forcer.observe(0, output_ids[self.seen])
            self.seen += 1
        token = self.forcer.decide(0, logits)
        if token is not None:
            logits = torch.full_like(logits, float("-inf"))
            logits[token] = 0.0
        return logits


class BudgetForcingLogitsProcessor(AdapterLogitsProcessor):
    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token wins

    def new_req_logits_processor(self, params: SamplingParams) -> Optional[RequestForcer]:
        payload = (params.extra_args or {}).get(EXTRA_KEY)
        return RequestForcer(payload) if payload else None
