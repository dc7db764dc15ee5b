"""The budget-forcing OpenAI server itself: request checks, generation, streaming, auth, back-pressure.

No Ray here: :class:`S1Service` owns one engine and :func:`build_api` turns it into
a FastAPI app. The Ray Serve deployment (:mod:`components.serving.app`) builds
one per replica; tests and benchmarks can serve it with uvicorn directly.

* HF engine: concurrent requests are micro-batched (one ``generate_forced`` per
  batch and sampling setting) in a worker thread, one batch at a time.
* vLLM engine: the async engine (``AsyncLLM``); every request is its own coroutine
  and vLLM batches continuously. Cancelling a request (client disconnect) aborts it.
* Isolation: everything the engine would reject is checked at parse time (400
  naming the field); a failure inside the engine answers a 500 error body for that
  request only, its batch neighbours are retried alone and complete.
* No budget: a request without ``max_thinking_tokens`` thinks at most
  ``unlimited_thinking_tokens``, lowered to what its prompt and answer leave of the
  context (:mod:`components.inference.thinking_cap`), so it always gets an answer.
* Auth: every route but ``/health`` needs ``Authorization: Bearer <key>`` when a
  key is set; ``require_api_key`` refuses to start without one. No docs routes.
* Back-pressure: at most ``max_queued_requests`` requests (streams included) per
  replica, more get 429 with ``Retry-After``; bodies over ``max_request_bytes`` get 413.
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
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from components.config import EngineConfig
from components.formatting import THINK_START, prompt_text
from components.inference.budget_forcing import BudgetSpec, ForcedResult, Phase
from components.inference.engine import Sampling, build_engine
from components.inference.thinking_cap import after_thinking_tokens, no_budget_cap
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
)
from components.serving.protocol import usage as usage_of

log = logging.getLogger("s1flow.serve")

MAX_WAIT_TOKENS = 64  # tokens per wait string
MAX_PREFIX_TOKENS = 256  # tokens in the final answer prefix


@dataclass
class _Item:
    prompt: str
    spec: BudgetSpec
    sampling: Sampling
    future: asyncio.Future


class MicroBatcher:
    """Collects concurrent items for up to ``wait_s`` (or ``max_size`` items) and runs them as one batch.

    A batch that fails is retried item by item, so one bad item fails alone.
    """

    def __init__(self, run, max_size: int, wait_s: float):
        self.run, self.max_size, self.wait_s = run, max_size, wait_s
        self.queue: Optional[asyncio.Queue] = None
        self.task: Optional[asyncio.Task] = None
        self.batches, self.items = 0, 0

    async def submit(self, prompt: str, spec: BudgetSpec, sampling: Sampling) -> ForcedResult:
        if self.task is None:
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(_Item(prompt, spec, sampling, fut))
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_size:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
                except asyncio.TimeoutError:
                    break
            batch = [it for it in batch if not it.future.done()]  # cancelled callers
            if not batch:
                continue
            self.batches, self.items = self.batches + 1, self.items + len(batch)
            groups: dict[tuple, list[_Item]] = {}  # one generate call per sampling setting, each row its own seed
            for it in batch:
                groups.setdefault((it.sampling.temperature, it.sampling.top_p), []).append(it)
            for items in groups.values():
                await self._run_group(items)

    async def _run_group(self, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        try:
            res = await loop.run_in_executor(None, functools.partial(
                self.run, [i.prompt for i in items], [i.spec for i in items], items[0].sampling,
                seeds=[i.sampling.seed for i in items]))
        except Exception as e:
            if len(items) == 1:
                if not items[0].future.done():
                    items[0].future.set_exception(e)
                return
            for it in items:  # isolate: each alone, so only the bad one fails
                await self._run_group([it])
            return
        for it, r in zip(items, res):
            if not it.future.done():
                it.future.set_result(r)


class S1Service:
    def __init__(self, model_path: str, model_name: str = "s1flow", engine: str = "hf", dtype: str = "float32",
                 max_batch_size: int = 16, batch_wait_timeout_s: float = 0.1, default_answer_tokens: int = 64,
                 unlimited_thinking_tokens: int = 1024, tensor_parallel_size: int = 1,
                 api_key_env: str = "S1FLOW_API_KEY", require_api_key: bool = False, max_queued_requests: int = 64,
                 max_request_bytes: int = 1 << 20, threads: Optional[int] = None,
                 gpu_memory_utilization: Optional[float] = None, max_num_batched_tokens: Optional[int] = None,
                 kv_cache_blocks: Optional[int] = None, engine_obj: Any = None):
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
        self.inflight = 0
        self._lock = threading.Lock()  # HF: one generate at a time; batching, not threads, gives throughput
        self.batcher = MicroBatcher(self._run_sync, max_batch_size, batch_wait_timeout_s)
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

    def prompt_tokens(self, prompt: str, spec: BudgetSpec, param: str) -> int:
        """Token count of ``prompt``; 400 if prompt + thinking + delimiter + prefix + answer exceed the context
        (a request without a budget: if the prompt and the answer leave no room for its minimum thinking)."""
        n = len(self.engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])
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
                raise APIError(400, f"prompt ({n} tokens) + thinking budget ({spec.max_thinking_tokens}) + answer "
                               f"prefix ({prefix}) + answer ({spec.max_answer_tokens}) exceed the context length "
                               f"{self.max_len}; shorten the prompt or lower the budget", param=param,
                               code="context_length_exceeded")
        return n

    def capped(self, spec: BudgetSpec, prompt_tokens: int) -> BudgetSpec:
        """``spec`` as the engine runs it: a request without a budget thinks at most the server's cap, lowered to
        what this prompt leaves of the context (:func:`no_budget_cap`); a budgeted one as it is."""
        if spec.max_thinking_tokens is not None:
            return spec
        cap = no_budget_cap(self.unlimited, self.max_len, prompt_tokens, self._after_thinking(spec))
        return dataclasses.replace(spec, max_thinking_tokens=cap)

    def question_prompt(self, prompt: str) -> str:
        # A bare question is wrapped as s1's evaluation does; a templated prompt is used as given.
        if prompt.startswith("<|im_start|>"):
            return prompt if prompt.endswith(THINK_START) else prompt + THINK_START
        return prompt_text(self.engine.tokenizer, prompt) + THINK_START

    def chat_prompt(self, req: ChatRequest) -> str:
        msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in req.messages]
        return self.engine.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + THINK_START

    @staticmethod
    def samplings(req) -> list[Sampling]:
        """Sample i of ``n`` draws with seed + i: the request's seed, or one drawn at random when it sent none
        (batched together, unseeded requests would otherwise all sample alike)."""
        base = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED - req.n + 2)
        return [Sampling(temperature=req.temperature, top_p=req.top_p, seed=base + i) for i in range(req.n)]

    # -- generation ----------------------------------------------------------------
    def _run_sync(self, prompts, specs, sampling, on_token=None, seeds=None) -> list[ForcedResult]:
        with self._lock:
            return self.engine.generate_forced(prompts, specs, sampling, on_token=on_token, seeds=seeds)

    async def generate(self, prompt: str, spec: BudgetSpec, sampling: Sampling) -> ForcedResult:
        if self.is_async:
            return (await self.engine.generate_forced([prompt], [spec], sampling))[0]
        return await self.batcher.submit(prompt, spec, sampling)

    async def generate_all(self, jobs: list[tuple[str, BudgetSpec, Sampling]]) -> list[ForcedResult]:
        tasks = [asyncio.ensure_future(self.generate(*j)) for j in jobs]
        try:
            return await asyncio.gather(*tasks)
        finally:
            for t in tasks:  # one failed or the caller went away: the others need not run on
                t.cancel()

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
        prompts = [self.question_prompt(p) for p in ([req.prompt] if isinstance(req.prompt, str) else req.prompt)]
        lens = [self.prompt_tokens(p, spec, "prompt") for p in prompts]
        jobs = [(p, self.capped(spec, n), sampling) for p, n in zip(prompts, lens) for sampling in self.samplings(req)]
        results = await self.generate_all(jobs)
        return completion_response(req.model, sum(lens) * req.n, results, spec, req.stop,
                                   vote_n=req.n if req.method == "majority_voting" else None)

    def chat_setup(self, req: ChatRequest) -> tuple[str, BudgetSpec, int]:
        spec = req.spec(self.default_answer_tokens)
        self.check_budget(spec)
        prompt = self.chat_prompt(req)
        n = self.prompt_tokens(prompt, spec, "messages")
        return prompt, self.capped(spec, n), n

    async def chat(self, req: ChatRequest) -> dict:
        prompt, spec, n = self.chat_setup(req)
        results = await self.generate_all([(prompt, spec, sampling) for sampling in self.samplings(req)])
        return chat_response(req.model, n, results, spec, req.stop, vote=req.method == "majority_voting")

    async def stream(self, req: ChatRequest, prompt: str, spec: BudgetSpec, prompt_tokens: int):
        """Server-sent events: thinking deltas (``reasoning_content`` and ``reasoning``), then answer deltas."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        end_id = self.engine.vocab.end_id

        def on_token(row: int, token: int, phase: Phase) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (token, phase))

        sampling = self.samplings(req)[0]
        if self.is_async:
            task = asyncio.ensure_future(self.engine.generate_forced([prompt], [spec], sampling, on_token=on_token))
        else:
            task = asyncio.ensure_future(loop.run_in_executor(None, self._run_sync, [prompt], [spec], sampling,
                                                              on_token))
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
                r = (await task)[0]
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
                task.cancel()  # client went away: vLLM aborts the request


def build_api(service: S1Service):
    """The FastAPI app for one service (docs and the OpenAPI schema are off)."""
    api = FastAPI(title="s1flow", docs_url=None, redoc_url=None, openapi_url=None)

    def error(e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @api.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path != "/health" and not service.authorised(request.headers.raw):
            return error(APIError(401, "missing or wrong bearer token", type_="authentication_error",
                                  code="invalid_api_key"))
        if request.method != "POST":
            return await call_next(request)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > service.max_bytes):
            return error(APIError(413, f"request body over {service.max_bytes} bytes", code="request_too_large"))
        if service.inflight >= service.max_queued:
            return error(APIError(429, f"server busy: {service.inflight} requests in flight; retry shortly",
                                  type_="rate_limit_error", code="overloaded", headers={"Retry-After": "1"}))
        service.inflight += 1
        try:
            response = await call_next(request)
        except Exception:
            service.inflight -= 1
            raise
        if isinstance(response, StreamingResponse) or hasattr(response, "body_iterator"):
            inner = response.body_iterator

            async def counted():
                try:
                    async for chunk in inner:
                        yield chunk
                finally:
                    service.inflight -= 1
            response.body_iterator = counted()
        else:
            service.inflight -= 1
        return response

    async def parse(request: Request, model_cls):
        body = await request.body()
        if len(body) > service.max_bytes:
            raise APIError(413, f"request body over {service.max_bytes} bytes", code="request_too_large")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError(400, "request body is not valid JSON", code="invalid_json") from None
        if not isinstance(data, dict):
            raise APIError(400, "request body must be a JSON object", code="invalid_json")
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
            return error(e)
        except Exception as e:  # this request only
            log.exception("request failed")
            return error(APIError(500, f"generation failed: {type(e).__name__}: {str(e)[:200]}",
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
            return await service.completions(await parse(request, CompletionRequest))
        return await guarded(go)

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        async def go():
            req = await parse(request, ChatRequest)
            if req.stream:
                prompt, spec, n = service.chat_setup(req)
                return StreamingResponse(service.stream(req, prompt, spec, n), media_type="text/event-stream")
            return await service.chat(req)
        return await guarded(go)

    return api
