"""Decontamination: drop questions sharing an n-gram (default 8) with any eval question.

Builds one hash set of the evaluation sets' normalised word n-grams, then
checks each pool question against it: linear in pool size, no pairwise
comparison. Texts shorter than n words contribute themselves as one gram, so
exact matches of short questions are caught too.

The n-gram hashes are 64-bit blake2b digests of the normalised words
(:func:`components.common.hashing.stable_hash`), never Python's ``hash()``:
that is salted per process, and the index is built in the driver but probed
in Ray Data workers, which must compute the same numbers.

    index = NgramIndex.build(eval_texts, n=8); index.contaminated(question)
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

from components.common.hashing import stable_hash

_WORD = re.compile(r"[a-z0-9]+")


def normalise(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    return _WORD.findall(text)


def ngrams(words: list[str], n: int) -> set[int]:
    """Stable 64-bit hashes of the word n-grams (the whole text when shorter than n words)."""
    if len(words) < n:
        return {stable_hash(" ".join(words))} if words else set()
    return {stable_hash(" ".join(words[i:i + n])) for i in range(len(words) - n + 1)}


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
        if len(words) < self.n:
            return bool(words) and stable_hash(" ".join(words)) in self.grams
        grams = self.grams
        return any(stable_hash(" ".join(words[i:i + self.n])) in grams for i in range(len(words) - self.n + 1))
