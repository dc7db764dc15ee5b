"""The registry of test-time methods: each name and the class that implements it, imported when first used.

Adding a method is one module in this package (a :class:`~components.inference.methods.base.Method` subclass
with its ``Settings``) and one line in :mod:`components.method_index`; its params section is ``evaluate.methods.<name>``.

    method = build("majority_voting", Forcing(), {"samples": [1, 2, 4]}, budgets=[48, 96])
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Optional, Sequence

from pydantic import BaseModel, ValidationError

from components.method_index import AUTO, METHODS, REFERENCE, SERVED

if TYPE_CHECKING:  # the methods' modules import torch: only when a method is built
    from components.inference.methods.base import ModelUse

__all__ = ["AUTO", "METHODS", "REFERENCE", "SERVED", "build", "configured", "hub_models", "method_class",
           "method_models", "section_problems", "settings"]

def method_class(name: str):
    """The class of method ``name`` (its module imported now)."""
    if name not in METHODS:
        raise ValueError(f"{name!r} is not a test-time method; choose one of {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def settings(name: str, section: Optional[dict[str, Any]], key: str = "evaluate.methods") -> BaseModel:
    """Method ``name``'s params section validated by its ``Settings`` (defaults where absent); errors name
    ``key.name.field``."""
    model = method_class(name).Settings
    try:
        return model.model_validate(section or {})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{key}.{name}{'.' + where if where else ''}: {first['msg']}") from None


def build(name: str, forcing, section: Optional[dict[str, Any]], budgets: Sequence[int],
          trusted: Sequence[str] = ()):
    """Method ``name`` built from the shared decoding settings, its section and the headline budgets."""
    return method_class(name)(forcing, settings(name, section), budgets, trusted)


def configured(evaluate, name: str) -> BaseModel:
    """Method ``name``'s settings as an evaluate section configures them (``evaluate.methods.<name>``)."""
    return settings(name, evaluate.methods.get(name))


def section_problems(evaluate) -> list[str]:
    """What is wrong with the evaluate section's method settings (each configured or used method's section
    against its ``Settings``, and each method's own checks), as messages naming the key."""
    out = []
    for name in dict.fromkeys([*evaluate.methods, *evaluate.used_methods()]):
        try:
            chosen = configured(evaluate, name)
        except ValueError as e:
            out.append(str(e))
            continue
        out += method_class(name).problems(chosen, evaluate.trust_remote_code)
    main = method_class(evaluate.method)
    if "sampled" in evaluate.protocols and (not main.budgeted or main.sweep_setting or main.samples_itself):
        why = "samples its own answers" if main.samples_itself else "does not sweep thinking budgets"
        out.append(f"evaluate.protocols: 'sampled' samples evaluate.method ({evaluate.method}) at thinking budgets "
                   f"with sampled.temperature, and {evaluate.method} {why}; use a method that decodes one answer "
                   "per budget (budget_forcing) or drop 'sampled'")
    return out


def method_models(evaluate) -> list[tuple[str, ModelUse]]:
    """``(method name, model use)`` of every model the evaluation's methods load besides the engine (a method
    whose section its settings refuse is left out: :func:`section_problems` names it)."""
    out = []
    for name in evaluate.used_methods():
        try:
            chosen = configured(evaluate, name)
        except ValueError:
            continue
        out += [(name, use) for use in method_class(name).models(chosen)]
    return out


def hub_models(evaluate) -> list[tuple[str, str, Optional[str]]]:
    """``(revision key, model, revision)`` of every model the evaluation's methods load besides the engine."""
    return [(f"evaluate.methods.{name}.{use.key}_revision", use.name, use.revision)
            for name, use in method_models(evaluate)]
