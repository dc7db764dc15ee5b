"""Ray Serve application: an OpenAI-compatible, budget-forcing model server.

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (SSE
streaming with ``stream: true``), ``GET /v1/models``, ``GET /health``.
Non-streaming requests are batched with ``@serve.batch`` so concurrent callers
share forward passes. Errors come back as OpenAI-style bodies with a 4xx code;
a bearer token is required when the environment variable named by
``api_key_env`` is set.

    serve run infra/serve/tiny.yaml        # or: s1flow serve
"""

# No "from __future__ import annotations": FastAPI must see real types on the ingress methods.
import asyncio
import hmac
import json
import os
import threading
import uuid
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve

from components.formatting import THINK_START, prompt_text
from components.inference.budget_forcing import BudgetSpec, ForcedResult, Phase
from components.inference.engine import Sampling
from components.serving.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    chat_chunk,
    chat_response,
    completion_response,
    finish_reason,
)

app = FastAPI(title="s1flow", description="OpenAI-compatible budget-forcing server")


def _validation_error(err: ValidationError) -> APIError:
    e = err.errors()[0]
    param = ".".join(str(p) for p in e["loc"]) or None
    return APIError(400, f"{param}: {e['msg'].removeprefix('Value error, ')}" if param else e["msg"], param=param)


async def _json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(400, "request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    return body


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256)
@serve.ingress(app)
class S1Server:
    def __init__(self, model_path: str, model_name: str = "s1flow", engine: str = "hf", dtype: str = "float32",
                 max_batch_size: int = 16, batch_wait_timeout_s: float = 0.1, default_answer_tokens: int = 64,
                 unlimited_thinking_tokens: int = 1024, tensor_parallel_size: int = 1,
                 api_key_env: str = "S1FLOW_API_KEY", threads: Optional[int] = None):
        import torch

        from components.inference.engines import build_engine
        if threads:
            torch.set_num_threads(threads)
        extra = {"tensor_parallel_size": tensor_parallel_size} if engine == "vllm" else {}
        self.engine = build_engine(engine, model_path, dtype, batch_size=max_batch_size,
                                   unlimited_thinking_tokens=unlimited_thinking_tokens, **extra)
        self.model_name, self.default_answer_tokens = model_name, default_answer_tokens
        self.unlimited = unlimited_thinking_tokens
        self.max_len = getattr(getattr(self.engine, "model", None), "config", None)
        self.max_len = getattr(self.max_len, "max_position_embeddings", None)
        self.api_key = os.environ.get(api_key_env) or None
        self._lock = threading.Lock()  # one generate at a time: batching, not threads, gives throughput
        self.batches, self.batched_items = 0, 0
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    # -- helpers -------------------------------------------------------------------
    async def _parse(self, request: Request, model_cls):
        """Authorised request body -> validated request for this model; APIError otherwise."""
        if self.api_key:  # before reading anything else, so an unauthorised caller learns nothing
            auth = request.headers.get("authorization", "")
            if not hmac.compare_digest(auth, f"Bearer {self.api_key}"):
                raise APIError(401, "missing or wrong bearer token", type_="authentication_error",
                               code="invalid_api_key")
        body = await _json_body(request)
        try:
            req = model_cls.model_validate(body)
        except ValidationError as e:
            raise _validation_error(e) from None
        if req.model != self.model_name:
            raise APIError(404, f"model {req.model!r} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")
        return req

    def _sampling(self, req) -> Sampling:
        return Sampling(temperature=req.temperature, top_p=req.top_p, seed=req.seed or 0)

    def _prompt_ids_len(self, prompt: str, spec: BudgetSpec) -> int:
        n = len(self.engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if self.max_len:
            think = spec.max_thinking_tokens if spec.max_thinking_tokens is not None else self.unlimited
            need = n + think + len(self.engine.vocab.delimiter_ids) + spec.max_answer_tokens + 8
            if need > self.max_len:
                raise APIError(400, f"prompt ({n} tokens) + thinking budget ({think}) + answer ({spec.max_answer_tokens})"
                               f" exceed the context length {self.max_len}; shorten the prompt or lower the budget",
                               param="prompt", code="context_length_exceeded")
        return n

    def _question_prompt(self, prompt: str) -> str:
        # A bare question is wrapped as s1's evaluation does; a templated prompt is used as given.
        if prompt.startswith("<|im_start|>"):
            return prompt if prompt.endswith(THINK_START) else prompt + THINK_START
        return prompt_text(self.engine.tokenizer, prompt) + THINK_START

    def _chat_prompt(self, req: ChatRequest) -> str:
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        return self.engine.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + THINK_START

    def _run(self, prompts: list[str], specs: list[BudgetSpec], sampling: Sampling, on_token=None) -> list[ForcedResult]:
        with self._lock:
            kw = {"on_token": on_token} if on_token else {}
            return self.engine.generate_forced(prompts, specs, sampling, **kw)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.1)
    async def _batched(self, items: list[tuple[str, BudgetSpec, Sampling]]) -> list[ForcedResult]:
        self.batches, self.batched_items = self.batches + 1, self.batched_items + len(items)
        groups: dict[tuple, list[int]] = {}  # one generate call per distinct sampling setting
        for i, (_, _, s) in enumerate(items):
            groups.setdefault((s.temperature, s.top_p, s.seed), []).append(i)
        out: list[Optional[ForcedResult]] = [None] * len(items)
        loop = asyncio.get_running_loop()
        for idx in groups.values():
            res = await loop.run_in_executor(None, self._run, [items[i][0] for i in idx],
                                             [items[i][1] for i in idx], items[idx[0]][2])
            for i, r in zip(idx, res):
                out[i] = r
        return out

    # -- endpoints -----------------------------------------------------------------
    @app.get("/health")
    async def health(self) -> dict:
        mean = self.batched_items / self.batches if self.batches else 0.0
        return {"status": "ok", "model": self.model_name, "engine": self.engine.name,
                "batches": self.batches, "mean_batch_size": round(mean, 2)}

    @app.get("/v1/models")
    async def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "s1flow",
                                            "created": 0}]}

    @app.post("/v1/completions")
    async def completions(self, request: Request):
        try:
            req = await self._parse(request, CompletionRequest)
            if req.stream:
                raise APIError(400, "stream is supported on /v1/chat/completions", param="stream")
            spec = req.spec(self.default_answer_tokens)
            prompts = [self._question_prompt(p) for p in ([req.prompt] if isinstance(req.prompt, str) else req.prompt)]
            if not prompts:
                raise APIError(400, "prompt must not be empty", param="prompt")
            lens = [self._prompt_ids_len(p, spec) for p in prompts]
            sampling = self._sampling(req)
            results = await asyncio.gather(*[self._batched((p, spec, sampling)) for p in prompts])
            return completion_response(req.model, [(n, r, spec) for n, r in zip(lens, results)])
        except APIError as e:
            return JSONResponse(e.body(), status_code=e.status)

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request):
        try:
            req = await self._parse(request, ChatRequest)
            spec = req.spec(self.default_answer_tokens)
            prompt = self._chat_prompt(req)
            n = self._prompt_ids_len(prompt, spec)
            if req.stream:
                return StreamingResponse(self._stream(req, prompt, spec, n), media_type="text/event-stream")
            r = await self._batched((prompt, spec, self._sampling(req)))
            return chat_response(req.model, n, r, spec)
        except APIError as e:
            return JSONResponse(e.body(), status_code=e.status)

    async def _stream(self, req: ChatRequest, prompt: str, spec: BudgetSpec, prompt_tokens: int):
        """Real token streaming: the forcing controller reports each token as it is generated."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        end_id = self.engine.vocab.end_id

        def on_token(row: int, token: int, phase: Phase) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (token, phase))

        fut = loop.run_in_executor(None, self._run, [prompt], [spec], self._sampling(req), on_token)
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        ids: dict[str, list[int]] = {"reasoning_content": [], "content": []}
        sent: dict[str, str] = {"reasoning_content": "", "content": ""}
        decode = self.engine.tokenizer.decode

        def delta(field: str, text: str) -> Optional[str]:
            new = text[len(sent[field]):] if text.startswith(sent[field]) else None
            if new and not new.endswith("\ufffd"):  # wait for a complete UTF-8 character
                sent[field] = text
                return f"data: {json.dumps(chat_chunk(chunk_id, req.model, {field: new}))}\n\n"
            return None

        yield f"data: {json.dumps(chat_chunk(chunk_id, req.model, {'role': 'assistant', 'content': ''}))}\n\n"
        while not (fut.done() and queue.empty()):
            try:
                token, phase = await asyncio.wait_for(queue.get(), timeout=0.05)
            except asyncio.TimeoutError:
                continue
            field = {Phase.THINKING: "reasoning_content", Phase.ANSWER: "content"}.get(phase)
            if field is None or token == end_id:
                continue
            ids[field].append(token)
            if (line := delta(field, decode(ids[field], skip_special_tokens=True))) is not None:
                yield line
        r = (await fut)[0]
        for field, final in (("reasoning_content", r.thinking), ("content", r.answer)):  # anything not yet sent
            if final != sent[field] and final.startswith(sent[field]):
                yield f"data: {json.dumps(chat_chunk(chunk_id, req.model, {field: final[len(sent[field]):]}))}\n\n"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": r.thinking_tokens + r.answer_tokens,
                 "total_tokens": prompt_tokens + r.thinking_tokens + r.answer_tokens,
                 "completion_tokens_details": {"reasoning_tokens": r.thinking_tokens}}
        yield f"data: {json.dumps(chat_chunk(chunk_id, req.model, {}, finish_reason(r, spec), usage))}\n\n"
        yield "data: [DONE]\n\n"


def build_app(args: dict[str, Any]):
    """Application builder for ``serve run components.serving.app:build_app model_path=...``."""
    return S1Server.options(num_replicas=int(args.pop("num_replicas", 1))).bind(**args)
