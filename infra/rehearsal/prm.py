"""A process reward model in the shape of Qwen2.5-Math-PRM, made locally for the rehearsal (random weights).

s1-32b's REBASE loads ``Qwen/Qwen2.5-Math-PRM-7B`` by name: remote code (``trust_remote_code``), a tokenizer with
the ``<extra_0>`` step separator and a chat template, and a model whose first output is a (batch, sequence, 2)
tensor of class logits read at each separator (components/inference/rebase.py, ``QwenMathPRM``). This writes a
directory with the same parts around tiny-base's tokenizer and a 2-layer Qwen2 backbone, and a modeling file the
directory's ``config.json`` names in ``auto_map``, so the same loader reads it by its path. The directory's name
carries ``Qwen`` and ``Math-PRM``, as the hub name does.

    python infra/rehearsal/prm.py --base releases/tiny-base --out runs/s1-32b-rehearsal/inputs/Qwen2.5-Math-PRM-rehearsal
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

MODELING = '''"""A Qwen2 backbone with a 2-class head on every position (Qwen2.5-Math-PRM's output shape)."""
import torch
from transformers import PreTrainedModel, Qwen2Config, Qwen2Model


class RehearsalPRMConfig(Qwen2Config):
    model_type = "rehearsal_prm"


class RehearsalPRM(PreTrainedModel):
    config_class = RehearsalPRMConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.score = torch.nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return (self.score(hidden),)
'''

SEPARATOR = "<extra_0>"


def make_prm(base: Path, out: Path, seed: int = 0) -> Path:
    """Write the PRM directory (tokenizer from ``base`` plus the separator; random weights)."""
    import sys

    import torch
    from transformers import AutoConfig, AutoTokenizer
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "modeling_prm.py").write_text(MODELING)
    sys.path.insert(0, str(out))
    try:
        from modeling_prm import RehearsalPRM, RehearsalPRMConfig
    finally:
        sys.path.remove(str(out))
        sys.modules.pop("modeling_prm", None)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens({"additional_special_tokens": [SEPARATOR]})
    backbone = AutoConfig.from_pretrained(base).to_dict()
    keep = {k: backbone[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                     "num_key_value_heads", "max_position_embeddings", "rms_norm_eps")
            if k in backbone}
    config = RehearsalPRMConfig(**keep, vocab_size=len(tokenizer), num_hidden_layers=2,
                                pad_token_id=tokenizer.pad_token_id)
    config.auto_map = {"AutoConfig": "modeling_prm.RehearsalPRMConfig", "AutoModel": "modeling_prm.RehearsalPRM"}
    torch.manual_seed(seed)
    RehearsalPRM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="releases/tiny-base")
    ap.add_argument("--out", default="runs/s1-32b-rehearsal/inputs/Qwen2.5-Math-PRM-rehearsal")
    a = ap.parse_args()
    print(make_prm(Path(a.base), Path(a.out)))


if __name__ == "__main__":
    main()
