"""Start the Serve application from params (local Ray, or the cluster Ray connects to), and stop only it.

    url = start_server(serve_cfg, engine_cfg, "float32", "models/tiny/sft")   # -> "http://127.0.0.1:8000"
    stop_server(url)                                                         # what that start started
    with served_endpoint(serve_cfg, engine_cfg, "float32", "models/tiny/sft") as url: ...  # a throw-away app

Serve's HTTP options are cluster-wide and fixed while Serve runs (``serve.start``
applies them only when it starts Serve). So a launch first looks for a running
Serve: if it listens on the host asked for (or on every interface), the app is
deployed there, on its port, and the URL says so (the requested port is logged
as unused); a Serve on another host fails the launch, naming both. Stopping
deletes this launch's application by name and shuts down only what the launch
started (Serve, Ray); other applications and a Serve or Ray that was already
running are left alone. The evaluation's application has its own name and
route prefix, so it never replaces a user's ``s1flow`` application.

The model reaches replicas on any node: with ``serve.model_uri`` set, the model
directory is published there and each replica reads it from there
(:mod:`components.serving.model_source`); without it, a local directory is
served only on a one-node Ray.

The key is not passed: each replica reads it from its Ray node's environment (the variable
``serve.api_key_env``; a Ray this launch starts inherits the launching process's). With a key set,
or a bind that is not loopback, a replica without the key refuses to start
(:mod:`components.serving.auth_policy`).
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from components.common.network import free_port
from components.config import EngineConfig, ServeConfig
from components.serving.auth_policy import is_loopback
from components.serving.model_source import publish_model

log = logging.getLogger(__name__)

APP_NAME = "s1flow"  # `s1flow serve` and infra/serve/*.yaml: the user's application, at route "/"
ANY_HOST = {"0.0.0.0", "::"}


@dataclass
class Launch:
    """What one start_server call started, so that stopping it stops nothing else."""

    url: str
    app_name: str
    started_ray: bool
    started_serve: bool


_LAUNCHES: dict[str, Launch] = {}  # by URL


def app_args(serve: ServeConfig, engine: EngineConfig, dtype: str, model_path: str,
             bind_host: Optional[str] = None) -> dict:
    """The deployment's args. Never the key: only the name of the variable each replica reads it from; auth is
    required unless the bind (``bind_host``: the running Serve's, default ``serve.host``) is loopback and no
    key is set (a key set for the launch must reach the replicas, or they refuse to start)."""
    # replicas run in Ray workers whose working directory is wherever Ray started: never a relative path
    local = Path(model_path)
    return {"model_path": str(local.resolve()) if local.exists() else str(model_path),
            "model_cache_dir": serve.model_cache_dir,
            "model_name": serve.model_name, "engine": engine.backend, "dtype": dtype,
            "max_batch_size": serve.max_batch_size, "batch_wait_timeout_s": serve.batch_wait_timeout_s,
            "batching": serve.batching,
            "default_answer_tokens": serve.default_answer_tokens,
            "unlimited_thinking_tokens": engine.unlimited_thinking_tokens,
            "tensor_parallel_size": engine.tensor_parallel_size, "api_key_env": serve.api_key_env,
            "gpu_memory_utilization": engine.gpu_memory_utilization,
            "max_num_batched_tokens": engine.max_num_batched_tokens, "kv_cache_blocks": engine.kv_cache_blocks,
            "require_api_key": auth_required(serve, bind_host or serve.host),
            "max_queued_requests": serve.max_queued_requests, "max_request_bytes": serve.max_request_bytes,
            "threads": max(1, int(serve.num_cpus))}


def auth_required(serve: ServeConfig, bind_host: str) -> bool:
    return bool(os.environ.get(serve.api_key_env)) or not is_loopback(bind_host)


def check_auth(serve: ServeConfig, bind_host: Optional[str] = None) -> None:
    """Fail closed: a server reachable from other hosts must have a key. ``bind_host``: where Serve's HTTP
    proxies listen (a running Serve's host), default ``serve.host``."""
    host = bind_host or serve.host
    if not is_loopback(host) and not os.environ.get(serve.api_key_env):
        where = (f"serve.host {host!r} is not loopback" if host == serve.host else
                 f"Ray Serve already runs with HTTP on {host!r}, which is not loopback,")
        raise ValueError(f"{where} and ${serve.api_key_env} is not set: set {serve.api_key_env} to the bearer "
                         "token clients must send, or bind serve.host to 127.0.0.1")


def replica_model_location(serve: ServeConfig, model_path: str, nodes: int) -> str:
    """Where the replicas read the model: published to ``serve.model_uri`` when set; a local directory only on a
    one-node cluster (``nodes``: alive Ray nodes); a hub id as is."""
    local = Path(model_path)
    if serve.model_uri:
        return publish_model(local, serve.model_uri) if local.is_dir() else model_path
    if local.exists() and nodes > 1:
        raise ValueError(f"serve.model_uri: the model {model_path} is a directory on the driver's disk, but Ray has "
                         f"{nodes} nodes and a replica placed on another cannot read it; set serve.model_uri to an "
                         "object-store prefix every node reaches (s3://bucket/prefix) or to a directory every "
                         "node mounts")
    return model_path


def serve_bind(host: str, port: int) -> tuple[str, int]:
    """The host Serve's HTTP proxies listen on and the port this launch's app is reachable on: ``host`` and
    ``port`` when Serve is not running (it is started on them), else the running Serve's, if it listens on
    ``host`` or on every interface. Raises if it listens elsewhere."""
    from ray.serve.context import _get_global_client  # what serve.status() asks: the running controller, or None

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return host, port
    running = client.http_config
    if running.host != host and running.host not in ANY_HOST:
        raise RuntimeError(f"Ray Serve already runs on this Ray cluster with HTTP on {running.host}:{running.port}, "
                           f"not serve.host {host!r}; Serve's HTTP options are fixed while it runs: set serve.host "
                           f"to {running.host!r}, or shut that Serve down (serve shutdown) and rerun")
    if running.port != port:
        log.warning("Ray Serve already runs with HTTP on %s:%s: the application is served there (port %s is not "
                    "used)", running.host, running.port, port)
    return running.host, running.port


def _alive_nodes() -> int:
    import ray
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def start_server(serve: ServeConfig, engine: EngineConfig, dtype: str, model_path: str, port: Optional[int] = None,
                 blocking: bool = False, app_name: str = APP_NAME) -> str:
    """Deploy the application ``app_name`` (route ``/`` for :data:`APP_NAME`, else ``/<app_name>``); its base URL.
    Starts Ray and Serve only where none runs."""
    import ray
    from ray import serve as ray_serve

    from components.serving.app import S1Server  # lazy: imports Ray Serve and the engines (torch)

    check_auth(serve)
    started_ray = not ray.is_initialized()
    if started_ray:  # RAY_ADDRESS, when set, names the cluster to join
        ray.init(include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    started_serve, url = False, ""
    try:
        location = replica_model_location(serve, model_path, _alive_nodes())
        wanted = port or serve.port
        bind_host, http_port = serve_bind(serve.host, wanted)
        check_auth(serve, bind_host)  # a running Serve on every interface needs a key even for a loopback launch
        if http_port == wanted:
            from ray.serve.context import _get_global_client
            started_serve = _get_global_client(raise_if_no_controller_running=False) is None
            ray_serve.start(http_options={"host": serve.host, "port": wanted})
        actor = {"num_cpus": serve.num_cpus, "num_gpus": serve.num_gpus}  # no runtime_env: the key is never in it
        deployment = S1Server.options(num_replicas=serve.num_replicas, ray_actor_options=actor,
                                      max_ongoing_requests=serve.max_queued_requests + 16)
        prefix = "/" if app_name == APP_NAME else f"/{app_name}"
        url = f"http://{serve.host}:{http_port}{prefix.rstrip('/')}"
        _LAUNCHES[url] = Launch(url, app_name, started_ray, started_serve)
        ray_serve.run(deployment.bind(**app_args(serve, engine, dtype, location, bind_host)), name=app_name,
                      route_prefix=prefix, blocking=blocking)
    except BaseException:  # a failed deployment, or Ctrl-C on a blocking one: undo what this call started
        _LAUNCHES.pop(url, None)
        _stop(Launch(url, app_name, started_ray, started_serve))
        raise
    return url


def _wait_until_serve_is_gone(timeout_s: float = 180.0) -> None:
    """Until no Serve actor (controller, proxies) is alive. ``serve.shutdown`` gives up waiting after 30 s while
    the controller's shutdown goes on; a Serve started in the meantime on the same Ray would have its new proxy
    killed by the controller still shutting down (the proxy's name is the same)."""
    import ray
    deadline = time.monotonic() + timeout_s
    while any(a.get("namespace") == "serve" for a in ray.util.list_named_actors(all_namespaces=True)):
        if time.monotonic() > deadline:
            log.warning("Ray Serve's actors are still alive %.0f s after its shutdown", timeout_s)
            return
        time.sleep(0.5)


def _stop(launch: Launch) -> None:
    import ray
    from ray import serve as ray_serve
    if ray.is_initialized():
        from ray.serve.context import _get_global_client
        if _get_global_client(raise_if_no_controller_running=False) is not None:
            if launch.app_name in ray_serve.status().applications:
                ray_serve.delete(launch.app_name)  # blocks until its replicas are gone (their GPUs free)
            if launch.started_serve:
                ray_serve.shutdown()
                _wait_until_serve_is_gone()
    if launch.started_ray and ray.is_initialized():
        ray.shutdown()


def stop_server(url: Optional[str] = None) -> None:
    """Stop what the ``start_server`` that returned ``url`` started (default: the latest): its application, and
    Serve and Ray if it started them."""
    if not _LAUNCHES:
        return
    launch = _LAUNCHES.pop(url if url is not None else next(reversed(_LAUNCHES)))
    _stop(launch)


@contextmanager
def served_endpoint(serve: ServeConfig, engine: EngineConfig, dtype: str, model_path: str) -> Iterator[str]:
    """An application of its own (``s1flow-eval-<id>`` at ``/s1flow-eval-<id>``) for the duration of the block
    (evaluation through Serve): on a free port when Serve is not running, else on the running Serve's."""
    url = start_server(serve, engine, dtype, model_path, port=free_port(serve.host),
                       app_name=f"s1flow-eval-{uuid.uuid4().hex[:8]}")
    try:
        yield url
    finally:
        stop_server(url)
