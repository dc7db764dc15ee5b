"""Decontamination: drop questions sharing an n-gram (default 8) with any eval question.

Builds one hash set of the evaluation sets' normalised word n-grams, then
checks each pool question against it: linear in pool size, no pairwise
comparison. Texts shorter than n words contribute themselves as one gram, so
exact matches of short questions are caught too.

    index = NgramIndex.build(eval_texts, n=8); index.contaminated(question)
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

_WORD = re.compile(r"[a-z0-9]+")


def normalise(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    return _WORD.findall(text)


def ngrams(words: list[str], n: int) -> set[int]:
    if len(words) < n:
        return {hash(tuple(words))} if words else set()
    return {hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1)}


@dataclass
class NgramIndex:
    n: int
    grams: set[int]
    exact: set[str]

    @classmethod
    def build(cls, texts: Iterable[str], n: int = 8) -> "NgramIndex":
        grams: set[int] = set()
        exact: set[str] = set()
        for t in texts:
            words = normalise(t)
            grams |= ngrams(words, n)
            exact.add(" ".join(words))
        return cls(n, grams, exact)

    def contaminated(self, text: str) -> bool:
        words = normalise(text)
        if " ".join(words) in self.exact:
            return True
        return any(g in self.grams for g in ngrams(words, self.n))
