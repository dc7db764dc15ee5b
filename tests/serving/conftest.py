"""A Ray Serve deployment of the tiny model on 127.0.0.1, shared by the serve tests."""
import openai
import pytest

from components.config import parse_profile

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    from components.common.network import free_port
    from components.serving.launch import start_server, stop_server
    with pytest.MonkeyPatch.context() as env:  # the key is this module's: later test modules do not see it
        env.setenv("S1FLOW_TEST_KEY", KEY)
        # replicas read the key from their node's environment: a Ray an earlier test module of this process
        # started (without the key) is shut down, so the one the server starts sees it
        import ray
        if ray.is_initialized():
            ray.shutdown()
        port = free_port()
        cfg = parse_profile({"serve": {"port": port, "api_key_env": "S1FLOW_TEST_KEY", "model_name": "tiny",
                                       "max_batch_size": 8, "default_answer_tokens": 8},
                             "engine": {"unlimited_thinking_tokens": 48}, "evaluate": {"budgets": [16, 32]}}, "tiny")
        url = start_server(cfg.serve, cfg.engine, cfg.model.dtype, str(tiny_model_dir), port=port)
        try:
            yield url
        finally:
            stop_server()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


