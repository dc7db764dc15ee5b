"""No history in the product: work sessions, issue numbers, commit hashes, recipe versions and before/after
stories belong to ``git log``, not to code, comments, docs, params or printed output.

Every text file git knows (tracked, or new and not ignored) is scanned line by line; a hit fails with
``file:line``. Test fixtures (data) and this file (it spells the patterns out) are skipped.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = ("tests/fixtures/",)
SELF = Path(__file__).resolve().relative_to(REPO).as_posix()

_HEX = r"[0-9a-f]{7,40}"
# name -> pattern (case-insensitive). Each names work history, never a word code uses for something else:
# `scope="session"`, boto3/requests sessions and "once per session" fixtures do not match.
PATTERNS = {
    "session number": r"\bsessions?\s*#?\d+\b",
    "work session": r"\b(?:this|that|previous|prior|last|earlier|later|next|same|another|in|across|between)"
                    r"\s+(?:work(?:ing)?\s+)?sessions?\b(?![\"'=(:\[\])])",
    "issue number": r"\b(?:issue|ticket|pr|pull request)\s*#?\d+\b",
    "commit hash": r"\b(?:commit(?:ted)?|revision|rev|sha)\s*(?:at\s+|as\s+|is\s+)?[`'\"(]?" + _HEX + r"\b"
                   r"|\bat\s+[`'\"]?(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,12}\b"
                   r"|\((?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,12}\)",
    "bare short hash": r"(?<![\w#-])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,12}(?![\w-])",
    # not inside a hyphenated model id (deepseek-v4-pro is a model's name, not a recipe's version)
    "recipe version": r"(?<!` )(?<!-)\bv[34]\b(?![.\d-])",
    "before/after": r"\b(?:before|after|since|with|until)\s+this\s+(?:change|fix|commit|patch|refactor)\b"
                    r"|\bthe\s+code\s+before\b|\bpreviously\b|\bno\s+longer\b|\banymore\b"
                    r"|\b(?<!is\s)(?<!are\s)(?<!be\s)(?<!was\s)(?<!were\s)(?<!been\s)(?<!being\s)used\s+to\s+"
                    r"(?:be|do|have|run|take|read|write|return|pass|draw|give|keep|fail|hang|crash|cost|need)\b"
                    r"|\bthe\s+old\s+\w+|\bwas\s+[^.;\n]{1,60}?,\s+now\b"
                    r"|\bnow\s+(?:uses?|takes?|runs?|reads?|writes?|returns?|pass(?:es)?|draws?|gives?|keeps?|fails?)\b",
    "this machine": r"\b(?:this|my|our)\s+(?:machine|box|laptop|workstation)\b",
    "reviewer": r"\breviewers?\b|\breview:|\bcode\s+review\b",
    # a model's publication day (``released: 2024-09-19``) is data, not the date of the work
    "date of work": r"(?<!released: )(?<!released: \")\b202[4-9]-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12]\d|3[01]))?\b",
}
MATCHERS = {name: re.compile(p, re.IGNORECASE) for name, p in PATTERNS.items()}
# (file, pattern name) pairs where a match is not history. Keep it small and say why.
# docs/results.md is rendered by `s1flow report`: its provenance names the commit and the digests of params and
# data its numbers came from, which is what the numbers are, not a story of the work.
ALLOW: set[tuple[str, str]] = {("docs/results.md", "commit hash"), ("docs/results.md", "bare short hash")}


def history_hits(line: str) -> list[str]:
    """The names of the patterns ``line`` matches, each with the text it matched."""
    return [f"{name}: {m.group(0)!r}" for name, rx in MATCHERS.items() if (m := rx.search(line))]


def _files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return sorted({f for f in out.decode().split("\0") if f})


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary (a NUL byte or not UTF-8) or a file the worktree no longer has."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_the_tree_tells_no_history():
    found = []
    for rel in _files():
        if rel == SELF or rel.startswith(SKIP_DIRS):
            continue
        text = _text(REPO / rel)
        if text is None:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            for hit in history_hits(line):
                if (rel, hit.split(":")[0]) not in ALLOW:
                    found.append(f"{rel}:{i}: {hit}  | {line.strip()[:120]}")
    assert not found, "history belongs to git log, not the tree:\n" + "\n".join(found)


# Made-up lines of each shape the patterns exist for (none of them is this project's history).
@pytest.mark.parametrize("line", [
    "make demo   # ~2 min over five runs in session 7",
    "Session 4 moved the parser to components/common.",
    "the numbers from the previous session",
    "in this session the seeds were 3/4/5",
    "measured in session; see the log",
    "the cache bug issue 21 fixed.",
    "a flaky step (issue 8).",
    "targets of issue 8 (accuracy >= 0.5).",
    "# --- exactly once: the lock (issue 2) ---",
    "see issue #7",
    "docs/x.md:10 numbers from commit 1a2b3c4 (before the fix)",
    "the model was built at 0a1b2c3",
    "the small run (abc1234) gave 0.5",
    "reproduced on 1234abc and 9f8e7d6c",
    "seed 0 of the v4 recipe",
    "the v3 recipe had no warm-up",
    "v3/v4: longer traces",
    "a 10K-row pool on this machine. Goal: <= 5 s.",
    "# process worker on this machine",
    "assert value == 1  # a file written before this change",
    "after this change the loop skips empty rows",
    "the code before paid twice",
    "the loader previously read every row",
    "the sampler used to draw from the full distribution",
    "files no longer in the list stay on disk",
    "# the old form: one row per example",
    "the batch size was 8, now 16",
    "the server now passes per-request seeds",
    "as the reviewer asked",
    "Review: the cut comes before the ban",
    "measured on 2025-06-14 with two threads",
])
def test_the_matcher_catches_history(line):
    assert history_hits(line), line


@pytest.mark.parametrize("line", [
    '@pytest.fixture(scope="session")',
    '"""Shared fixtures: a tiny real tokenizer and Qwen2 model, built once per session."""',
    "s3 = boto3.session.Session(profile_name=p)",
    "with requests.Session() as session:",
    "async with aiohttp.ClientSession() as session:",
    "for s in sessions:",
    'r"auth|authorization|credential|credentials|signature|sig|session[_-]?token|"',
    '"fingerprint": "855254ac34a1cbd1ed040f826fc7f199c78411faae2036e224fd7fd031c2d9fe",',
    "| model hash (SFT weights) | `664463b5cc8a1461` |",
    "| MLflow run | `31f5a9c2f578421eb5bbf35a4ede8670` (experiment `s1flow-tiny`), model `s1flow-tiny` v3 |",
    "ImageId: ami-0c2b0d3fb02824d92",
    "model: deepseek-v4-pro",
    "Groups: [&sg sg-0123456789abcdef0]",
    "from vllm.v1.engine.async_llm import AsyncLLM",
    'base_url: https://generativelanguage.googleapis.com/v1beta/openai/',
    "model: claude-3-5-sonnet-20241022",
    'assert (q.id, q.answer) == ("gneubig/aime-1983-2024-1983-1", "6")',
    "the tokenizer used to encode the prompts",
    "a port nothing listens on right now",
    "the model answers now;",
    "rows restart their position_ids at each example",
    "color = '#1f77b4'",
])
def test_the_matcher_leaves_code_alone(line):
    assert not history_hits(line), history_hits(line)
