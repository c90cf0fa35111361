"""The protocols behind `Remote`: primitive operations on remote paths.

`_LocalBackend` is a folder (plain system calls); the others drive an fsspec async filesystem
(S3, HTTP, SSH, Google Cloud Storage, Azure) on fsspec's event-loop thread. Invariants:
- every async operation is bounded by its `timeout`: the coroutine is cancelled on the
  filesystem's loop once it passes (an SSH connect counts against it);
- a missing object raises `FileNotFoundError`; any other failure propagates as raised, for
  `Remote` to classify and retry. Nothing retries here (s3fs's own retries are turned off);
- sizes of many objects come from listings (S3: one key range) when that takes fewer requests
  than asking for each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import importlib
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .config import RemoteConfig
from .errors import UserError
from .remote_errors import _aws_code, _MissingBucket
from .remote_options import Limits, storage_options

log = logging.getLogger(__name__)

T = TypeVar("T")

# A batch of this many unknown sizes or fewer is always asked for one by one.
_FEW = 8


def _make_backend(config: RemoteConfig, scheme: str, limits: Limits) -> _Backend:
    options = storage_options(config, limits)
    if scheme == "file":
        url = config.url
        path = urlsplit(url).path if url.startswith("file://") else url
        if url.startswith("file://") and urlsplit(url).netloc not in ("", "localhost"):
            raise UserError(f"remote {config.name!r} ({url}): file:// URLs must be local")
        return _LocalBackend(os.path.abspath(path).rstrip("/") or "/")
    try:
        if scheme == "s3":
            from s3fs import S3FileSystem

            root = config.url.split("://", 1)[1].strip("/")
            return _S3Backend(lambda: S3FileSystem(**options), root, limits)
        if scheme in ("http", "https"):
            from fsspec.implementations.http import HTTPFileSystem

            return _HttpBackend(lambda: HTTPFileSystem(**options), config.url.rstrip("/"), limits)
        if scheme == "ssh":
            from fsspec.utils import infer_storage_options

            root = infer_storage_options(config.url)["path"].rstrip("/") or "/"
            return _SshBackend(options, root, limits)
        if scheme in ("gs", "gcs"):
            gcs = importlib.import_module("gcsfs").GCSFileSystem
            root = config.url.split("://", 1)[1].strip("/")
            return _FsspecBackend(lambda: gcs(**options), root, limits)
        azure = importlib.import_module("adlfs").AzureBlobFileSystem
        root = config.url.split("://", 1)[1].strip("/")
        return _FsspecBackend(lambda: azure(**options), root, limits)
    except ImportError as exc:
        raise UserError(f"remote {config.name!r} ({config.url}): {exc}") from None


def _common_prefix(first: str, last: str) -> str:
    """The longest string both start with (of sorted strings, every one starts with it)."""
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


class _Backend(ABC):
    """Primitive operations on remote paths; `timeout` bounds the whole operation."""

    root: str
    can_list = True

    @abstractmethod
    def size(self, path: str, timeout: float) -> int: ...

    @abstractmethod
    def read(self, path: str, start: int, end: int, total: int, timeout: float) -> bytes: ...

    @abstractmethod
    def sizes(self, paths: list[str], timeout: float) -> dict[str, int]:
        """Sizes of those of `paths` that exist; raises if any could not be decided."""

    @abstractmethod
    def probe(self, timeout: float) -> None: ...

    def filesystem(self) -> Any:
        return None

    @abstractmethod
    def reset(self) -> None:
        """Forget connections after a connection-level failure."""

    def close(self) -> None:
        self.reset()


class _LocalBackend(_Backend):
    """A folder (local disk or a network mount): plain system calls, no retries needed."""

    def __init__(self, root: str) -> None:
        self.root = root

    def filesystem(self) -> Any:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem()

    def size(self, path: str, timeout: float) -> int:
        st = os.stat(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, "not a file", path)
        return st.st_size

    def read(self, path: str, start: int, end: int, total: int, timeout: float) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)

    def sizes(self, paths: list[str], timeout: float) -> dict[str, int]:
        found: dict[str, int] = {}
        for path in paths:
            with suppress(FileNotFoundError, NotADirectoryError):
                st = os.stat(path)
                found[path] = st.st_size
        return found

    def reset(self) -> None:
        pass  # nothing is kept open

    def probe(self, timeout: float) -> None:
        if not os.path.isdir(self.root):
            log.warning("remote folder %s does not exist (nothing pushed yet?)", self.root)


class _AsyncBackend(_Backend):
    """A backend on an fsspec async filesystem, driven on fsspec's event-loop thread."""

    def __init__(self, factory: Callable[[], Any], root: str, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self._factory = factory
        self._fs: Any = None
        self._lock = threading.Lock()

    def filesystem(self) -> Any:
        with self._lock:
            if self._fs is None:
                self._fs = self._factory()
            return self._fs

    def reset(self) -> None:
        with self._lock:
            self._fs = None

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Run a coroutine on the filesystem's loop; cancelled once `timeout` passes."""
        fs = self.filesystem()
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(make(fs), timeout), fs.loop)
        try:
            return future.result(timeout + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:.1f}s") from None

    async def _gather_sizes(
        self, paths: list[str], one: Callable[[str], Coroutine[Any, Any, int]]
    ) -> dict[str, int]:
        gate = asyncio.Semaphore(self.limits.concurrency)

        async def size_of(path: str) -> int | None:
            async with gate:
                try:
                    return await one(path)
                except FileNotFoundError:
                    return None

        sizes = await asyncio.gather(*(size_of(p) for p in paths))
        return {p: s for p, s in zip(paths, sizes, strict=True) if s is not None}

    async def _list_sizes(self, fs: Any, folders: list[str]) -> dict[str, int]:
        gate = asyncio.Semaphore(self.limits.concurrency)

        async def listing(folder: str) -> dict[str, int]:
            async with gate:
                try:
                    entries = await self._ls(fs, folder)
                except FileNotFoundError:
                    return {}
            return {
                self._full(e["name"]): int(e["size"]) for e in entries if e.get("type") == "file"
            }

        found: dict[str, int] = {}
        for part in await asyncio.gather(*(listing(f) for f in folders)):
            found.update(part)
        return found

    async def _ls(self, fs: Any, folder: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await fs._ls(folder, detail=True, refresh=True)
        return entries

    def _full(self, name: str) -> str:
        return name

    def sizes(self, paths: list[str], timeout: float) -> dict[str, int]:
        folders = sorted({_parent(p) for p in paths})
        wanted = set(paths)
        if self.can_list and len(paths) > _FEW and 2 * len(folders) <= len(paths):
            listed = self._run(lambda fs: self._list_sizes(fs, folders), timeout)
            return {p: s for p, s in listed.items() if p in wanted}
        return self._run(lambda fs: self._gather_sizes(paths, lambda p: self._size(fs, p)), timeout)

    def size(self, path: str, timeout: float) -> int:
        return self._run(lambda fs: self._size(fs, path), timeout)

    async def _size(self, fs: Any, path: str) -> int:
        info = await fs._info(path)
        if info.get("type") != "file" or info.get("size") is None:
            raise FileNotFoundError(errno.ENOENT, "not a file", path)
        return int(info["size"])

    def read(self, path: str, start: int, end: int, total: int, timeout: float) -> bytes:
        return self._run(lambda fs: self._read(fs, path, start, end), timeout)

    async def _read(self, fs: Any, path: str, start: int, end: int) -> bytes:
        data: bytes = await fs._cat_file(path, start=start, end=end)
        return data

    def probe(self, timeout: float) -> None:
        async def probe(fs: Any) -> None:
            with suppress(FileNotFoundError):
                await fs._info(self.root)

        self._run(probe, timeout)


class _FsspecBackend(_AsyncBackend):
    """Google Cloud Storage, Azure Blob Storage: plain fsspec calls."""


class _S3Backend(_AsyncBackend):
    """S3 through s3fs; sizes of many objects by one paginated listing when that is cheaper."""

    def filesystem(self) -> Any:
        with self._lock:
            if self._fs is None:
                fs = self._factory()
                fs.retries = 1  # retries are ours: one place decides, bounded by the deadline
                self._fs = fs
            return self._fs

    def _split(self, path: str) -> tuple[str, str]:
        bucket, _, key = path.partition("/")
        return bucket, key

    async def _size(self, fs: Any, path: str) -> int:
        bucket, key = self._split(path)
        head = await fs._call_s3("head_object", Bucket=bucket, Key=key)
        return int(head["ContentLength"])

    async def _list_sizes(self, fs: Any, folders: list[str]) -> dict[str, int]:
        raise NotImplementedError  # sizes() below lists by key range instead

    def sizes(self, paths: list[str], timeout: float) -> dict[str, int]:
        """One HEAD each for a few; for more, a listing from the first key to the last (a
        request per 1000 keys), given up for concurrent HEADs of the rest once the pages still
        needed would take more round trips than those HEADs."""
        if len(paths) <= _FEW:
            return super().sizes(paths, timeout)
        return self._run(lambda fs: self._scan(fs, sorted(paths)), timeout)

    async def _scan(self, fs: Any, paths: list[str]) -> dict[str, int]:
        bucket = self._split(paths[0])[0]
        keys = [self._split(p)[1] for p in paths]
        found: dict[str, int] = {}
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": _common_prefix(keys[0], keys[-1])}
        first = keys[0]
        if first:
            params["StartAfter"] = first[:-1]  # S3 starts strictly after: anything before
        settled = 0  # keys[:settled] are decided (found, or absent from the listing)
        requests = 0
        while settled < len(keys):
            page = await fs._call_s3("list_objects_v2", **params)
            requests += 1
            contents = page.get("Contents", [])
            for item in contents:
                found[f"{bucket}/{item['Key']}"] = int(item["Size"])
            if not page.get("IsTruncated", False) or not contents:
                settled = len(keys)
                break
            last = contents[-1]["Key"]
            while settled < len(keys) and keys[settled] <= last:
                settled += 1
            remaining = len(keys) - settled
            # Keys are spread evenly (they are hashes): the pages still needed, estimated from
            # the pages so far, run one after another, while HEADs for the keys left run
            # `concurrency` at a time: keep listing only while it takes fewer round trips.
            head_trips = -(-remaining // self.limits.concurrency)
            if remaining * requests / max(settled, 1) >= head_trips:
                break
            params["ContinuationToken"] = page["NextContinuationToken"]
        rest = [f"{bucket}/{k}" for k in keys[settled:]]
        if rest:
            found.update(await self._gather_sizes(rest, lambda p: self._size(fs, p)))
        wanted = set(paths)
        return {p: s for p, s in found.items() if p in wanted}

    def probe(self, timeout: float) -> None:
        bucket, prefix = self._split(self.root)

        async def probe(fs: Any) -> None:
            try:
                await fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
            except FileNotFoundError as exc:
                if _aws_code(exc) in ("NoSuchBucket", None):
                    raise _MissingBucket(bucket) from exc
                raise

        self._run(probe, timeout)


class _HttpBackend(_AsyncBackend):
    """An HTTP(S) remote (`<url>/files/md5/ab/cd...`): HEAD for sizes, ranged GET for bytes.

    Status codes are read here rather than through fsspec's helpers, which turn every failure
    of a HEAD (a timeout, a 401) into FileNotFoundError.
    """

    can_list = False

    async def _session(self, fs: Any) -> Any:
        return await fs.set_session()

    async def _size(self, fs: Any, path: str) -> int:
        session = await self._session(fs)
        headers = {"Accept-Encoding": "identity"}
        async with session.head(path, allow_redirects=True, headers=headers) as response:
            self._raise_for(response, path)
            length = response.headers.get("Content-Length")
        if length is None:
            raise OSError(errno.EIO, f"no Content-Length for {path}")
        return int(length)

    def _raise_for(self, response: Any, path: str) -> None:
        if response.status == 404 or response.status == 410:
            raise FileNotFoundError(errno.ENOENT, f"HTTP {response.status}", path)
        response.raise_for_status()

    async def _read(self, fs: Any, path: str, start: int, end: int) -> bytes:
        session = await self._session(fs)
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{end - 1}"}
        async with session.get(path, headers=headers) as response:
            self._raise_for(response, path)
            if response.status == 206:
                data: bytes = await response.read()
                return data
            # The server ignored the range and sends the whole object: skip to `start`.
            skipped = 0
            parts: list[bytes] = []
            kept = 0
            while kept < end - start:
                block = await response.content.read(1 << 20)
                if not block:
                    break
                if skipped < start:
                    cut = min(start - skipped, len(block))
                    skipped += cut
                    block = block[cut:]
                parts.append(block[: end - start - kept])
                kept += len(parts[-1])
            return b"".join(parts)

    def probe(self, timeout: float) -> None:
        async def probe(fs: Any) -> None:
            session = await self._session(fs)
            async with session.head(self.root + "/", allow_redirects=True) as response:
                if response.status in (401, 403) or response.status >= 500:
                    response.raise_for_status()

        self._run(probe, timeout)


class _SshBackend(_AsyncBackend):
    """An SFTP remote. sshfs connects once, when constructed, and never again: a connection
    that failed is dropped here, and the next attempt connects anew."""

    def __init__(self, options: dict[str, Any], root: str, limits: Limits) -> None:
        options = dict(options)
        host = options.pop("host")

        def connect() -> Any:
            from sshfs import SSHFileSystem

            return SSHFileSystem(host, timeout=limits.connect_timeout, **options)

        super().__init__(connect, root, limits)

    def reset(self) -> None:
        with self._lock:
            fs, self._fs = self._fs, None
        if fs is not None:
            with suppress(Exception):
                type(fs)._finalize(fs.loop, fs._pool, fs._stack)

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, T]], timeout: float) -> T:
        started = time.monotonic()
        self.filesystem()  # connecting blocks this thread, within connect_timeout
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            raise TimeoutError("connecting used up the deadline")
        return super()._run(make, left)

    async def _ls(self, fs: Any, folder: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await fs._ls(folder, detail=True)
        return entries

    async def _read(self, fs: Any, path: str, start: int, end: int) -> bytes:
        from asyncssh.sftp import SFTPNoSuchFile

        try:
            async with fs._pool.get() as channel, channel.open(path, "rb") as handle:
                data: bytes = await handle.read(end - start, start)
        except SFTPNoSuchFile as exc:
            raise FileNotFoundError(errno.ENOENT, str(exc), path) from exc
        return data
