"""A shipped base model: the embedded world's stand-in for downloading Qwen2.5-Instruct.

s1 starts from a model someone else pre-trained; so does the embedded default. Pre-training the tiny
model until it has the skill (the probe-gated schedule) takes ~15 minutes on two cores, longer than the
rest of the demo together, so the project ships the result: ``pretrain.release`` names a directory with
the saved model and tokenizer and ``release.json``. The base-model stage installs it instead of
pre-training only when the release's fingerprint equals the active config's: the model and pre-training
params, the pool's domains and difficulty range, and the code that writes the corpus, the tokenizer and
the model. Any change there (another seed, a new trace format) pre-trains instead, and the
stage says why. ``s1flow release-base`` rebuilds the release; a test fails when the committed one is stale.

    status = release_status(release_dir(pretrain), fingerprint(model, pretrain, domains, 1, 6))
"""
from __future__ import annotations

import ast
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from components.config import ModelConfig, PretrainConfig

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = REPO / "components"
MANIFEST = "release.json"
FORMAT = "s1flow-base-release/2"
# Where the code that decides what the pre-trained model is (corpus, trace format, tokenizer, architecture,
# schedule) lives, and the functions a release is built by: the fingerprint covers these functions and every
# definition of these files they reach, as syntax (no docstrings, comments, imports or positions), so moving
# or documenting code elsewhere in the files leaves a release current.
FINGERPRINT_CODE = ("data/base_model.py", "data/tokenizer.py", "data/problems.py", "formatting.py")
FINGERPRINT_ROOTS = ("build_base_model", "corpus_questions", "probe_questions")
# PretrainConfig keys that do not shape the model: where a release lives, whether an unready one may be used.
NOT_FINGERPRINTED = {"release", "allow_unready"}
# ModelConfig keys that do not shape the model: the day a base model was released (the results page's flag)
MODEL_NOT_FINGERPRINTED = {"released"}


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _behaviour(node: ast.AST) -> ast.AST:
    """``node`` without docstrings and import statements (where a name comes from is not what it does)."""
    for child in ast.walk(node):
        body = getattr(child, "body", None)
        if isinstance(body, list):
            kept = [s for s in body if not isinstance(s, (ast.Import, ast.ImportFrom))]
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and kept and \
                    _is_docstring(kept[0]):
                kept = kept[1:]
            child.body = kept or [ast.Pass()]
    return node


def _definitions(files: tuple[str, ...], root: Path) -> dict[str, ast.AST]:
    """Top-level name -> the statement that binds it, over ``files`` (imports left out)."""
    out: dict[str, ast.AST] = {}
    for rel in files:
        for node in ast.parse((root / rel).read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            out[name.id] = node
    return out


def code_digest(files: tuple[str, ...] = FINGERPRINT_CODE, roots: tuple[str, ...] = FINGERPRINT_ROOTS,
                root: Optional[Path] = None) -> str:
    """sha256 of the definitions ``roots`` reach through the names they use, as syntax (files under ``root``,
    by default components/)."""
    definitions, seen, todo = _definitions(files, root or COMPONENTS), {}, list(roots)
    while todo:
        name = todo.pop()
        node = definitions.get(name)
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = ast.dump(_behaviour(node))
        todo += [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]
    return hashlib.sha256("\n".join(sorted(seen.values())).encode()).hexdigest()


def fingerprint(model: ModelConfig, pretrain: PretrainConfig, domains: list[str], min_difficulty: int,
                max_difficulty: int) -> str:
    """sha256 of everything that shapes the pre-trained model (not where a release lives)."""
    # the pinned commit of a hub model: none for the embedded model, so an unset one leaves releases as they were
    unset = {"revision"} if model.revision is None else set()
    state = {"model": model.model_dump(mode="json", exclude=MODEL_NOT_FINGERPRINTED | unset),
             "pretrain": pretrain.model_dump(mode="json", exclude=NOT_FINGERPRINTED),
             "domains": list(domains), "difficulty": [min_difficulty, max_difficulty],
             "code": code_digest()}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def release_dir(pretrain: PretrainConfig) -> Optional[Path]:
    """The configured release directory (relative paths are relative to the project root), or None."""
    if not pretrain.release:
        return None
    path = Path(pretrain.release)
    return path if path.is_absolute() else REPO / path


@dataclass(frozen=True)
class ReleaseStatus:
    usable: bool
    reason: str


def release_status(path: Optional[Path], wanted: str) -> ReleaseStatus:
    """Whether the release at ``path`` was built from exactly this config and code."""
    if path is None:
        return ReleaseStatus(False, "pretrain.release is not set")
    manifest = path / MANIFEST
    if not manifest.is_file():
        return ReleaseStatus(False, f"{manifest} not found")
    try:
        meta = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        return ReleaseStatus(False, f"{manifest} unreadable ({e})")
    if meta.get("format") != FORMAT:
        return ReleaseStatus(False, f"{manifest}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("fingerprint") != wanted:
        return ReleaseStatus(False, f"{path} was built from other params or code (fingerprint "
                             f"{str(meta.get('fingerprint'))[:12]}, this config {wanted[:12]}); rebuild it with "
                             "`s1flow release-base` or pre-train")
    return ReleaseStatus(True, f"{path} matches this config (fingerprint {wanted[:12]})")


def install_release(path: Path, out_dir: Path) -> dict:
    """Copy the released model and tokenizer to ``out_dir``; return the summary pre-training recorded."""
    meta = json.loads((path / MANIFEST).read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in path.iterdir():
        if f.is_file() and f.name != MANIFEST:
            shutil.copy2(f, out_dir / f.name)
    return {**meta["summary"], "source": "release", "release": str(path), "fingerprint": meta["fingerprint"]}


def write_release(built: Path, summary: dict, path: Path, wanted: str) -> Path:
    """Make ``path`` a release of the model built in ``built`` (model, tokenizer, manifest); replaces it."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(built, tmp)
    (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, "fingerprint": wanted, "summary": summary},
                                           indent=1, sort_keys=True) + "\n")
    shutil.rmtree(path, ignore_errors=True)
    tmp.replace(path)
    return path
