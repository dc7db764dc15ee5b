"""The budget-forcing OpenAI server itself: request checks, generation, streaming, auth, back-pressure.

No Ray here: :class:`S1Service` owns one engine and :func:`build_api` turns it into
a FastAPI app. The Ray Serve deployment (:mod:`components.serving.app`) builds
one per replica; tests and benchmarks can serve it with uvicorn directly.

* HF engine: continuous batching (:mod:`components.serving.batching`): a request's
  rows join the running batch between decoding steps and it is answered the moment
  they end; ``batching="micro"`` (or an engine with only ``generate_forced``):
  micro-batches, each stream its own engine call.
* vLLM engine: the async engine (``AsyncLLM``); every request is its own coroutine
  and vLLM batches continuously.
* Cancellation: a client that goes away (a dropped stream, a dropped request, or
  Ray Serve cancelling the request) cancels its generations on both engines: HF rows
  leave their batch at the next token (a batch nobody waits for is not run), vLLM
  aborts the request.
* Back-pressure counts generations (prompts x ``n``), not requests: at most
  ``max_queued_requests`` generations per replica, and a generation holds its place
  until the engine has stopped it (finished or cancelled), not until its client
  left. More get 429 with ``Retry-After``. Bodies are counted as they arrive: past
  ``max_request_bytes`` the request gets 413 without the rest being read.
* Isolation: everything the engine would reject is checked at parse time (400
  naming the field); a failure inside the engine answers a 500 error body for that
  request only, its batch neighbours are retried alone and complete.
* Methods: ``method`` names a test-time method (:mod:`components.serving.methods`); budget forcing is
  served directly (it streams), a parallel method votes over the ``n`` samples with its own rule, any other
  runs its method object in a worker thread on the engine (its rows batched with everyone's); ``budget:
  "auto"`` stops thinking by answer convergence.
* Grading (voting) runs off the event loop, each comparison in a child
  process killed at ``grading_timeout_s`` (:class:`~components.common.grading.GradingPool`):
  an answer math-verify cannot settle in time counts as different.
* Prompts reach the engines as token ids, message contents tokenized as text
  (:mod:`components.serving.prompts`): a special token typed by a user is text.
* No budget: a request without ``max_thinking_tokens`` thinks at most
  ``unlimited_thinking_tokens``, lowered to what its prompt and answer leave of the
  context (:mod:`components.inference.thinking_cap`), so it always gets an answer.
* Auth: every route but ``/health`` needs ``Authorization: Bearer <key>`` when a
  key is set; ``require_api_key`` refuses to start without one. The OpenAPI document is at
  ``/openapi.json`` behind the same key (:mod:`components.serving.openapi`); no docs UI routes.
* Errors: every status any route answers carries OpenAI's error object.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import json
import logging
import os
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from components.common.grading import GradingPool, bounded_equal
from components.config import EngineConfig
from components.formatting import IM_START, THINK_START
from components.inference.budget_forcing import BudgetSpec, ForcedResult, Phase
from components.inference.engine import Sampling, build_engine
from components.inference.methods.base import Forcing, Kind, Method, MethodRefused
from components.inference.methods.registry import REFERENCE
from components.inference.thinking_cap import after_thinking_tokens, no_budget_cap
from components.serving import methods
from components.serving.batching import ContinuousBatcher, MicroBatcher
from components.serving.openapi import openapi_document
from components.serving.prompts import chat_ids, templated_ids
from components.serving.protocol import (
    MAX_SEED,
    APIError,
    ChatRequest,
    CompletionRequest,
    apply_stop,
    chat_chunk,
    chat_response,
    completion_response,
    finish_reason,
    lone_surrogate,
)
from components.serving.protocol import usage as usage_of

log = logging.getLogger("s1flow.serve")

MAX_WAIT_TOKENS = 64  # tokens per wait string
MAX_PREFIX_TOKENS = 256  # tokens in the final answer prefix


class _Stream(StreamingResponse):
    """A stream whose generation is cancelled when the response ends for any reason (finished, the client
    went away, or the request was cancelled), even if its body was never iterated."""

    def __init__(self, content, job: asyncio.Future):
        super().__init__(content, media_type="text/event-stream")
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.job.done():
                self.job.cancel()


class S1Service:
    def __init__(self, model_path: str, model_name: str = "s1flow", engine: str = "hf", dtype: str = "float32",
                 max_batch_size: int = 16, batch_wait_timeout_s: float = 0.1, default_answer_tokens: int = 64,
                 unlimited_thinking_tokens: int = 1024, tensor_parallel_size: int = 1,
                 api_key_env: str = "S1FLOW_API_KEY", require_api_key: bool = False, max_queued_requests: int = 64,
                 max_request_bytes: int = 1 << 20, threads: Optional[int] = None,
                 gpu_memory_utilization: Optional[float] = None, max_num_batched_tokens: Optional[int] = None,
                 kv_cache_blocks: Optional[int] = None, grading_timeout_s: float = 5.0, vote_timeout_s: float = 20.0,
                 grading_workers: int = 1, batching: str = "continuous", engine_obj: Any = None):
        self.api_key = os.environ.get(api_key_env) or None
        if require_api_key and not self.api_key:
            raise RuntimeError(f"refusing to serve without auth: set the environment variable {api_key_env} "
                               "(the bearer token) for the replicas, or bind to a loopback host")
        if engine_obj is None:
            if threads and engine == "hf":
                import torch
                torch.set_num_threads(threads)
            cfg = EngineConfig(backend=engine, batch_size=max_batch_size, tensor_parallel_size=tensor_parallel_size,
                               unlimited_thinking_tokens=unlimited_thinking_tokens,
                               max_num_batched_tokens=max_num_batched_tokens, kv_cache_blocks=kv_cache_blocks)
            extra = {"gpu_memory_utilization": gpu_memory_utilization} if engine == "vllm" else {}
            engine_obj = build_engine(cfg, dtype, model_path, serving=True, **extra)
        self.engine = engine_obj
        self.is_async = asyncio.iscoroutinefunction(self.engine.generate_forced)
        self.model_name, self.default_answer_tokens = model_name, default_answer_tokens
        self.unlimited = unlimited_thinking_tokens
        self.max_len = self.engine.context_length
        self.max_queued, self.max_bytes = max_queued_requests, max_request_bytes
        self.inflight = 0  # generations admitted and not yet stopped by the engine
        self.engine_lock = threading.Lock()  # HF: one engine call at a time; batching, not threads, gives throughput
        self.continuous = not self.is_async and batching == "continuous" and hasattr(self.engine, "generate_rolling")
        self.batcher = (ContinuousBatcher(self.engine, self.engine_lock, max_batch_size, batch_wait_timeout_s,
                                          max_queued_requests)
                        if self.continuous else
                        MicroBatcher(self._run_sync, max_batch_size, batch_wait_timeout_s, max_queued_requests))
        self.grading_timeout_s, self.vote_timeout_s, self.grading_workers = (grading_timeout_s, vote_timeout_s,
                                                                             grading_workers)
        self._grader: Optional[GradingPool] = None  # started on the first vote
        self._grading_threads = ThreadPoolExecutor(grading_workers, thread_name_prefix="s1flow-vote")
        self._method_threads = ThreadPoolExecutor(max_queued_requests, thread_name_prefix="s1flow-method")
        self._key_bytes = f"Bearer {self.api_key}".encode() if self.api_key else None
        log.info("s1flow serving %s on %s (auth %s)", model_name, self.engine.name,
                 "on" if self.api_key else "off")

    # -- checks --------------------------------------------------------------------
    def authorised(self, raw_headers: list[tuple[bytes, bytes]]) -> bool:
        if self._key_bytes is None:
            return True
        got = next((v for k, v in raw_headers if k.lower() == b"authorization"), b"")
        return hmac.compare_digest(got, self._key_bytes)  # bytes: any header bytes compare, none raise

    def check_budget(self, spec: BudgetSpec) -> None:
        cap = self.unlimited
        if spec.max_thinking_tokens is not None and spec.max_thinking_tokens > cap:
            raise APIError(400, f"max_thinking_tokens ({spec.max_thinking_tokens}) exceeds this server's thinking "
                           f"cap {cap}; ask for at most {cap}", param="max_thinking_tokens")
        top = spec.max_thinking_tokens if spec.max_thinking_tokens is not None else cap
        if spec.min_thinking_tokens > top:
            raise APIError(400, f"min_thinking_tokens ({spec.min_thinking_tokens}) exceeds the thinking budget {top}"
                           f"{' (the server cap)' if spec.max_thinking_tokens is None else ''}; lower it",
                           param="min_thinking_tokens")
        for w in spec.wait_strings:
            if (n := len(self.engine.vocab.encode(w))) > MAX_WAIT_TOKENS:
                raise APIError(400, f"wait_strings: {w[:20]!r}... is {n} tokens; at most {MAX_WAIT_TOKENS}",
                               param="wait_strings")
        if spec.final_answer_prefix and (n := len(self.engine.vocab.encode(spec.final_answer_prefix))) \
                > MAX_PREFIX_TOKENS:
            raise APIError(400, f"final_answer_prefix is {n} tokens; at most {MAX_PREFIX_TOKENS}",
                           param="final_answer_prefix")

    def _prefix_tokens(self, spec: BudgetSpec) -> int:
        return len(self.engine.vocab.encode(spec.final_answer_prefix)) if spec.final_answer_prefix else 0

    def _after_thinking(self, spec: BudgetSpec) -> int:
        return after_thinking_tokens(spec, self.engine.vocab)

    def prompt_tokens(self, prompt: list[int], spec: BudgetSpec, param: str) -> int:
        """Token count of ``prompt``; 400 if prompt + thinking + delimiter + prefix + answer exceed the context
        (a request without a budget: if the prompt and the answer leave no room for its minimum thinking)."""
        n = len(prompt)
        if self.max_len:
            prefix = self._prefix_tokens(spec)
            if spec.max_thinking_tokens is None:
                room = no_budget_cap(self.unlimited, self.max_len, n, self._after_thinking(spec))
                if room < max(1, spec.min_thinking_tokens):
                    raise APIError(400, f"prompt ({n} tokens) + answer prefix ({prefix}) + answer "
                                   f"({spec.max_answer_tokens}) leave {max(room, 0)} of the context length "
                                   f"{self.max_len} for thinking, below the minimum "
                                   f"{max(1, spec.min_thinking_tokens)}; shorten the prompt or the answer",
                                   param=param, code="context_length_exceeded")
                return n
            need = n + spec.max_thinking_tokens + self._after_thinking(spec)
            if need > self.max_len:
                raise APIError(400, f"prompt ({n} tokens) + thinking budget max_thinking_tokens "
                               f"({spec.max_thinking_tokens}) + answer prefix ({prefix}) + answer "
                               f"({spec.max_answer_tokens}) exceed the context length {self.max_len}; shorten the "
                               "prompt, lower max_thinking_tokens or max_tokens, or send no max_thinking_tokens "
                               "(then the thinking gets what the context leaves)", param=param,
                               code="context_length_exceeded")
        return n

    def capped(self, spec: BudgetSpec, prompt_tokens: int) -> BudgetSpec:
        """``spec`` as the engine runs it: a request without a budget thinks at most the server's cap, lowered to
        what this prompt leaves of the context (:func:`no_budget_cap`); a budgeted one as it is."""
        if spec.max_thinking_tokens is not None:
            return spec
        cap = no_budget_cap(self.unlimited, self.max_len, prompt_tokens, self._after_thinking(spec))
        return dataclasses.replace(spec, max_thinking_tokens=cap)

    def question_prompt(self, prompt: str, param: str = "prompt") -> list[int]:
        """A bare question is wrapped as s1's evaluation does (the question tokenized as text); a prompt that
        starts with ``<|im_start|>`` is an already rendered template, used as given (its special tokens kept)."""
        if prompt.startswith(IM_START):
            return templated_ids(self.engine.tokenizer, prompt if prompt.endswith(THINK_START) else prompt + THINK_START)
        return chat_ids(self.engine.tokenizer, [{"role": "user", "content": prompt}], THINK_START, [param])

    def chat_prompt(self, req: ChatRequest) -> list[int]:
        """The chat template over the messages, each content tokenized as text (its special tokens split)."""
        msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in req.messages]
        return chat_ids(self.engine.tokenizer, msgs, THINK_START, [f"messages.{i}.content" for i in range(len(msgs))])

    @staticmethod
    def samplings(req) -> list[Sampling]:
        """Sample i of ``n`` draws with seed + i: the request's seed, or one drawn at random when it sent none
        (batched together, unseeded requests would otherwise all sample alike)."""
        base = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED - req.n + 2)
        return [Sampling(temperature=req.temperature, top_p=req.top_p, seed=base + i) for i in range(req.n)]

    # -- admission -----------------------------------------------------------------
    def admit(self, k: int) -> None:
        """Take ``k`` generations of capacity (prompts x n), or 429 when the replica has not that much left."""
        if k > self.max_queued:
            raise APIError(400, f"n: prompts x n = {k} exceeds the {self.max_queued} generations this server runs "
                           "at once; send fewer prompts or a smaller n", param="n")
        if self.inflight + k > self.max_queued:
            raise APIError(429, f"server busy: {self.inflight} generations in flight; retry shortly",
                           type_="rate_limit_error", code="overloaded", headers={"Retry-After": "1"})
        self.inflight += k

    def release(self, k: int = 1) -> None:
        self.inflight -= k

    def _release_from_thread(self, loop: asyncio.AbstractEventLoop, k: int = 1) -> None:
        try:
            loop.call_soon_threadsafe(self.release, k)
        except RuntimeError:  # the loop is closed: the server is gone
            pass

    # -- generation ----------------------------------------------------------------
    def exclusive(self):
        """The HF engine to oneself (a method's own engine calls), between the batcher's runs."""
        return self.batcher.exclusive() if self.continuous else self.engine_lock

    def _run_sync(self, prompts, specs, sampling, on_token=None, seeds=None, cancelled=None) -> list[ForcedResult]:
        with self.engine_lock:
            return self.engine.generate_forced(prompts, specs, sampling, on_token=on_token, seeds=seeds,
                                               cancelled=cancelled)

    def start(self, prompt: list[int], spec: BudgetSpec, sampling: Sampling, on_token=None) -> asyncio.Future:
        """Start one admitted generation; its future's result is its :class:`ForcedResult`. Cancelling the future
        cancels the generation in the engine; its capacity comes back once the engine has stopped it."""
        loop = asyncio.get_running_loop()
        if self.is_async:  # vLLM: a cancelled task aborts its request in the engine before it ends
            async def one() -> ForcedResult:
                return (await self.engine.generate_forced([prompt], [spec], sampling, on_token=on_token))[0]
            task = asyncio.ensure_future(one())
            task.add_done_callback(lambda _: self.release())
            return task
        if on_token is None or self.continuous:
            return self.batcher.submit(prompt, spec, sampling, self.release, on_token=on_token)
        gone = threading.Event()  # HF stream: its own engine call in a worker thread
        work = loop.run_in_executor(None, functools.partial(self._run_sync, [prompt], [spec], sampling, on_token,
                                                            cancelled=lambda row: gone.is_set()))
        out = loop.create_future()

        def settle(w: asyncio.Future) -> None:  # the engine call returned: its capacity comes back
            self.release()
            if not out.done():
                if w.cancelled():
                    out.cancel()
                elif w.exception() is not None:
                    out.set_exception(w.exception())
                else:
                    out.set_result(w.result()[0])
        work.add_done_callback(settle)
        out.add_done_callback(lambda f: gone.set() if f.cancelled() else None)
        return out

    async def generate_all(self, jobs: list[tuple[list[int], BudgetSpec, Sampling]]) -> list[ForcedResult]:
        """Admit and run ``jobs``; if one fails or the caller goes away, the others are cancelled."""
        self.admit(len(jobs))
        futures: list[asyncio.Future] = []
        try:
            for j in jobs:
                futures.append(self.start(*j))
        except BaseException:
            self.release(len(jobs) - len(futures))  # never started
            for f in futures:
                f.cancel()
            raise
        try:
            return await asyncio.gather(*futures)
        finally:
            for f in futures:
                if not f.done():
                    f.cancel()

    async def respond(self, build: Callable[..., dict], vote: bool) -> dict:
        """``build(same=...)``, the reply; with a vote its grading runs in a worker thread, each comparison in a
        grading child killed at ``grading_timeout_s``, all of them within ``vote_timeout_s``."""
        if not vote:
            return build()
        if self._grader is None:
            self._grader = GradingPool(self.grading_workers, self.grading_timeout_s)

        def vote() -> dict:
            self._grader.warm()  # a grading child's start is not part of the vote's time
            return build(same=bounded_equal(self._grader, time.monotonic() + self.vote_timeout_s))
        return await asyncio.get_running_loop().run_in_executor(self._grading_threads, vote)

    def close(self) -> None:
        """Stop the grading children and threads (the engine stays with its owner)."""
        if self._grader is not None:
            self._grader.close()
        self._grading_threads.shutdown(wait=False)
        self._method_threads.shutdown(wait=False)

    def health(self) -> dict:
        b = self.batcher
        return {"status": "ok", "model": self.model_name, "engine": self.engine.name, "in_flight": self.inflight,
                "batches": b.batches, "mean_batch_size": round(b.items / b.batches, 2) if b.batches else 0.0}

    # -- endpoints -----------------------------------------------------------------
    async def completions(self, req: CompletionRequest) -> dict:
        if req.stream:
            raise APIError(400, "stream: streaming is supported on /v1/chat/completions", param="stream")
        spec = req.spec(self.default_answer_tokens)
        self.check_budget(spec)
        texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        params = ["prompt"] if isinstance(req.prompt, str) else [f"prompt.{i}" for i in range(len(texts))]
        prompts = [self.question_prompt(p, param) for p, param in zip(texts, params)]
        lens = [self.prompt_tokens(p, spec, "prompt") for p in prompts]
        results, records, vote = await self.answer(req, prompts, lens, spec)
        return await self.respond(functools.partial(
            completion_response, req.model, sum(lens) * req.n, results, spec, req.stop, n=req.n, vote=vote,
            records=records), vote is not None)

    def chat_setup(self, req: ChatRequest) -> tuple[list[int], BudgetSpec, int]:
        spec = req.spec(self.default_answer_tokens)
        self.check_budget(spec)
        prompt = self.chat_prompt(req)
        n = self.prompt_tokens(prompt, spec, "messages")
        return prompt, self.capped(spec, n), n

    async def chat(self, req: ChatRequest) -> dict:
        spec = req.spec(self.default_answer_tokens)
        self.check_budget(spec)
        prompt = self.chat_prompt(req)
        n = self.prompt_tokens(prompt, spec, "messages")
        results, records, vote = await self.answer(req, [prompt], [n], spec)
        return await self.respond(functools.partial(chat_response, req.model, n, results, spec, req.stop, vote=vote,
                                                    records=records), vote is not None)

    async def answer(self, req, prompts: list[list[int]], lens: list[int], spec: BudgetSpec
                     ) -> tuple[list[ForcedResult], Optional[list[dict]], Optional[Method]]:
        """Every prompt's ``n`` results by the request's method, what a sequential method did for each (else
        None), and the parallel method whose vote picks the answer (else None). Budget forcing and a vote's
        samples: ``n`` generations per prompt, sample i seeded ``seed + i``; any other method: its object run on
        the ``n`` copies of each prompt (row i seeded ``seed + i``)."""
        name, kind = req.method_name, req.kind
        if name == REFERENCE or kind is Kind.PARALLEL:
            vote = methods.build(name, Forcing(), req.method_settings, req.n) if kind is Kind.PARALLEL else None
            samplings = self.samplings(req)
            jobs = [(p, self.capped(spec, k), s) for p, k in zip(prompts, lens) for s in samplings]
            return await self.generate_all(jobs), None, vote
        seed = self.samplings(req)[0].seed
        room = [self.capped(dataclasses.replace(spec, max_thinking_tokens=None), k).max_thinking_tokens for k in lens]
        # built and checked off the event loop: a check may decode the tokenizer's vocabulary once
        runs = await asyncio.to_thread(lambda: [self.method_run(req, spec, self.capped(spec, k).max_thinking_tokens,
                                                                seed, r) for k, r in zip(lens, room)])
        out = await self.run_methods(runs, req.n, prompts, req.max_compute_tokens, req.max_latency_s)
        auto = {"budget": "auto"} if req.budget == "auto" else {}
        return [r for rs, _ in out for r in rs], [{**rec, **auto} for _, recs in out for rec in recs], None

    def method_run(self, req, spec: BudgetSpec, cap: int, seed: int, room: Optional[int] = None) -> Method:
        """The request's sequential method for one prompt, its sweep value the prompt's thinking cap (under
        ``budget: auto``, lowered to ``max_compute_tokens``); refused (400 naming the field) where it has no
        meaning for this model or these settings, where it asks more of one replica than the server allows
        (:func:`~components.serving.methods.served_limits`), or where it would think past ``room``, what the prompt
        leaves of the context."""
        name = req.method_name
        forcing = Forcing(min_thinking_tokens=spec.min_thinking_tokens, num_waits=spec.num_waits,
                          wait_strings=tuple(spec.wait_strings), final_answer_prefix=spec.final_answer_prefix,
                          max_answer_tokens=spec.max_answer_tokens, temperature=req.temperature, top_p=req.top_p,
                          seed=seed, sample_temperature=req.temperature or 1.0)
        value = min(cap, req.max_compute_tokens) if req.max_compute_tokens else cap
        settings = methods.fitted(req.method_settings, spec)
        method = methods.build(name, forcing, settings, value)
        try:
            method.check(self.engine)
        except MethodRefused as e:
            field, message = methods.refusal_field(str(e), name)
            raise APIError(400, message, param=field) from None
        if (limit := methods.served_limits(settings, spec, value)) is not None:
            raise APIError(400, limit[1], param=limit[0])
        reach = method.thinking_reach(value)
        if room is not None and reach > room and method.reach_setting:
            raise APIError(400, f"{method.reach_setting}: the method would think up to {reach} tokens, more than the "
                           f"{room} this prompt leaves of the context length {self.max_len}; lower "
                           f"{method.reach_setting} or max_thinking_tokens, or shorten the prompt",
                           param=method.reach_setting, code="context_length_exceeded")
        return method

    async def run_methods(self, runs: list[Method], n: int, prompts: list[list[int]],
                          max_compute_tokens: Optional[int] = None, max_latency_s: Optional[float] = None
                          ) -> list[tuple[list[ForcedResult], list[dict]]]:
        """Each method object run on its prompt's ``n`` copies in a worker thread at its sweep value (its one
        budget), admitted as ``n`` generations each; a failure or the client going away cancels the rest (their
        engine calls stop), and capacity comes back as each run's thread has ended. The caps (``budget: auto``)
        join the method's stop rule; the latency cap counts from the run's start."""
        self.admit(n * len(runs))
        loop = asyncio.get_running_loop()
        view = methods.ServedEngine(self, loop)

        def one(method: Method, prompt: list[int]) -> tuple[list[ForcedResult], list[dict]]:
            value = method.budgets[0]
            if max_compute_tokens is not None or max_latency_s is not None:
                methods.cap_stop(method, max_compute_tokens,
                                 time.monotonic() + max_latency_s if max_latency_s is not None else None)
            results = method.run(view, [prompt] * n, value)
            return results, [methods.method_record(method, r, value, methods.stopped_by(method, r, max_compute_tokens))
                             for r in results]

        futures = []
        try:
            for method, prompt in zip(runs, prompts):
                f = self._method_threads.submit(one, method, prompt)
                f.add_done_callback(lambda _: self._release_from_thread(loop, n))
                futures.append(f)
        except BaseException:
            self.release(n * (len(runs) - len(futures)))
            view.cancel()
            raise
        try:
            return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
        finally:
            if not all(f.done() for f in futures):
                view.cancel()

    def stream_response(self, req: ChatRequest) -> StreamingResponse:
        """Admit and start one streamed generation (checks first: their errors are plain 400s)."""
        prompt, spec, prompt_tokens = self.chat_setup(req)
        self.admit(1)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()  # bounded by the generation's own token limit

        def on_token(row: int, token: int, phase: Phase) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (token, phase))

        try:
            job = self.start(prompt, spec, self.samplings(req)[0], on_token=on_token)
        except BaseException:
            self.release()
            raise
        return _Stream(self.stream(req, spec, prompt_tokens, job, queue), job)

    async def stream(self, req: ChatRequest, spec: BudgetSpec, prompt_tokens: int, task: asyncio.Future,
                     queue: asyncio.Queue):
        """Server-sent events: thinking deltas (``reasoning_content`` and ``reasoning``), then answer deltas."""
        end_id = self.engine.vocab.end_id
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        decode = self.engine.tokenizer.decode
        stops = req.stop or []
        hold = max((len(s) for s in stops), default=1) - 1  # answer text that may still become a stop string
        ids: dict[str, list[int]] = {"thinking": [], "answer": []}
        sent = {"thinking": "", "answer": ""}
        stopped = False

        def event(delta: Optional[dict], finish: Optional[str] = None, usage: Optional[dict] = None) -> str:
            return f"data: {json.dumps(chat_chunk(chunk_id, req.model, delta, finish, usage))}\n\n"

        def emit(field: str, text: str, final: bool = False) -> Optional[str]:
            nonlocal stopped
            if stopped or not text.startswith(sent[field]):
                return None
            if field == "answer" and stops:
                cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    text, stopped = text[:cut], True
                elif not final:
                    text = text[:max(len(sent[field]), len(text) - hold)]
            new = text[len(sent[field]):]
            if not new or (new.endswith("\ufffd") and not final):  # wait for a complete UTF-8 character
                return None
            sent[field] = text
            if field == "thinking":
                return event({"reasoning_content": new, "reasoning": new})
            return event({"content": new})

        try:
            yield event({"role": "assistant", "content": ""})
            while not (task.done() and queue.empty()):
                try:
                    token, phase = await asyncio.wait_for(queue.get(), timeout=0.05)
                except asyncio.TimeoutError:
                    continue
                field = {Phase.THINKING: "thinking", Phase.ANSWER: "answer"}.get(phase)
                if field is None or token == end_id:
                    continue
                ids[field].append(token)
                if (line := emit(field, decode(ids[field], skip_special_tokens=True))) is not None:
                    yield line
            try:
                r = await task
            except Exception as e:  # headers are gone: report in-band, as OpenAI does
                log.exception("stream failed")
                body = APIError(500, f"generation failed: {type(e).__name__}", type_="server_error").body()
                yield f"data: {json.dumps(body)}\n\n"
                return
            for field, final in (("thinking", r.thinking), ("answer", r.answer)):  # anything not yet sent
                if (line := emit(field, final, final=True)) is not None:
                    yield line
            text, cut = apply_stop(r, stops)
            u = usage_of(prompt_tokens, [r])
            yield event({}, finish_reason(r, spec, cut), u)
            if req.stream_options and req.stream_options.include_usage:
                yield event(None, usage=u)
            yield "data: [DONE]\n\n"
        finally:
            if not task.done():
                task.cancel()  # the client went away: the engine stops the generation




def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class _Auth:
    """ASGI guard: every route but ``/health`` needs the bearer token (when a key is set), checked before anything
    of the request is read."""

    def __init__(self, app, service: S1Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health" and not self.service.authorised(scope["headers"]):
            response = _error(APIError(401, "missing or wrong bearer token", type_="authentication_error",
                                       code="invalid_api_key"))
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, counted as it arrives: 413 as soon as it passes ``limit`` bytes (the rest is never read)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise APIError(413, f"request body over {limit} bytes", code="request_too_large")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body over {limit} bytes", code="request_too_large")
        parts.append(chunk)
    return b"".join(parts)


async def _until_disconnected(request: Request) -> None:
    """Returns when the client has gone away (the body is already read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(request: Request, work) -> Any:
    """``work``'s result, or, if the client goes away first (or this handler is cancelled, as Ray Serve does on a
    disconnect), ``work`` cancelled and a 499 nobody reads."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():  # cancelled just now: its cancellation finishes in the background
        raise APIError(499, "client closed the request", code="client_closed_request")
    return task.result()


def build_api(service: S1Service):
    """The FastAPI app for one service (the OpenAPI document at ``/openapi.json``; no docs UI)."""
    api = FastAPI(title="s1flow", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    api.add_middleware(_Auth, service=service)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: ("not_found", f"Invalid URL ({request.method} {request.url.path})"),
                 405: ("method_not_allowed", f"method {request.method} is not allowed on {request.url.path}")}
        code, message = codes.get(exc.status_code, (None, str(exc.detail)))
        return _error(APIError(exc.status_code, message, code=code, headers=exc.headers))

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(APIError(400, f"invalid request: {str(exc.errors()[:1])[:300]}"))

    @api.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error(APIError(500, f"internal error: {type(exc).__name__}", type_="server_error",
                               code="internal_error"))

    async def parse(request: Request, model_cls):
        if service.inflight >= service.max_queued:  # no room for even one generation: the body is not read
            raise APIError(429, f"server busy: {service.inflight} generations in flight; retry shortly",
                           type_="rate_limit_error", code="overloaded", headers={"Retry-After": "1"})
        body = await _read_body(request, service.max_bytes)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError(400, "request body is not valid JSON", code="invalid_json") from None
        if not isinstance(data, dict):
            raise APIError(400, "request body must be a JSON object", code="invalid_json")
        if (path := lone_surrogate(data)) is not None:
            raise APIError(400, f"{path}: contains a lone UTF-16 surrogate (e.g. \\ud800), which is not text; "
                           "send valid Unicode", param=path)
        try:
            req = model_cls.model_validate(data)
        except ValidationError as err:
            e = err.errors()[0]
            param = ".".join(str(p) for p in e["loc"]) or None
            msg = e["msg"].removeprefix("Value error, ")
            head = msg.split(" ")[0]
            if head.endswith(":") and head[:-1].isidentifier():  # "field: message" from a model validator
                param = head[:-1] if param is None else param
            raise APIError(400, f"{param}: {msg}" if param and not head.endswith(":") else msg,
                           param=param) from None
        if req.model != service.model_name:
            raise APIError(404, f"model {req.model!r} does not exist; this server serves {service.model_name!r}",
                           param="model", code="model_not_found")
        return req

    async def guarded(handler):
        try:
            return await handler()
        except APIError as e:
            return _error(e)
        except Exception as e:  # this request only
            log.exception("request failed")
            return _error(APIError(500, f"generation failed: {type(e).__name__}: {str(e)[:200]}",
                                   type_="server_error", code="internal_error"))

    @api.get("/health")
    async def health() -> dict:
        return service.health()

    @api.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": service.model_name, "object": "model", "owned_by": "s1flow",
                                            "created": 0}]}

    @api.post("/v1/completions")
    async def completions(request: Request):
        async def go():
            req = await parse(request, CompletionRequest)
            return await _unless_gone(request, service.completions(req))
        return await guarded(go)

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        async def go():
            req = await parse(request, ChatRequest)
            if req.stream:
                return service.stream_response(req)
            return await _unless_gone(request, service.chat(req))
        return await guarded(go)

    api.openapi = functools.partial(openapi_document, api, {"/v1/completions": CompletionRequest,
                                                            "/v1/chat/completions": ChatRequest})
    return api
