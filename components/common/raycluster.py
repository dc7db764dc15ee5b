"""Connect to Ray once per process: the cluster in $RAY_ADDRESS, else a local one.

The same stage code runs on one laptop core or a cluster; only where Ray runs
changes. Ray Data's own progress bars are off: stages report progress through
components/common/progress.py. Once no later stage needs Ray, ``release_ray``
ends what ``ensure_ray`` started: an idle local instance (GCS, raylet, agents)
keeps ~6% of a core busy, taken from SFT and evaluation on a small machine. Its
shutdown (~1.5 s, nearly all of it waiting for Ray's processes) can run in the
background while the next stage starts; ``ensure_ray`` and ``wait_ray_released``
wait for it.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Optional

_started_here = False  # whether ensure_ray() initialised Ray in this process (else someone else did, or nobody)
_releasing: Optional[threading.Thread] = None  # a background release_ray() still shutting Ray down


def ensure_ray() -> None:
    global _started_here
    wait_ray_released()  # a shutdown in flight reads as "not initialised": init only once it has finished
    import ray
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False)
        _started_here = True
    from ray.data import DataContext
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def release_ray(background: bool = False) -> bool:
    """Shut down the Ray that :func:`ensure_ray` initialised (a local instance stops; a cluster in $RAY_ADDRESS is
    only disconnected from); a Ray initialised by someone else is left running. True when it shut one down (or,
    with ``background``, started to: a non-daemon thread, which :func:`wait_ray_released` and the interpreter's
    exit join)."""
    global _started_here, _releasing
    if not _started_here:  # set only after ensure_ray() imported and initialised Ray
        return False
    _started_here = False
    import ray
    if not ray.is_initialized():
        return False
    if not background:
        ray.shutdown()
        return True
    _releasing = threading.Thread(target=_shutdown_logged, args=(ray,), name="s1flow-ray-release")
    _releasing.start()
    return True


def _shutdown_logged(ray) -> None:
    try:
        ray.shutdown()
    except Exception as e:  # a failed shutdown must not take the running stage down with it
        logging.getLogger(__name__).warning("Ray's shutdown failed: %s: %s", type(e).__name__, e)


def wait_ray_released(timeout: Optional[float] = None) -> None:
    """Wait for a background :func:`release_ray` to finish (no-op when none is in flight)."""
    global _releasing
    thread = _releasing
    if thread is not None:
        thread.join(timeout)
        if not thread.is_alive():
            _releasing = None


def actor_pool(size: int, calls_per_actor: int | None = None):
    """A fixed pool of ``size`` Ray Data actors; async actors take several batches at once."""
    from ray.data import ActorPoolStrategy
    return ActorPoolStrategy(size=size, max_concurrent_calls_per_actor=calls_per_actor)
