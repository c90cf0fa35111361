"""Durable staging area of a writable mount: an append-only journal and the overlay it describes.

A writable mount never changes the Git revision it shows. Every change is appended as a record
to ``journal.<gen>`` in the mount's state directory; the bytes of writes go to the blob log
``data.<gen>`` beside it. Replaying the records builds an `Overlay`: the staged view layered over
the read-only base tree. No FUSE in here; the base tree is reached only through callbacks.

On-disk format (all integers little-endian)
-------------------------------------------
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

The blob log is raw concatenated write data with no framing; a WRITE record owns
``[blob_offset, blob_offset + length)`` and carries the checksum of those bytes.

Overlay model
-------------
The overlay is a tree of staged nodes; any path without one falls through to the base tree,
possibly at another base path (below a renamed directory). Node kinds: a directory with an
`origin` (the base directory whose listing shows through; None = opaque, i.e. created), a file
(extents over an optional origin base file), a whiteout (hides a base entry) and a redirect (a
renamed base entry not otherwise touched, kind unknown: everything at and below it is the base at
its origin). A write to a base file copies up nothing: it records an extent, and unwritten ranges
still read from the base file, below the smallest size the file was ever truncated to (so
truncate-then-extend reads zeros). Until truncated, a base file's size is ``max(base size, end
of the furthest write)``, evaluated against the base when asked. Extents coalesce when a write
continues the previous one in both the file and the blob log, so a file written sequentially is
one extent; interleaved writes to several files get one extent per interleaved chunk. Renaming a
directory moves its node, so everything staged below it moves too.

Invariants and guarantees
-------------------------
* Append-only. The single non-append write is at `Journal.open`: the invalid tail of the journal
  (partial header, short payload, bad magic/version/checksum, undecodable payload, a WRITE whose
  data lies past the end of the blob log or does not match its checksum) is logged and truncated
  away, together with any record after it, and the blob log is truncated to the end of the data
  the surviving records reference. A bad record is never misread.
* `Journal.sync` fsyncs the blob log before the journal, so a durable WRITE record never points
  at data that is not durable. Records appended since the last `sync` may be lost by a crash;
  whatever survives is a prefix of what was appended.
* Records are validated before they are written: a path or operation the staged view can prove
  invalid raises `FsError` and nothing is written. Facts about the base tree (does this base
  file exist, is that base directory empty) cannot be checked here: the caller validates each
  operation against the merged view before appending (e.g. never a WRITE, TRUNCATE or CHMOD on a
  base directory; note that CREATE over a base file replaces it with an empty file).
  Replay is deterministic and never consults the base tree, so the overlay only makes sense over
  the base revision it was staged against: the HEADER records it (`Journal.base_rev`) and the
  caller compares it with the revision it mounts.
* Generations replace compaction: nothing is ever rewritten. After `fusefs commit`,
  `Journal.start_generation` appends a RESET to the current journal, syncs, creates
  ``journal.<gen+1>`` (written to a temporary name, fsynced, renamed, directory fsynced) with an
  empty ``data.<gen+1>``, and deletes the older generation. `Journal.open` uses the newest
  generation whose first record is a valid HEADER; a crash at any point leaves either the old
  generation, which replays empty after its RESET, or the new one.
* One process at a time: `Journal.open` takes an exclusive `flock` on ``journal.lock``.

Caveats
-------
* `Journal.open` reads every WRITE's data to verify its checksum: opening costs one pass over the
  blob log. Reads after that are not re-verified.
* A checksum failure in the middle of the journal (media corruption, not a torn write) drops every
  later record too; this is logged at error level with the number of bytes dropped.
* After an I/O error in `append` or `sync` the journal refuses further use (the in-memory overlay
  may be ahead of the disk); reopen it to continue from what is durable.
* Whiteouts are conservative: removing an entry from a directory that shows a base directory
  always leaves a whiteout, even for names the base does not have. They hide nothing, and
  `Overlay.changes` drops those it cannot match to a base entry.
* Removing a base directory forgets the staged whiteouts below it: `changes` reports the
  directory as deleted, meaning everything below it in the base is gone. A renamed directory
  likewise stands for everything below its origin.
* RESET with paths (``fusefs discard PATH``) drops the staged state at and below each path, which
  then shows whatever the base has at that position. Discarding the destination of a rename does
  not restore its source; discard both paths (`changes` lists the pair).
* Neither class is thread-safe; the caller serialises access.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple, assert_never

import xxhash

from fusefs.errors import FsError

log = logging.getLogger(__name__)

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
_GEN_RE: Final = re.compile(r"journal\.(\d+)")


class JournalError(FsError):
    """The journal cannot be used: corrupt beyond its tail, locked, closed or broken by I/O."""

    def __init__(self, message: str, err: int = errno.EIO) -> None:
        super().__init__(err, message)


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


# --------------------------------------------------------------------------- records


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


# --------------------------------------------------------------------------- extents


class Extents:
    """Sorted, non-overlapping runs ``(file_offset, length, blob_offset)`` of staged bytes.

    A write that continues the previous run both in the file and in the blob log extends it, so a
    file written sequentially in one stream is a single run whatever the chunk size.
    """

    __slots__ = ("_items", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._items: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(self._items)

    def cut(self, start: int, end: int) -> None:
        """Forget staged bytes in ``[start, end)``, splitting runs that straddle the bounds."""
        items = self._items
        lo = bisect_left(self._starts, start)
        if lo > 0 and items[lo - 1][0] + items[lo - 1][1] > start:
            lo -= 1
        hi = bisect_left(self._starts, end)
        if lo >= hi:
            return
        keep: list[tuple[int, int, int]] = []
        first, last = items[lo], items[hi - 1]
        if first[0] < start:
            keep.append((first[0], start - first[0], first[2]))
        if last[0] + last[1] > end:
            keep.append((end, last[0] + last[1] - end, last[2] + end - last[0]))
        items[lo:hi] = keep
        self._starts[lo:hi] = [k[0] for k in keep]

    def put(self, start: int, length: int, blob: int) -> None:
        """Record that ``[start, start + length)`` now reads from the blob log at `blob`."""
        if length == 0:
            return
        self.cut(start, start + length)
        i = bisect_left(self._starts, start)
        items = self._items
        if i > 0:
            ps, pn, pb = items[i - 1]
            if ps + pn == start and pb + pn == blob:
                start, length, blob = ps, pn + length, pb
                i -= 1
                del items[i], self._starts[i]
        if i < len(items):
            ns, nn, nb = items[i]
            if start + length == ns and blob + length == nb:
                length += nn
                del items[i], self._starts[i]
        items.insert(i, (start, length, blob))
        self._starts.insert(i, start)

    def segments(self, start: int, end: int) -> Iterator[tuple[int, int, int | None]]:
        """Cover ``[start, end)`` with ``(offset, length, blob_offset or None for a gap)``."""
        items = self._items
        i = max(bisect_right(self._starts, start) - 1, 0)
        pos = start
        while pos < end:
            if i >= len(items) or items[i][0] >= end:
                yield pos, end - pos, None
                return
            s, n, b = items[i]
            if s + n <= pos:
                i += 1
            elif s > pos:
                yield pos, s - pos, None
                pos = s
            else:
                stop = min(s + n, end)
                yield pos, stop - pos, b + pos - s
                pos, i = stop, i + 1


# --------------------------------------------------------------------------- overlay


class BaseEntry(NamedTuple):
    is_dir: bool
    size: int


BlobReader = Callable[[int, int], bytes]
BaseReader = Callable[[bytes, int, int], bytes]
BaseListing = Callable[[bytes], Iterable[bytes]]
BaseSize = Callable[[bytes], int]
BaseStat = Callable[[bytes], BaseEntry | None]


class _Whiteout:
    __slots__ = ()


_WHITEOUT: Final = _Whiteout()


class _Redirect:
    """A moved base entry of unknown kind: everything at and below it is the base at `origin`."""

    __slots__ = ("origin",)

    def __init__(self, origin: bytes) -> None:
        self.origin = origin


class _File:
    """A staged file: extents over `origin`'s base bytes (if any), visible below `base_limit`.

    `size` is None while the file is a base file that was never truncated: its size is then
    ``max(base size, written_end)``, known only to the base tree.
    """

    __slots__ = ("base_limit", "executable", "extents", "origin", "size", "written_end")

    def __init__(self, origin: bytes | None, size: int | None, executable: bool | None) -> None:
        self.origin = origin
        self.size = size
        self.written_end = 0
        self.base_limit: int | None = None
        self.extents = Extents()
        self.executable = executable

    def write(self, offset: int, length: int, blob: int) -> None:
        if length == 0:
            return
        self.extents.put(offset, length, blob)
        self.written_end = max(self.written_end, offset + length)
        if self.size is not None:
            self.size = max(self.size, offset + length)

    def truncate(self, size: int) -> None:
        self.extents.cut(size, _U64_MAX)
        self.size = size
        self.written_end = min(self.written_end, size)
        if self.origin is not None:
            self.base_limit = size if self.base_limit is None else min(self.base_limit, size)

    def current_size(self, base_size: BaseSize) -> int:
        if self.size is not None:
            return self.size
        assert self.origin is not None
        return max(base_size(self.origin), self.written_end)

    def changed(self) -> bool:
        return bool(self.extents) or self.size is not None or self.executable is not None


class _Dir:
    """A staged directory; `origin` is the base directory it shows through (None: opaque)."""

    __slots__ = ("children", "origin")

    def __init__(self, origin: bytes | None) -> None:
        self.origin = origin
        self.children: dict[bytes, _Node] = {}

    def has_live_children(self) -> bool:
        return any(child is not _WHITEOUT for child in self.children.values())


_Node = _File | _Dir | _Redirect | _Whiteout


class Kind(Enum):
    FILE = "file"
    DIR = "dir"
    BASE = "base"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a path's content comes from.

    FILE/DIR: staged; `base_path` is the base entry whose bytes or listing show through (None
    if none). BASE: nothing staged; the path is whatever the base tree has at `base_path`
    (which differs from the path below a renamed directory). ABSENT: deleted or never existed.
    """

    kind: Kind
    base_path: bytes | None = None


class ChangeKind(Enum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"
    RENAMED = "renamed"


@dataclass(frozen=True, slots=True)
class Change:
    """One line of ``fusefs status``; `path` is a base path for DELETED, else a staged one."""

    kind: ChangeKind
    path: bytes
    is_dir: bool
    size: int
    old_path: bytes | None = None
    modified: bool = False


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def _parts(path: bytes) -> list[bytes]:
    return validate_path(path, allow_root=True).split(b"/") if path else []


def _err(code: int, path: bytes) -> FsError:
    return FsError(code, f"{os.strerror(code)}: {path.decode(errors='replace')}")


def _slot_origin(parent: _Dir, name: bytes, child: _Node | None, path: bytes) -> bytes:
    """The base path a slot without a staged file or directory shows; ENOENT if none."""
    if isinstance(child, _Redirect):
        return child.origin
    if child is None and parent.origin is not None:
        return _join(parent.origin, name)
    raise _err(errno.ENOENT, path)


class Overlay:
    """The staged view: a tree of staged nodes over a read-only base tree.

    Paths are relative bytes; b"" is the root. Query methods take callbacks into the base tree
    and pass them base paths, which differ from the queried path below a renamed directory.
    """

    def __init__(self, blob_reader: BlobReader) -> None:
        self._blob = blob_reader
        self._root = _Dir(b"")

    # ---- replay

    def apply(self, rec: Record) -> None:
        """Apply one record. Raises `FsError` (view unchanged) if the staged view refutes it."""
        match rec:
            case Header():
                pass
            case Create() | Mkdir():
                self._create(rec)
            case Unlink():
                self._unlink(rec.path)
            case Rmdir():
                self._rmdir(rec.path)
            case Rename():
                self._rename(rec.old, rec.new)
            case Truncate():
                self._file_at(rec.path).truncate(rec.size)
            case Write():
                self._file_at(rec.path).write(rec.offset, rec.length, rec.blob_offset)
            case Chmod():
                self._file_at(rec.path).executable = rec.executable
            case Reset():
                self._reset(rec.paths)
            case _:
                assert_never(rec)

    def _dir_at(self, path: bytes, parts: list[bytes]) -> _Dir:
        """The staged directory at `parts`, materialising pass-through nodes on the way.

        Pass-through nodes (a `_Dir` whose origin is the base directory already shown there)
        change nothing visible, so failing operations may leave them behind.
        """
        node = self._root
        for name in parts:
            child = node.children.get(name)
            if isinstance(child, _File):
                raise _err(errno.ENOTDIR, path)
            if not isinstance(child, _Dir):
                child = _Dir(_slot_origin(node, name, child, path))
                node.children[name] = child
            node = child
        return node

    def _parent(self, path: bytes) -> tuple[_Dir, bytes]:
        parts = _parts(path)
        return self._dir_at(path, parts[:-1]), parts[-1]

    def _file_at(self, path: bytes) -> _File:
        parent, name = self._parent(path)
        child = parent.children.get(name)
        if isinstance(child, _File):
            return child
        if isinstance(child, _Dir):
            raise _err(errno.EISDIR, path)
        node = _File(_slot_origin(parent, name, child, path), None, None)
        parent.children[name] = node
        return node

    @staticmethod
    def _remove(parent: _Dir, name: bytes) -> None:
        if parent.origin is None:
            parent.children.pop(name, None)
        else:
            parent.children[name] = _WHITEOUT

    def _create(self, rec: Create | Mkdir) -> None:
        parent, name = self._parent(rec.path)
        if isinstance(parent.children.get(name), _File | _Dir | _Redirect):
            raise _err(errno.EEXIST, rec.path)
        if isinstance(rec, Create):
            parent.children[name] = _File(None, 0, bool(rec.mode & 0o111))
        else:
            parent.children[name] = _Dir(None)

    def _unlink(self, path: bytes) -> None:
        parent, name = self._parent(path)
        child = parent.children.get(name)
        if isinstance(child, _Dir):
            raise _err(errno.EISDIR, path)
        if not isinstance(child, _File):
            _slot_origin(parent, name, child, path)
        self._remove(parent, name)

    def _rmdir(self, path: bytes) -> None:
        parent, name = self._parent(path)
        child = parent.children.get(name)
        if isinstance(child, _File):
            raise _err(errno.ENOTDIR, path)
        if isinstance(child, _Dir) and (child.origin is None and child.has_live_children()):
            raise _err(errno.ENOTEMPTY, path)
        if not isinstance(child, _Dir):
            _slot_origin(parent, name, child, path)
        self._remove(parent, name)

    def _rename(self, old: bytes, new: bytes) -> None:
        if old == new:
            return
        if new.startswith(old + b"/"):
            raise _err(errno.EINVAL, new)
        src, src_name = self._parent(old)
        dst, dst_name = self._parent(new)
        node = src.children.get(src_name)
        if not isinstance(node, _File | _Dir | _Redirect):
            node = _Redirect(_slot_origin(src, src_name, node, old))
        self._check_target(dst.children.get(dst_name), node, new)
        self._remove(src, src_name)
        home = None if dst.origin is None else _join(dst.origin, dst_name)
        if isinstance(node, _Redirect) and node.origin == home:  # moved back: nothing staged
            dst.children.pop(dst_name, None)
        else:
            dst.children[dst_name] = node

    @staticmethod
    def _check_target(target: _Node | None, node: _Node, path: bytes) -> None:
        if isinstance(target, _Dir):
            if isinstance(node, _File):
                raise _err(errno.EISDIR, path)
            if target.has_live_children():
                raise _err(errno.ENOTEMPTY, path)
        if isinstance(target, _File) and isinstance(node, _Dir):
            raise _err(errno.ENOTDIR, path)

    def _reset(self, paths: tuple[bytes, ...]) -> None:
        if not paths:
            self._root = _Dir(b"")
        for path in paths:
            node: _Node | None = self._root
            parts = _parts(path)
            for name in parts[:-1]:
                node = node.children.get(name) if isinstance(node, _Dir) else None
            if isinstance(node, _Dir):
                node.children.pop(parts[-1], None)

    # ---- queries

    def _walk(self, path: bytes) -> _File | _Dir | bytes | None:
        """The staged node at `path`, the base path it falls through to, or None if absent."""
        parts = _parts(path)
        node: _Node = self._root
        for i, name in enumerate(parts):
            if isinstance(node, _Redirect):
                return b"/".join([node.origin, *parts[i:]])
            if not isinstance(node, _Dir):
                return None
            child = node.children.get(name)
            if child is None:
                return None if node.origin is None else _join(node.origin, b"/".join(parts[i:]))
            node = child
        if isinstance(node, _Redirect):
            return node.origin
        return None if isinstance(node, _Whiteout) else node

    def is_empty(self) -> bool:
        """Whether nothing is staged."""
        return not self._root.children

    def resolve(self, path: bytes) -> Resolution:
        """Where the content of `path` comes from; see `Resolution`."""
        target = self._walk(path)
        if isinstance(target, bytes):
            return Resolution(Kind.BASE, target)
        if isinstance(target, _File):
            return Resolution(Kind.FILE, target.origin)
        if isinstance(target, _Dir):
            return Resolution(Kind.DIR, target.origin)
        return Resolution(Kind.ABSENT)

    def exists(self, path: bytes, base_stat: BaseStat) -> bool:
        """Whether `path` is in the merged view (b"" is the root)."""
        target = self._walk(path)
        if isinstance(target, bytes):
            return base_stat(target) is not None
        return target is not None

    def is_dir(self, path: bytes, base_stat: BaseStat) -> bool:
        """Whether `path` is a directory of the merged view."""
        target = self._walk(path)
        if isinstance(target, bytes):
            entry = base_stat(target)
            return entry is not None and entry.is_dir
        return isinstance(target, _Dir)

    def _file_target(self, path: bytes) -> _File | bytes:
        target = self._walk(path)
        if target is None:
            raise _err(errno.ENOENT, path)
        if isinstance(target, _Dir):
            raise _err(errno.EISDIR, path)
        return target

    def size(self, path: bytes, base_size: BaseSize) -> int:
        """Size of the file at `path`; ENOENT if absent, EISDIR for a staged directory."""
        target = self._file_target(path)
        if isinstance(target, bytes):
            return base_size(target)
        return target.current_size(base_size)

    def executable(self, path: bytes, base_executable: Callable[[bytes], bool]) -> bool:
        """The exec bit of the file at `path`: staged by CREATE/CHMOD, else the base's."""
        target = self._file_target(path)
        if isinstance(target, bytes):
            return base_executable(target)
        if target.executable is not None:
            return target.executable
        return target.origin is not None and base_executable(target.origin)

    def extent_count(self, path: bytes) -> int:
        """Number of staged runs of a file (0 if nothing staged): a diagnostic."""
        target = self._walk(path)
        return len(target.extents) if isinstance(target, _File) else 0

    def read(self, path: bytes, offset: int, size: int, base_reader: BaseReader) -> bytes:
        """Up to `size` bytes at `offset`; short only at end of file."""
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        target = self._file_target(path)
        if isinstance(target, bytes):
            return base_reader(target, offset, size)
        end = offset + size if target.size is None else min(offset + size, target.size)
        out = bytearray()
        for start, length, blob in target.extents.segments(offset, end):
            if blob is not None:
                out += self._blob(blob, length)
                continue
            piece = self._gap(target, start, length, base_reader)
            out += piece
            if len(piece) < length:
                break
        return bytes(out)

    @staticmethod
    def _gap(f: _File, start: int, length: int, base_reader: BaseReader) -> bytes:
        """Bytes of an unstaged range: base bytes below the limit, then zeros up to end of file."""
        stop = start + length if f.base_limit is None else min(start + length, f.base_limit)
        base = b""
        if f.origin is not None and start < stop:
            base = base_reader(f.origin, start, stop - start)[: stop - start]
        fill_to = start + length
        if f.size is None:  # lazily sized: past base EOF only holes below written_end exist
            fill_to = min(fill_to, max(start + len(base), f.written_end))
        return base + bytes(max(0, fill_to - start - len(base)))

    def listdir(self, path: bytes, base_listing: BaseListing) -> list[bytes]:
        """Sorted names in the directory at `path` (b"" is the root)."""
        target = self._walk(path)
        if isinstance(target, bytes):
            return sorted(base_listing(target))
        if target is None:
            raise _err(errno.ENOENT, path)
        if isinstance(target, _File):
            raise _err(errno.ENOTDIR, path)
        names = set(base_listing(target.origin)) if target.origin is not None else set()
        for name, child in target.children.items():
            if child is _WHITEOUT:
                names.discard(name)
            else:
                names.add(name)
        return sorted(names)

    # ---- status

    def changes(self, base_stat: BaseStat) -> list[Change]:
        """Staged changes relative to the base, sorted by path, for ``fusefs status``.

        A renamed entry is reported once as RENAMED (not also as a deletion of its origin);
        entries below a renamed, added or deleted directory are implied unless staged.
        """
        out: list[Change] = []
        moved: set[bytes] = set()
        self._collect(self._root, b"", base_stat, out, moved)
        kept = [c for c in out if not (c.kind is ChangeKind.DELETED and c.path in moved)]
        return sorted(kept, key=lambda c: (c.path, c.kind.value))

    def _collect(
        self, d: _Dir, path: bytes, base_stat: BaseStat, out: list[Change], moved: set[bytes]
    ) -> None:
        for name, child in d.children.items():
            here = _join(path, name)
            home = None if d.origin is None else _join(d.origin, name)
            replaced = base_stat(home) if home is not None else None
            if isinstance(child, _Whiteout):
                if replaced is not None:
                    out.append(Change(ChangeKind.DELETED, home or here, *replaced))
                continue
            origin = child.origin
            if origin is not None and origin == home:
                if isinstance(child, _File):
                    out.append(self._file_change(ChangeKind.MODIFIED, here, child, base_stat))
            elif origin is not None:
                moved.add(origin)
                out.append(self._moved_change(here, child, base_stat))
                if replaced is not None:
                    out.append(Change(ChangeKind.DELETED, here, *replaced))
            elif not isinstance(child, _Redirect):
                out.extend(self._created_changes(here, child, replaced, base_stat))
            if isinstance(child, _Dir):
                self._collect(child, here, base_stat, out, moved)

    @staticmethod
    def _file_change(kind: ChangeKind, path: bytes, f: _File, base_stat: BaseStat) -> Change:
        size = f.current_size(lambda p: (base_stat(p) or BaseEntry(False, 0)).size)
        return Change(kind, path, False, size)

    def _moved_change(self, path: bytes, node: _File | _Dir | _Redirect, st: BaseStat) -> Change:
        assert node.origin is not None
        if isinstance(node, _File):
            size = self._file_change(ChangeKind.RENAMED, path, node, st).size
            return Change(ChangeKind.RENAMED, path, False, size, node.origin, node.changed())
        if isinstance(node, _Dir):
            return Change(ChangeKind.RENAMED, path, True, 0, node.origin)
        entry = st(node.origin) or BaseEntry(False, 0)
        return Change(ChangeKind.RENAMED, path, entry.is_dir, entry.size, node.origin)

    def _created_changes(
        self, path: bytes, node: _File | _Dir, replaced: BaseEntry | None, st: BaseStat
    ) -> list[Change]:
        if isinstance(node, _Dir):
            added = Change(ChangeKind.ADDED, path, True, 0)
        elif replaced is not None and not replaced.is_dir:
            return [self._file_change(ChangeKind.MODIFIED, path, node, st)]
        else:
            added = self._file_change(ChangeKind.ADDED, path, node, st)
        if replaced is None:
            return [added]
        return [Change(ChangeKind.DELETED, path, *replaced), added]


# --------------------------------------------------------------------------- journal


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while length > 0:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            raise JournalError(f"blob log ends before offset {offset + length}")
        chunks.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _gen_paths(state_dir: Path, gen: int) -> tuple[Path, Path]:
    return state_dir / f"journal.{gen}", state_dir / f"data.{gen}"


def _generations(state_dir: Path) -> list[int]:
    """Generation numbers with a journal file, newest first."""
    found = (_GEN_RE.fullmatch(p.name) for p in state_dir.iterdir())
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def _read_header(path: Path, gen: int) -> Header | None:
    try:
        with path.open("rb") as fh:
            head = fh.read(HEADER.size + 8 + 2 + 0xFFFF)
        rec, _ = decode_record(head)
    except (OSError, CorruptRecordError):
        return None
    return rec if isinstance(rec, Header) and rec.generation == gen else None


def _create_generation(state_dir: Path, gen: int, base_rev: bytes) -> None:
    """Create an empty generation atomically: the journal appears only once complete."""
    jpath, bpath = _gen_paths(state_dir, gen)
    tmp = jpath.with_name(jpath.name + ".tmp")
    for target, content in ((bpath, b""), (tmp, encode_record(Header(gen, base_rev)))):
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
    os.rename(tmp, jpath)
    _fsync_dir(state_dir)


def _lock(state_dir: Path) -> int:
    fd = os.open(state_dir / "journal.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"journal in {state_dir} is in use", errno.EBUSY) from None
    return fd


class Journal:
    """The append-only journal of one mount's state directory and the overlay it replays to."""

    def __init__(self, state_dir: Path, lock_fd: int) -> None:
        """Use `Journal.open`."""
        self._state_dir = state_dir
        self._lock_fd = lock_fd
        self._jfd = -1
        self._bfd = -1
        self._generation = 0
        self._base_rev = b""
        self._end = 0
        self._blob_end = 0
        self._dirty = False
        self._broken = False
        self._closed = False
        self._overlay = Overlay(self._read_blob)

    @classmethod
    def open(cls, state_dir: Path, *, base_rev: bytes = b"") -> Journal:
        """Open (creating if needed) the newest generation in `state_dir` and replay it.

        `base_rev` is recorded only when a first generation is created.
        """
        state_dir.mkdir(parents=True, exist_ok=True)
        journal = cls(state_dir, _lock(state_dir))
        try:
            gen = next((g for g in _generations(state_dir) if journal._usable(g)), None)
            if gen is None:
                gen = max(_generations(state_dir), default=0) + 1
                _create_generation(state_dir, gen, base_rev)
            journal._load(gen)
        except BaseException:
            journal.close(sync=False)
            raise
        return journal

    def _usable(self, gen: int) -> bool:
        if _read_header(_gen_paths(self._state_dir, gen)[0], gen) is not None:
            return True
        log.error("ignoring generation %d in %s: no valid header", gen, self._state_dir)
        return False

    @property
    def overlay(self) -> Overlay:
        return self._overlay

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def base_rev(self) -> bytes:
        return self._base_rev

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    def _read_blob(self, offset: int, length: int) -> bytes:
        self._check_open()
        return _pread_all(self._bfd, length, offset)

    def _load(self, gen: int) -> None:
        jpath, bpath = _gen_paths(self._state_dir, gen)
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        self._jfd = os.open(jpath, flags)
        self._bfd = os.open(bpath, flags | os.O_CREAT, 0o600)
        self._generation = gen
        self._overlay = Overlay(self._read_blob)
        with os.fdopen(os.dup(self._jfd), "rb") as fh:
            buf = fh.read()
        self._replay(buf, os.fstat(self._bfd).st_size)

    def _replay(self, buf: bytes, blob_size: int) -> None:
        pos = blob_end = 0
        while pos < len(buf):
            try:
                rec, nxt = decode_record(buf, pos)
                self._check_replayed(rec, pos, blob_size)
            except CorruptRecordError as exc:
                self._drop_tail(pos, len(buf), str(exc))
                break
            try:
                self._overlay.apply(rec)
            except FsError as exc:
                raise JournalError(f"record at {pos} of journal.{self._generation}: {exc}") from exc
            if isinstance(rec, Write):
                blob_end = max(blob_end, rec.blob_offset + rec.length)
            pos = nxt
        self._end, self._blob_end = pos, blob_end
        if blob_end < blob_size:
            unused = blob_size - blob_end
            log.warning("data.%d: dropping %d unreferenced bytes", self._generation, unused)
            os.ftruncate(self._bfd, blob_end)
            os.fsync(self._bfd)

    def _check_replayed(self, rec: Record, pos: int, blob_size: int) -> None:
        if isinstance(rec, Header):
            if pos != 0 or rec.generation != self._generation:
                raise CorruptRecordError("misplaced header")
            self._base_rev = rec.base_rev
        elif pos == 0:
            raise CorruptRecordError("missing header")
        elif isinstance(rec, Write):
            if rec.blob_offset + rec.length > blob_size:
                raise CorruptRecordError("data pointer past end of blob log")
            data = _pread_all(self._bfd, rec.length, rec.blob_offset)
            if xxh3(data) != rec.data_hash:
                raise CorruptRecordError("data checksum mismatch")

    def _drop_tail(self, pos: int, size: int, reason: str) -> None:
        """The one non-append write: cut the journal before its first invalid record."""
        if pos == 0:
            raise JournalError(f"journal.{self._generation} has no valid header ({reason})")
        level = logging.WARNING if reason in ("partial header", "short payload") else logging.ERROR
        log.log(
            level,
            "journal.%d: %s at offset %d; dropping %d bytes",
            self._generation,
            reason,
            pos,
            size - pos,
        )
        os.ftruncate(self._jfd, pos)
        os.fsync(self._jfd)

    def _check_open(self) -> None:
        if self._closed:
            raise JournalError("journal is closed")
        if self._broken:
            raise JournalError("journal failed an I/O operation; reopen it")

    def append(self, op: Op) -> Record:
        """Validate `op` against the staged view, apply it and append it; return the record.

        Not durable until `sync`.
        """
        self._check_open()
        if not isinstance(op, _OPS):
            raise TypeError(f"cannot append {type(op).__name__}")
        data = b""
        rec: Record
        if isinstance(op, WriteData):
            data = op.data
            rec = Write(op.path, op.offset, self._blob_end, len(data), xxh3(data))
        else:
            rec = op
        frame = encode_record(rec)
        self._overlay.apply(rec)
        try:
            _write_all(self._bfd, data)
            _write_all(self._jfd, frame)
        except OSError:
            self._broken = True
            raise
        self._blob_end += len(data)
        self._end += len(frame)
        self._dirty = True
        return rec

    def write(self, path: bytes, offset: int, data: bytes) -> Write:
        """Stage `data` at `offset` of `path`; shorthand for ``append(WriteData(...))``."""
        rec = self.append(WriteData(path, offset, data))
        assert isinstance(rec, Write)
        return rec

    def sync(self) -> None:
        """Make every appended record durable: blob log first, then the journal."""
        self._check_open()
        if not self._dirty:
            return
        # Cleared first: a record appended while the fsyncs run (sync may run in a worker
        # thread) marks the journal dirty again, so the next sync covers it.
        self._dirty = False
        try:
            os.fsync(self._bfd)
            os.fsync(self._jfd)
        except OSError:
            self._broken = True
            raise

    def start_generation(self, base_rev: bytes | None = None) -> int:
        """After a commit: consume everything staged and continue in a fresh generation.

        Appends and syncs a RESET, atomically creates the next generation (on `base_rev`, by
        default the current one), switches to it and deletes the older generations.
        """
        self.append(Reset())
        self.sync()
        old = _generations(self._state_dir)
        gen = max([self._generation, *old]) + 1
        rev = self._base_rev if base_rev is None else base_rev
        _create_generation(self._state_dir, gen, rev)
        self._broken = True  # until the new generation is loaded
        self._close_files()
        self._load(gen)
        self._broken = False
        for g in old:
            for path in _gen_paths(self._state_dir, g):
                path.unlink(missing_ok=True)
        _fsync_dir(self._state_dir)
        return gen

    def _close_files(self) -> None:
        for fd in (self._jfd, self._bfd):
            if fd >= 0:
                os.close(fd)
        self._jfd = self._bfd = -1

    def close(self, *, sync: bool = True) -> None:
        """Sync (unless told not to or broken) and release the files and the lock."""
        if self._closed:
            return
        try:
            if sync and not self._broken and self._jfd >= 0:
                self.sync()
        finally:
            self._close_files()
            os.close(self._lock_fd)
            self._closed = True

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
