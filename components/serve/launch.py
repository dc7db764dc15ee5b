"""Start the Serve application from params (local Ray, or the cluster Ray connects to).

    handle_url = start_server(cfg, "models/tiny/sft")   # -> "http://127.0.0.1:8000"
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from components.config import ProfileConfig


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for tests, benchmarks and throw-away evaluation servers)."""
    import socket
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def app_args(cfg: ProfileConfig, model_path: str) -> dict:
    s, ev = cfg.serve, cfg.evaluate
    # replicas run in Ray workers whose working directory is wherever Ray started: never a relative path
    local = Path(model_path)
    return {"model_path": str(local.resolve()) if local.exists() else str(model_path),
            "model_name": s.model_name, "engine": ev.engine, "dtype": cfg.model.dtype,
            "max_batch_size": s.max_batch_size, "batch_wait_timeout_s": s.batch_wait_timeout_s,
            "default_answer_tokens": s.default_answer_tokens,
            "unlimited_thinking_tokens": ev.unlimited_thinking_tokens,
            "tensor_parallel_size": ev.tensor_parallel_size, "api_key_env": s.api_key_env,
            "threads": max(1, int(s.num_cpus))}


def start_server(cfg: ProfileConfig, model_path: str, port: Optional[int] = None, blocking: bool = False) -> str:
    import ray
    from ray import serve

    from components.serve.app import S1Server

    s = cfg.serve
    if not ray.is_initialized():
        ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    serve.start(http_options={"host": s.host, "port": port or s.port})
    deployment = S1Server.options(num_replicas=s.num_replicas,
                                  ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus})
    serve.run(deployment.bind(**app_args(cfg, model_path)), name="s1flow", route_prefix="/", blocking=blocking)
    return f"http://{s.host}:{port or s.port}"


def stop_server() -> None:
    import ray
    from ray import serve
    serve.shutdown()
    ray.shutdown()
