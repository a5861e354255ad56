"""The client against stand-in daemons: reply decoding, error mapping, CLI arguments.

A thread plays the daemon on a Unix socket in a temporary run dir: it frames each request
with our RequestParser and answers with replies our encoder makes (the interop tests check
the real sanlock).
"""

from __future__ import annotations

import errno
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync_manager.cli.main import main
from sync_manager.client import (
    Client,
    ConnectionLost,
    DaemonNotRunning,
    DaemonTimeout,
    RestrictFlag,
    SanlockError,
    killpath_args,
    socket_path,
)
from sync_manager.errors import UsageError
from sync_manager.protocol import (
    Command,
    Frame,
    Host,
    HostsReply,
    InquireReply,
    Reply,
    RequestParser,
    Result,
    encode_reply,
)

Answer = Callable[[Frame], Reply | None]


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # a short path: a Unix socket path must fit in 108 bytes
    with tempfile.TemporaryDirectory(prefix="smc", dir="/tmp") as path:
        yield Path(path)


class FakeDaemon:
    """Accepts connections and answers each request with ``answer(frame)`` (None: nothing)."""

    def __init__(self, run_dir: Path, answer: Answer) -> None:
        self.frames: list[Frame] = []
        self.answer = answer
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(run_dir / "sanlock.sock"))
        self.sock.listen(5)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                parser = RequestParser()
                while data := conn.recv(65536):
                    parser.feed(data)
                    for frame in parser.frames():
                        self.frames.append(frame)
                        reply = self.answer(frame)
                        if reply is not None:
                            conn.sendall(encode_reply(frame.header, reply))

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def fake(run_dir: Path) -> Iterator[Callable[[Answer], FakeDaemon]]:
    daemons: list[FakeDaemon] = []

    def start(answer: Answer) -> FakeDaemon:
        daemons.append(FakeDaemon(run_dir, answer))
        return daemons[-1]

    yield start
    for daemon in daemons:
        daemon.close()


def test_socket_path_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANLOCK_RUN_DIR", raising=False)
    assert socket_path() == "/run/sanlock/sanlock.sock"
    monkeypatch.setenv("SANLOCK_RUN_DIR", "/tmp/elsewhere")
    assert socket_path() == "/tmp/elsewhere/sanlock.sock"
    assert Client("/x").path == "/x/sanlock.sock"


def test_daemon_not_running(run_dir: Path) -> None:
    with pytest.raises(DaemonNotRunning) as caught:
        Client(run_dir).version()
    err = caught.value
    assert (err.code, err.name) == (-errno.ENOENT, "ENOENT")
    assert str(run_dir / "sanlock.sock") in str(err)
    assert "not running" in str(err)


def test_timeout_when_the_daemon_does_not_answer(run_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(run_dir / "sanlock.sock"))
        mute.listen(5)  # connect succeeds (backlog); nobody ever answers
        with pytest.raises(DaemonTimeout) as caught:
            Client(run_dir, timeout=0.2).version()
    assert caught.value.code == -errno.ETIMEDOUT


def _fill_accept_queue(server: socket.socket, path: str) -> list[socket.socket]:
    """Connect non-blocking until the listener's queue refuses (EAGAIN); the filling sockets."""
    filling: list[socket.socket] = []
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            return filling
        filling.append(sock)


def test_a_full_accept_queue_is_waited_for(run_dir: Path) -> None:
    path = str(run_dir / "sanlock.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(0)
        filling = _fill_accept_queue(server, path)
        # room comes after 0.2 s: the client waits for it instead of failing with EAGAIN

        def make_room() -> None:
            server.accept()[0].close()

        threading.Timer(0.2, make_room).start()
        conn = Client(run_dir, timeout=5.0).connect(Command.VERSION)
        assert not conn.closed
        conn.close()
        # no room ever: a timeout, not EAGAIN
        with pytest.raises(DaemonTimeout) as caught:
            Client(run_dir, timeout=0.2).connect(Command.VERSION)
        assert caught.value.code == -errno.ETIMEDOUT
        for sock in filling:
            sock.close()


def test_reply_cut_short(run_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(run_dir / "sanlock.sock"))
        server.listen(5)

        def hang_up() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.sendall(b"\x10\x20\x28")  # 3 bytes of a 32-byte header, then EOF
            conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        with pytest.raises(ConnectionLost) as caught:
            Client(run_dir, timeout=5).get_hosts("LS")
        thread.join()
    assert caught.value.code == -1


def test_results_and_errors(fake: Callable[[Answer], FakeDaemon], run_dir: Path) -> None:
    codes = {Command.ADD_LOCKSPACE: -17, Command.INQ_LOCKSPACE: -115}
    daemon = fake(lambda frame: Result(codes.get(frame.header.command, 0)))  # type: ignore[arg-type]
    client = Client(run_dir, timeout=5)
    with pytest.raises(SanlockError) as caught:
        client.add_lockspace("LS", 1, "/p", io_timeout=3, wait=False)
    assert (caught.value.code, caught.value.name) == (-17, "EEXIST")
    assert str(caught.value) == "add_lockspace failed: File exists (EEXIST, -17)"
    assert client.inq_lockspace("LS", 1, "/p") is None
    add = daemon.frames[0].decode()
    assert (add.header_fields(), add.payload()[:2]) == ((1, 3, 0), b"LS")


def test_sanlock_code_names() -> None:
    err = SanlockError("acquire", -243)
    assert err.name == "SANLK_ACQUIRE_IDLIVE"
    assert str(err) == "acquire failed: Lease is held by another host (SANLK_ACQUIRE_IDLIVE, -243)"


def test_hosts_and_inquire(fake: Callable[[Answer], FakeDaemon], run_dir: Path) -> None:
    def answer(frame: Frame) -> Reply | None:
        if frame.header.command == Command.GET_HOSTS:
            return HostsReply(0, (Host(1, 2, 3, 10, 3), Host(2, flags=5)))
        return InquireReply(0, 2, b"LS:R:/p\\:x:1048576:5 LS:S:/p:2097152:SH")

    fake(answer)
    client = Client(run_dir, timeout=5)
    hosts = client.get_hosts("LS")
    assert [(h.host_id, h.state and h.state.name) for h in hosts] == [(1, "LIVE"), (2, "DEAD")]
    held = client.inquire(1234)
    assert [(h.name, h.disks, h.lver, h.shared) for h in held] == [
        ("R", (("/p:x", 1048576),), 5, False),
        ("S", (("/p", 2097152),), None, True),
    ]


def test_registration(fake: Callable[[Answer], FakeDaemon], run_dir: Path) -> None:
    daemon = fake(lambda frame: None if frame.header.command == Command.REGISTER else Result(0))
    with Client(run_dir, timeout=5).register() as reg:
        reg.acquire("LS:R:/p:1048576:7", persistent=True, owner_name="vm1")
        reg.killpath("/bin/kill", ["a b", "c\\d"], append_pid=True)
        reg.restrict(RestrictFlag.ALL)
        with pytest.raises(UsageError):
            reg.release("LS:R")
    assert reg.closed
    register, acquire, killpath, restrict = (f.decode() for f in daemon.frames)
    assert type(register).__name__ == "Register"
    assert acquire.header_fields() == (0, 1, 0xFFFFFFFF)
    res = acquire.resources[0]  # type: ignore[attr-defined]
    assert (res.lver, res.flags, acquire.options.owner_name) == (7, 0x9, b"vm1")  # type: ignore[attr-defined]
    assert killpath.args == b"a\\ b c\\\\d"  # type: ignore[attr-defined]
    assert (killpath.flags, restrict.flags) == (1, 1)  # type: ignore[attr-defined]


def test_killpath_args() -> None:
    assert killpath_args(["-x", "two words"]) == b"-x two\\ words"


@pytest.mark.parametrize(
    "argv",
    [
        ["client", "status", "-o", "x"],
        ["client", "acquire", "-r", "LS:R:/p:100", "-p", "1"],  # offset not a multiple of 512
        ["client", "acquire", "-r", "LS:R:/p:0"],  # no -p
        ["client", "add_lockspace", "-s", "LS"],
        ["client", "gets", "-h", "x"],
    ],
)
def test_bad_arguments_exit_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err


def test_cli_reports_a_missing_daemon_in_one_line(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["client", "--run-dir", str(run_dir), "inquire", "-p", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "inquire pid 1\n"
    assert captured.err == (
        f"sync_manager: inquire failed: the sanlock daemon is not running "
        f"(no socket at {run_dir}/sanlock.sock) (ENOENT, -2)\n"
    )


def test_cli_done_line_carries_the_code(
    fake: Callable[[Answer], FakeDaemon], run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake(lambda frame: Result(-243))
    argv = ["client", "--run-dir", str(run_dir), "acquire", "-r", "LS:R:/p:1M", "-p", "9"]
    assert main(argv) == 1
    assert capsys.readouterr().out == "acquire pid 9\nacquire done -243\n"


def test_cli_invalid_sizes(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["client", "--run-dir", str(run_dir), "read", "-s", "LS:0:/p:0", "-Z", "512"]
    assert main([*argv, "-A", "8M"]) == 1
    assert "Invalid sector_size/align_size" in capsys.readouterr().err
