"""python3-sanlock doing what vdsm does gets the same answers from our daemon as from sanlock.

``vdsm_client.py`` runs under ``/usr/bin/python3`` with Debian's python3-sanlock 3.8.5 (issue 4):
write_lockspace, add_lockspace, inq_lockspace, get_lockspaces, get_hosts, write_resource,
read_resource, register, acquire, inquire, read_resource_owners, release, rem_lockspace, the
asynchronous add/remove, and the error cases. It prints every call's normalized outcome (its
docstring lists the normalizations). The same script runs against the real sanlock daemon and
against the daemon under test, each in its own run dir on blank lease files, and the two
records must be equal call by call. A few absolute checks make the test fail on its own too,
should both daemons agree on something wrong.

The sanlock record is made once per module; for the ``sanlock`` kind the test therefore also
checks that the script's normalized record is the same on two runs (no flaky values).
Each run takes about 15 s (three joins and three removals at io_timeout 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, daemon, make_daemon

__all__ = ["daemon"]  # the parametrized fixture, re-exported for pytest

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).with_name("vdsm_client.py")

Calls = list[dict[str, Any]]

# What vdsm relies on, whatever sanlock says: label -> the entry's expected fields.
LIVE = {"generation": 1, "timestamp": "ts>0", "io_timeout": 1, "flags": 3}  # sanlock.HOST_LIVE
OWNER = {"host_id": 1, "generation": 1, "timestamp": "ts>0", "io_timeout": 0, "flags": 0}
EXPECTED: dict[str, dict[str, Any]] = {
    "acquire(SDM) before add": {"ok": False, "errno": 28},
    "add_lockspace(1, iotimeout=1)": {"ok": True, "result": None},
    "inq_lockspace": {"ok": True, "result": True},
    "add_lockspace again": {"ok": False, "errno": 17},
    "acquire(SDM, slkfd=fd1)": {"ok": True, "result": None},
    "acquire(SDM, slkfd=fd2) held by fd1": {"ok": False, "errno": 17},
    "release(SDM, slkfd=fd2) not held": {"ok": False, "errno": 1},
    "rem_lockspace(unused=True) while held": {"ok": False, "errno": 16},
    "read_resource_owners(SDM) held": {"ok": True, "result": [OWNER]},
    "acquire(VOL, pid=child)": {"ok": True, "result": None},
    "release(VOL, pid=child)": {"ok": True, "result": None},
    "release(SDM, slkfd=fd1)": {"ok": True, "result": None},
    "release(SDM, slkfd=fd1) again": {"ok": False, "errno": 1},
    "read_resource_owners(SDM) released": {"ok": True, "result": []},
    "acquire(unknown lockspace)": {"ok": False, "errno": 28},
    "get_hosts(host_id 1)": {"ok": True, "result": [{"host_id": 1, **LIVE}]},
    "rem_lockspace": {"ok": True, "result": None},
    "inq_lockspace after rem": {"ok": True, "result": False},
    "get_hosts after rem": {"ok": False, "errno": 2},
    "inq_lockspace while adding": {"ok": True, "result": None},
    "inq_lockspace(wait=True)": {"ok": True, "result": True},
    "get_hosts(host_id 1) rejoined": {
        "ok": True,
        "result": [{**LIVE, "host_id": 1, "generation": 2}],
    },
    "inq_lockspace removed": {"ok": True, "result": False},
}


def run_flow(running: Daemon) -> dict[str, Any]:
    """The script's record against ``running``, on blank lease files in its run dir."""
    result: dict[str, Any] = running.run_python(
        SCRIPT, str(running.run_dir / "ids"), str(running.run_dir / "leases")
    )
    return result


@pytest.fixture(scope="module")
def sanlock_calls() -> Calls:
    """The record against the real sanlock daemon (made once per module)."""
    with make_daemon("sanlock") as reference:
        calls: Calls = run_flow(reference)["calls"]
    return calls


def _show(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "(none)"
    return json.dumps({k: v for k, v in entry.items() if k != "call"})


def differences(expected: Calls, got: Calls) -> list[str]:
    """One line per call whose outcome differs, by label (missing or extra calls too)."""
    want = {entry["call"]: entry for entry in expected}
    have = {entry["call"]: entry for entry in got}
    lines = []
    for label in [*want, *(label for label in have if label not in want)]:
        if want.get(label) != have.get(label):
            theirs, ours = _show(want.get(label)), _show(have.get(label))
            lines.append(f"{label}:\n    sanlock: {theirs}\n    got:     {ours}")
    return lines


# Where our daemon answers differently on purpose, with the reason.
DELIBERATE: dict[str, dict[str, Any]] = {
    # sanlock does not check the range: it reads host 2001's "record" past the lockspace area
    # (the next area's bytes) and fails on its magic (-223). We refuse the id as invalid.
    "add_lockspace(host_id 2001)": {"ok": False, "errno": 22},
}


def test_vdsm_flow(daemon: Daemon, sanlock_calls: Calls) -> None:
    flow = run_flow(daemon)
    calls: Calls = flow["calls"]
    by_label = {entry["call"]: entry for entry in calls}
    expected = sanlock_calls
    if daemon.kind == "sync_manager":
        expected = [{**entry, **DELIBERATE.get(entry["call"], {})} for entry in sanlock_calls]
    problems = differences(expected, calls)
    for label, fields in EXPECTED.items():
        entry = by_label.get(label, {})
        if any(entry.get(key) != value for key, value in fields.items()):
            problems.append(f"{label}: expected {fields}, got {_show(entry or None)}")
    assert not problems, (
        f"{daemon.kind}: {len(problems)} difference(s) from sanlock or vdsm's expectations\n"
        + "\n".join(problems)
        + f"\n--- seconds per call ---\n{json.dumps(flow['seconds'])}"
        + f"\n--- {daemon.kind} daemon log (tail) ---\n{daemon.log()[-6000:]}"
    )
