"""Connect to Ray once per process: the cluster in $RAY_ADDRESS, else a local one.

The same stage code runs on one laptop core or a cluster; only where Ray runs
changes. Ray Data's own progress bars are off: stages report progress through
components/common/progress.py.
"""
from __future__ import annotations

import os


def ensure_ray() -> None:
    import ray
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False)
    from ray.data import DataContext
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def actor_pool(size: int, calls_per_actor: int | None = None):
    """A fixed pool of ``size`` Ray Data actors; async actors take several batches at once."""
    from ray.data import ActorPoolStrategy
    return ActorPoolStrategy(size=size, max_concurrent_calls_per_actor=calls_per_actor)
