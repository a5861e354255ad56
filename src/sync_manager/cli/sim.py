"""``sync_manager sim``: run the deterministic cluster simulator from the command line.

The same arguments replay the same run exactly. Exit status 1 when an invariant is violated,
with the seed, the violation and the trace that led to it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from sync_manager.errors import UsageError
from sync_manager.sim.cluster import Cluster, ClusterConfig, max_io_delay
from sync_manager.sim.faults import FaultPlan
from sync_manager.timeouts import Timeouts

__all__ = ["FAULT_PRESETS", "add_parser", "fault_plan"]

FAULT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "light": {
        "tail_probability": 0.005,
        "eio_probability": 0.001,
        "crash_mtbf": 1200.0,
        "pause_mtbf": 1800.0,
    },
    "heavy": {
        "tail_probability": 0.02,
        "eio_probability": 0.005,
        "hang_probability": 0.002,
        "crash_mtbf": 400.0,
        "pause_mtbf": 600.0,
        "pause_duration": (1.0, 150.0),
        "lost_path_mtbf": 1500.0,
    },
}


def fault_plan(preset: str, io_timeout: int, **overrides: Any) -> FaultPlan:
    """The FaultPlan of a preset, with the options given on the command line on top.

    Hung I/O and lost paths end (the I/O lands or fails) within :func:`max_io_delay`: the
    storage stack's own timeouts bound how late an abandoned write can land, an assumption
    sanlock makes too (see sim/cluster.py).
    """
    knobs = dict(FAULT_PRESETS[preset])
    knobs.update({k: v for k, v in overrides.items() if v is not None})
    bound = max_io_delay(Timeouts(io_timeout))
    knobs.setdefault("hang_heal", (min(20.0, bound), bound))
    knobs.setdefault("lost_path_duration", (1.0, bound))
    return FaultPlan(**knobs)


def add_parser(commands: Any) -> None:
    """Add ``sim`` to the top-level subcommands."""
    parser = commands.add_parser(
        "sim",
        help="run the deterministic cluster simulator",
        description="Simulate hosts running sync_manager's lease algorithms on a shared fake "
        "disk, with faults, and check that no two hosts ever hold a lease at once. The same "
        "arguments replay the same run.",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--seeds",
        type=_positive,
        default=1,
        metavar="COUNT",
        help="run COUNT seeds from --seed on (default 1)",
    )
    parser.add_argument("--hosts", type=_positive, default=3, help="hosts (default 3)")
    parser.add_argument(
        "--resources", type=_positive, default=3, help="resource leases (default 3)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="simulated seconds (default 600)",
    )
    parser.add_argument(
        "--io-timeout",
        type=_positive,
        default=2,
        metavar="SECONDS",
        help="lockspace io_timeout (default 2: short runs still see takeovers)",
    )
    parser.add_argument(
        "--faults",
        choices=sorted(FAULT_PRESETS),
        default="light",
        help="fault preset (default light)",
    )
    parser.add_argument("--crash-mtbf", type=float, help="mean seconds between host crashes")
    parser.add_argument("--pause-mtbf", type=float, help="mean seconds between host pauses")
    parser.add_argument(
        "--eio", type=float, dest="eio_probability", help="probability of EIO per I/O"
    )
    parser.add_argument(
        "--hang", type=float, dest="hang_probability", help="probability that an I/O hangs"
    )
    parser.add_argument(
        "--no-fencing",
        action="store_true",
        help="disable the supervisor's kills and the watchdog (to see the "
        "checker catch the consequences)",
    )
    parser.add_argument("--trace", action="store_true", help="print the end of the trace")
    parser.set_defaults(run=_run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _run(args: argparse.Namespace) -> int:
    if not args.duration > 0:
        raise UsageError("--duration must be positive")
    config = ClusterConfig(
        hosts=args.hosts,
        resources=args.resources,
        duration=args.duration,
        io_timeout=args.io_timeout,
        fencing=not args.no_fencing,
    )
    failed = 0
    started = time.monotonic()
    for seed in range(args.seed, args.seed + args.seeds):
        plan = fault_plan(
            args.faults,
            args.io_timeout,
            crash_mtbf=args.crash_mtbf,
            pause_mtbf=args.pause_mtbf,
            eio_probability=args.eio_probability,
            hang_probability=args.hang_probability,
        )
        report = Cluster(seed, config, plan).run()
        print(report.summary())
        if report.violations:
            failed += 1
            print(report.trace_tail)
            print(f"replay: sync_manager sim --seed {seed} " + _replay_args(args))
        elif args.trace:
            print(report.trace_tail)
    wall = time.monotonic() - started
    host_seconds = args.hosts * args.duration * args.seeds
    print(
        f"{args.seeds} run(s), {failed} with violations; "
        f"{host_seconds / wall:.0f} simulated host-seconds per wall second"
    )
    return 1 if failed else 0


def _replay_args(args: argparse.Namespace) -> str:
    parts = [
        f"--hosts {args.hosts}",
        f"--resources {args.resources}",
        f"--duration {args.duration:g}",
        f"--io-timeout {args.io_timeout}",
        f"--faults {args.faults}",
    ]
    for flag, value in (
        ("--crash-mtbf", args.crash_mtbf),
        ("--pause-mtbf", args.pause_mtbf),
        ("--eio", args.eio_probability),
        ("--hang", args.hang_probability),
    ):
        if value is not None:
            parts.append(f"{flag} {value:g}")
    if args.no_fencing:
        parts.append("--no-fencing")
    return " ".join(parts)
