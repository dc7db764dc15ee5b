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


def test_exit_after_cleanup_runs_the_exit_handlers_and_keeps_the_exit_code(tmp_path):
    """Threads Python would wait for are waited for, log handlers flush before the atexit handlers run, output is
    flushed, and the process ends with the given code (only the interpreter's module teardown is skipped)."""
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
