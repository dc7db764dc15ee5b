"""Where every stage reads and writes: ``data/<profile>/``, ``models/<profile>/``, ``metrics/<profile>/``,
``plots/<profile>/`` and ``runs/<profile>/`` (resumable work). Shared by every stage, DVC and Prefect.

    paths = Paths.for_profile("tiny"); paths.pool  # data/tiny/pool.jsonl
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.config import ModelConfig


@dataclass(frozen=True)
class Paths:
    root: Path
    profile: str

    @classmethod
    def for_profile(cls, profile: str, root: str | Path = ".") -> "Paths":
        return cls(Path(root), profile)

    def _p(self, kind: str, name: str) -> Path:
        return self.root / kind / self.profile / name

    @property
    def base_model(self) -> Path: return self._p("models", "base")
    @property
    def sft_model(self) -> Path: return self._p("models", "sft")
    @property
    def pool(self) -> Path: return self._p("data", "pool.jsonl")
    @property
    def heldout(self) -> Path: return self._p("data", "heldout.jsonl")
    @property
    def traces(self) -> Path: return self._p("data", "traces.jsonl")
    @property
    def filtered(self) -> Path: return self._p("data", "filtered.jsonl")
    @property  # after quality and decontamination, before difficulty: what the paper's ablations draw from
    def quality_pool(self) -> Path: return self._p("data", "quality_pool.jsonl")
    @property
    def selected(self) -> Path: return self._p("data", "s1k.jsonl")
    @property
    def sft_tokens(self) -> Path: return self._p("data", "sft_tokens.jsonl")
    @property
    def eval_samples(self) -> Path: return self._p("data", "eval_samples.jsonl")
    @property
    def sft_work(self) -> Path: return self._p("runs", "sft")
    @property
    def quarantine(self) -> Path: return self._p("data", "quarantine.jsonl")
    @property
    def runs(self) -> Path: return self.root / "runs" / self.profile
    def distill_shards(self, fingerprint: str) -> Path: return self._p("runs", f"distill/{fingerprint}")
    def metric(self, name: str) -> Path: return self._p("metrics", name)
    def plot(self, name: str) -> Path: return self._p("plots", name)


def base_model_ref(model: ModelConfig, paths: Paths) -> str:
    """Where the base model loads from: the built directory, or the hub id / local path in params."""
    return model.name if model.source == "hub" else str(paths.base_model)


def absolute_model_ref(ref: str | Path) -> str:
    """A local directory made absolute (Ray workers run in another cwd); a hub id unchanged."""
    return str(Path(ref).resolve()) if Path(ref).exists() else str(ref)
