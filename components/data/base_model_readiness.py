"""Whether the base model the pipeline runs on passed its pre-training probe, read from its summary.

The base-model stage writes ``metrics/<profile>/base_model.json`` with ``ready``; a model that missed its probe
and was kept on purpose (``pretrain.allow_unready``) has ``ready: false`` and a ``warning``, which every later
stage's summary (components/pipeline/registry.py), the results page and the MLflow run repeat.

    warning = base_model_warning(paths)   # None for a ready base model
"""
from __future__ import annotations

import json
from typing import Optional

from components.paths import Paths


def base_model_warning(paths: Paths) -> Optional[str]:
    """The warning of a base model the pipeline goes on with unready, or None."""
    summary = paths.metric("base_model.json")
    try:
        data = json.loads(summary.read_text()) if summary.is_file() else {}
    except (OSError, ValueError):
        return None
    return data.get("warning") if isinstance(data, dict) and data.get("ready") is False else None
