"""Answer extraction and grading by symbolic equivalence (math-verify).

Policy: an answer is correct when math-verify finds it equivalent to the gold
answer (``\\frac{14}{3}`` = ``14/3``, ``90^\\circ`` = ``90``); math-verify's
numeric tolerance also accepts a decimal close to a fraction
(``4.6666666667`` for ``14/3``), which we keep, as s1's evaluation does.

Multiple choice (GPQA) reads the one option letter a response commits to
(components/common/choices.py): a final boxed letter, else the last answer
statement, else the last parenthesised letter; a hedge ("(A) or (C)") or a
boxed non-letter gives none.
:func:`grade_response` is the one entry every path uses (in-process sweep, Serve
sweep, Algorithm 1's teacher check): it grades by the question's kind.
:data:`GRADER_VERSION` goes into evaluation run keys, so a grading change never
mixes with samples graded under other rules.

A server grades with :class:`GradingPool`: each comparison runs in a child process
with a hard time limit, and a child still busy at the limit is killed (a fresh one
takes its place), so an expression like ``9^{9^{9}}`` costs at most the limit and
grades as not equal.

    grade(extract_answer("Answer: 7798"), "7798") -> True
    grade_response(question, "... so the answer is (C)") -> ("C", True)
    GradingPool(timeout_s=2).grade("9^{9^{9}}", "2") -> None (not graded within 2 s)
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
import weakref
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

from math_verify import parse, verify

from components.common.choices import extract_choice, grade_choice, last_boxed  # noqa: F401  (re-exported)


def _math_verify_version() -> str:
    try:
        return version("math-verify")
    except PackageNotFoundError:
        return "unknown"


GRADER_VERSION = f"s1flow-grading-3/math-verify-{_math_verify_version()}"

_ANSWER_LINE = re.compile(r"(?:final\s+answer|answer)\s*[:：]\s*(.+)", re.I)


def extract_answer(text: str) -> str:
    """The final answer in ``text``: the last ``\\boxed{}``, else the last 'Answer:' line."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    hits = _ANSWER_LINE.findall(text)
    if hits:
        return hits[-1].strip().rstrip(".").strip()
    return text.strip().splitlines()[-1].strip() if text.strip() else ""


def attempt_answer(text: str, finished: bool) -> str:
    """The answer an attempt gave: ``extract_answer``, except that an attempt its token limit cut off
    (``finished`` false) before it wrote a final answer (a ``\\boxed{}`` or an 'Answer:' line) gave none: its
    last line is working, not an answer (a restated "55722 + 53366" would otherwise grade as the sum)."""
    if finished or last_boxed(text) is not None or _ANSWER_LINE.search(text):
        return extract_answer(text)
    return ""


# Off the main thread math-verify's SIGALRM timeouts cannot be set (every comparison would fail), so there
# they are off and answers longer than this are compared as plain strings, bounding a comparison's cost.
MAX_OFF_MAIN_CHARS = 200


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@lru_cache(maxsize=65536)
def _parsed(expr: str):
    # Wrap in $...$ so LaTeX like \frac{14}{3} is read as math, not prose.
    return parse(f"${expr}$") or parse(expr)


def _parsed_off_main(expr: str):
    return parse(f"${expr}$", parsing_timeout=None) or parse(expr, parsing_timeout=None)


# Expressions whose value no grader should compute: an exponent tower (9^{9^{9}} has 370 million digits), an
# exponent of six digits or more, a factorial of a five-digit number or of a power. Big-integer arithmetic in C
# is not interrupted by math-verify's alarms, so such an answer is compared as a string only.
_EXPLOSIVE = re.compile(
    r"\^\s*\{[^{}]*\^"                              # a power inside an exponent: a^{b^{c}}
    r"|\^\s*\(?\s*[\w.]+\s*\)?\s*\^"                 # a chained power: a^b^c, a^(b)^c
    r"|\^\s*\{?\s*\(?\s*\d{6,}"                        # an exponent of 100,000 or more
    r"|(?:\d{5,}|\([^()]*\^[^()]*\)|\}\s*\))\s*!"     # 10000!, (10^{6})!, (2^{20})!
    r"|\*\*\s*\(?[\w.]+\)?\s*\*\*|\*\*\s*\(?\s*\d{6,}")   # the same written with **
MAX_GRADED_CHARS = 1000  # answers longer than this are compared as strings only: no answer in s1's sets comes near


def explosive(expr: str) -> bool:
    """True for an answer too costly to evaluate symbolically (see ``_EXPLOSIVE``)."""
    return len(expr) > MAX_GRADED_CHARS or _EXPLOSIVE.search(expr) is not None


def grade(predicted: str, gold: str) -> bool:
    """Symbolic equivalence (math-verify), from any thread. An :func:`explosive` answer (or gold) is compared
    as a string only."""
    if not predicted.strip():
        return False
    if predicted.strip() == gold.strip():
        return True
    if explosive(predicted) or explosive(gold):
        return False
    try:
        if _on_main_thread():
            g, p = _parsed(gold), _parsed(predicted)
            return bool(g and p and verify(g, p))
        if len(predicted) > MAX_OFF_MAIN_CHARS or len(gold) > MAX_OFF_MAIN_CHARS:
            return False
        quiet = logging.getLogger("math_verify")
        level, quiet.level = quiet.level, logging.ERROR  # it warns on every call that the timeout is off
        try:
            g, p = _parsed_off_main(gold), _parsed_off_main(predicted)
            return bool(g and p and verify(g, p, timeout_seconds=None))
        finally:
            quiet.level = level
    except Exception:
        return False


def is_multiple_choice(question) -> bool:
    return question.metadata.get("kind") == "multiple_choice"


def grade_question(question, predicted: str) -> bool:
    """Grade an extracted answer by the question's kind (``metadata.kind``: math or multiple_choice)."""
    if is_multiple_choice(question):
        return grade_choice(predicted, question.answer)
    return grade(predicted, question.answer)


def grade_response(question, text: str) -> tuple[str, bool]:
    """(predicted, correct) for a whole response, by the question's kind: the one grading entry point."""
    if is_multiple_choice(question):
        letter = extract_choice(text)
        return letter, bool(letter) and letter == question.answer.strip().upper()
    predicted = extract_answer(text)
    return predicted, grade(predicted, question.answer)


# -- grading in child processes with a hard time limit --------------------------------------------------------------

WORKER_MEMORY_BYTES = 1 << 30  # address space of a grading child: a runaway expression fails there, not here
_WORKER_CODE = "from components.common.grading import serve_grading; serve_grading()"


def serve_grading() -> None:
    """A grading child's loop: a JSON ``[predicted, gold]`` per line on stdin, ``true``/``false`` per line back.
    Grades on the child's main thread (math-verify's own timeouts apply too); prints of any library go to
    stderr, the answers to the original stdout. Stops when stdin closes (the parent is gone)."""
    import resource
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ValueError, OSError):  # a lower hard limit is already set: keep it
        pass
    grade(r"\frac{1}{2}", "0.5")  # math-verify's first comparison builds its parsers: before the clock runs
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            predicted, gold = json.loads(line)
            answer = grade(predicted, gold)
        except Exception:  # MemoryError included: not equal
            answer = False
        out.write("true\n" if answer else "false\n")
        out.flush()


class _Worker:
    def __init__(self):
        root = str(Path(__file__).resolve().parents[2])  # the directory holding the components package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen([sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                                     bufsize=1)
        self.ready = False

    def _line(self, timeout_s: float) -> Optional[str]:
        r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, timeout_s))
        return self.proc.stdout.readline().strip() if r else None

    def wait_ready(self, timeout_s: float) -> bool:
        if not self.ready:
            self.ready = self._line(timeout_s) == "ready"
        return self.ready

    def ask(self, predicted: str, gold: str, timeout_s: float) -> Optional[bool]:
        self.proc.stdin.write(json.dumps([predicted, gold]) + "\n")
        self.proc.stdin.flush()
        line = self._line(timeout_s)
        return None if line not in ("true", "false") else line == "true"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class GradingPool:
    """:func:`grade` in ``workers`` child processes, each call bounded by ``timeout_s``: a child that has not
    answered by then is killed and replaced, and the call answers ``None`` (not graded). Thread-safe; a call
    waits for a free child. Children start on first use (a child's start, up to ``start_timeout_s``, is not
    counted in the time limit) and stop with :meth:`close` or at exit."""

    def __init__(self, workers: int = 1, timeout_s: float = 5.0, start_timeout_s: float = 120.0):
        if workers < 1 or timeout_s <= 0:
            raise ValueError(f"GradingPool: workers ({workers}) must be >= 1 and timeout_s ({timeout_s}) > 0")
        self.timeout_s, self.start_timeout_s = timeout_s, start_timeout_s
        self.timeouts = 0  # calls answered None
        self._free: queue.Queue = queue.Queue()
        self._all: set = set()
        self._lock = threading.Lock()
        for _ in range(workers):
            self._free.put(None)  # a slot; its child starts on first use
        self._finalizer = weakref.finalize(self, GradingPool._kill_all, self._all)
        atexit.register(self._finalizer)

    @staticmethod
    def _kill_all(workers: set) -> None:
        for w in list(workers):
            w.kill()
        workers.clear()

    def _start(self) -> _Worker:
        w = _Worker()
        with self._lock:
            self._all.add(w)
        return w

    def _drop(self, w: _Worker) -> None:
        w.kill()
        with self._lock:
            self._all.discard(w)

    def _live(self, w: Optional["_Worker"]) -> "_Worker":
        """``w`` if its child still runs, else a new child in its place."""
        if w is None or w.proc.poll() is not None:
            if w is not None:
                self._drop(w)
            w = self._start()
        return w

    def warm(self) -> None:
        """Start a child and wait until it is ready (its start then costs no comparison of a vote its time)."""
        w = self._free.get()
        try:
            w = self._live(w)
            w.wait_ready(self.start_timeout_s)
        finally:
            self._free.put(w)

    def grade(self, predicted: str, gold: str, timeout_s: Optional[float] = None) -> Optional[bool]:
        """``grade(predicted, gold)`` within ``timeout_s`` (default the pool's); ``None`` when it did not finish."""
        if not predicted.strip():
            return False
        if predicted.strip() == gold.strip():
            return True
        w = self._free.get()
        try:
            w = self._live(w)
            if not w.wait_ready(self.start_timeout_s):
                raise OSError("grading child did not start")
            answer = w.ask(predicted, gold, self.timeout_s if timeout_s is None else timeout_s)
        except OSError:  # the child died (a broken pipe): not graded
            answer = None
        if answer is None:
            self.timeouts += 1
            self._drop(w)
            w = self._start()  # the replacement imports while the caller goes on
        self._free.put(w)
        return answer

    def close(self) -> None:
        self._finalizer()


def bounded_equal(pool: GradingPool, deadline: float):
    """An equality for voting: :meth:`GradingPool.grade`, each call within the pool's limit and all of them
    before ``deadline`` (``time.monotonic()``); past it, or when a call timed out, only identical strings are
    equal."""
    def same(a: str, b: str) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return a.strip() == b.strip()
        return bool(pool.grade(a, b, min(pool.timeout_s, left)))
    return same
