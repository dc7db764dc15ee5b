"""Launching and stopping the Serve application on a real local Ray (127.0.0.1).

A launch stops only what it started (its own application, and Serve or Ray if it started them); a Serve
already running is used on its own port (the URL says so), or refused when it listens on another host; the
replicas read the model from ``serve.model_uri`` (a moto S3 bucket here), not from the driver's disk.
"""
import httpx
import pytest

from components.common.network import free_port
from components.config import parse_profile
from components.serving.launch import replica_model_location


def _chat(url: str) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 4,
            "max_thinking_tokens": 6}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


@pytest.fixture(scope="module")
def ray_and_bucket():
    """Ray started by the test (not by a launch), every worker seeing a moto S3 endpoint in its environment."""
    import ray

    from tests.support.services import moto_bucket
    mp = pytest.MonkeyPatch()
    try:
        with moto_bucket(mp, "s1flow-serve") as endpoint:
            if ray.is_initialized():  # left by an earlier module of this worker: its workers lack the endpoint
                ray.shutdown()
            ray.init(include_dashboard=False, log_to_driver=False, num_cpus=2)
            try:
                yield endpoint
            finally:
                from ray import serve
                serve.shutdown()
                ray.shutdown()
    finally:
        mp.undo()


def test_the_evaluation_app_joins_a_running_serve_and_stops_only_itself(ray_and_bucket, tiny_model_dir, tmp_path,
                                                                        monkeypatch):
    import boto3
    import ray
    from ray import serve

    from components.serving.launch import served_endpoint, start_server, stop_server
    user_port = free_port()
    cfg = parse_profile({"serve": {"port": user_port, "model_name": "tiny", "default_answer_tokens": 4,
                                   "model_uri": "s3://s1flow-serve/serve-model",
                                   "model_cache_dir": str(tmp_path / "cache")},
                         "engine": {"unlimited_thinking_tokens": 32}, "evaluate": {"budgets": [16]}}, "tiny")
    user_url = start_server(cfg.serve, cfg.engine, cfg.model.dtype, str(tiny_model_dir))  # "s1flow" at "/"
    try:
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="s1flow-serve")["Contents"]]
        digest = next(k.split("/")[1] for k in keys if k.endswith("/COMPLETE"))
        assert "serve-model/LATEST" in keys and f"serve-model/{digest}/config.json" in keys
        assert (tmp_path / "cache" / digest / "config.json").exists()  # the replica downloaded its copy
        assert _chat(user_url).status_code == 200

        asked = cfg.serve.model_copy(update={"port": free_port()})
        with served_endpoint(asked, cfg.engine, cfg.model.dtype, str(tiny_model_dir)) as url:
            # the running Serve's HTTP options hold: its port, under the evaluation app's own route
            assert url.startswith(f"http://127.0.0.1:{user_port}/s1flow-eval-")
            app = url.rsplit("/", 1)[1]
            assert set(serve.status().applications) == {"s1flow", app}
            r = _chat(url)
            assert r.status_code == 200 and r.json()["model"] == "tiny", r.text
        apps = serve.status().applications
        assert set(apps) == {"s1flow"} and apps["s1flow"].status == "RUNNING"  # the user's app was left alone
        assert _chat(user_url).status_code == 200 and ray.is_initialized()

        monkeypatch.setenv("S1FLOW_LAUNCH_KEY", "k")
        public = cfg.serve.model_copy(update={"host": "0.0.0.0", "api_key_env": "S1FLOW_LAUNCH_KEY"})
        with pytest.raises(RuntimeError, match=r"already runs .* HTTP on 127.0.0.1:\d+, not serve.host '0.0.0.0'"):
            with served_endpoint(public, cfg.engine, cfg.model.dtype, str(tiny_model_dir)):
                pass
        assert set(serve.status().applications) == {"s1flow"}
    finally:
        stop_server(user_url)
    assert serve.status().applications == {} and ray.is_initialized()  # its Serve stopped; the test's Ray not


def test_a_local_model_directory_is_refused_on_a_multi_node_cluster(tiny_model_dir):
    serve = parse_profile({}, "tiny").serve
    assert replica_model_location(serve, str(tiny_model_dir), nodes=1) == str(tiny_model_dir)
    with pytest.raises(ValueError, match=r"serve.model_uri: the model .* Ray has 2 nodes"):
        replica_model_location(serve, str(tiny_model_dir), nodes=2)
    assert replica_model_location(serve, "Qwen/Qwen2.5-32B-Instruct", nodes=2) == "Qwen/Qwen2.5-32B-Instruct"


def test_a_loopback_launch_joining_a_serve_on_every_interface_needs_a_key(monkeypatch):
    from components.config import EngineConfig
    from components.serving.launch import app_args, check_auth
    monkeypatch.delenv("S1FLOW_LAUNCH_NOPE", raising=False)
    serve = parse_profile({"serve": {"api_key_env": "S1FLOW_LAUNCH_NOPE"}}, "tiny").serve
    assert serve.host == "127.0.0.1"
    check_auth(serve)  # alone on loopback: may run without a key
    assert app_args(serve, EngineConfig(), "float32", "m")["require_api_key"] is False
    with pytest.raises(ValueError, match=r"Ray Serve already runs with HTTP on '0.0.0.0', which is not loopback, "
                                         r"and \$S1FLOW_LAUNCH_NOPE is not set"):
        check_auth(serve, "0.0.0.0")
    assert app_args(serve, EngineConfig(), "float32", "m", bind_host="0.0.0.0")["require_api_key"] is True
    monkeypatch.setenv("S1FLOW_LAUNCH_NOPE", "sk-launch-secret")  # a key set for the launch must reach the replicas
    args = app_args(serve, EngineConfig(), "float32", "m")
    assert args["require_api_key"] is True and args["api_key_env"] == "S1FLOW_LAUNCH_NOPE"
    assert "sk-launch-secret" not in repr(args)
