"""Lockspace and resource strings: parse and format them as sanlock 3.8 does.

The strings are the ones ``sanlock client``/``sanlock direct`` take with ``-s`` and ``-r``, that
``sanlock client status`` prints, and that ``inquire`` returns (spec section 6.10, sanlock.8
"LOCKSPACE option string" / "RESOURCE option string")::

    LOCKSPACE:HOST_ID:PATH:OFFSET
    LOCKSPACE:RESOURCE:PATH:OFFSET[:PATH:OFFSET...][:LVER|:SH]

and the seed's short form ``RESOURCE:PATH:OFFSET`` (lockspace given separately).

Rules, and the facts of sanlock's source (``src/client.c`` at release 3.8.5, b820c63) they follow:

* Fields are separated by ``:``. A backslash escapes the next character, so ``\\:`` and ``\\ ``
  are a colon and a space inside a PATH and ``\\\\`` is one backslash (``sanlock_str_to_res``
  counts and splits on unescaped colons only, and drops every escaping backslash). Formatting
  escapes ``:``, space and backslash in paths (sanlock's ``sanlock_path_export`` escapes ``:``
  and space but copies a backslash with the character after it, so it cannot round-trip a path
  that holds a backslash; we escape it, which sanlock's parser reads back correctly).
* Names (lockspace, resource) are 1..48 bytes of UTF-8 (``sanlock_str_to_res`` fails on
  ``strlen > SANLK_NAME_LEN``; a 48-byte name is stored without a NUL). They cannot contain
  ``:`` or ``\\``: sanlock never escapes a name when it formats one, and it treats a backslash in
  a name differently in lockspace strings (kept) and resource strings (dropped), so neither can
  round-trip. NUL is refused (C strings). Spaces are allowed, as in sanlock.
* A PATH is 1..1023 bytes once unescaped (``SANLK_PATH_LEN - 1``, the parser's limit), no NUL.
* OFFSET is non-negative decimal bytes, or ``N`` with an ``M`` suffix for N MiB (sanlock's
  CLI, ``parse_arg_lockspace``/``parse_arg_resource`` in ``main.c``, rewrites ``1M`` before
  parsing). Offsets must be a multiple of 512 (O_DIRECT). Formatting always writes bytes.
* In a resource string, the fields after the two names are PATH:OFFSET pairs, and, when their
  count is odd, a last field that is the lver (decimal) or ``SH`` (shared). This is sanlock's
  rule: ``have_lver = (colons - 1) % 2``. One to four disks (``SANLK_MAX_DISKS``).
* HOST_ID in a lockspace string is decimal 0..2000 (0 is what ``direct init -s`` takes).

sanlock's own parsers are lax (``atoll``, ``strtoull(..., 0)``, ``strncmp(sub, "SH", 2)``, a
silently truncated lockspace name); these are strict and every failure is a
:class:`~sync_manager.errors.LeaseStringError` whose ``problem`` says what is wrong, and where.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sync_manager.errors import LeaseStringError

__all__ = [
    "MAX_DISKS",
    "MAX_HOST_ID",
    "MAX_LVER",
    "MAX_OFFSET",
    "NAME_LEN",
    "OFFSET_ALIGN",
    "PATH_LEN",
    "DiskLocation",
    "LockspaceSpec",
    "ResourceSpec",
    "escape_path",
    "format_lockspace",
    "format_resource",
    "parse_area",
    "parse_lockspace",
    "parse_offset",
    "parse_resource",
    "parse_short_resource",
    "unescape_path",
]

NAME_LEN = 48
"""Longest lockspace or resource name, in UTF-8 bytes (``SANLK_NAME_LEN``)."""

PATH_LEN = 1023
"""Longest path, in bytes once unescaped (``SANLK_PATH_LEN`` less its terminating NUL)."""

MAX_DISKS = 4
"""Most disks (PATH:OFFSET pairs) in one resource (``SANLK_MAX_DISKS``)."""

MAX_HOST_ID = 2000
"""Largest host id in a lockspace string (``DEFAULT_MAX_HOSTS``; 0 is allowed too)."""

OFFSET_ALIGN = 512
"""Every offset is a multiple of this (the smallest sector size; O_DIRECT needs it)."""

MAX_OFFSET = 2**63 - 1
"""Largest offset: a file offset is a signed 64-bit ``off_t``."""

MAX_LVER = 2**64 - 1
"""Largest lver: an unsigned 64-bit field on disk."""

_MIB = 1024 * 1024
_DECIMAL = re.compile(r"[0-9]+")
_OFFSET = re.compile(r"([0-9]+)(M?)")
_NUMERIC_LOOKING = re.compile(r"-?[0-9]+M?")
_ESCAPED = re.compile(r"[\\: ]")
_SHARED = "SH"
_ESCAPE_HINT = "(a ':' in a path must be escaped as '\\:')"


class _Invalid(Exception):
    """One field is invalid; the public functions turn it into a :class:`LeaseStringError`."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiskLocation:
    """One lease area on one disk: a path (file or block device) and a byte offset in it.

    Raises :class:`LeaseStringError` if the path is empty, too long or holds a NUL, or if the
    offset is negative, too large or not a multiple of 512.
    """

    path: str
    offset: int

    def __post_init__(self) -> None:
        try:
            _check_path(self.path, "path")
            _check_offset(self.offset, "offset")
        except _Invalid as err:
            raise LeaseStringError(_describe(self), err.problem) from None


@dataclass(frozen=True, slots=True)
class LockspaceSpec:
    """A lockspace string ``LOCKSPACE:HOST_ID:PATH:OFFSET``: a name, our host id in it, where.

    ``host_id`` is 0..2000; 0 means "no host id" (``direct init -s`` and reads).
    Raises :class:`LeaseStringError` on an invalid name or host id.
    """

    name: str
    host_id: int
    disk: DiskLocation

    def __post_init__(self) -> None:
        try:
            _check_name(self.name, "lockspace name")
            _check_host_id(self.host_id)
            _check_disk(self.disk, "disk")
        except _Invalid as err:
            raise LeaseStringError(_describe(self), err.problem) from None


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """A resource string ``LOCKSPACE:RESOURCE:PATH:OFFSET[:PATH:OFFSET...][:LVER|:SH]``.

    ``disks`` holds 1..4 locations (the same lease replicated, sanlock's multi-disk paxos).
    ``lver``, when given, is the leader version to acquire (sanlock fails the acquire with
    ACQUIRE_LVER if the lease's lver differs; 0 means "no check"). ``shared`` asks for a
    shared lease; a shared resource string carries ``SH`` instead of an lver, so ``shared``
    and ``lver`` cannot both be set. Raises :class:`LeaseStringError` on any invalid field.
    """

    lockspace: str
    name: str
    disks: tuple[DiskLocation, ...]
    lver: int | None = field(default=None, kw_only=True)
    shared: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        try:
            _check_name(self.lockspace, "lockspace name")
            _check_name(self.name, "resource name")
            if not isinstance(self.disks, tuple):
                raise _Invalid(f"disks must be a tuple, not {type(self.disks).__name__}")
            _check_disk_count(len(self.disks))
            for number, disk in enumerate(self.disks, 1):
                _check_disk(disk, f"disk {number}")
            if self.lver is not None:
                _check_lver(self.lver)
            if not isinstance(self.shared, bool):
                raise _Invalid(f"shared must be a bool, not {type(self.shared).__name__}")
            if self.shared and self.lver is not None:
                raise _Invalid("a shared lease has no lver (its string ends with ':SH')")
        except _Invalid as err:
            raise LeaseStringError(_describe(self), err.problem) from None


# --- public functions ------------------------------------------------------------------------


def escape_path(path: str) -> str:
    """Return ``path`` with ``\\``, ``:`` and space escaped by a backslash, for a lease string."""
    return _ESCAPED.sub(r"\\\g<0>", path)


def unescape_path(text: str) -> str:
    """Return the path that ``text`` (an escaped PATH field) stands for.

    A backslash escapes the character after it. Raises :class:`LeaseStringError` if ``text``
    ends with a lone backslash. Nothing else is checked (see :class:`DiskLocation`).
    """
    try:
        return _unescape(text, "path")
    except _Invalid as err:
        raise LeaseStringError(text, err.problem) from None


def parse_offset(text: str) -> int:
    """Parse an OFFSET field: decimal bytes, or ``N`` followed by ``M`` for N MiB.

    The offset must be a multiple of 512. Raises :class:`LeaseStringError` otherwise.
    """
    try:
        return _parse_offset(text, "offset")
    except _Invalid as err:
        raise LeaseStringError(text, err.problem) from None


def parse_lockspace(text: str) -> LockspaceSpec:
    """Parse ``LOCKSPACE:HOST_ID:PATH:OFFSET`` (PATH escaped as :func:`escape_path` does)."""
    try:
        fields = _split(text)
        if len(fields) != 4:
            hint = f" {_ESCAPE_HINT}" if len(fields) > 4 else ""
            raise _Invalid(
                f"a lockspace string has 4 fields LOCKSPACE:HOST_ID:PATH:OFFSET, "
                f"found {len(fields)}{hint}"
            )
        name = _parse_name(fields[0], "lockspace name")
        host_id = _parse_host_id(fields[1])
        disk = _parse_disk(fields[2], fields[3], "")
        return LockspaceSpec(name, host_id, disk)
    except _Invalid as err:
        raise LeaseStringError(text, err.problem) from None


def format_lockspace(spec: LockspaceSpec) -> str:
    """Return the canonical string of ``spec`` (decimal offset, escaped path)."""
    return f"{spec.name}:{spec.host_id}:{_format_disk(spec.disk)}"


def parse_resource(text: str) -> ResourceSpec:
    """Parse ``LOCKSPACE:RESOURCE:PATH:OFFSET[:PATH:OFFSET...][:LVER|:SH]``.

    After the two names come PATH:OFFSET pairs; when the number of fields after the names is
    odd, the last one is the lver (decimal) or ``SH`` (a shared lease), as in sanlock.
    """
    try:
        fields = _split(text)
        if len(fields) < 4:
            raise _Invalid(
                "a resource string has at least 4 fields LOCKSPACE:RESOURCE:PATH:OFFSET, "
                f"found {len(fields)}"
            )
        lockspace = _parse_name(fields[0], "lockspace name")
        name = _parse_name(fields[1], "resource name")
        rest = fields[2:]
        lver: int | None = None
        shared = False
        if len(rest) % 2:
            last = rest.pop()
            if last == _SHARED:
                shared = True
            else:
                lver = _parse_lver(last)
        _check_disk_count(len(rest) // 2)
        disks = tuple(
            _parse_disk(rest[i], rest[i + 1], f" (disk {i // 2 + 1})")
            for i in range(0, len(rest), 2)
        )
        return ResourceSpec(lockspace, name, disks, lver=lver, shared=shared)
    except _Invalid as err:
        raise LeaseStringError(text, err.problem) from None


def format_resource(spec: ResourceSpec) -> str:
    """Return the canonical string of ``spec``: ``:SH`` if shared, ``:LVER`` if it has one."""
    parts = [spec.lockspace, spec.name, *(_format_disk(disk) for disk in spec.disks)]
    if spec.shared:
        parts.append(_SHARED)
    elif spec.lver is not None:
        parts.append(str(spec.lver))
    return ":".join(parts)


def parse_short_resource(text: str, lockspace: str) -> ResourceSpec:
    """Parse the seed's ``RESOURCE:PATH:OFFSET`` (one disk) as a resource of ``lockspace``."""
    try:
        fields = _split(text)
        if len(fields) != 3:
            hint = f" {_ESCAPE_HINT}" if len(fields) > 3 else ""
            raise _Invalid(
                f"a short resource string has 3 fields RESOURCE:PATH:OFFSET, "
                f"found {len(fields)}{hint}"
            )
        _check_name(lockspace, "lockspace name")
        name = _parse_name(fields[0], "resource name")
        disk = _parse_disk(fields[1], fields[2], "")
        return ResourceSpec(lockspace, name, (disk,))
    except _Invalid as err:
        raise LeaseStringError(text, err.problem) from None


def parse_area(text: str) -> tuple[DiskLocation, int]:
    """Parse ``direct dump``'s ``PATH[:OFFSET[:SIZE]]``; return the location and the size.

    OFFSET defaults to 0 and must be a multiple of 512; SIZE is in bytes (both take the ``M``
    suffix, as sanlock's ``direct_dump`` does) and is 0 when absent, which means "up to the
    first area that is not a lease area" (sanlock's ``dump_size`` 0).
    """
    try:
        fields = _split(text)
        if len(fields) > 3:
            raise _Invalid(
                f"an area has at most 3 fields PATH[:OFFSET[:SIZE]], found {len(fields)} "
                f"{_ESCAPE_HINT}"
            )
        offset_field = fields[1] if len(fields) > 1 else "0"
        disk = _parse_disk(fields[0], offset_field, "")
        size = _parse_size(fields[2]) if len(fields) > 2 else 0
        return disk, size
    except _Invalid as err:
        raise LeaseStringError(text, err.problem) from None


# --- fields ----------------------------------------------------------------------------------


def _split(text: object) -> list[str]:
    """Split ``text`` on unescaped colons; fields keep their escapes."""
    if not isinstance(text, str):
        raise _Invalid(f"a lease string must be str, not {type(text).__name__}")
    if not text:
        raise _Invalid("the string is empty")
    fields: list[str] = []
    start = 0
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == ":":
            fields.append(text[start:i])
            start = i + 1
        i += 1
    fields.append(text[start:])
    return fields


def _unescape(field: str, what: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(field):
        char = field[i]
        if char == "\\":
            if i + 1 == len(field):
                raise _Invalid(f"{what} ends with a lone backslash")
            char = field[i + 1]
            i += 1
        out.append(char)
        i += 1
    return "".join(out)


def _parse_name(field: str, what: str) -> str:
    _check_name(field, what)
    return field


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str):
        raise _Invalid(f"{what} must be str, not {type(name).__name__}")
    if not name:
        raise _Invalid(f"{what} is empty")
    for char, show in ((":", "':'"), ("\\", "'\\'"), ("\0", "NUL")):
        if char in name:
            raise _Invalid(
                f"{what} {name!r} contains {show} (names cannot contain ':', '\\' or NUL)"
            )
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Invalid(f"{what} {name!r} is not valid UTF-8") from None
    if size > NAME_LEN:
        raise _Invalid(f"{what} is {size} bytes, the limit is {NAME_LEN}")


def _check_path(path: object, what: str) -> None:
    if not isinstance(path, str):
        raise _Invalid(f"{what} must be str, not {type(path).__name__}")
    if not path:
        raise _Invalid(f"{what} is empty")
    if "\0" in path:
        raise _Invalid(f"{what} {path!r} contains NUL")
    try:
        # Paths from the command line may hold undecodable bytes as surrogate escapes.
        size = len(path.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        raise _Invalid(f"{what} {path!r} cannot be encoded as bytes") from None
    if size > PATH_LEN:
        raise _Invalid(f"{what} is {size} bytes, the limit is {PATH_LEN}")


def _check_offset(offset: object, what: str) -> None:
    if type(offset) is not int:
        raise _Invalid(f"{what} must be int, not {type(offset).__name__}")
    if offset < 0:
        raise _Invalid(f"{what} {offset} is negative")
    if offset > MAX_OFFSET:
        raise _Invalid(f"{what} {offset} is too large, the limit is {MAX_OFFSET}")
    if offset % OFFSET_ALIGN:
        raise _Invalid(f"{what} {offset} is not a multiple of {OFFSET_ALIGN}")


def _check_disk(disk: object, what: str) -> None:
    if not isinstance(disk, DiskLocation):
        raise _Invalid(f"{what} must be a DiskLocation, not {type(disk).__name__}")


def _check_disk_count(count: int) -> None:
    if count < 1:
        raise _Invalid("a resource needs at least one PATH:OFFSET")
    if count > MAX_DISKS:
        raise _Invalid(f"a resource has {count} disks, the limit is {MAX_DISKS}")


def _check_host_id(host_id: object) -> None:
    if type(host_id) is not int:
        raise _Invalid(f"host_id must be int, not {type(host_id).__name__}")
    if not 0 <= host_id <= MAX_HOST_ID:
        raise _Invalid(f"host_id {host_id} is out of range 0..{MAX_HOST_ID}")


def _check_lver(lver: object) -> None:
    if type(lver) is not int:
        raise _Invalid(f"lver must be int, not {type(lver).__name__}")
    if not 0 <= lver <= MAX_LVER:
        raise _Invalid(f"lver {lver} is out of range 0..{MAX_LVER}")


def _parse_host_id(field: str) -> int:
    if not field:
        raise _Invalid("host_id is empty")
    if not _DECIMAL.fullmatch(field):
        if field.startswith("-") and _DECIMAL.fullmatch(field[1:]):
            raise _Invalid(f"host_id {_clip(field)} is negative")
        raise _Invalid(f"host_id {field!r} is not a decimal number 0..{MAX_HOST_ID}")
    # Bound the digits before int(): a huge field must not cost time or hit int limits.
    host_id = int(field) if len(field) <= 20 else MAX_HOST_ID + 1
    if host_id > MAX_HOST_ID:
        raise _Invalid(f"host_id {_clip(field)} is out of range 0..{MAX_HOST_ID}")
    return host_id


def _parse_lver(field: str) -> int:
    if not field:
        raise _Invalid("lver (the last field) is empty")
    if not _DECIMAL.fullmatch(field):
        if field.startswith("-") and _DECIMAL.fullmatch(field[1:]):
            raise _Invalid(f"lver {_clip(field)} is negative")
        raise _Invalid(
            f"last field {field!r} is neither an lver (decimal) nor SH "
            "(with an even number of fields after the names, the last one is the lver or SH)"
        )
    if len(field) > 20 or int(field) > MAX_LVER:
        raise _Invalid(f"lver {_clip(field)} is out of range 0..{MAX_LVER}")
    return int(field)


def _parse_offset(field: str, what: str) -> int:
    if not field:
        raise _Invalid(f"{what} is empty")
    match = _OFFSET.fullmatch(field)
    if match is None:
        if field.startswith("-") and _OFFSET.fullmatch(field[1:]):
            raise _Invalid(f"{what} {_clip(field)} is negative")
        raise _Invalid(
            f"{what} {field!r} is not a decimal number of bytes (or N with an 'M' suffix for MiB)"
        )
    digits, mib = match.groups()
    if len(digits) > 20:
        raise _Invalid(f"{what} {_clip(field)} is too large, the limit is {MAX_OFFSET}")
    offset = int(digits) * (_MIB if mib else 1)
    _check_offset(offset, what)
    return offset


def _parse_size(field: str) -> int:
    if not field:
        raise _Invalid("size is empty")
    match = _OFFSET.fullmatch(field)
    if match is None:
        if field.startswith("-") and _OFFSET.fullmatch(field[1:]):
            raise _Invalid(f"size {_clip(field)} is negative")
        raise _Invalid(
            f"size {field!r} is not a decimal number of bytes (or N with an 'M' suffix for MiB)"
        )
    digits, mib = match.groups()
    size = int(digits) * (_MIB if mib else 1) if len(digits) <= 20 else MAX_OFFSET + 1
    if size > MAX_OFFSET:
        raise _Invalid(f"size {_clip(field)} is too large, the limit is {MAX_OFFSET}")
    return size


def _parse_disk(path_field: str, offset_field: str, where: str) -> DiskLocation:
    path = _unescape(path_field, f"path{where}")
    _check_path(path, f"path{where}")
    try:
        offset = _parse_offset(offset_field, f"offset{where}")
    except _Invalid as err:
        numeric = _NUMERIC_LOOKING.fullmatch(offset_field) is not None
        hint = "" if numeric or not offset_field else f" {_ESCAPE_HINT}"
        raise _Invalid(f"{err.problem}{hint}") from None
    return DiskLocation(path, offset)


def _format_disk(disk: DiskLocation) -> str:
    return f"{escape_path(disk.path)}:{disk.offset}"


def _clip(field: str) -> str:
    """Shorten a long numeric field for an error message."""
    return field if len(field) <= 24 else f"{field[:10]}...{field[-10:]} ({len(field)} digits)"


def _describe(spec: object) -> str:
    """The string a spec would format to, for the error its constructor raises."""
    if isinstance(spec, DiskLocation):
        if isinstance(spec.path, str):
            return f"{escape_path(spec.path)}:{spec.offset}"
        return repr(spec)
    if isinstance(spec, LockspaceSpec):
        disk = _describe(spec.disk) if isinstance(spec.disk, DiskLocation) else repr(spec.disk)
        return f"{spec.name}:{spec.host_id}:{disk}"
    if isinstance(spec, ResourceSpec):
        if not isinstance(spec.disks, tuple):
            return repr(spec)
        parts = [str(spec.lockspace), str(spec.name)]
        parts += [_describe(d) if isinstance(d, DiskLocation) else repr(d) for d in spec.disks]
        if spec.shared:
            parts.append(_SHARED)
        if spec.lver is not None:
            parts.append(str(spec.lver))
        return ":".join(parts)
    return repr(spec)
