"""Prompt token ids for the server, with request text tokenized as text.

A chat template's own control tokens (``<|im_start|>``, ``<|im_end|>``) are the
turn structure. The same strings inside a message's content are the user's text:
tokenized as text (special tokens split), so ``"<|im_end|><|im_start|>system"`` in
a user message cannot close its turn and open a system one.

How: the template is rendered with a placeholder for each message's content, the
render is cut at its control tokens (each becomes its id), and each piece between
them is tokenized with the contents put back and special tokens split. A tokenizer
cuts text at special tokens before anything else, so for content without them the
ids are exactly those of tokenizing the whole rendered prompt.

    ids = chat_ids(tokenizer, [{"role": "user", "content": "hi <|im_end|>"}], suffix="<|im_start|>think\n")
"""
from __future__ import annotations

import re
from typing import Optional

from components.serving.protocol import APIError


def _placeholder(i: int) -> str:
    return f"\ue000{i}\ue001"  # private-use characters: no chat template writes them


def _specials(tokenizer) -> list[str]:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found = {t.content for t in added.values() if getattr(t, "special", False)}
    return sorted(found | set(tokenizer.all_special_tokens), key=len, reverse=True)


def _encode(tokenizer, text: str, split: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=split)["input_ids"] if text else []


def text_ids(tokenizer, text: str) -> list[int]:
    """``text`` as the user's text: special-token strings in it tokenized as text."""
    return _encode(tokenizer, text, split=True)


def templated_ids(tokenizer, text: str) -> list[int]:
    """An already rendered prompt (its special tokens are the structure), tokenized as the engines would."""
    return _encode(tokenizer, text, split=False)


def chat_ids(tokenizer, messages: list[dict], suffix: str = "", params: Optional[list[str]] = None) -> list[int]:
    """The chat template over ``messages`` (with the generation prompt) and then ``suffix`` (template text, its
    special tokens kept), each message's content tokenized as text. ``params``: the request field of each
    message's content, for the error when the template does not insert contents as given."""
    holders = [_placeholder(i) for i in range(len(messages))]
    shaped = [{**m, "content": h} for m, h in zip(messages, holders)]
    render = tokenizer.apply_chat_template(shaped, tokenize=False, add_generation_prompt=True) + suffix
    if any(render.count(h) != 1 for h in holders):  # the template rewrites contents: render them in place
        return _fallback(tokenizer, messages, suffix, params)
    specials = _specials(tokenizer)
    pattern = re.compile("(" + "|".join(re.escape(t) for t in specials) + ")") if specials else None
    pieces = pattern.split(render) if pattern else [render]
    ids: list[int] = []
    for k, piece in enumerate(pieces):
        if k % 2:  # a control token of the template
            ids.append(tokenizer.convert_tokens_to_ids(piece))
            continue
        for h, m in zip(holders, messages):
            piece = piece.replace(h, m["content"])
        ids += _encode(tokenizer, piece, split=True)
    return ids


def _fallback(tokenizer, messages: list[dict], suffix: str, params: Optional[list[str]]) -> list[int]:
    specials = _specials(tokenizer)
    for i, m in enumerate(messages):
        if hit := next((t for t in specials if t in m["content"]), None):
            param = params[i] if params else f"messages.{i}.content"
            raise APIError(400, f"{param}: contains {hit!r}, a control token of this model's chat template, which "
                           "this template cannot keep as text; remove it", param=param)
    render = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + suffix
    return templated_ids(tokenizer, render)
