"""Pre-training resume state: safetensors + JSON only, keyed by everything that shapes the model."""
import ast

import pytest
import torch

from components.config import ModelConfig, PretrainConfig
from components.data.base_model import _packed_blocks, build_model, pretrain
from tests.conftest import REPO

MODEL = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
CFG = PretrainConfig(steps=6, batch_size=2, block_size=16, warmup_steps=1)


def _blocks(seed=0):
    g = torch.Generator().manual_seed(seed)
    return _packed_blocks([torch.randint(3, 100, (40,), generator=g).tolist() for _ in range(10)], 16, 0)


def _killed_run(model, blocks, ckpt, die_at=5):
    """Pre-train until the forward pass of step ``die_at`` (checkpoint every 2 steps), then 'die'."""
    calls, original = {"n": 0}, model.forward

    def dying_forward(*a, **kw):
        calls["n"] += 1
        if calls["n"] == die_at:
            raise KeyboardInterrupt
        return original(*a, **kw)
    model.forward = dying_forward
    with pytest.raises(KeyboardInterrupt):
        pretrain(model, blocks, CFG, checkpoint=ckpt, checkpoint_every=2)
    assert ckpt.exists()


def _unpickling_calls(tree: ast.AST) -> list[int]:
    """Lines of calls that may unpickle: pickle.load(s), and torch.load without weights_only=True."""
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        if owner == "pickle" and node.func.attr in ("load", "loads"):
            hits.append(node.lineno)
        elif owner == "torch" and node.func.attr == "load":
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            hits.append(node.lineno) if not safe else None
    return hits


def test_no_unpickling_anywhere_in_components_or_flows():
    hits = [f"{p.relative_to(REPO)}:{i}" for root in ("components", "flows") for p in sorted((REPO / root).rglob("*.py"))
            for i in _unpickling_calls(ast.parse(p.read_text()))]
    assert not hits, f"unpickling code: {hits}"
    assert _unpickling_calls(ast.parse("torch.load(f)\npickle.loads(b)\ntorch.load(f, weights_only=False)")) == [1, 2, 3]


def test_state_is_a_safetensors_file_with_a_json_header(tmp_path):
    import json

    from safetensors import safe_open
    ckpt = tmp_path / "pretrain.ckpt"
    _killed_run(build_model(MODEL, 100, 0, 2), _blocks(), ckpt)
    with safe_open(str(ckpt), "pt") as f:  # a torch.save zip would not open as safetensors
        header = json.loads(f.metadata()["s1flow"])
        names = set(f.keys())
    assert header["step"] == 4 and len(header["losses"]) == 4 and len(header["key"]) == 64
    assert "generator" in names and any(n.startswith("model.") for n in names)
    assert any(n.startswith("optimizer.") for n in names)


@pytest.mark.parametrize("change", ["corpus", "init_seed", "architecture"])
def test_a_state_from_another_model_or_corpus_is_never_resumed(tmp_path, change):
    """Same pre-training config, but another tokenized corpus / model seed / model shape: start over,
    and end exactly where an uninterrupted run of the new setting ends (foreign weights are never resumed)."""
    ckpt = tmp_path / "pretrain.ckpt"
    _killed_run(build_model(MODEL, 100, 0, 2), _blocks(), ckpt)
    other = {"corpus": (MODEL, _blocks(seed=1)),
             "init_seed": (MODEL.model_copy(update={"seed": MODEL.seed + 1}), _blocks()),
             "architecture": (MODEL.model_copy(update={"intermediate_size": 96}), _blocks())}[change]
    ref = pretrain(build_model(other[0], 100, 0, 2), other[1], CFG)
    losses = pretrain(build_model(other[0], 100, 0, 2), other[1], CFG, checkpoint=ckpt, checkpoint_every=2)
    assert len(losses) == CFG.steps and losses == pytest.approx(ref, rel=1e-5)


def test_a_torn_state_file_starts_over(tmp_path):
    ckpt = tmp_path / "pretrain.ckpt"
    ckpt.write_bytes(b"\x00garbage")
    losses = pretrain(build_model(MODEL, 100, 0, 2), _blocks(), CFG, checkpoint=ckpt, checkpoint_every=2)
    assert len(losses) == CFG.steps
