"""Durable staging area of a writable mount: an append-only journal and the overlay it describes.

A writable mount never changes the Git revision it shows. Every change is appended as a record
(`fusefs.records`) to ``journal.<gen>`` in the mount's state directory; the bytes of writes go
to the blob log ``data.<gen>`` beside it. Replaying the records builds an `Overlay`
(`fusefs.overlay`): the staged view layered over the read-only base tree. No FUSE in here.

The blob log is raw concatenated write data with no framing; a WRITE record owns
``[blob_offset, blob_offset + length)`` and carries the checksum of those bytes.

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
  Replay never consults the base tree, so the HEADER records the base revision the overlay was
  staged against (`Journal.base_rev`) and the caller compares it with the revision it mounts.
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
* Not thread-safe; the caller serialises access.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
from pathlib import Path
from types import TracebackType
from typing import Final

from fusefs.errors import FsError

from .overlay import Overlay
from .records import (
    _OPS,
    HEADER,
    CorruptRecordError,
    Header,
    Op,
    Record,
    Reset,
    Write,
    WriteData,
    decode_record,
    encode_record,
    xxh3,
)

log = logging.getLogger(__name__)

_GEN_RE: Final = re.compile(r"journal\.(\d+)")


class JournalError(FsError):
    """The journal cannot be used: corrupt beyond its tail, locked, closed or broken by I/O."""

    def __init__(self, message: str, err: int = errno.EIO) -> None:
        super().__init__(err, message)


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
