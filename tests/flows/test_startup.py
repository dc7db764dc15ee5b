"""`s1flow run` starts Prefect's temporary server from a thread (flows/startup.py): the very instance a flow's
client would start, only when no API URL is configured, and its failure reaches the caller."""
import pytest

pytest.importorskip("prefect")
from prefect.server.api.server import SubprocessASGIServer  # noqa: E402
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings  # noqa: E402

from flows.startup import start_prefect_server  # noqa: E402


def test_starts_the_instance_a_flow_client_would_start(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(SubprocessASGIServer, "start", lambda self, timeout=None: started.append((self, timeout)))
    home = tmp_path / "not" / "yet"  # a fresh machine's Prefect home: its database cannot open in a missing folder
    with temporary_settings(updates={PREFECT_HOME: home}, restore_defaults={PREFECT_API_URL}):
        start_prefect_server()()
    assert home.is_dir()
    assert len(started) == 1
    server, timeout = started[0]
    assert server is SubprocessASGIServer()  # the port-less singleton get_client() starts
    assert timeout >= 120  # beside Ray's start-up and the imports, Prefect's 20 s default is too short


def test_a_configured_api_is_left_alone(monkeypatch):
    monkeypatch.setattr(SubprocessASGIServer, "start", lambda *a, **k: pytest.fail("no server may start"))
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        start_prefect_server()()


def test_a_failed_start_is_raised_by_the_waiter(monkeypatch):
    def fail(self, timeout=None):
        raise RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    monkeypatch.setattr(SubprocessASGIServer, "start", fail)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        wait = start_prefect_server()
    with pytest.raises(RuntimeError, match="Timed out"):
        wait()
