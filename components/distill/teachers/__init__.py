"""Teachers write reasoning traces; the distill stage runs one over the pool.

Every teacher has ``name`` and ``async attempt(question) -> Trace`` and never
raises for a bad call (only :class:`~components.distill.journal.SpendRefused`, when the run stops paying
before an attempt leaves): a failure comes back as ``Trace(ok=False)`` with the
error, the raw response and the tokens billed for it (every attempt's usage). ``teacher.kind`` in params picks the client:

- ``programmatic``: the embedded teacher (components/distill/teachers/programmatic.py);
- ``openai`` / ``gemini`` / ``vllm``: any OpenAI-compatible chat endpoint
  (Gemini's OpenAI-compatible endpoint, DeepSeek, a ``vllm serve`` of an open model),
  key from the env var named by ``teacher.api_key_env``. A ``gemini`` client asks for thought summaries;
  where thinking is required (``teacher.require_thinking``, default for gemini) a response without any is a
  failed trace naming the cause, never an empty trace.

    teacher = build_teacher(cfg.teacher); trace = await teacher.attempt(q)
"""
from __future__ import annotations

import os
import time
from typing import Callable, Protocol

from components.common.chat_client import ApiError, ChatClient, key_problem, redact
from components.config import ConfigError, TeacherConfig
from components.distill.journal import SpendRefused
from components.distill.teachers.programmatic import ProgrammaticTeacher
from components.records import Question, Trace


def unexpected_failure(question: Question, teacher: str, error: BaseException, seconds: float = 0.0,
                       secrets: tuple[str, ...] = ()) -> Trace:
    """A failure trace for an exception no teacher should raise (recorded and retried, never a lost batch).
    Its texts go through :func:`redact`: ``secrets`` (the teacher's key) and anything shaped like a credential
    never reach the trace."""
    return Trace(question_id=question.id, teacher=teacher, ok=False,
                 error=redact(f"unexpected error ({type(error).__name__}: {error})", *secrets)[:2000],
                 raw=redact(getattr(error, "raw", "") or repr(error)[:20000], *secrets), latency_s=round(seconds, 3))


def teacher_key(cfg: TeacherConfig) -> str:
    """The key in ``$teacher.api_key_env`` ('' when unset)."""
    return os.environ.get(cfg.api_key_env, "")


def check_teacher_key(cfg: TeacherConfig) -> None:
    """Refuse, before the first call, a key that an HTTP header cannot carry (the message never quotes it)."""
    if cfg.kind in TEACHERS and cfg.kind != "programmatic" and (problem := key_problem(teacher_key(cfg),
                                                                                       cfg.api_key_env)):
        raise ConfigError(f"teacher.api_key_env: {problem}")


def no_thinking_error(cfg: TeacherConfig) -> str:
    """Why a response that should carry thinking carries none, and what to check."""
    where = ("Gemini sends thought summaries as a <thought> block in the content only when asked "
             "(extra_body.google.thinking_config.include_thoughts, which this client sends): check that "
             f"teacher.model ({cfg.model}) is a thinking model" if cfg.kind == "gemini" else
             "looked for message.reasoning_content, message.reasoning and a leading <think>/<thought> block: check "
             f"that teacher.model ({cfg.model}) reasons and that the server returns its reasoning")
    return f"no thinking in the response (teacher.require_thinking): {where}"


class Teacher(Protocol):
    name: str

    async def attempt(self, question: Question) -> Trace: ...


class ApiTeacher:
    """A teacher behind an OpenAI-compatible chat endpoint."""

    def __init__(self, cfg: TeacherConfig, **client_kw):
        self.name, self.cfg = cfg.model, cfg
        self.client = ChatClient(cfg, kind=cfg.kind, key_field="teacher.api_key_env", **client_kw)

    def messages(self, question: Question) -> list[dict]:
        system = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        return system + [{"role": "user", "content": question.question}]

    async def attempt(self, question: Question) -> Trace:
        start = time.monotonic()
        try:
            r = await self.client.chat(self.messages(question))
        except ApiError as e:
            return Trace(question_id=question.id, teacher=self.name, ok=False, error=str(e), raw=e.raw,
                         prompt_tokens=e.prompt_tokens, completion_tokens=e.completion_tokens,
                         attempts=e.attempts, latency_s=round(time.monotonic() - start, 3))
        except SpendRefused:  # the run stopped paying: the question is not asked, not failed (the caller decides)
            raise
        except Exception as e:  # a bug or a shape nobody foresaw: this question fails, the batch goes on
            return unexpected_failure(question, self.name, e, time.monotonic() - start, (teacher_key(self.cfg),))
        if not r.reasoning and self.cfg.thinking_required:
            return Trace(question_id=question.id, teacher=self.name, ok=False, error=no_thinking_error(self.cfg),
                         raw=r.content[:20000], prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                         attempts=r.attempts, latency_s=round(time.monotonic() - start, 3))
        truncated = r.finish_reason == "length"
        return Trace(question_id=question.id, teacher=self.name, thinking=r.reasoning,
                     answer="" if truncated else r.content, prompt_tokens=r.prompt_tokens,
                     completion_tokens=r.completion_tokens, attempts=r.attempts,
                     latency_s=round(time.monotonic() - start, 3))

    async def aclose(self) -> None:
        await self.client.aclose()


TEACHERS: dict[str, Callable[..., Teacher]] = {
    "programmatic": lambda cfg, **_: ProgrammaticTeacher(cfg),
    "openai": ApiTeacher, "gemini": ApiTeacher, "vllm": ApiTeacher,
}
NEEDS_KEY = {"openai", "gemini"}  # a local vLLM server usually runs without one


def build_teacher(cfg: TeacherConfig, **kw) -> Teacher:
    if cfg.kind not in TEACHERS:
        raise ValueError(f"teacher.kind: {cfg.kind!r} unknown; available: {sorted(TEACHERS)}")
    return TEACHERS[cfg.kind](cfg, **kw)
