"""Render dvc.yaml from the stage registry: each stage runs ``bin/s1flow stage NAME`` and depends on its own code,
the shared schema, the files it reads and the params it declares. ``bin/s1flow`` runs the checkout's
``.venv/bin/s1flow`` (else the s1flow on PATH), so ``.venv/bin/dvc repro`` needs no activated venv.

    s1flow dvc-yaml > dvc.yaml        # a test checks the committed dvc.yaml equals this
"""
from __future__ import annotations

import yaml

from components.paths import Paths
from components.pipeline.registry import SHARED_CODE, STAGE_LIST, WHOLE_PROFILE, Stage

TEMPLATE = Paths.for_profile("${profile}", root="")
LAUNCHER = "bin/s1flow"  # relative to the project root, where DVC runs each command

HEADER = """\
# Generated from components/pipeline/registry.py by `s1flow dvc-yaml > dvc.yaml`; do not edit by hand
# (tests/pipeline/test_registry.py fails when the two differ). `${profile}` comes from params.yaml,
# so switching profile switches the params each stage depends on and the folders it writes.
"""


def _uncached(paths) -> list:
    return [{str(p): {"cache": False}} for p in paths]


def stage_spec(stage: Stage) -> dict:
    spec: dict = {"cmd": f"{LAUNCHER} stage {stage.name}"}
    code = [f"components/{c}" for c in (*stage.code, *SHARED_CODE)]
    spec["deps"] = code + [str(p) for p in stage.inputs(TEMPLATE)]
    spec["params"] = ["profile"] + ["${profile}" if p == WHOLE_PROFILE else f"${{profile}}.{p}"
                                    for p in dict.fromkeys(stage.params.values())]
    outs = [str(p) for p in stage.outs(TEMPLATE)] + _uncached(stage.uncached(TEMPLATE))
    if outs:
        spec["outs"] = outs
    if metrics := stage.metrics(TEMPLATE):
        spec["metrics"] = _uncached(metrics)
    if stage.plots:
        spec["plots"] = [{str(pl.path(TEMPLATE)): {"cache": False, "x": pl.x, "y": pl.y, "title": pl.title,
                                                   **({"template": pl.template} if pl.template else {})}}
                         for pl in stage.plots]
    return spec


def render() -> str:
    body = yaml.safe_dump({"stages": {s.name: stage_spec(s) for s in STAGE_LIST}}, sort_keys=False, width=120)
    return HEADER + body
