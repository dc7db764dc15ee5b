"""The option letter a multiple-choice (GPQA) response commits to, or none.

A response is credited with a letter only when it commits to exactly one:

1. a final ``\\boxed{…}`` is the answer: ``\\boxed{C}`` (or ``\\boxed{\\text{C}}``, ``\\boxed{(C)}``) gives C, and
   any other boxed content (``\\boxed{12}``, ``\\boxed{A \\text{ or } C}``) gives no letter, whatever
   letters the text mentions before it;
2. else the last answer statement that names a letter: "Answer: C", "The answer is **C**", "**Answer:** C",
   "ANSWER IS D", "the correct answer is option (B)";
3. else the last parenthesised letter, "(C)", where ranges such as "(A)-(D)" are not answers;
4. else a response that is the letter alone.

A statement or a last parenthesised letter that names two options ("Answer: (A) or (C)", "A/C", "(B), (D)")
is ambiguous and gives no letter: no later rule is consulted, so a hedge is never credited.

    extract_choice("The answer is **C**.") -> "C";  extract_choice("Answer: (A) or (C)") -> ""
"""
from __future__ import annotations

import re

LETTERS = "ABCD"
_L = f"[{LETTERS}]"
_MARKUP = r"[\s*_]*"  # markdown emphasis around a letter or a statement's keyword
_BOXED = re.compile(r"\\boxed\s*\{")
_BOXED_CHOICE = re.compile(rf"^\s*(?:\\(?:text|mathrm|textbf|mathbf)\s*\{{)?\s*[(\[]?({_L})[)\]]?\s*\}}?\s*\.?\s*$")
_STATEMENT = re.compile(rf"(?i:\banswer){_MARKUP}(?:(?i:is\b)|[:：=])[\s*_:：]*(?i:(?:option|choice)\s*)?")
_LETTER_AT = re.compile(rf"[*_]*[(\[]?({_L})(?![A-Za-z0-9])[)\]]?[*_]*")
_ALTERNATIVE = re.compile(rf"\s*(?i:or|and|/|,|&|-|–|—|to|through)\s*[*_]*[(\[]?{_L}(?![A-Za-z0-9])")
_PAREN = re.compile(rf"\(({_L})\)")
_PAREN_RANGE = re.compile(rf"\({_L}\)\s*(?i:-|–|—|to|through)\s*\({_L}\)")
_PAREN_BEFORE = re.compile(rf"\({_L}\)\s*(?i:or|and|/|,|&)\s*$")
_ONLY = re.compile(rf"^\s*[*_]*[(\[]?({_L})[)\]]?[*_]*\s*\.?\s*$")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (braces balanced), None when there is none."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    i, depth = starts[-1], 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def _statement_choice(text: str) -> str | None:
    """The letter of the last answer statement that names one ('' when it names several); None: no such
    statement."""
    for statement in reversed(list(_STATEMENT.finditer(text))):
        m = _LETTER_AT.match(text, statement.end())
        if m is None:
            continue  # "the answer is a prime, namely (D)": this statement names no letter
        return "" if _ALTERNATIVE.match(text, m.end()) else m.group(1)
    return None


def _paren_choice(text: str) -> str:
    text = _PAREN_RANGE.sub(" ", text)
    hits = list(_PAREN.finditer(text))
    if not hits:
        return ""
    last = hits[-1]
    if _PAREN_BEFORE.search(text, 0, last.start()) or _ALTERNATIVE.match(text, last.end()):
        return ""  # "(A) or (C)"
    return last.group(1)


def extract_choice(text: str) -> str:
    """The one option letter ``text`` commits to ('' when it commits to none, or to several)."""
    boxed = last_boxed(text)
    if boxed is not None:
        m = _BOXED_CHOICE.match(boxed)
        return m.group(1) if m else ""
    stated = _statement_choice(text)
    if stated is not None:
        return stated
    if letter := _paren_choice(text):
        return letter
    m = _ONLY.match(text)
    return m.group(1) if m else ""


def grade_choice(predicted: str, gold_letter: str) -> bool:
    """Multiple choice (GPQA): the one option letter of the prediction equals the gold letter."""
    letter = extract_choice(predicted)
    return bool(letter) and letter == gold_letter.strip().upper()
