"""The simulated cluster under faults: fixed seeds on every run, a sweep marked slow.

Each run joins hosts, renews, acquires, converts and releases leases while the fault plan
crashes and pauses hosts, fails and hangs I/O; the checker must see no violation, and the run
must really have exercised the algorithms (takeovers, recoveries, faults).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from sync_manager.cli.sim import fault_plan
from sync_manager.core.paxos_io import ReadPattern
from sync_manager.sim.cluster import Cluster, ClusterConfig, ClusterReport


def run(seed: int, preset: str = "heavy", **config: object) -> ClusterReport:
    cfg = ClusterConfig(duration=900.0, **config)  # type: ignore[arg-type]
    return Cluster(seed, cfg, fault_plan(preset, cfg.io_timeout)).run()


SEEDS = range(1, 6)


@pytest.fixture(scope="module")
def heavy() -> dict[int, ClusterReport]:
    """One run per fixed seed under heavy faults, shared by the tests below."""
    return {seed: run(seed) for seed in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
def test_no_violation_under_heavy_faults(seed: int, heavy: dict[int, ClusterReport]) -> None:
    report = heavy[seed]
    assert report.violations == [], report.summary() + "\n" + report.trace_tail
    assert report.counts["acquire"] > 10
    assert report.counts["renew"] > 100
    assert sum(report.faults.values()) > 0


def test_faults_really_exercise_takeovers_and_fencing(heavy: dict[int, ClusterReport]) -> None:
    reports = list(heavy.values())
    assert sum(r.takeovers for r in reports) > 0
    assert sum(r.counts["recovery"] for r in reports) > 0
    assert sum(r.faults["crash"] for r in reports) > 0
    assert sum(r.faults["pause"] for r in reports) > 0


def test_more_hosts_than_resources_contend() -> None:
    report = run(11, "light", hosts=6, resources=2, nowait_probability=0.3)
    assert report.violations == [], report.summary() + "\n" + report.trace_tail
    assert report.counts["acquire_error_AcquireIdLive"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_the_sanlock_read_pattern_too(seed: int) -> None:
    """The cluster runs what the daemon runs (MINIMAL); sanlock's own reads must be safe too."""
    report = run(seed, read_pattern=ReadPattern.COMPACT)
    assert report.violations == [], report.summary() + "\n" + report.trace_tail
    assert report.counts["acquire"] > 10


def test_same_seed_same_run(heavy: dict[int, ClusterReport]) -> None:
    again = run(3)
    assert again.counts == heavy[3].counts
    assert again.trace_tail == heavy[3].trace_tail
    assert heavy[4].trace_tail != again.trace_tail


def test_cli_replays_and_reports() -> None:
    args = [
        sys.executable,
        "-m",
        "sync_manager",
        "sim",
        "--seed",
        "2",
        "--duration",
        "300",
        "--faults",
        "heavy",
    ]
    out1 = subprocess.run(args, check=False, capture_output=True, text=True, timeout=120)
    out2 = subprocess.run(args, check=False, capture_output=True, text=True, timeout=120)
    assert out1.returncode == 0, out1.stdout + out1.stderr
    summary = out1.stdout.splitlines()[:-1]  # the last line has the wall-clock speed
    assert summary == out2.stdout.splitlines()[:-1]
    assert "violations 0" in out1.stdout
    assert "simulated host-seconds 900" in out1.stdout


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 160))
def test_sweep(seed: int) -> None:
    report = run(seed, hosts=4, resources=3)
    assert report.violations == [], report.summary() + "\n" + report.trace_tail
