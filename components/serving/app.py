"""Ray Serve application: an OpenAI-compatible, budget-forcing model server.

Endpoints: ``POST /v1/completions``, ``POST /v1/chat/completions`` (SSE
streaming with ``stream: true``), ``GET /v1/models``, ``GET /health``. Each
replica builds one :class:`~components.serving.service.S1Service` (the engine,
the checks, batching or vLLM's async engine, auth, back-pressure) and serves
its FastAPI app.

``model_path`` is a directory, a hub id, or a location the launcher published the
model to (``serve.model_uri``; :mod:`components.serving.model_source`): each
replica reads it from wherever Ray placed it.

    serve run infra/serve/tiny.yaml        # or: s1flow serve
"""
from __future__ import annotations

import os
from typing import Any, Optional

from ray import serve

from components.serving.model_source import replica_model
from components.serving.service import S1Service, build_api


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=1024)
@serve.ingress()
class S1Server:
    def __init__(self, model_path: str, model_cache_dir: Optional[str] = None, **kwargs: Any):
        # the model where this replica's node can read it (a published copy is downloaded once per node)
        self.service = S1Service(replica_model(model_path, model_cache_dir), **kwargs)

    def __serve_build_asgi_app__(self):
        return build_api(self.service)


def key_runtime_env(api_key_env: str) -> dict:
    """The bearer token travels to the replicas in their runtime environment (never in args or logs)."""
    key = os.environ.get(api_key_env)
    return {"env_vars": {api_key_env: key}} if key else {}


def build_app(args: dict[str, Any]):
    """Application builder for ``serve run components.serving.app:build_app model_path=...``.

    The key is read from the environment of the process running ``serve run``
    (``api_key_env``, default S1FLOW_API_KEY) and handed to the replicas; with
    ``require_api_key: true`` a replica without a key refuses to start. Replica
    resources come as ``num_cpus``/``num_gpus`` args (a YAML ``ray_actor_options``
    would replace the runtime environment that carries the key).
    """
    env = args.get("api_key_env", "S1FLOW_API_KEY")
    actor = {"num_cpus": float(args.pop("num_cpus", 1)), "num_gpus": float(args.pop("num_gpus", 0)),
             "runtime_env": key_runtime_env(env)}
    queued = int(args.get("max_queued_requests", 64))
    return S1Server.options(num_replicas=int(args.pop("num_replicas", 1)), ray_actor_options=actor,
                            max_ongoing_requests=queued + 16).bind(**args)
