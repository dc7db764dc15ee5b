"""Whether a replica may serve, and with which key: auth is on unless Serve's HTTP bind is loopback-only.

The bearer token never travels through Ray: no deployment arg, no ``runtime_env`` (both are shown by
``serve status``, the controller's deployment details and Ray's dashboard API). A replica reads it from
its own process environment, the variable named by ``api_key_env``, which it inherits from its Ray node:
a local Ray started by ``serve run`` or ``s1flow serve`` inherits the starting shell's environment; on a
cluster the operator sets the variable where ``ray start`` runs on every node.

Serve's HTTP options (``http_options.host`` in a Serve config, ``serve.start(http_options=...)``) are held
by the Serve controller for the whole cluster, and the proxies (and, with direct ingress, the replicas)
listen on that host. An application builder does not see them (``serve run config.yaml`` builds the
application in a task of its own), so each replica asks the controller when it starts, and refuses to
serve without a key unless that host is loopback and the deployment said ``require_api_key: false``.
"""
from __future__ import annotations

import ipaddress
import os
from typing import Callable, Optional


def is_loopback(host: Optional[str]) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``; anything else (``0.0.0.0``, a name, no host) is reachable
    from other machines or unknown, so it is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def serve_http_host() -> Optional[str]:
    """The host Ray Serve's HTTP proxies listen on, as the running Serve controller holds it (the HTTP options
    of ``serve start``, ``serve run``/``serve deploy`` of a config, or ``serve.start``)."""
    from ray.serve.context import _get_global_client  # the running controller (from a replica: its own)

    return _get_global_client().http_config.host


def replica_api_key(api_key_env: str, require_api_key: bool = True,
                    bind_host: Optional[Callable[[], Optional[str]]] = None) -> Optional[str]:
    """The key this replica checks requests against (from its environment), or None where serving without
    auth is allowed: ``require_api_key`` false and a loopback-only bind (``bind_host``: where Serve listens, default
    :func:`serve_http_host`). Raises otherwise, naming the fix."""
    key = os.environ.get(api_key_env) or None
    if key is not None:
        return key
    if require_api_key:
        raise RuntimeError(
            f"refusing to serve without auth: the environment variable {api_key_env} (the bearer token) is not set "
            "on this Ray node. Set it in the environment Ray starts in: the shell that runs `serve run` or "
            "`s1flow serve` when they start a local Ray, or the environment of `ray start` on every node of a "
            "cluster. Only a loopback-only bind (http_options.host: 127.0.0.1) may turn auth off, with the app "
            "arg require_api_key: false")
    host = (bind_host or serve_http_host)()
    if not is_loopback(host):
        raise RuntimeError(
            f"require_api_key: false is allowed only when Serve's HTTP bind is loopback-only, but Serve listens on "
            f"{host!r} (http_options.host): set {api_key_env} on the Ray nodes and drop require_api_key: false, or "
            "bind http_options.host to 127.0.0.1")
    return None
