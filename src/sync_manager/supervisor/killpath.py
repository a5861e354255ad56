"""A client's killpath: the program and the argv sanlock's helper runs (protocol 8.2).

This module is pure. A client registers a killpath as two strings, a program ``path`` and an
``args`` string (``sanlock_killpath``; 128 bytes each on the wire, which the protocol layer
handles). sanlock 3.8.5's helper (``run_path`` in src/helper.c) turns them into an argv for
``execvp`` like this, in the C locale, and :func:`split_killpath_args` does the same:

* argv[0] is ``path``; at most :data:`MAX_ARGV` (8) entries in all, the pid included;
* the args are split on unescaped whitespace (``isspace``: space, tab, newline, vertical tab,
  form feed, carriage return); runs of whitespace make no empty arguments;
* ``\\\\`` is a backslash and ``\\`` followed by whitespace is that whitespace character;
* parsing **stops** (keeping the argument being built) at a backslash followed by anything
  else, at a trailing backslash, at a NUL, and at any character that is neither alphanumeric,
  punctuation nor whitespace (control characters and everything outside ASCII);
* with ``SANLK_KILLPATH_PID`` the pid (decimal) is appended, but only if fewer than 8 entries
  were made: a client with 7 arguments does not get its pid (as in sanlock).

:func:`escape_killpath_arg` is the inverse for one argument, for clients building an args
string.
"""

from __future__ import annotations

import string

from sync_manager.errors import UsageError

__all__ = ["MAX_ARGV", "escape_killpath_arg", "killpath_argv", "split_killpath_args"]

MAX_ARGV = 8  # sanlock's MAX_AV_COUNT: argv entries including argv[0] and the pid

_SPACE = frozenset(" \t\n\v\f\r")  # C isspace()
_WORD = frozenset(string.ascii_letters + string.digits + string.punctuation)  # isalnum|ispunct


def split_killpath_args(args: str, *, max_args: int = MAX_ARGV - 1) -> list[str]:
    """Split a killpath args string into arguments as sanlock's helper does (see the module).

    ``max_args`` is how many arguments fit after argv[0] (7); parsing stops when it is reached.
    """
    out: list[str] = []
    arg: list[str] = []
    i, n = 0, len(args)
    while i < n:
        if len(out) == max_args:
            break
        c = args[i]
        if c == "\\":
            if i == n - 1:
                break
            i += 1
            c = args[i]
            if c == "\\" or c in _SPACE:
                arg.append(c)
                i += 1
                continue
            break
        if c in _WORD:
            arg.append(c)
        elif c in _SPACE:
            if arg:
                out.append("".join(arg))
            arg = []
        else:
            break
        i += 1
    if len(out) < max_args and arg:
        out.append("".join(arg))
    return out


def killpath_argv(path: str, args: str, pid: int | None = None) -> list[str]:
    """The argv the killpath program runs with: ``path``, the split args, then ``pid`` if given.

    ``pid`` is appended only when the argv has fewer than :data:`MAX_ARGV` entries (sanlock).
    """
    argv = [path, *split_killpath_args(args)]
    if pid is not None and len(argv) < MAX_ARGV:
        argv.append(str(pid))
    return argv


def escape_killpath_arg(arg: str) -> str:
    """Escape one argument so that :func:`split_killpath_args` gives it back unchanged.

    Backslashes and whitespace get a backslash. Characters the helper stops at (control
    characters, non-ASCII) cannot be passed at all, nor can an empty argument: UsageError
    names the problem.
    """
    if not arg:
        raise UsageError("killpath arguments cannot be empty (sanlock drops them)")
    out: list[str] = []
    for c in arg:
        if c == "\\" or c in _SPACE:
            out.append("\\" + c)
        elif c in _WORD:
            out.append(c)
        else:
            raise UsageError(f"killpath arguments cannot contain {c!r} (sanlock stops at it)")
    return "".join(out)
