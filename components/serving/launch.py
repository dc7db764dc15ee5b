"""Start the Serve application from params (local Ray, or the cluster Ray connects to).

    url = start_server(serve_cfg, engine_cfg, "float32", "models/tiny/sft")   # -> "http://127.0.0.1:8000"
    with served_endpoint(serve_cfg, engine_cfg, "float32", "models/tiny/sft") as url: ...  # a throw-away server
"""
from __future__ import annotations

import ipaddress
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from components.common.network import free_port
from components.config import EngineConfig, ServeConfig


def app_args(serve: ServeConfig, engine: EngineConfig, dtype: str, model_path: str) -> dict:
    # replicas run in Ray workers whose working directory is wherever Ray started: never a relative path
    local = Path(model_path)
    return {"model_path": str(local.resolve()) if local.exists() else str(model_path),
            "model_name": serve.model_name, "engine": engine.backend, "dtype": dtype,
            "max_batch_size": serve.max_batch_size, "batch_wait_timeout_s": serve.batch_wait_timeout_s,
            "default_answer_tokens": serve.default_answer_tokens,
            "unlimited_thinking_tokens": engine.unlimited_thinking_tokens,
            "tensor_parallel_size": engine.tensor_parallel_size, "api_key_env": serve.api_key_env,
            "require_api_key": not is_loopback(serve.host), "max_queued_requests": serve.max_queued_requests,
            "max_request_bytes": serve.max_request_bytes, "threads": max(1, int(serve.num_cpus))}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_auth(serve: ServeConfig) -> None:
    """Fail closed: a server reachable from other hosts must have a key."""
    if not is_loopback(serve.host) and not os.environ.get(serve.api_key_env):
        raise ValueError(f"serve.host {serve.host!r} is not loopback and ${serve.api_key_env} is not set: "
                         f"set {serve.api_key_env} to the bearer token clients must send, or bind serve.host "
                         "to 127.0.0.1")


def start_server(serve: ServeConfig, engine: EngineConfig, dtype: str, model_path: str, port: Optional[int] = None,
                 blocking: bool = False) -> str:
    import ray
    from ray import serve as ray_serve

    from components.serving.app import S1Server, key_runtime_env  # lazy: imports Ray Serve and the engines (torch)

    check_auth(serve)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    ray_serve.start(http_options={"host": serve.host, "port": port or serve.port})
    actor = {"num_cpus": serve.num_cpus, "num_gpus": serve.num_gpus, "runtime_env": key_runtime_env(serve.api_key_env)}
    deployment = S1Server.options(num_replicas=serve.num_replicas, ray_actor_options=actor,
                                  max_ongoing_requests=serve.max_queued_requests + 16)
    ray_serve.run(deployment.bind(**app_args(serve, engine, dtype, model_path)), name="s1flow", route_prefix="/",
                  blocking=blocking)
    return f"http://{serve.host}:{port or serve.port}"


def stop_server() -> None:
    import ray
    from ray import serve as ray_serve
    ray_serve.shutdown()
    ray.shutdown()


@contextmanager
def served_endpoint(serve: ServeConfig, engine: EngineConfig, dtype: str, model_path: str) -> Iterator[str]:
    """A server on a free port for the duration of the block (evaluation through Serve)."""
    url = start_server(serve, engine, dtype, model_path, port=free_port(serve.host))
    try:
        yield url
    finally:
        stop_server()
