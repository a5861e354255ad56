"""Host events between our daemon and a real sanlock daemon (protocol 2.5.17, spec 5.6).

Host 1 runs our daemon, host 2 sanlock's, in one lockspace (io_timeout 1). A python3-sanlock
listener registers for events on one daemon (``reg_event``); the other daemon is asked to
send it one (``set_event``). The event travels in the sender's next renewals (its bitmap and
its record's write_* fields) and reaches the listener at the receiver's next renewal that
sees it: a few seconds. Both directions.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import (
    SYSTEM_PYTHON,
    Daemon,
    join,
    lease_file,
    make_daemon,
    require_python_sanlock,
    require_sanlock,
)

LISTEN = """
    import json, select, sanlock, sys, time
    fd = sanlock.reg_event(b"LS")
    print("ready", flush=True)
    got, deadline = [], time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        select.select([fd], [], [], 1.0)
        got = sanlock.get_event(fd)
    sanlock.end_event(fd, b"LS")
    print(json.dumps(got), flush=True)
"""

SEND = """
    import sanlock, sys
    sanlock.set_event(b"LS", int(sys.argv[1]), 0, 7, data=42, flags=sanlock.SETEV_CUR_GENERATION)
    print("sent", flush=True)
"""


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[Daemon, Daemon]]:
    require_sanlock()
    require_python_sanlock()
    ours, theirs = make_daemon("sync_manager", "ev-host1"), make_daemon("sanlock", "ev-host2")
    with ours, theirs:
        path = lease_file(Path(ours.run_dir) / "leases")
        for daemon, host_id in ((ours, 1), (theirs, 2)):
            join(daemon, path, host_id)
        yield ours, theirs


def _python(daemon: Daemon, script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SYSTEM_PYTHON, "-c", textwrap.dedent(script), *args],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.interop
@pytest.mark.parametrize("receiver", ["sync_manager", "sanlock"])
def test_an_event_reaches_the_other_host(hosts: tuple[Daemon, Daemon], receiver: str) -> None:
    ours, theirs = hosts
    to, sender = (ours, theirs) if receiver == "sync_manager" else (theirs, ours)
    to_id, from_id = (1, 2) if receiver == "sync_manager" else (2, 1)
    listener = _python(to, LISTEN)
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready", listener.stderr
    sent = _python(sender, SEND, str(to_id))
    out, err = sent.communicate(timeout=30)
    assert out.strip() == "sent", err + sender.log()
    out, err = listener.communicate(timeout=40)
    events = json.loads(out)
    assert len(events) >= 1, f"no event\n{err}\n{to.log()[-3000:]}\n{sender.log()[-3000:]}"
    event = events[0]
    assert event["from_host_id"] == from_id
    assert event["from_generation"] >= 1
    assert (event["host_id"], event["event"], event["data"]) == (to_id, 7, 42)
