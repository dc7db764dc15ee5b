"""The stage registry is the single truth: dvc.yaml, entry signatures, the code each stage runs."""
import ast
import inspect
import json

import pytest

from components.config import read_params
from components.pipeline.dvc_yaml import render
from components.pipeline.project import project_params
from components.pipeline.registry import (
    COMPONENTS,
    SHARED_CODE,
    STAGES,
    WHOLE_PROFILE,
    code_files,
    run_stage,
    stage_arguments,
)
from tests.conftest import REPO
from tests.support.imports import closure


def test_committed_dvc_yaml_is_the_rendered_registry():
    assert (REPO / "dvc.yaml").read_text() == render(), "dvc.yaml drifted: run `s1flow dvc-yaml > dvc.yaml`"


def test_dvc_yaml_runs_every_stage_through_the_committed_launcher():
    """`.venv/bin/dvc repro` needs no venv on PATH: each command is bin/s1flow, an executable in the project."""
    import os

    import yaml

    from components.pipeline.dvc_yaml import LAUNCHER
    stages = yaml.safe_load(render())["stages"]
    assert [s["cmd"] for s in stages.values()] == [f"{LAUNCHER} stage {name}" for name in STAGES]
    assert os.access(REPO / LAUNCHER, os.X_OK)


def test_each_stage_result_has_one_metrics_file_to_read_back_from():
    """A stage dvc.lock records as up to date gives the flow its result from its metrics file."""
    from components.paths import Paths
    for name, stage in STAGES.items():
        assert len(stage.metrics(Paths.for_profile("tiny"))) == 1, name


def test_stage_order_is_the_pipeline():
    assert list(STAGES) == ["base-model", "collect", "distill", "filter", "select", "tokenize", "train", "evaluate",
                            "register"]


@pytest.mark.parametrize("name", list(STAGES))
def test_entry_takes_exactly_the_declared_config(name):
    stage = STAGES[name]
    params = inspect.signature(stage.function()).parameters
    assert set(params) == {*stage.params, "paths", *stage.services}, name
    assert stage.doc, f"{name}: the entry function needs a one-line docstring (s1flow stages prints it)"


@pytest.mark.parametrize("name", [n for n, s in STAGES.items() if WHOLE_PROFILE not in s.params.values()])
def test_a_stage_never_sees_the_whole_profile(name):
    """Stages that declare sections cannot reach an undeclared one: they are never handed the profile,
    and no module they run loads params.yaml itself."""
    from components.config import parse_profile
    stage = STAGES[name]
    args = stage_arguments(stage, parse_profile({}, "tiny"))
    assert not any(type(v).__name__ == "ProfileConfig" for v in args.values())
    for f in closure(stage.entry.split(":")[0]):
        if f.name == "config.py":
            continue
        names = {n.id for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Name)}
        names |= {a.name for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ImportFrom)
                  for a in n.names}
        assert not names & {"ProfileConfig", "load_config", "parse_profile"}, f"{name}: {f} reads the whole profile"


@pytest.mark.parametrize("name", list(STAGES))
def test_declared_code_covers_everything_the_stage_runs(name):
    """Editing any module a stage runs must rerun it (DVC deps and the Prefect cache key hash this list)."""
    stage = STAGES[name]
    declared = set(code_files(name))
    modules = [stage.entry.split(":")[0], *(ref.split(":")[0] for ref in stage.services.values())]
    ran = set().union(*(closure(m) for m in modules))
    missing = sorted(str(f.relative_to(COMPONENTS)) for f in ran - declared)
    assert not missing, f"{name}: add to its registry code: {missing}"


def test_changing_an_undeclared_key_does_not_change_a_stage_key_and_a_declared_one_does():
    from components.config import parse_profile
    from components.pipeline.ledger import stage_cache_key
    base = parse_profile({}, "tiny")
    assert stage_cache_key("filter", base) == stage_cache_key("filter", parse_profile({"evaluate": {"seed": 9}}, "tiny"))
    assert stage_cache_key("filter", base) != stage_cache_key("filter", parse_profile({"engine": {"batch_size": 7}},
                                                                                      "tiny"))
    assert stage_cache_key("evaluate", base) != stage_cache_key("evaluate", parse_profile(
        {"engine": {"unlimited_thinking_tokens": 512}}, "tiny"))
    assert stage_cache_key("collect", base) != stage_cache_key("collect", parse_profile({"heldout": {"size": 50}},
                                                                                        "tiny"))
    assert stage_cache_key("tokenize", base) == stage_cache_key("tokenize", parse_profile({"sft": {"epochs": 1}}, "tiny"))


def test_unknown_stage_is_refused_by_name(tmp_path):
    from components.config import parse_profile
    from components.paths import Paths
    with pytest.raises(ValueError, match="unknown stage 'trian'"):
        run_stage("trian", parse_profile({}, "tiny"), Paths.for_profile("tiny", tmp_path))


def test_shared_code_exists():
    for entry in SHARED_CODE:
        assert (COMPONENTS / entry).exists(), entry


@pytest.mark.parametrize("profile", ["tiny", "s1-32b", "micro", "s1.1-32b"])
def test_every_declared_param_is_written_in_params_yaml(profile):
    """DVC refuses a stage whose params are missing from params.yaml (defaults do not count); a profile that
    extends another is written out in full where DVC runs it (components/pipeline/project.py)."""
    raw = project_params(read_params(REPO / "params.yaml"), profile)[profile]
    missing = []
    for stage in STAGES.values():
        for path in stage.params.values():
            node = raw
            for part in [] if path == WHOLE_PROFILE else path.split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{stage.name}: {profile}.{path}")
                    break
                node = node[part]
    assert not missing, f"write these keys in params.yaml: {missing}"


def _reaches_ray(name: str) -> bool:
    import re
    stage = STAGES[name]
    modules = [stage.entry.split(":")[0], *(ref.split(":")[0] for ref in stage.services.values())]
    files = set().union(*(closure(m) for m in modules))
    return any(re.search(r"^\s*(import ray|from ray)\b", f.read_text(), re.M) for f in files)


@pytest.mark.parametrize("name", list(STAGES))
def test_on_ray_is_declared_by_every_stage_whose_code_reaches_ray(name):
    """A pipeline run releases Ray after the last stage declared ``on_ray``: a stage whose code can start Ray must
    say when it does (else Ray would be released before it ran, or kept for nothing)."""
    from components.config import parse_profile
    profiles = [parse_profile({}, "tiny"), parse_profile({"sft": {"launcher": "ray"}}, "tiny"),
                parse_profile({"evaluate": {"via": "serve"}}, "tiny")]
    declared = [STAGES[name].on_ray(cfg) for cfg in profiles]
    assert any(declared) == _reaches_ray(name), name
    expected = {"distill": [True] * 3, "filter": [True] * 3, "train": [False, True, False],
                "evaluate": [False, False, True]}
    assert declared == expected.get(name, [False] * 3), name


def test_after_an_unready_base_model_every_stage_result_and_summary_carry_its_warning(tmp_path):
    """The one place stage results pass through: a warning in base_model.json (pretrain.allow_unready) joins each
    later stage's result and metrics file; a ready base model adds nothing."""
    from components.paths import Paths
    from components.pipeline.registry import get_stage, with_base_model_warning
    from components.records import write_json

    paths = Paths.for_profile("tiny", tmp_path)
    select = get_stage("select")
    (report,) = select.metrics(paths)
    write_json(report, {"size": 3, "trace_tokens": [1, 2]})
    write_json(paths.metric("base_model.json"), {"source": "release", "ready": True})
    assert with_base_model_warning(select, {"size": 3}, paths) == {"size": 3}
    assert "warning" not in json.loads(report.read_text())

    write_json(paths.metric("base_model.json"), {"source": "unready-build", "ready": False, "warning": "not ready"})
    assert with_base_model_warning(select, {"size": 3}, paths) == {"size": 3, "warning": "not ready"}
    assert json.loads(report.read_text()) == {"size": 3, "trace_tokens": [1, 2], "warning": "not ready"}
