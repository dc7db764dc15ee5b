"""Stage entry point: the selection in the s1 chat format, tokenized with the loss mask."""
from __future__ import annotations

from dataclasses import asdict

from components.config import ModelConfig
from components.formatting import tokenize_dataset
from components.paths import Paths, base_model_ref
from components.records import Example, read_jsonl, write_json, write_jsonl


def tokenize_stage(block_size: int, model: ModelConfig, paths: Paths) -> dict:
    """Render the selection in the s1 chat format and tokenize it (loss mask on the assistant turn)."""
    from transformers import AutoTokenizer
    revision = model.revision if model.source == "hub" else None  # a hub id's pinned commit
    tokenizer = AutoTokenizer.from_pretrained(base_model_ref(model, paths), revision=revision, trust_remote_code=False)
    rows = [(e.question.id, e.question.question, e.trace.thinking, e.trace.answer)
            for e in read_jsonl(paths.selected, Example)]
    examples, report = tokenize_dataset(tokenizer, rows, block_size)
    write_jsonl(paths.sft_tokens, [asdict(e) for e in examples])
    write_json(paths.metric("tokenize_report.json"), asdict(report))
    if report.too_long:
        print(f"warning: {len(report.too_long)} examples exceed sft.block_size={block_size} and were "
              f"left out (longest {report.max_length} tokens); raise sft.block_size to keep them")
    return asdict(report)
