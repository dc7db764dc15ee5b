"""Mathematics Subject Classification domains and the deterministic classifier.

The real profile classifies with an LLM prompted with the MSC list (components/curation/filtering.py);
the tiny profile uses :func:`classify`, which recognises each procedural
family and falls back to keyword rules.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from components.data.problems import parse_any

MSC_BY_DOMAIN = {"arithmetic": "97", "algebra": "08", "number_theory": "11", "combinatorics": "05"}

_KEYWORDS = [
    (re.compile(r"\b(ways|choose|arrange|count)\b", re.I), "05"),
    (re.compile(r"\b(digit|prime|divisible|remainder|gcd)\b", re.I), "11"),
    (re.compile(r"\b(solve|equation|x)\b", re.I), "08"),
]


@lru_cache(maxsize=1)
def msc_domains() -> dict[str, dict]:
    """The 61 MSC domains s1 classifies into, keyed by code."""
    text = resources.files("components").joinpath("data/msc_domains.json").read_text()
    return {d["code"]: d for d in json.loads(text)}


def classify(question: str) -> str:
    """MSC code of a question (deterministic)."""
    hit = parse_any(question)
    if hit:
        return hit[0].msc
    for pattern, code in _KEYWORDS:
        if pattern.search(question):
            return code
    return "97"


CLASSIFY_INSTRUCTION = ("Classify the question into one domain of the Mathematics Subject Classification (MSC). "
                        "Domains:\n{domains}\nReply with the two-digit code only.")


def classification_messages(question: str) -> list[dict]:
    """The prompt s1 used in spirit: the MSC list, then the question; the reply is a code."""
    listing = "\n".join(f"{code} {d['title']}" for code, d in sorted(msc_domains().items()))
    return [{"role": "system", "content": CLASSIFY_INSTRUCTION.format(domains=listing)},
            {"role": "user", "content": f"Question: {question}"}]


def parse_msc(reply: str) -> str:
    """The first known two-digit MSC code in an LLM's reply, or '' when there is none."""
    known = msc_domains()
    for code in re.findall(r"\b(\d{2})\b", reply):
        if code in known:
            return code
    return ""
