"""Import directions between the packages of components/: the tree reads as the pipeline."""
import ast

import pytest

from tests.conftest import REPO
from tests.support.imports import COMPONENTS, direct_imports, module_file, package_of

# Lower layers first. A package may import its own layer and the ones before it, never a later one.
ORDER = ["common", "", "data", "distill", "inference", "curation", "training", "evaluation", "serving", "tracking",
         "pipeline"]
# And never these, whatever the order says.
FORBIDDEN = {"inference": {"data"}, "training": {"serving", "curation"}, "evaluation": {"serving", "curation"}}


def _edges():
    """(file, its package, an imported package), unique and sorted: the same ids in every process (pytest-xdist)."""
    edges = set()
    for f in sorted(COMPONENTS.rglob("*.py")):
        src = package_of(f)
        for mod in direct_imports(f):
            edges.add((f, src, package_of(module_file(mod))))
    return sorted(edges, key=lambda e: (str(e[0]), e[1], e[2]))


@pytest.mark.parametrize("f,src,dst", [e for e in _edges() if e[1] != e[2]],
                         ids=lambda v: str(v.relative_to(COMPONENTS)) if hasattr(v, "relative_to") else v)
def test_import_direction(f, src, dst):
    assert src in ORDER and dst in ORDER, f"{f}: package {src or dst!r} missing from ORDER"
    assert ORDER.index(dst) <= ORDER.index(src), f"{f}: {src or 'root'} imports the later package {dst or 'root'}"
    assert dst not in FORBIDDEN.get(src, set()), f"{f}: {src} must not import {dst}"


def test_every_package_is_placed():
    packages = {p.name for p in COMPONENTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(ORDER)


def test_nothing_outside_tests_imports_tests():
    """Profiles, fixtures-as-product and helpers live in the product; the tests are not a library."""
    offenders = []
    for f in sorted(REPO.rglob("*.py")):
        rel = f.relative_to(REPO)
        if rel.parts[0] in ("tests", ".venv", ".venv-vllm", "build") or rel.parts[0].startswith("."):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{rel}:{node.lineno} imports {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert not offenders, offenders
