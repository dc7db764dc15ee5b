"""Ray Serve application: an OpenAI-compatible, budget-forcing model server.

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (SSE
streaming with ``stream: true``), ``GET /v1/models``, ``GET /health``. Each
replica builds one :class:`~components.serving.service.S1Service` (the engine,
the checks, batching or vLLM's async engine, auth, back-pressure) and serves
its FastAPI app.

``model_path`` is a directory, a hub id, or a location the launcher published the
model to (``serve.model_uri``; :mod:`components.serving.model_source`): each
replica reads it from wherever Ray placed it.

Auth is on by default: a replica serves only with the key in its own environment
(the variable named by ``api_key_env``), or without one when the deployment says
``require_api_key: false`` and Serve's HTTP bind is loopback-only
(:mod:`components.serving.auth_policy`). The key is never a deployment arg or part
of a runtime environment, so Ray's deployment config and dashboard never show it.

    serve run infra/serve/tiny.yaml        # or: s1flow serve
"""
from __future__ import annotations

from typing import Any, Optional

from ray import serve

from components.serving.auth_policy import replica_api_key
from components.serving.model_source import replica_model
from components.serving.service import S1Service, build_api


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=1024)
@serve.ingress()
class S1Server:
    def __init__(self, model_path: str, model_cache_dir: Optional[str] = None, api_key_env: str = "S1FLOW_API_KEY",
                 require_api_key: bool = True, **kwargs: Any):
        # before the model is read: a replica that may not serve fails fast, naming the fix
        key = replica_api_key(api_key_env, require_api_key)
        # the model where this replica's node can read it (a published copy is downloaded once per node)
        self.service = S1Service(replica_model(model_path, model_cache_dir), api_key_env=api_key_env,
                                 require_api_key=key is not None, **kwargs)

    def __serve_build_asgi_app__(self):
        return build_api(self.service)


def build_app(args: dict[str, Any]):
    """Application builder for ``serve run components.serving.app:build_app model_path=...``.

    Each replica reads the key from the environment variable ``api_key_env`` (default S1FLOW_API_KEY) of its
    Ray node and refuses to start without it, unless the args say ``require_api_key: false`` and Serve's HTTP
    bind is loopback-only. Only the variable's name is an arg. Replica resources come as
    ``num_cpus``/``num_gpus`` args.
    """
    actor = {"num_cpus": float(args.pop("num_cpus", 1)), "num_gpus": float(args.pop("num_gpus", 0))}
    if "require_api_key" in args:
        args["require_api_key"] = _flag("require_api_key", args["require_api_key"])
    queued = int(args.get("max_queued_requests", 64))
    return S1Server.options(num_replicas=int(args.pop("num_replicas", 1)), ray_actor_options=actor,
                            max_ongoing_requests=queued + 16).bind(**args)


def _flag(name: str, value: Any) -> bool:
    """A boolean app arg: YAML gives a bool, ``serve run ... name=false`` the string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise ValueError(f"{name}: expected true or false, got {value!r}")
