"""Killpath argv building, as sanlock 3.8.5's helper does it (src/helper.c ``run_path``)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_manager.errors import UsageError
from sync_manager.supervisor.killpath import (
    MAX_ARGV,
    escape_killpath_arg,
    killpath_argv,
    split_killpath_args,
)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("", []),
        ("a", ["a"]),
        ("a b c", ["a", "b", "c"]),
        ("  a \t b\n", ["a", "b"]),  # runs of whitespace make no empty argument
        ("qemu:///system 4f1c-uuid poweroff", ["qemu:///system", "4f1c-uuid", "poweroff"]),
        (r"a\ b c", ["a b", "c"]),  # escaped space
        ("a\\\tb", ["a\tb"]),  # escaped tab (any isspace)
        (r"a\\b", ["a\\b"]),  # escaped backslash
        (r"a\\ b", ["a\\", "b"]),  # backslash then an unescaped space
        (r"ab\xcd ef", ["ab"]),  # any other escape stops parsing, keeping the arg so far
        ("ab\\", ["ab"]),  # a trailing backslash stops parsing
        ("ab cd\\", ["ab", "cd"]),
        ("ab \u00e9t\u00e9 cd", ["ab"]),  # non-ASCII stops parsing
        ("ab c\x01d ef", ["ab", "c"]),  # so does a control character
        ("ab\0cd", ["ab"]),
        ("!#$%&'()*+,-./:;<=>?@[]^_`{|}~", ["!#$%&'()*+,-./:;<=>?@[]^_`{|}~"]),
    ],
)
def test_split_like_sanlock(args: str, expected: list[str]) -> None:
    assert split_killpath_args(args) == expected


def test_at_most_seven_args_after_the_path() -> None:
    args = " ".join(f"a{i}" for i in range(10))
    assert split_killpath_args(args) == [f"a{i}" for i in range(7)]
    assert len(killpath_argv("/bin/kp", args, 1234)) == MAX_ARGV


def test_pid_is_appended_last() -> None:
    assert killpath_argv("/bin/kp", r"x y\ z", 4321) == ["/bin/kp", "x", "y z", "4321"]
    assert killpath_argv("/bin/kp", "", 4321) == ["/bin/kp", "4321"]
    assert killpath_argv("/bin/kp", "x", None) == ["/bin/kp", "x"]


def test_pid_is_dropped_when_the_argv_is_full() -> None:
    # sanlock appends the pid only if fewer than 8 argv entries were made.
    six = " ".join("abcdef")
    assert killpath_argv("/bin/kp", six, 77) == ["/bin/kp", *"abcdef", "77"]
    seven = " ".join("abcdefg")
    assert killpath_argv("/bin/kp", seven, 77) == ["/bin/kp", *"abcdefg"]


def test_escape_rejects_what_cannot_be_passed() -> None:
    with pytest.raises(UsageError, match="cannot contain"):
        escape_killpath_arg("caf\u00e9")
    with pytest.raises(UsageError, match="empty"):
        escape_killpath_arg("")
    assert escape_killpath_arg("a b\\c") == "a\\ b\\\\c"


_ARG = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " \t", min_size=1
)


@given(st.lists(_ARG, max_size=7))
def test_escape_then_split_round_trips(args: list[str]) -> None:
    joined = " ".join(escape_killpath_arg(a) for a in args)
    assert split_killpath_args(joined) == args


@given(st.text(max_size=60))
def test_split_never_fails_and_keeps_only_printable_ascii(args: str) -> None:
    out = split_killpath_args(args)
    assert len(out) <= MAX_ARGV - 1
    assert all(a and all(0x20 <= ord(c) < 0x7F or c in "\t\n\v\f\r" for c in a) for a in out)
