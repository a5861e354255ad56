"""The daemon's configuration: defaults, the TOML file, the command line, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_manager.daemon import config as config_module
from sync_manager.daemon.config import Config, load, stable_host_name
from sync_manager.errors import UsageError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sync_manager.conf"
    path.write_text(text)
    return str(path)


def test_file_then_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANLOCK_RUN_DIR", str(tmp_path / "run"))
    path = write(tmp_path, 'io_timeout = 5\nkill_grace = 10\nwatchdog = "none"\n')
    config = load(path, {"kill_grace": 20, "host_name": None})
    assert (config.io_timeout, config.kill_grace, config.watchdog) == (5, 20, "none")
    assert config.run_dir == str(tmp_path / "run")
    assert config.host_name == stable_host_name(str(tmp_path / "run"))


def test_a_missing_default_file_is_fine_a_named_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG", str(tmp_path / "absent.conf"))
    assert load(None, {"io_timeout": 3}).io_timeout == 3
    with pytest.raises(UsageError, match="does not exist"):
        load(str(tmp_path / "nope.conf"), {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "unknown key 'colour'"),
        ('io_timeout = "ten"\n', "io_timeout must be a int"),
        ("kill_grace = true\n", "kill_grace must be a int"),
        ("io_timeout = \n", "sync_manager.conf"),
        ("io_timeout = 0\n", "at least 1 second"),
        ("kill_grace = 61\n", "0..60"),
        ('log_level = "loud"\n', "log_level"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load(write(tmp_path, text), {})


def test_host_names_are_stable_per_run_dir() -> None:
    a, b = stable_host_name("/run/a"), stable_host_name("/run/b")
    assert a == stable_host_name("/run/a")
    assert a != b
    assert len(a.encode()) <= 47


def test_a_long_host_name_is_refused() -> None:
    with pytest.raises(UsageError, match="longer than 47"):
        Config(host_name="h" * 48)
