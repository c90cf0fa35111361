"""Serving a large object while it downloads: ranges as they arrive, verified at the end.

An `ObjectStream` fetches an object in fixed-size chunks with several ranged requests at once
into a sparse temp file. Reads wait only for the chunks they touch; workers always take the
lowest missing chunk at or after the latest read position, so sequential readers get read-ahead
and random readers (a parquet footer, a shard index) get what they touch first. The object is
then completed in the background, hashed in order as the contiguous prefix grows, and renamed
into the cache only if its md5 matches.

Invariants and caveats:
- bytes served before the final check are unverified; if the check fails the object is dropped,
  the stream is marked failed and every later read answers EIO (`FsError`), as do reads waiting;
- the per-object cache lock is held for the whole download, so another daemon on the same cache
  waits for this one instead of downloading the object a second time;
- the temp file descriptor stays open until the stream is finished and has no readers left.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from .cache import Cache
from .errors import FsError, IntegrityError, RemoteError
from .objects import HashInfo, Md5Check
from .remote import Remote

log = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK = 8 << 20
WORKERS = 6


class ObjectStream:
    def __init__(
        self,
        hinfo: HashInfo,
        size: int,
        cache: Cache,
        remote: Remote,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self.hinfo = hinfo
        self.size = size
        self.cache = cache
        self.remote = remote
        self._limiter = limiter
        self._chunks = max(1, -(-size // CHUNK))
        self._state = bytearray(self._chunks)  # 0 missing, 1 in flight, 2 present
        self._arrived = [trio.Event() for _ in range(self._chunks)]
        self._cursor = 0
        self._wake = trio.Event()
        self._first_arrival = trio.Event()
        self.failed: str | None = None
        self.corrupt = False
        self.finished = trio.Event()
        self.installed = False
        self.users = 0
        self._fd = -1
        self._tmp: Path | None = None
        self._lock_fd = -1

    # -- reading -----------------------------------------------------------------------------

    async def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        first, last = offset // CHUNK, (end - 1) // CHUNK
        self._cursor = first
        self._wake.set()
        for index in range(first, last + 1):
            if self._state[index] != 2 and self.failed is None:
                await self._arrived[index].wait()
        if self.failed is not None:
            raise FsError(errno.EIO, self.failed)
        return os.pread(self._fd, end - offset, offset)

    def detach(self) -> None:
        self.users -= 1
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.users <= 0 and self.finished.is_set() and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- downloading ---------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[bool] = trio.TASK_STATUS_IGNORED) -> None:
        """Download, verify and install; `started(False)` if another process cached it first."""
        try:
            self._lock_fd = await self._thread(self.cache.lock_object, self.hinfo)
            if self.cache.exists(self.hinfo):
                task_status.started(False)
                return
            fd, tmp = tempfile.mkstemp(dir=self.cache.private / "tmp", prefix=self.hinfo.oid + ".")
            self._fd, self._tmp = fd, Path(tmp)
            os.ftruncate(fd, self.size)
            task_status.started(True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._worker)
                nursery.start_soon(self._more_workers, nursery)
                nursery.start_soon(self._verify_and_install)
        except OSError as exc:
            self._fail(f"cannot stream object {self.hinfo}: {exc}")
        finally:
            self._release()

    async def _more_workers(self, nursery: trio.Nursery) -> None:
        """Slow start: the first chunk (the one a reader waits for) gets the link to itself."""
        await self._first_arrival.wait()
        for _ in range(WORKERS - 1):
            nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        while self.failed is None:
            index = self._next_chunk()
            if index is None:
                if 0 not in self._state:
                    return
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            self._state[index] = 1
            start = index * CHUNK
            end = min(start + CHUNK, self.size)
            try:
                await self._thread(self._fetch_chunk, start, end)
            except RemoteError as exc:
                self._fail(exc.message)
                return
            except OSError as exc:
                self._fail(f"cannot stream object {self.hinfo}: {exc}")
                return
            self._state[index] = 2
            self._arrived[index].set()
            self._first_arrival.set()

    def _next_chunk(self) -> int | None:
        found = self._state.find(0, self._cursor)
        if found < 0:
            found = self._state.find(0)
        return None if found < 0 else found

    def _fetch_chunk(self, start: int, end: int) -> None:
        data = self.remote.read_range(self.hinfo, start, end, self.size)
        os.pwrite(self._fd, data, start)

    async def _verify_and_install(self) -> None:
        try:
            await self._verify_and_install_inner()
        except IntegrityError as exc:
            self.corrupt = True
            self._fail(exc.message)
        except OSError as exc:
            self._fail(f"cannot store object {self.hinfo}: {exc}")

    async def _verify_and_install_inner(self) -> None:
        check = Md5Check(self.hinfo)
        for index in range(self._chunks):
            await self._arrived[index].wait()
            if self.failed is not None:
                return
            start = index * CHUNK
            data = await self._thread(os.pread, self._fd, min(CHUNK, self.size - start), start)
            check.update(data)
        if not check.ok():
            raise IntegrityError(
                f"object {self.hinfo} from remote {self.remote} hashes to {check.hexdigest()}; "
                "dropped"
            )
        assert self._tmp is not None
        await self._thread(os.fsync, self._fd)
        await self._thread(self.cache.install, self._tmp, self.cache.path(self.hinfo))
        self._tmp = None
        self.installed = True
        log.info(
            "object %s (%d bytes) streamed from %s and verified", self.hinfo, self.size, self.remote
        )

    def _fail(self, message: str) -> None:
        if self.failed is None:
            self.failed = message
            log.error("%s", message)
        for event in self._arrived:
            event.set()
        self._wake.set()
        self._first_arrival.set()

    def _release(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        self.finished.set()
        self._maybe_close()

    async def _thread(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
