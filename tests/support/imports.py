"""Static import graph of components/ (every import statement, lazy ones inside functions included)."""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

from tests.conftest import REPO

COMPONENTS = REPO / "components"


def module_file(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


@lru_cache(maxsize=None)
def direct_imports(path: Path) -> frozenset[str]:
    """The components.* modules ``path`` imports (``from X import name`` counts X.name when it is a module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("components")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("components"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")}
    return frozenset(m for m in out if module_file(m))


def closure(module: str) -> set[Path]:
    """Files of every components module ``module`` reaches (parent packages' __init__ included)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        mod = todo.pop()
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__
            f = module_file(".".join(parts[:i]))
            if f and f not in seen:
                seen.add(f)
                todo += list(direct_imports(f))
    return seen


def package_of(path: Path) -> str:
    """The top-level package under components/ ('' for the shared schema at the root)."""
    rel = path.relative_to(COMPONENTS)
    return rel.parts[0] if len(rel.parts) > 1 else ""
