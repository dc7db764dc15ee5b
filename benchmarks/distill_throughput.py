"""Distillation throughput against a teacher that answers in a fixed latency, vs the ideal.

A local teacher (components/distill/teachers/simulator.py) adds ``--latency-ms`` to each
call; with ``--concurrency`` calls in flight, the ideal rate is
concurrency / latency questions per second. Prints the measured rate end to end
(Ray Data actor start-up included, Ray itself already up) and in steady state
(first to last finished shard), each as a ratio of the ideal. Goal: >= 0.9x.

    python benchmarks/distill_throughput.py [--questions 4000] [--latency-ms 200] [--concurrency 32] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("S1FLOW_NO_PROGRESS", "1")

from components.common.network import free_port  # noqa: E402
from components.common.raycluster import ensure_ray  # noqa: E402
from components.config import PoolConfig, TeacherConfig  # noqa: E402
from components.data.pool import generate_pool  # noqa: E402
from components.distill.distillation import distill_pool  # noqa: E402
from components.distill.shards import ShardStore  # noqa: E402
from components.distill.teachers.simulator import Simulator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=4000)
    ap.add_argument("--latency-ms", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    questions = generate_pool(PoolConfig(size=a.questions, seed=99, malformed_fraction=0.0))
    ideal = a.concurrency / (a.latency_ms / 1000)
    ensure_ray()
    with Simulator(free_port(), latency_ms=a.latency_ms) as sim, tempfile.TemporaryDirectory() as tmp:
        cfg = TeacherConfig(kind="vllm", model="simulated-teacher", base_url=sim.base_url, concurrency=a.concurrency,
                            workers=a.workers, batch_size=a.batch_size, timeout_s=30)
        start = time.time()
        report = distill_pool(questions, cfg, Path(tmp) / "shards")
        wall = time.time() - start
        store = ShardStore(Path(tmp) / "shards")
        stamps = sorted((int(p.rsplit("/", 1)[-1].split("-")[1]) / 1e9, sum(1 for _ in open(p)))
                        for p in store.shards())
        steady = sum(n for _, n in stamps[1:]) / (stamps[-1][0] - stamps[0][0])
        calls = sim.stats()["calls"]
    end_to_end = a.questions / wall
    print(f"questions {a.questions}, latency {a.latency_ms:.0f} ms, concurrency {a.concurrency} "
          f"({a.workers} Ray Data workers, batch {a.batch_size}); teacher calls {calls}; done {report['done']}")
    print(f"ideal {ideal:.1f} q/s")
    print(f"end to end  {end_to_end:.1f} q/s in {wall:.2f} s -> {end_to_end / ideal:.3f}x ideal (actor start-up included)")
    print(f"steady state {steady:.1f} q/s -> {steady / ideal:.3f}x ideal (goal >= 0.9x)")


if __name__ == "__main__":
    main()
