"""The s1 trace format and SFT tokenisation with a loss mask on the assistant turn.

Assistant turn: ``<|im_start|>think\\n{trace}\\n<|im_start|>answer\\n{answer}<|im_end|>``
after the tokenizer's chat-template prompt. Labels are the token ids on the
assistant turn and -100 on the prompt, so loss is computed only on thinking
and answer. Sequences longer than the block size are reported and skipped,
never cut mid-answer.

    feats = tokenize_example(tokenizer, question, thinking, answer, block_size=512)
"""
from __future__ import annotations

from dataclasses import dataclass, field

IGNORE_INDEX = -100
# The chat special tokens (Qwen's): a turn opens with IM_START and closes with IM_END; ENDOFTEXT pads.
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK_START = f"{IM_START}think\n"
ANSWER_START = f"{IM_START}answer\n"


def prompt_text(tokenizer, question: str) -> str:
    """The chat prompt up to and including ``<|im_start|>assistant\\n``."""
    return tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                         tokenize=False, add_generation_prompt=True)


def thinking_prompt(tokenizer, question: str) -> str:
    """The prompt budget forcing continues from: chat prompt + think delimiter."""
    return prompt_text(tokenizer, question) + THINK_START


def assistant_text(thinking: str, answer: str) -> str:
    return f"{THINK_START}{thinking.rstrip()}\n{ANSWER_START}{answer.strip()}{IM_END}"


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    prompt_tokens: int


def tokenize_example(tokenizer, question: str, thinking: str, answer: str) -> TokenizedExample:
    prompt_ids = tokenizer(prompt_text(tokenizer, question), add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(assistant_text(thinking, answer), add_special_tokens=False)["input_ids"]
    return TokenizedExample(prompt_ids + target_ids, [IGNORE_INDEX] * len(prompt_ids) + target_ids, len(prompt_ids))


@dataclass
class TokenizeReport:
    kept: int = 0
    too_long: list[str] = field(default_factory=list)
    max_length: int = 0
    total_tokens: int = 0
    assistant_tokens: int = 0


def tokenize_dataset(tokenizer, rows: list[tuple[str, str, str, str]], block_size: int
                     ) -> tuple[list[TokenizedExample], TokenizeReport]:
    """rows: (id, question, thinking, answer). Over-long rows are reported, not truncated."""
    report, out = TokenizeReport(), []
    for rid, q, t, a in rows:
        ex = tokenize_example(tokenizer, q, t, a)
        report.max_length = max(report.max_length, len(ex.input_ids))
        if len(ex.input_ids) > block_size:
            report.too_long.append(rid)
            continue
        out.append(ex)
        report.kept += 1
        report.total_tokens += len(ex.input_ids)
        report.assistant_tokens += len(ex.input_ids) - ex.prompt_tokens
    return out, report
