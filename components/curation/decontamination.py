"""Decontamination: drop questions sharing an n-gram (default 8) with any eval question.

Builds one hash set of the evaluation sets' normalised token n-grams, then
checks each pool question against it: linear in pool size, no pairwise
comparison. Texts shorter than n tokens contribute themselves as one gram, so
exact matches of short questions are caught too.

Tokens are Unicode words (NFKC, case-folded; letters, digits and their
combining marks, in any script), except in scripts written without spaces
(Han, kana, Thai, Lao, Khmer, Myanmar), where each character is a token: n-grams
there are character n-grams. A text with no token at all (only punctuation or
symbols) contributes nothing and is never contaminated: it shares nothing with
anything.

The n-gram hashes are 64-bit blake2b digests of the normalised words
(:func:`components.common.hashing.stable_hash`), never Python's ``hash()``:
that is salted per process, and the index is built in the driver but probed
in Ray Data workers, which must compute the same numbers.

    index = NgramIndex.build(eval_texts, n=8); index.contaminated(question)
"""
from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from components.common.hashing import stable_hash

# scripts written without spaces between words: one token per character
_SPACELESS = ("\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u19e0-\u19ff\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff"
              "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f")


def _ranges(codepoints: Iterable[int]) -> str:
    out, start, prev = [], None, None
    for cp in codepoints:
        if start is None:
            start = prev = cp
        elif cp == prev + 1:
            prev = cp
        else:
            out.append(f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
            start = prev = cp
    if start is not None:
        out.append(f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
    return "".join(out)


@lru_cache(maxsize=1)
def _token_re() -> re.Pattern:
    """Words: letters and digits (``\\w`` without ``_``) with their combining marks (Devanagari vowel signs are
    marks, which ``\\w`` leaves out); a character of a spaceless script is a token alone."""
    marks = _ranges(cp for cp in range(min(sys.maxunicode + 1, 0xE01F0))
                    if unicodedata.category(chr(cp))[0] == "M")
    return re.compile(f"[{_SPACELESS}]|(?:(?![{_SPACELESS}_])[\\w{marks}])+")


def normalise(text: str) -> list[str]:
    """The tokens of ``text`` (see the module doc): NFKC, case-folded."""
    return _token_re().findall(unicodedata.normalize("NFKC", text).casefold())


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
            if words:  # a text of no tokens must not match every other token-less text
                grams |= ngrams(words, n)
                exact.add(" ".join(words))
        return cls(n, grams, exact)

    def contaminated(self, text: str) -> bool:
        words = normalise(text)
        if not words:
            return False
        if " ".join(words) in self.exact:
            return True
        if len(words) < self.n:
            return bool(words) and stable_hash(" ".join(words)) in self.grams
        grams = self.grams
        return any(stable_hash(" ".join(words[i:i + self.n])) in grams for i in range(len(words) - self.n + 1))
