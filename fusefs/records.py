"""Journal records: their types, validation and binary encoding.

A record is one staged change (or the HEADER that starts a journal file). Records validate
their fields on construction (`validate_path` for paths, ranges for integers), so a record that
exists is well-formed; `decode_record` turns any failure into `CorruptRecordError` and never
returns a partial or misread record. Pure functions and values: no I/O, no overlay state.

Format (all integers little-endian)
-----------------------------------
Record = 20-byte header + payload::

    magic  b"FJRN" | version u8 (=1) | type u8 | flags u16 (=0) | payload length u32
    | checksum u64 = xxh3_64(first 12 header bytes + payload)

Payloads are fixed-width `struct` fields followed by u16-length-prefixed byte strings (paths).
Not JSON: paths are arbitrary bytes (JSON would need escaping or base64), WRITE records are hot
(one per FUSE write, 128 KiB or less) so a ~50-byte binary record is cheap to encode, decode and
checksum, and there is no dependency. Payload layouts by type:

    1 HEADER    generation u64, base_rev      (always the first record of a journal file)
    2 CREATE    mode u32, path                3 MKDIR    mode u32, path
    4 UNLINK    path                          5 RMDIR    path
    6 RENAME    old, new                      7 TRUNCATE size u64, path
    8 WRITE     offset u64, blob_offset u64, length u32, xxh3_64(data) u64, path
    9 CHMOD     executable u8, path           10 RESET   count u32, paths (count 0 = all)

A WRITE carries no data, only where its bytes are in the blob log (`fusefs.journal`) and their
checksum. `WriteData` is the operation a caller appends; the journal turns it into a `Write`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, assert_never

import xxhash

MAGIC: Final = b"FJRN"
FORMAT_VERSION: Final = 1
HEADER: Final = struct.Struct("<4sBBHIQ")
MAX_PAYLOAD: Final = 1 << 24
MAX_PATH: Final = 4096
MAX_NAME: Final = 255
MAX_WRITE: Final = 1 << 26
_U8: Final = struct.Struct("<B")
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
_WRITE: Final = struct.Struct("<QQIQ")
_U64_MAX: Final = (1 << 64) - 1


class CorruptRecordError(ValueError):
    """Bytes that do not decode to a complete, checksummed record."""


def xxh3(data: bytes) -> int:
    """The 64-bit checksum used for records and write data."""
    return int(xxhash.xxh3_64_intdigest(data))


def validate_path(path: bytes, *, allow_root: bool = False) -> bytes:
    """Return `path` if it is relative, '/'-separated, with no empty, '.', '..' or NUL parts."""
    if not isinstance(path, bytes):
        raise ValueError(f"path must be bytes, not {type(path).__name__}")
    if path == b"" and allow_root:
        return path
    if not path or len(path) > MAX_PATH or b"\0" in path:
        raise ValueError(f"invalid path {path!r}")
    for part in path.split(b"/"):
        if part in (b"", b".", b"..") or len(part) > MAX_NAME:
            raise ValueError(f"invalid path {path!r}")
    return path


def _check_int(name: str, value: int, limit: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"{name} out of range: {value!r}")


class RecordType(IntEnum):
    HEADER = 1
    CREATE = 2
    MKDIR = 3
    UNLINK = 4
    RMDIR = 5
    RENAME = 6
    TRUNCATE = 7
    WRITE = 8
    CHMOD = 9
    RESET = 10


@dataclass(frozen=True, slots=True)
class Header:
    """First record of every journal file: its generation and the base revision it stages on."""

    generation: int
    base_rev: bytes = b""

    def __post_init__(self) -> None:
        _check_int("generation", self.generation, _U64_MAX)
        if len(self.base_rev) > 0xFFFF:
            raise ValueError("base_rev too long")


@dataclass(frozen=True, slots=True)
class Create:
    path: bytes
    mode: int = 0o644

    def __post_init__(self) -> None:
        validate_path(self.path)
        _check_int("mode", self.mode, 0o7777)


@dataclass(frozen=True, slots=True)
class Mkdir:
    path: bytes
    mode: int = 0o755

    def __post_init__(self) -> None:
        validate_path(self.path)
        _check_int("mode", self.mode, 0o7777)


@dataclass(frozen=True, slots=True)
class Unlink:
    path: bytes

    def __post_init__(self) -> None:
        validate_path(self.path)


@dataclass(frozen=True, slots=True)
class Rmdir:
    path: bytes

    def __post_init__(self) -> None:
        validate_path(self.path)


@dataclass(frozen=True, slots=True)
class Rename:
    old: bytes
    new: bytes

    def __post_init__(self) -> None:
        validate_path(self.old)
        validate_path(self.new)


@dataclass(frozen=True, slots=True)
class Truncate:
    path: bytes
    size: int

    def __post_init__(self) -> None:
        validate_path(self.path)
        _check_int("size", self.size, _U64_MAX)


@dataclass(frozen=True, slots=True)
class Write:
    """A write as recorded: its data lives in the blob log at `blob_offset`."""

    path: bytes
    offset: int
    blob_offset: int
    length: int
    data_hash: int

    def __post_init__(self) -> None:
        validate_path(self.path)
        _check_int("offset", self.offset, _U64_MAX)
        _check_int("blob_offset", self.blob_offset, _U64_MAX)
        _check_int("length", self.length, MAX_WRITE)
        _check_int("data_hash", self.data_hash, _U64_MAX)


@dataclass(frozen=True, slots=True)
class Chmod:
    path: bytes
    executable: bool

    def __post_init__(self) -> None:
        validate_path(self.path)


@dataclass(frozen=True, slots=True)
class Reset:
    """Staged changes consumed: all of them (no paths) or those at and below each path."""

    paths: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        for path in self.paths:
            validate_path(path)


@dataclass(frozen=True, slots=True)
class WriteData:
    """The operation `Journal.append` turns into a `Write` record plus blob-log bytes."""

    path: bytes
    offset: int
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        validate_path(self.path)
        _check_int("offset", self.offset, _U64_MAX)
        _check_int("length", len(self.data), MAX_WRITE)


Record = Header | Create | Mkdir | Unlink | Rmdir | Rename | Truncate | Write | Chmod | Reset
Op = Create | Mkdir | Unlink | Rmdir | Rename | Truncate | WriteData | Chmod | Reset
_OPS: Final = (Create, Mkdir, Unlink, Rmdir, Rename, Truncate, WriteData, Chmod, Reset)


def _lp(data: bytes) -> bytes:
    return _U16.pack(len(data)) + data


def _encode_payload(rec: Record) -> tuple[RecordType, bytes]:
    match rec:
        case Header():
            return RecordType.HEADER, _U64.pack(rec.generation) + _lp(rec.base_rev)
        case Create():
            return RecordType.CREATE, _U32.pack(rec.mode) + _lp(rec.path)
        case Mkdir():
            return RecordType.MKDIR, _U32.pack(rec.mode) + _lp(rec.path)
        case Unlink():
            return RecordType.UNLINK, _lp(rec.path)
        case Rmdir():
            return RecordType.RMDIR, _lp(rec.path)
        case Rename():
            return RecordType.RENAME, _lp(rec.old) + _lp(rec.new)
        case Truncate():
            return RecordType.TRUNCATE, _U64.pack(rec.size) + _lp(rec.path)
        case Write():
            fixed = _WRITE.pack(rec.offset, rec.blob_offset, rec.length, rec.data_hash)
            return RecordType.WRITE, fixed + _lp(rec.path)
        case Chmod():
            return RecordType.CHMOD, _U8.pack(int(rec.executable)) + _lp(rec.path)
        case Reset():
            return RecordType.RESET, _U32.pack(len(rec.paths)) + b"".join(map(_lp, rec.paths))
        case _:
            assert_never(rec)


def encode_record(rec: Record) -> bytes:
    """Header + payload of one record, ready to append."""
    rtype, payload = _encode_payload(rec)
    prefix = HEADER.pack(MAGIC, FORMAT_VERSION, rtype, 0, len(payload), 0)[:12]
    return prefix + _U64.pack(xxh3(prefix + payload)) + payload


class _Cursor:
    """Sequential reader over one payload; any overrun raises `CorruptRecordError`."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, fmt: struct.Struct) -> tuple[int, ...]:
        end = self._pos + fmt.size
        if end > len(self._data):
            raise CorruptRecordError("payload too short")
        values: tuple[int, ...] = fmt.unpack_from(self._data, self._pos)
        self._pos = end
        return values

    def u(self, fmt: struct.Struct) -> int:
        return self.take(fmt)[0]

    def bytes_(self) -> bytes:
        length = self.u(_U16)
        end = self._pos + length
        if end > len(self._data):
            raise CorruptRecordError("payload too short")
        value = self._data[self._pos : end]
        self._pos = end
        return value

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise CorruptRecordError("trailing bytes in payload")


def _decode_body(rtype: int, cur: _Cursor) -> Record:
    if rtype == RecordType.HEADER:
        return Header(cur.u(_U64), cur.bytes_())
    if rtype in (RecordType.CREATE, RecordType.MKDIR):
        mode = cur.u(_U32)
        return (Create if rtype == RecordType.CREATE else Mkdir)(cur.bytes_(), mode)
    if rtype in (RecordType.UNLINK, RecordType.RMDIR):
        return (Unlink if rtype == RecordType.UNLINK else Rmdir)(cur.bytes_())
    if rtype == RecordType.RENAME:
        return Rename(cur.bytes_(), cur.bytes_())
    if rtype == RecordType.TRUNCATE:
        size = cur.u(_U64)
        return Truncate(cur.bytes_(), size)
    if rtype == RecordType.WRITE:
        offset, blob_offset, length, data_hash = cur.take(_WRITE)
        return Write(cur.bytes_(), offset, blob_offset, length, data_hash)
    if rtype == RecordType.CHMOD:
        flag = cur.u(_U8)
        if flag > 1:
            raise CorruptRecordError("bad executable flag")
        return Chmod(cur.bytes_(), bool(flag))
    if rtype == RecordType.RESET:
        return Reset(tuple(cur.bytes_() for _ in range(cur.u(_U32))))
    raise CorruptRecordError(f"unknown record type {rtype}")


def decode_record(buf: bytes, pos: int = 0) -> tuple[Record, int]:
    """Decode the record at `pos`; return it and the offset just past it.

    Raises `CorruptRecordError` for a torn, corrupt or unknown record.
    """
    if pos + HEADER.size > len(buf):
        raise CorruptRecordError("partial header")
    magic, version, rtype, flags, length, checksum = HEADER.unpack_from(buf, pos)
    if magic != MAGIC or version != FORMAT_VERSION or flags != 0 or length > MAX_PAYLOAD:
        raise CorruptRecordError("bad header")
    end = pos + HEADER.size + length
    if end > len(buf):
        raise CorruptRecordError("short payload")
    payload = buf[pos + HEADER.size : end]
    if xxh3(buf[pos : pos + 12] + payload) != checksum:
        raise CorruptRecordError("checksum mismatch")
    cur = _Cursor(payload)
    try:
        rec = _decode_body(rtype, cur)
    except ValueError as exc:  # includes CorruptRecordError and field validation
        raise CorruptRecordError(str(exc)) from exc
    cur.finish()
    return rec, end
