"""The INQUIRE state string, byte for byte as sanlock's library makes and reads it (spec 4.1).

The daemon answers INQUIRE with the held resources in ``sanlock_res_to_str`` form joined by
single spaces; python3-sanlock and libvirt parse it back with ``sanlock_state_to_args`` and
``sanlock_str_to_res``. These functions follow those C functions, quirks included, so that our
daemon's strings read the same in stock clients (the strict, user-facing parser and formatter
are :mod:`sync_manager.leasestr`):

* a path is exported by escaping ``:`` and space with a backslash, and copying a backslash and
  the byte after it unchanged (so a path that holds a backslash does not round-trip);
* names are not escaped at all;
* the last field is ``SH`` for a shared lease, else the lver in decimal (``0`` included);
* reading, the fields split on unescaped colons; a space seen before the third colon of a
  resource is taken as part of it; the lver is read with ``strtoull(s, 0, 0)``.

One deliberate difference: a 48-byte name (no NUL) is formatted as its 48 bytes, where
sanlock's ``%s`` runs on into the next field.
"""

from __future__ import annotations

import errno
import re

from sync_manager.protocol.errors import MalformedMessage
from sync_manager.protocol.flags import ResourceFlag
from sync_manager.protocol.structs import MAX_DISKS, NAME_LEN, PATH_LEN, Disk, Resource

__all__ = [
    "MAX_RES_STR",
    "parse_state",
    "path_export",
    "res_to_str",
    "state_string",
    "str_to_res",
]

MAX_RES_STR = 4400
"""``SANLK_MAX_RES_STR``: the longest resource string, its NUL included."""

_U64 = (1 << 64) - 1
_BACKSLASH, _COLON, _SPACE = ord("\\"), ord(":"), ord(" ")


def _cstr(field: bytes) -> bytes:
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def path_export(path: bytes, dstlen: int = PATH_LEN + 1) -> bytes:
    """``sanlock_path_export``: escape unescaped ``:`` and space; stop when ``dstlen`` is full."""
    src = _cstr(path)
    out = bytearray()
    i = 0
    while i < len(src):
        ch = src[i]
        if ch == _BACKSLASH:
            if len(out) > dstlen - 3:
                break
            out.append(ch)
            i += 1
            if i >= len(src):  # the C code copies the NUL that ends the string, and stops
                break
            out.append(src[i])
        elif ch in (_SPACE, _COLON):
            if len(out) > dstlen - 3:
                break
            out += bytes((_BACKSLASH, ch))
        else:
            if len(out) > dstlen - 2:
                break
            out.append(ch)
        i += 1
    return bytes(out)


def res_to_str(resource: Resource) -> bytes:
    """``sanlock_res_to_str``: ``LS:NAME:PATH:OFFSET[:PATH:OFFSET...]:LVER`` or ``...:SH``.

    MalformedMessage (``-EINVAL``, as sanlock) if it does not fit ``SANLK_MAX_RES_STR``.
    """
    out = _cstr(resource.lockspace_name) + b":" + _cstr(resource.name)
    for disk in resource.disks:
        out += b":" + path_export(disk.path) + b":%d" % disk.offset
    out += b":SH" if resource.flags & ResourceFlag.SHARED else b":%d" % resource.lver
    if len(out) >= MAX_RES_STR:
        raise MalformedMessage("resource string", expected=f"< {MAX_RES_STR} bytes",
                               found=len(out), code=-errno.EINVAL)  # fmt: skip
    return out


def state_string(resources: tuple[Resource, ...] | list[Resource]) -> bytes:
    """The INQUIRE state string (``cmd_inquire``): resource strings joined by single spaces.

    MalformedMessage with sanlock's code when a resource cannot be put in it: ``-ELIBACC`` when
    ``sanlock_res_to_str`` fails (too long), ``-ELIBSCN`` for a string holding a space (a path
    with a space breaks inquire in sanlock too: ``\\ `` still holds a space).
    """
    parts = []
    for resource in resources:
        try:
            part = res_to_str(resource)
        except MalformedMessage as exc:
            raise MalformedMessage(exc.what, expected=exc.expected, found=exc.found,
                                   code=-errno.ELIBACC) from exc  # fmt: skip
        if b" " in part:
            raise MalformedMessage("resource string", expected="no space", found=part,
                                   code=-errno.ELIBSCN)  # fmt: skip
        parts.append(part)
    return b" ".join(parts)


def _strtoull(text: bytes) -> int:
    """C ``strtoull(text, NULL, 0)``: optional space and sign, 0x / 0 prefixes, stops early."""
    match = re.match(rb"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)?", text)
    if match is None or not match.group(2):  # (the pattern always matches)
        return 0
    sign, digits = match.group(1), match.group(2)
    if digits[:2].lower() == b"0x":
        value = int(digits[2:], 16)
    elif digits.startswith(b"0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    if value > _U64:
        return _U64
    return (-value) & _U64 if sign == b"-" else value


def _scan_llu(text: bytes) -> int | None:
    """C ``sscanf(text, "%llu")``: None when no number starts the text."""
    match = re.match(rb"\s*([+-]?)([0-9]+)", text)
    if match is None:
        return None
    value = min(int(match.group(2)), _U64)
    return (-value) & _U64 if match.group(1) == b"-" else value


def _fail(text: bytes, problem: str, code: int = -1) -> MalformedMessage:
    return MalformedMessage("resource string", expected=problem, found=text, code=code)


def _colons(text: bytes) -> int:
    count = i = 0
    while i < len(text):
        if text[i] == _BACKSLASH:
            i += 2
            continue
        count += text[i] == _COLON
        i += 1
    return count


def str_to_res(text: bytes) -> Resource:
    """``sanlock_str_to_res``: one resource string to a resource (MalformedMessage if bad)."""
    text = _cstr(text)
    if len(text) < 3:
        raise _fail(text, "at least 3 bytes", -errno.ENXIO)
    colons = _colons(text)
    if colons in (0, 2):
        raise _fail(text, "1 or more than 2 unescaped colons")
    num_disks, have_lver = divmod(colons - 1, 2)
    if num_disks > MAX_DISKS:
        raise _fail(text, f"at most {MAX_DISKS} disks", -2)
    fields: list[bytes] = []
    sub = bytearray()
    i = 0
    while i <= len(text):
        ch = text[i] if i < len(text) else None
        if ch == _BACKSLASH:
            if i == len(text) - 1 or len(sub) >= PATH_LEN:
                raise _fail(text, "a complete escape within the path length")
            sub.append(text[i + 1])
            i += 2
            continue
        if ch is not None and ch != _COLON:
            if len(sub) >= PATH_LEN:
                raise _fail(text, f"fields shorter than {PATH_LEN} bytes")
            sub.append(ch)
            i += 1
            continue
        fields.append(bytes(sub))
        sub.clear()
        i += 1
    return _fields_to_res(text, fields, num_disks, bool(have_lver))


def _fields_to_res(text: bytes, fields: list[bytes], num_disks: int, have_lver: bool) -> Resource:
    lockspace, name = fields[0], fields[1]
    if len(lockspace) > NAME_LEN or len(name) > NAME_LEN:
        raise _fail(text, f"names of at most {NAME_LEN} bytes")
    disks: list[Disk] = []
    flags = lver = 0
    for index, field in enumerate(fields[2:], start=2):
        if not 1 <= len(field) <= PATH_LEN - 1:
            raise _fail(text, f"path and offset fields of 1..{PATH_LEN - 1} bytes")
        if index % 2 == 0 and have_lver and len(disks) == num_disks:
            if field.startswith(b"SH"):
                flags |= ResourceFlag.SHARED
            else:
                flags |= ResourceFlag.LVER
                lver = _strtoull(field)
        elif index % 2 == 0:
            disks.append(Disk(field))
        else:
            offset = _scan_llu(field)
            if offset is None:
                raise _fail(text, "a decimal offset")
            disks[-1] = Disk(disks[-1].path, offset)
    return Resource(lockspace, name, lver=lver, flags=int(flags), disks=tuple(disks))


def parse_state(state: bytes) -> tuple[Resource, ...]:
    """``sanlock_state_to_args``: the resources of an INQUIRE state string."""
    state = _cstr(state)
    count = 1 + _unescaped_spaces(state)
    resources: list[Resource] = []
    part = bytearray()
    escape = False
    colons = 0
    for i in range(len(state) + 1):
        ch = state[i] if i < len(state) else None
        if ch == _BACKSLASH:
            part.append(ch)
            escape = True
        elif ch is not None and escape:
            part.append(ch)
            escape = False
        elif ch == _SPACE and colons < 3:
            part += b"\\ "  # sanlock's guess: a space inside a resource, not between two
        elif ch is not None and ch != _SPACE:
            colons += ch == _COLON
            part.append(ch)
        else:
            if len(resources) == count:
                raise _fail(state, f"at most {count} resources")
            resources.append(str_to_res(bytes(part)))
            part.clear()
            colons = 0
        if len(part) > MAX_RES_STR:
            raise _fail(state, f"resource strings of at most {MAX_RES_STR} bytes")
    return tuple(resources)


def _unescaped_spaces(text: bytes) -> int:
    count = i = 0
    while i < len(text):
        if text[i] == _BACKSLASH:
            i += 2
            continue
        count += text[i] == _SPACE
        i += 1
    return count
