"""`s1flow run` launches Prefect's temporary server as its own process right away (flows/temporary_server.py:
the command Prefect runs, without importing the server here), only when no API URL is configured; the flow's
client uses it; a failed start reaches the caller with the server's output; the exit flushes logs first."""
import sys

import pytest

pytest.importorskip("prefect")
from prefect.settings import (  # noqa: E402
    PREFECT_API_URL,
    PREFECT_HOME,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

import flows.temporary_server as ts  # noqa: E402
from flows.startup import import_stage_libraries, prefect_api, start_prefect_server  # noqa: E402


def test_launches_the_command_and_environment_prefect_itself_would(monkeypatch):
    from prefect.server.api import server as prefect_server
    seen = {}
    monkeypatch.setattr(prefect_server.subprocess, "Popen", lambda args, env: seen.update(args=args, env=env))
    prefect_server.SubprocessASGIServer(port=8765)._run_uvicorn_command()
    prefect_server.SubprocessASGIServer._instances.pop(8765, None)
    assert ts.uvicorn_command(8765) == seen["args"]
    assert ts.server_environment() == seen["env"]  # the same keys, the same precedence


def test_a_configured_api_is_left_alone(monkeypatch):
    monkeypatch.setattr(ts.TemporaryServer, "launch", lambda *a, **k: pytest.fail("no server may start"))
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert start_prefect_server() is None
    import_stage_libraries(None, modules=("no_such_module_is_imported",))  # nothing to wait for: nothing imported
    with prefect_api(None):
        pass


# a stand-in server: exits with uvicorn's "port in use" code on its first launch, then answers /api/health
FAKE_SERVER = """
import http.server, pathlib, sys
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("tried")
    print("ERROR: [Errno 98] error while attempting to bind on address: address already in use", flush=True)
    sys.exit(3)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Health).serve_forever()
"""


def test_a_port_taken_meanwhile_is_retried_and_a_failed_start_reports_its_output(monkeypatch, tmp_path):
    marker = tmp_path / "first"
    monkeypatch.setattr(ts, "uvicorn_command", lambda port: [sys.executable, "-c", FAKE_SERVER, str(marker), str(port)])
    server = ts.TemporaryServer.launch({})
    try:
        server.wait_until_ready(timeout=60)
        assert marker.exists() and server.answers()
    finally:
        server.stop()
    assert not server.answers()
    # any other failed start (uvicorn's exit code 3 included) is raised at once, with what the server printed
    for code in (1, 3):
        command = [sys.executable, "-c", f"print('no database'); exit({code})"]
        monkeypatch.setattr(ts, "uvicorn_command", lambda port, command=command: command)
        broken = ts.TemporaryServer.launch({})
        with pytest.raises(RuntimeError, match=f"(?s)exited with code {code}.*no database"):
            broken.wait_until_ready(timeout=60)
        broken.stop()


def test_the_real_server_serves_a_flow_and_stops(tmp_path):
    """Prefect's own server, launched in a fresh home (the database created on start), runs a flow through this
    process's client; stopped, it does not answer."""
    from prefect import flow, task

    @task
    def add_one(x: int) -> int:
        return x + 1

    @flow
    def tiny() -> int:
        return add_one(1)

    home = tmp_path / "not" / "yet"  # a fresh machine's home: created before the server opens its database
    with temporary_settings(updates={PREFECT_HOME: home, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180},
                            restore_defaults={PREFECT_API_URL}):  # a loaded 2-core machine boots it slowly
        server = start_prefect_server()
        assert home.is_dir() and server is not None
        try:
            with prefect_api(server):
                assert tiny() == 2
                assert PREFECT_API_URL.value() == server.api_url
        finally:
            server.stop()
    assert not server.answers()


def test_exit_after_cleanup_runs_the_exit_handlers_and_keeps_the_exit_code(tmp_path):
    """Threads Python would wait for are waited for (an open thread pool does not hang it), log handlers flush
    before the atexit handlers run, output is flushed, and the process ends with the given code (only the
    interpreter's module teardown is skipped)."""
    import subprocess
    import sys

    from tests.conftest import REPO
    script = f"""
import atexit, logging, pathlib, threading, time
from flows.startup import exit_after_cleanup
out, order = pathlib.Path({str(tmp_path)!r}), []
class ApiLike(logging.Handler):  # like Prefect's API log handler: its flush needs a server an exit handler stops
    def emit(self, record): pass
    def flush(self): order.append("flush")
logging.getLogger("x").addHandler(ApiLike())
def late_writer():
    time.sleep(0.5)
    (out / "thread").write_text("done")
atexit.register(lambda: (out / "order").write_text(" ".join(order)))  # registered first: runs last
atexit.register(lambda: order.append("server stop"))
atexit.register(lambda: (out / "atexit").write_text(str((out / "thread").exists())))
threading.Thread(target=late_writer).start()
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(2)  # left open: its idle workers wait until the threading exit callbacks wake them
pool.submit(lambda: None).result()
print("summary line", end="")  # no newline: still buffered when the process ends
exit_after_cleanup(3)
print("never")
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "summary line"
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "True"  # the handlers ran after the thread finished
    assert (tmp_path / "order").read_text().startswith("flush server stop")  # logs flushed while the server ran


def test_the_command_line_starts_without_the_stage_libraries():
    """`s1flow` imports neither torch nor transformers before it starts the server (they import beside it);
    off a terminal, transformers is still told to draw no progress bars once it is imported."""
    import subprocess
    import sys

    from tests.conftest import REPO
    script = """
import sys
import flows.cli
light = not {"torch", "transformers"} & set(sys.modules)
from transformers.utils import logging
print(light, logging.is_progress_bar_enabled())
"""
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "S1FLOW_NO_PROGRESS")}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert proc.stdout.split() == ["True", "False"], proc.stderr


def test_release_ray_stops_only_the_ray_ensure_ray_started(monkeypatch):
    """A pipeline run stops the Ray it started; a Ray someone else initialised in the process keeps running."""
    import sys
    import types

    from components.common import raycluster

    class FakeRay(types.ModuleType):
        def __init__(self, running):
            super().__init__("ray")
            self.running, self.calls = running, []

        def is_initialized(self):
            return self.running

        def init(self, **kw):
            self.running = True
            self.calls.append("init")

        def shutdown(self):
            self.running = False
            self.calls.append("shutdown")

    data = types.ModuleType("ray.data")
    data.DataContext = types.SimpleNamespace(get_current=lambda: types.SimpleNamespace())
    for running in (False, True):
        ray = FakeRay(running)
        ray.data = data
        monkeypatch.setitem(sys.modules, "ray", ray)
        monkeypatch.setitem(sys.modules, "ray.data", data)
        monkeypatch.setattr(raycluster, "_started_here", False)
        raycluster.ensure_ray()
        released = raycluster.release_ray()
        assert released is (not running) and ray.running is running
        assert ray.calls == ([] if running else ["init", "shutdown"])
        assert raycluster.release_ray() is False  # once only
