"""Simulator speed: engine events per wall second, and simulated host-seconds per wall second.

    python3 bench/sim_bench.py [--hosts 3 10 30] [--duration 900]

The engine figure is for 100 hosts that read, write, read the clock and sleep in a loop; the
cluster figure runs the real lease algorithms (sim/cluster.py) under the "heavy" fault preset.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Generator

from sync_manager.cli.sim import fault_plan
from sync_manager.core.effects import Effect, Now, Read, Sleep, Write
from sync_manager.sim.cluster import Cluster, ClusterConfig
from sync_manager.sim.disk import FakeDisk
from sync_manager.sim.engine import Simulation

SECTOR = 512
MIB = 1 << 20


def _busy_host(slot: int) -> Generator[Effect, object, None]:
    while True:
        yield Read("lun0", slot * SECTOR, SECTOR)
        yield Write("lun0", slot * SECTOR, bytes([slot % 256]) * SECTOR)
        yield Now()
        yield Sleep(0.05)


def engine_rate(*, trace: bool) -> float:
    """Events per wall second of the bare engine."""
    sim = Simulation(seed=1, trace=trace)
    sim.add_disk(FakeDisk("lun0", MIB))
    for slot in range(100):
        sim.spawn(sim.add_host(f"h{slot}"), _busy_host(slot))
    started = time.perf_counter()
    events = sim.run(until=20.0)
    return events / (time.perf_counter() - started)


def cluster_rate(hosts: int, duration: float) -> tuple[float, int]:
    """Simulated host-seconds per wall second of a faulty cluster, and its violations."""
    config = ClusterConfig(hosts=hosts, resources=max(2, hosts // 2), duration=duration)
    started = time.perf_counter()
    report = Cluster(1, config, fault_plan("heavy", config.io_timeout)).run()
    return report.host_seconds / (time.perf_counter() - started), len(report.violations)


def main() -> None:
    """Print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[3, 10, 30])
    parser.add_argument("--duration", type=float, default=900.0)
    args = parser.parse_args()
    print("| what | rate |")
    print("|---|---|")
    for trace in (True, False):
        print(
            f"| engine, 100 busy hosts, trace={trace} | {engine_rate(trace=trace):,.0f} events/s |"
        )
    for hosts in args.hosts:
        rate, violations = cluster_rate(hosts, args.duration)
        print(
            f"| cluster, {hosts} hosts, heavy faults, {args.duration:g} s | "
            f"{rate:,.0f} host-s/s ({violations} violations) |"
        )


if __name__ == "__main__":
    main()
