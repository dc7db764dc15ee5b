"""SFT really learns: the loss on the s1-format traces ends far below the untrained model's."""
import math

import torch

from components.config import PoolConfig, SFTConfig, TeacherConfig
from components.data.pool import generate_pool
from components.distill.teachers import ProgrammaticTeacher
from components.formatting import IGNORE_INDEX, tokenize_dataset
from components.training.sft import train_sft


def _loss(model_dir, examples) -> float:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            labels = torch.tensor([ex.labels])
            out = model(input_ids=torch.tensor([ex.input_ids]), labels=labels)
            n = int((labels[:, 1:] != IGNORE_INDEX).sum())
            total, count = total + out.loss.item() * n, count + n
    return total / count


def test_sft_loss_ends_far_below_the_untrained_loss(tiny_model_dir, tiny_engine, tmp_path):
    teacher = ProgrammaticTeacher(TeacherConfig(slip_probability=0))
    qs = generate_pool(PoolConfig(size=8, max_difficulty=2, malformed_fraction=0))
    rows = [(q.id, q.question, t.thinking, t.answer) for q in qs for t in [teacher.solve(q)]]
    examples = tokenize_dataset(tiny_engine.tokenizer, rows, block_size=512)[0]
    untrained = _loss(tiny_model_dir, examples)
    assert untrained > 0.8 * math.log(len(tiny_engine.tokenizer))  # near uniform over the vocabulary
    cfg = SFTConfig(epochs=30, global_batch_size=8, per_device_batch_size=8, deepspeed="never", learning_rate=3e-3,
                    warmup_ratio=0.0)
    summary = train_sft(cfg, tiny_model_dir, examples, tmp_path / "sft", tmp_path / "work")
    trained = _loss(tmp_path / "sft", examples)
    assert trained < 0.6 * untrained, (untrained, trained)  # measured: 5.74 -> 3.01
    assert abs(summary["final_loss"] - trained) < 0.5 * untrained  # the reported loss is the real one
