"""The Ray Serve deployment's auth: on unless a deployment turns it off for a loopback-only bind, and the key
read by each replica from its node's environment, never in Ray's deployment config or runtime env.

The Ray tests run a real local Ray (with its dashboard, whose API is what an operator or an attacker on the
dashboard port reads) and a Serve listening on every interface.
"""
import json

import httpx
import pytest

from components.common.network import free_port
from components.config import parse_profile
from components.serving.auth_policy import replica_api_key

KEY = "sk-app-test-4b1d9c"  # distinctive: searched for in everything Ray shows
ENV = "S1FLOW_APP_TEST_KEY"


# -- without Ray ---------------------------------------------------------------------------------------------
def test_a_replica_without_a_key_refuses_to_start_unless_told_and_bound_to_loopback(monkeypatch):
    monkeypatch.delenv("S1FLOW_APP_NOPE", raising=False)
    with pytest.raises(RuntimeError, match="refusing to serve without auth: the environment variable "
                                           "S1FLOW_APP_NOPE .* not set on this Ray node"):
        replica_api_key("S1FLOW_APP_NOPE")  # the default: required
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com", None):
        with pytest.raises(RuntimeError, match="require_api_key: false is allowed only when Serve's HTTP bind is "
                                               f"loopback-only, but Serve listens on {host!r}"):
            replica_api_key("S1FLOW_APP_NOPE", require_api_key=False, bind_host=lambda h=host: h)
    for host in ("127.0.0.1", "::1", "localhost"):
        assert replica_api_key("S1FLOW_APP_NOPE", require_api_key=False, bind_host=lambda h=host: h) is None
    monkeypatch.setenv("S1FLOW_APP_NOPE", "k")  # a key on the node: auth on, whatever the bind
    assert replica_api_key("S1FLOW_APP_NOPE", require_api_key=False, bind_host=lambda: "0.0.0.0") == "k"


def test_the_serve_deployment_requires_a_key_by_default_before_reading_the_model(monkeypatch):
    """``serve run`` of a YAML that says nothing about auth: the replica refuses."""
    from components.serving import app

    monkeypatch.delenv("S1FLOW_API_KEY", raising=False)
    # the user's class under Serve's ingress wrapper (whose __init__ is a coroutine)
    cls = next(c for c in app.S1Server.func_or_class.__mro__ if "__serve_build_asgi_app__" in vars(c))
    with pytest.raises(RuntimeError, match="refusing to serve without auth: the environment variable S1FLOW_API_KEY"):
        cls.__init__(object.__new__(cls), "/nonexistent/model")
    monkeypatch.setattr("components.serving.auth_policy.serve_http_host", lambda: "0.0.0.0")
    with pytest.raises(RuntimeError, match="allowed only when Serve's HTTP bind is loopback-only"):
        cls.__init__(object.__new__(cls), "/nonexistent/model", require_api_key=False)


def test_build_app_passes_the_variable_name_never_the_key(monkeypatch):
    from components.serving.app import build_app

    monkeypatch.setenv(ENV, KEY)
    bound = build_app({"model_path": "m", "api_key_env": ENV, "num_cpus": 2, "require_api_key": "false"})
    deployment = bound._bound_deployment
    assert deployment.ray_actor_options == {"num_cpus": 2.0, "num_gpus": 0.0}  # no runtime_env
    assert deployment.init_kwargs["api_key_env"] == ENV and deployment.init_kwargs["require_api_key"] is False
    assert KEY not in repr((deployment.ray_actor_options, deployment.init_args, deployment.init_kwargs,
                            deployment._deployment_config))
    with pytest.raises(ValueError, match="require_api_key: expected true or false, got 'no'"):
        build_app({"model_path": "m", "require_api_key": "no"})


# -- on Ray and Serve ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def public_serve():
    """Ray (dashboard on) started with the key in its environment, as `ray start` on a node would be; Serve on
    every interface. Yields (serve HTTP port, dashboard URL)."""
    import ray
    from ray import serve

    with pytest.MonkeyPatch.context() as env:
        env.setenv(ENV, KEY)
        if ray.is_initialized():  # left by an earlier module of this worker: its nodes lack the key
            ray.shutdown()
        context = ray.init(address="local", include_dashboard=True, log_to_driver=False, num_cpus=2)  # its own Ray
        try:
            port = free_port()
            serve.start(http_options={"host": "0.0.0.0", "port": port})
            yield port, f"http://{context.dashboard_url}"
        finally:
            serve.shutdown()
            ray.shutdown()


def _cfg(port: int):
    return parse_profile({"serve": {"host": "0.0.0.0", "port": port, "api_key_env": ENV, "model_name": "tiny",
                                    "default_answer_tokens": 4},
                          "engine": {"unlimited_thinking_tokens": 32}, "evaluate": {"budgets": [16]}}, "tiny")


def test_the_key_reaches_replicas_and_appears_nowhere_ray_shows(public_serve, tiny_model_dir, monkeypatch):
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.util.state import list_actors, list_jobs

    from components.serving.launch import start_server, stop_server
    port, dashboard = public_serve
    cfg = _cfg(port)
    url = start_server(cfg.serve, cfg.engine, cfg.model.dtype, str(tiny_model_dir))
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).status_code == 200
        denied = httpx.get(f"{base}/v1/models", timeout=60)
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{base}/health", timeout=60).status_code == 200

        details = _get_global_client().get_serve_details()  # what the dashboard's Serve page shows
        args = details["applications"]["s1flow"]["deployed_app_config"]
        deployment = details["applications"]["s1flow"]["deployments"]["S1Server"]
        assert "runtime_env" not in deployment["deployment_config"]["ray_actor_options"]
        # the state API asks this test's dashboard (it would take $RAY_ADDRESS before any address given to it)
        monkeypatch.setenv("RAY_API_SERVER_ADDRESS", dashboard)
        shown = {
            "serve.status()": repr(serve.status()),
            "serve details": json.dumps(details, default=str),
            "dashboard /api/serve/applications/": httpx.get(f"{dashboard}/api/serve/applications/", timeout=60).text,
            "state API actors (detail, with runtime envs)": repr(list_actors(detail=True, limit=1000)),
            "state API jobs": repr(list_jobs(detail=True)),
        }
        assert ENV in shown["serve details"] or args is None  # the variable's name is an arg, its value is not
        for where, text in shown.items():
            assert KEY not in text, f"the API key appears in {where}"
        assert url == f"http://0.0.0.0:{port}"
    finally:
        stop_server(url)


def test_a_replica_told_to_skip_auth_refuses_a_bind_on_every_interface(public_serve, tiny_model_dir, monkeypatch):
    from ray import serve

    from components.serving.app import S1Server
    monkeypatch.delenv("S1FLOW_APP_UNSET", raising=False)
    app = S1Server.options(num_replicas=1, max_constructor_retry_count=1, ray_actor_options={"num_cpus": 0}).bind(
        model_path=str(tiny_model_dir), model_name="tiny", api_key_env="S1FLOW_APP_UNSET", require_api_key=False)
    try:
        with pytest.raises(RuntimeError, match="Deploying application no-auth failed"):
            serve.run(app, name="no-auth", route_prefix="/no-auth")
        status = serve.status().applications["no-auth"].deployments["S1Server"]
        assert status.status == "DEPLOY_FAILED"
        assert ("require_api_key: false is allowed only when Serve's HTTP bind is loopback-only, but Serve listens "
                "on '0.0.0.0'") in status.message
    finally:
        if "no-auth" in serve.status().applications:
            serve.delete("no-auth")
