"""Connect to Ray once per process: the cluster in $RAY_ADDRESS, else a local one.

The same stage code runs on one laptop core or a cluster; only where Ray runs
changes. Ray Data's own progress bars are off: stages report progress through
components/common/progress.py. Once no later stage needs Ray, ``release_ray``
ends what ``ensure_ray`` started: an idle local instance (GCS, raylet, agents)
keeps ~6% of a core busy, taken from SFT and evaluation on a small machine.
"""
from __future__ import annotations

import os

_started_here = False  # whether ensure_ray() initialised Ray in this process (else someone else did, or nobody)


def ensure_ray() -> None:
    global _started_here
    import ray
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False)
        _started_here = True
    from ray.data import DataContext
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def release_ray() -> bool:
    """Shut down the Ray that :func:`ensure_ray` initialised (a local instance stops; a cluster in $RAY_ADDRESS is
    only disconnected from); a Ray initialised by someone else is left running. True when it shut one down."""
    global _started_here
    if not _started_here:  # set only after ensure_ray() imported and initialised Ray
        return False
    _started_here = False
    import ray
    if not ray.is_initialized():
        return False
    # In this thread, never a background one, although its ~1.5 s are mostly waiting: Ray's core worker must be
    # shut down on the driver's thread, and a reference the flow's thread drops meanwhile reaches a core worker
    # being destroyed (an abort; ray-project/ray#18910, #31145): from a background thread it can crash a pytest worker.
    ray.shutdown()
    return True


def actor_pool(size: int, calls_per_actor: int | None = None):
    """A fixed pool of ``size`` Ray Data actors; async actors take several batches at once."""
    from ray.data import ActorPoolStrategy
    return ActorPoolStrategy(size=size, max_concurrent_calls_per_actor=calls_per_actor)
