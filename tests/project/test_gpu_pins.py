"""The one (vLLM, torch, transformers, Ray) tuple of the gpu extra holds together: vLLM's own requirements accept
the project's torch and transformers pins, the vLLM venv runs that release, and every vLLM name Ray 2.60's
ray.data.llm vLLM stage uses exists in it (Ray's own `llm` extra pins an older vLLM; we do not install it)."""
import ast
import re
import tomllib
from importlib.metadata import distribution, version
from pathlib import Path

from packaging.requirements import Requirement

from tests.conftest import REPO


def _pins() -> dict:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["gpu"]]
    return {r.name: r for r in reqs}


def test_the_gpu_extra_pins_one_vllm_that_accepts_our_torch_and_transformers():
    pins = _pins()
    vllm_pin = str(pins["vllm"].specifier)
    assert re.fullmatch(r"==\d+\.\d+\.\d+", vllm_pin), vllm_pin  # exactly one release
    torch_pin = str(pins["torch"].specifier).removeprefix("==")
    assert version("torch").split("+")[0] == torch_pin and version("ray") == str(pins["ray"].specifier)[2:]
    # Ray's llm extra wants another vLLM (read from the installed Ray): the reason the gpu extra does not use it
    ray_llm = [Requirement(r) for r in distribution("ray").requires if "extra == \"llm\"" in r]
    ray_vllm = next(r for r in ray_llm if r.name == "vllm")
    assert str(ray_vllm.specifier) != vllm_pin
    import pytest

    from tests.support.vllm_venv import VLLM_PYTHON
    site = next(Path(VLLM_PYTHON).parents[1].glob("lib/python3*/site-packages"), None)
    meta = next(site.glob("vllm*-*.dist-info/METADATA"), None) if site else None
    if meta is None:
        pytest.skip("no vLLM venv (run `make vllm-env`)")
    text = meta.read_text()
    assert re.search(r"^Version: (.+)$", text, re.M).group(1) == vllm_pin[2:]  # the venv runs the pinned release
    requires = [Requirement(line.split(": ", 1)[1]) for line in text.splitlines() if line.startswith("Requires-Dist: ")]
    vllm_torch = [r for r in requires if r.name == "torch" and (r.marker is None or r.marker.evaluate())]
    vllm_transformers = next(r for r in requires if r.name == "transformers")
    assert all(r.specifier.contains(version("torch"), prereleases=True) for r in vllm_torch)
    assert vllm_transformers.specifier.contains(version("transformers"))


def _ray_vllm_names() -> list[list[str]]:
    """vLLM names used by Ray's vLLM batch stage, as groups of alternatives (a try/except ImportError)."""
    import ray
    source = Path(ray.__file__).parent / "llm/_internal/batch/stages/vllm_engine_stage.py"
    tree = ast.parse(source.read_text())
    groups: list[list[str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError"
                                             for h in node.handlers):
            tried = [n for block in [node.body, *[h.body for h in node.handlers]] for n in block
                     if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("vllm")]
            for alias in {a.name for n in tried for a in n.names}:
                groups.append([f"{n.module}.{alias}" for n in tried if alias in {a.name for a in n.names}])
    seen = {name for group in groups for name in group}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vllm"):
            groups += [[f"{node.module}.{a.name}"] for a in node.names if f"{node.module}.{a.name}" not in seen]
    # attribute chains such as vllm.AsyncLLMEngine.from_engine_args or vllm.outputs.RequestOutput
    for chain in set(re.findall(r"\bvllm(?:\.[A-Za-z_]\w*)*\.[A-Z]\w*(?:\.[a-z_]\w*)?", source.read_text())):
        groups.append([chain])
    return groups


def test_every_vllm_name_rays_vllm_stage_uses_exists_in_the_pinned_vllm():
    import json

    from tests.support.vllm_venv import run_checks
    groups = _ray_vllm_names()
    assert len(groups) > 8 and ["vllm.AsyncEngineArgs"] in groups
    verdict = run_checks("tests.support.vllm_api_check", [json.dumps(groups)], "VLLM_API")
    assert verdict["vllm"].startswith(str(_pins()["vllm"].specifier)[2:])
    assert verdict["missing"] == [], verdict
