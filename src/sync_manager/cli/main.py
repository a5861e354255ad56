"""``sync_manager`` command line: argument parsing and error reporting, nothing else.

Every failure ends as one line on stderr and exit status 1; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from sync_manager import __version__
from sync_manager.cli import client, daemon, direct, sim
from sync_manager.errors import SyncManagerError

__all__ = ["CliParser", "main"]

PROG = "sync_manager"


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> CliParser:
    """The whole command tree."""
    parser = CliParser(
        prog=PROG,
        description="Leases on shared storage, compatible with sanlock 3.8.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    direct.add_parser(commands)
    client.add_parser(commands)
    daemon.add_parser(commands)
    sim.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except SyncManagerError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
