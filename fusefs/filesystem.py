"""The filesystem operations of a read-only revision mount, in fusefs's own types.

Knows nothing of pyfuse3: `fuse_ops` translates. Every failure is an `FsError` with an errno.
Fast paths run inline on the event loop (a read of a cached object is a memoryview slice of an
mmap); anything that can block (manifests, sizes, downloads, git blobs) runs in a worker thread
behind a capacity limiter, shared across callers through single-flight.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import trio

from .cache import Cache
from .errors import FsError, RemoteError, UserError
from .flight import SingleFlight
from .git import Repo
from .metafile import MetafileError, parse_manifest
from .objects import HashInfo
from .remote import Remote
from .stream import ObjectStream
from .tree import ROOT_INODE, Kind, Node, RevisionTree

log = logging.getLogger(__name__)

T = TypeVar("T")

SMALL_FILE = 256 << 10
WHOLE_OUTPUT_SIZES = 50_000  # size a directory output in one batch up to this many files
STREAM_MIN = 32 << 20  # objects this large are served range by range while they download


@dataclass(frozen=True, slots=True)
class Attr:
    inode: int
    mode: int
    size: int
    mtime_ns: int
    nlink: int = 1


@dataclass(frozen=True, slots=True)
class Settings:
    uid: int
    gid: int
    metadata_timeout: float = 60.0  # deadline for a manifest or a batch of sizes
    threads: int = 16


class RemoteSet:
    """The remote each output is fetched from: its own `remote:` field, else the default."""

    def __init__(self, default: Remote | None, factory: Callable[[str], Remote]) -> None:
        self.default = default
        self._factory = factory
        self._named: dict[str, Remote] = {}

    def close(self) -> None:
        for remote in [self.default, *self._named.values()]:
            if remote is not None:
                remote.close()

    def for_node(self, node: Node) -> Remote | None:
        name = node.out.remote if node.out is not None else None
        if name is None:
            return self.default
        if name not in self._named:
            try:
                self._named[name] = self._factory(name)
            except UserError as exc:
                message = f"{node.out.source if node.out else ''}: {exc}"
                log.error("%s", message)
                raise FsError(errno.EIO, message) from None
        return self._named[name]


class OpenFile:
    __slots__ = ("node", "stream", "view")

    def __init__(self, node: Node, view: memoryview | None) -> None:
        self.node = node
        self.view = view
        self.stream: ObjectStream | None = None


class ReadOnly:
    """The write operations of a read-only mount: all EROFS."""

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        raise FsError(errno.EROFS)

    async def fsync(self, fh: int) -> None:
        return None

    async def create(self, parent_inode: int, name: bytes, mode: int) -> tuple[int, Attr]:
        raise FsError(errno.EROFS)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int) -> Attr:
        raise FsError(errno.EROFS)

    async def unlink(self, parent_inode: int, name: bytes) -> None:
        raise FsError(errno.EROFS)

    async def rmdir(self, parent_inode: int, name: bytes) -> None:
        raise FsError(errno.EROFS)

    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        raise FsError(errno.EROFS)

    async def setattr(self, inode: int, size: int | None, mode: int | None) -> Attr:
        raise FsError(errno.EROFS)


class FileSystem(ReadOnly):
    def __init__(
        self,
        tree: RevisionTree,
        repo: Repo,
        cache: Cache,
        remotes: RemoteSet,
        settings: Settings,
        nursery: trio.Nursery,
    ) -> None:
        self.tree = tree
        self.repo = repo
        self.cache = cache
        self.remotes = remotes
        self.settings = settings
        self.nursery = nursery
        self._limiter = trio.CapacityLimiter(settings.threads)
        self._fetches: SingleFlight[str] = SingleFlight(nursery)
        self._expansions: SingleFlight[None] = SingleFlight(nursery)
        self._sizings: SingleFlight[None] = SingleFlight(nursery)
        self._handles: dict[int, OpenFile] = {}
        self._pins: dict[int, int] = {}  # id(mmap) -> fd holding a shared flock on the object
        self._streams: dict[str, ObjectStream] = {}
        self._stream_starts: SingleFlight[ObjectStream | None] = SingleFlight(nursery)
        self._corrupt: set[str] = set()  # objects whose remote copy failed verification
        self._next_fh = 1

    # -- metadata ----------------------------------------------------------------------------

    async def getattr(self, inode: int) -> Attr:
        node = self.tree.node(inode)
        if node.size is None and node.kind is Kind.FILE:
            await self._ensure_sizes(self.tree.node(node.parent))
        return self.attr(node)

    async def lookup(self, parent_inode: int, name: bytes) -> Attr:
        parent = await self._expanded(self.tree.node(parent_inode))
        node = self.tree.lookup(parent, name)
        if node is None:
            raise FsError(errno.ENOENT)
        if node.size is None and node.kind is Kind.FILE:
            await self._ensure_sizes(parent)
        return self.attr(node)

    async def readdir(self, inode: int, start: int) -> Iterator[tuple[bytes, Attr, int]]:
        """Entries from offset `start`, each with the offset of the one after it.

        Lazy: the kernel's buffer takes a few hundred entries per request, so a big folder is
        read in many requests, and each must cost what it returns, not the rest of the folder.
        """
        directory = await self._expanded(self.tree.node(inode))
        await self._ensure_sizes(directory)
        listing = self.tree.listing(directory)
        return ((listing[i].name, self.attr(listing[i]), i + 1) for i in range(start, len(listing)))

    async def readlink(self, inode: int) -> bytes:
        node = self.tree.node(inode)
        if node.kind is not Kind.LINK or node.blob is None:
            raise FsError(errno.EINVAL)
        return await self._to_thread(self.repo.read_blob, node.blob)

    async def opendir(self, inode: int) -> int:
        node = self.tree.node(inode)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR)
        await self._expanded(node)
        return inode

    def attr(self, node: Node) -> Attr:
        if node.kind is Kind.DIR:
            return Attr(node.inode, stat.S_IFDIR | 0o555, 4096, self.tree.mtime_ns, 2)
        if node.kind is Kind.LINK:
            return Attr(node.inode, stat.S_IFLNK | 0o777, node.size or 0, self.tree.mtime_ns)
        mode = stat.S_IFREG | (0o555 if node.exec else 0o444)
        return Attr(node.inode, mode, node.size or 0, self.tree.mtime_ns)

    # -- base access for the writable overlay -------------------------------------------------

    async def base_node(self, parts: tuple[bytes, ...]) -> Node | None:
        """The node at a path, expanding directory outputs on the way, its size known."""
        node = self.tree.node(ROOT_INODE)
        for part in parts:
            if not node.is_dir:
                return None
            child = self.tree.lookup(await self._expanded(node), part)
            if child is None:
                return None
            node = child
        if node.kind is Kind.FILE and node.size is None:
            await self._ensure_sizes(self.tree.node(node.parent))
        return node

    async def ready_dir(self, node: Node) -> None:
        """Expand a folder and know the sizes of its files."""
        await self._expanded(node)
        await self._ensure_sizes(node)

    def base_node_now(self, parts: tuple[bytes, ...]) -> Node | None:
        """Like `base_node` for synchronous callers: loads what is missing inline (blocking)."""
        node = self.tree.node(ROOT_INODE)
        for part in parts:
            if not node.is_dir:
                return None
            self._expand_now(node)
            child = self.tree.lookup(node, part)
            if child is None:
                return None
            node = child
        if node.kind is Kind.FILE and node.size is None:
            parent = self.tree.node(node.parent)
            missing = [n for n in self.tree.listing(parent) if n.size is None and n.obj]
            remote = self.remotes.for_node(node)
            self._apply_sizes(
                missing, self._sizes([n.obj for n in missing if n.obj], remote), remote
            )
        return node

    def base_listing_now(self, node: Node) -> list[Node]:
        self._expand_now(node)
        return self.tree.listing(node)

    def _expand_now(self, node: Node) -> None:
        if node.error is not None:
            raise FsError(errno.EIO, node.error)
        if node.children is not None:
            return
        assert node.obj is not None
        try:
            entries = self._load_manifest(node.obj, self.remotes.for_node(node))
        except MetafileError as exc:
            self.tree.fail(node, str(exc))
            raise FsError(errno.EIO, str(exc)) from None
        except RemoteError as exc:
            raise FsError(errno.EIO, exc.message) from exc
        self.tree.expand(node, entries)

    def read_base_now(self, node: Node, offset: int, size: int) -> bytes:
        """Bytes of a base file (blocking when its object is not cached yet)."""
        if node.obj is None:
            assert node.blob is not None
            return self.repo.read_blob(node.blob)[offset : offset + size]
        view = self.map_cached(node.obj)
        if view is None:
            self._fetch(node.obj, self.remotes.for_node(node))
            view = self.map_cached(node.obj)
        if view is None:
            raise FsError(errno.EIO, f"object {node.obj} vanished from the cache")
        try:
            return bytes(view[offset : offset + size])
        finally:
            self.unmap(view)

    async def prefetch(self, node: Node) -> None:
        """Make a base file's bytes local (cache or git), so later reads do not block."""
        if node.obj is not None and not self.cache.exists(node.obj):
            self.unmap(await self.load(node))

    # -- directory outputs ---------------------------------------------------------------------

    async def _expanded(self, node: Node) -> Node:
        if node.error is not None:
            raise FsError(errno.EIO, node.error)
        if node.children is None:
            await self._expansions.run(node.inode, lambda: self._expand(node))
            if node.error is not None:
                raise FsError(errno.EIO, node.error)
        return node

    async def _expand(self, node: Node) -> None:
        if node.children is not None:
            return
        assert node.obj is not None
        hinfo = node.obj
        remote = self.remotes.for_node(node)
        try:
            with trio.fail_after(self.settings.metadata_timeout):
                entries = await self._to_thread(self._load_manifest, hinfo, remote)
        except MetafileError as exc:
            log.error("%s; output %r is not served", exc, self.tree.path_of(node))
            self.tree.fail(node, str(exc))
            return
        except trio.TooSlowError:
            raise self._remote_failure(hinfo, remote, "timed out fetching manifest") from None
        except RemoteError as exc:
            log.error("%s", exc.message)
            raise FsError(errno.EIO, exc.message) from exc
        self.tree.expand(node, entries)

    def _load_manifest(self, hinfo: HashInfo, remote: Remote | None) -> list:  # type: ignore[type-arg]
        path = self.cache.fetch(hinfo, remote)
        return parse_manifest(path.read_bytes(), f"manifest {hinfo}")

    async def _ensure_sizes(self, directory: Node) -> None:
        """Resolve the sizes of the files in a folder in one batch (cache first, then remote).

        Inside a directory output of up to `WHOLE_OUTPUT_SIZES` files the batch covers the
        whole output: one listing of the remote then sizes every folder of it (a request per
        thousand objects on S3), where folder by folder would cost a listing or HEADs each.
        """
        if directory.sized:
            return
        missing = [n for n in self.tree.listing(directory) if n.size is None and n.obj]
        if not missing:
            directory.sized = True  # a folder's sizes never change: later listings skip this
            return
        key = directory.inode
        output = self._output_node(directory)
        files = self._files_below(output, WHOLE_OUTPUT_SIZES) if output is not None else None
        if output is not None and files is not None:
            key = output.inode
            missing = [n for n in files if n.size is None]
        await self._sizings.run(key, lambda: self._size_batch(missing))

    def _output_node(self, node: Node) -> Node | None:
        """The directory output a node belongs to (the node whose object is a `.dir`)."""
        while node.inode != ROOT_INODE:
            if node.obj is not None and node.obj.is_dir:
                return node
            if node.out is None:
                return None
            node = self.tree.node(node.parent)
        return None

    def _files_below(self, directory: Node, limit: int | None = None) -> list[Node] | None:
        """Every file node below an expanded folder; None past `limit` files."""
        files: list[Node] = []
        stack = [directory]
        while stack:
            for child in self.tree.listing(stack.pop()):
                if child.is_dir:
                    stack.append(child)
                elif child.obj is not None:
                    files.append(child)
                    if limit is not None and len(files) > limit:
                        return None
        return files

    async def _size_batch(self, nodes: list[Node]) -> None:
        remote = self.remotes.for_node(nodes[0])
        try:
            with trio.fail_after(self.settings.metadata_timeout):
                sizes = await self._to_thread(self._sizes, [n.obj for n in nodes], remote)
        except trio.TooSlowError:
            raise self._remote_failure(nodes[0].obj, remote, "timed out reading sizes") from None
        except RemoteError as exc:
            log.error("%s", exc.message)
            raise FsError(errno.EIO, exc.message) from exc
        self._apply_sizes(nodes, sizes, remote)

    @staticmethod
    def _apply_sizes(nodes: list[Node], sizes: dict[HashInfo, int], remote: Remote | None) -> None:
        for node in nodes:
            size = sizes[node.obj]  # type: ignore[index]
            node.size = max(size, 0)
            if size < 0:
                node.error = f"object {node.obj} is missing on remote {remote}"

    def _sizes(self, hashes: list[HashInfo], remote: Remote | None) -> dict[HashInfo, int]:
        """Sizes from the cache, then the size store, then one batched remote request.

        Objects the remote lacks are reported with size -1: `_size_batch` marks their nodes
        failed (shown with size 0; opening them answers EIO), with a log line naming them.
        """
        result: dict[HashInfo, int] = {}
        for hinfo in hashes:
            size = self.cache.size(hinfo)
            if size is not None:
                result[hinfo] = size
        missing = [h for h in hashes if h not in result]
        if missing:
            result.update(self.cache.sizes.get_many(missing))
            missing = [h for h in missing if h not in result]
        if missing:
            if remote is None:
                raise RemoteError(f"object {missing[0]} is not cached and no remote is configured")
            fetched = remote.sizes(missing)
            self.cache.sizes.put_many(fetched)
            result.update(fetched)
            for hinfo in missing:
                if hinfo not in fetched:
                    log.error("object %s is missing on remote %s", hinfo, remote)
                    result[hinfo] = -1
        return result

    def _remote_failure(self, hinfo: HashInfo | None, remote: Remote | None, why: str) -> FsError:
        message = f"object {hinfo} on remote {remote}: {why}"
        log.error("%s", message)
        return FsError(errno.EIO, message)

    # -- files --------------------------------------------------------------------------------

    def parent_inode(self, inode: int) -> int:
        return self.tree.node(inode).parent or ROOT_INODE

    async def open(self, inode: int, flags: int) -> int:
        node = self.tree.node(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise FsError(errno.EROFS)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if node.error is not None:
            log.error("open of %r: %s", self.tree.path_of(node), node.error)
            raise FsError(errno.EIO, node.error)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = OpenFile(node, None)  # mapped on first read: most opens hit
        return fh  # the kernel's page cache (keep_cache) and never read through us

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        handle = self._handle(fh)
        view = handle.view
        if view is None:
            obj = handle.node.obj
            view = self.map_cached(obj) if obj is not None else None
            if view is None and self._streamable(handle.node):
                stream = handle.stream or await self._attach_stream(handle)
                if stream is not None and not stream.installed:
                    try:
                        return await stream.read(offset, size)
                    except FsError as exc:
                        log.error("read of %r: %s", self.tree.path_of(handle.node), exc.message)
                        raise
                view = self.map_cached(obj) if obj is not None else None
            if view is None:
                view = await self.load(handle.node)
            handle.view = view
        return view[offset : offset + size]

    def _streamable(self, node: Node) -> bool:
        return (
            node.obj is not None
            and node.size is not None
            and node.size >= STREAM_MIN
            and node.obj.oid not in self._corrupt
            and self.remotes.for_node(node) is not None
        )

    async def _attach_stream(self, handle: OpenFile) -> ObjectStream | None:
        """The download of a large object, shared by every reader of it; None if cached."""
        node = handle.node
        assert node.obj is not None and node.size is not None
        hinfo, size = node.obj, node.size
        stream = self._streams.get(hinfo.oid)
        if stream is None or stream.failed is not None:
            remote = self.remotes.for_node(node)
            assert remote is not None
            stream = await self._stream_starts.run(
                hinfo.oid, lambda: self._start_stream(hinfo, size, remote)
            )
        if stream is not None:
            stream.users += 1
            handle.stream = stream
        return stream

    async def _start_stream(
        self, hinfo: HashInfo, size: int, remote: Remote
    ) -> ObjectStream | None:
        stream = ObjectStream(hinfo, size, self.cache, remote, self._limiter)
        started = await self.nursery.start(self._run_stream, stream)
        return stream if started else None

    async def _run_stream(
        self, stream: ObjectStream, task_status: trio.TaskStatus[bool] = trio.TASK_STATUS_IGNORED
    ) -> None:
        oid = stream.hinfo.oid
        self._streams[oid] = stream
        try:
            await stream.run(task_status)
        finally:
            if self._streams.get(oid) is stream:
                del self._streams[oid]
            if stream.corrupt:
                self._corrupt.add(oid)
            if stream.failed is not None:  # a wrong remembered size may be why
                self.cache.sizes.forget(stream.hinfo)
                stream.remote.forget(stream.hinfo)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        if handle.view is not None:
            self.unmap(handle.view)
        if handle.stream is not None:
            handle.stream.detach()

    def _handle(self, fh: int) -> OpenFile:
        try:
            return self._handles[fh]
        except KeyError:
            raise FsError(errno.EBADF) from None

    def map_cached(self, hinfo: HashInfo) -> memoryview | None:
        """Map a cached object (inline: a cache hit costs an open and an mmap); None if absent."""
        try:
            fd = os.open(self.cache.path_str(hinfo), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            _note_access(fd, st)
            if st.st_size <= SMALL_FILE:  # one pread beats mmap + munmap for small objects
                return memoryview(os.pread(fd, st.st_size, 0))
            mapping = mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ)
            mapping.madvise(mmap.MADV_SEQUENTIAL)  # kernel read-ahead off the loop
            fcntl.flock(fd, fcntl.LOCK_SH)  # pinned: `fusefs cache gc` skips locked objects
            self._pins[id(mapping)] = fd
            fd = -1
            return memoryview(mapping)
        finally:
            if fd >= 0:
                os.close(fd)

    def adopt_pins(self, other: FileSystem) -> None:
        self._pins = other._pins

    def unmap(self, view: memoryview) -> None:
        """Release a view from `map_cached` or `load`, unpinning its object."""
        base = view.obj
        view.release()
        if isinstance(base, mmap.mmap):
            fd = self._pins.pop(id(base), None)
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(BufferError):  # a slice still lives: unmapped when it goes
                base.close()

    async def load(self, node: Node) -> memoryview:
        if node.obj is None:
            assert node.blob is not None
            return memoryview(await self._to_thread(self.repo.read_blob, node.blob))
        hinfo = node.obj
        if hinfo.oid in self._corrupt:
            raise FsError(errno.EIO, f"object {hinfo} failed verification; remount to retry")
        remote = self.remotes.for_node(node)
        try:
            await self._fetches.run(hinfo.oid, lambda: self._to_thread(self._fetch, hinfo, remote))
        except FsError as exc:  # RemoteError, IntegrityError
            log.error("read of %r: %s", self.tree.path_of(node), exc.message)
            # A corrupt or truncated remote copy may have taught us a wrong size.
            self.cache.sizes.forget(hinfo)
            if remote is not None:
                remote.forget(hinfo)
            raise FsError(errno.EIO, exc.message) from exc
        view = self.map_cached(hinfo)
        if view is None:  # evicted between the fetch and the map: once more
            await self._fetches.run(hinfo.oid, lambda: self._to_thread(self._fetch, hinfo, remote))
            view = self.map_cached(hinfo)
        if view is None:
            raise FsError(errno.EIO, f"object {hinfo} vanished from the cache")
        return view

    def _fetch(self, hinfo: HashInfo, remote: Remote | None) -> str:
        return str(self.cache.fetch(hinfo, remote))

    async def _to_thread(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self._limiter, abandon_on_cancel=True
        )

    def statfs(self) -> os.statvfs_result:
        return os.statvfs(self.cache.root)


def _note_access(fd: int, st: os.stat_result) -> None:
    """Keep atime meaningful for LRU eviction, at most one metadata write an hour per object."""
    now = time.time()
    if now - st.st_atime > 3600:
        with contextlib.suppress(OSError):
            os.utime(fd, (now, st.st_mtime))
