"""The filesystem operations of a writable mount: a staged overlay over a revision.

Every change is appended to the mount's journal (`journal.Journal`); the revision underneath
never changes until `fusefs commit`. Paths, not tree nodes, identify entries here, because
renames move staged content: inode numbers are handed out per path and move with renames.

What may be written follows what `dvc add` can record:
- paths inside outputs named by `*.dvc` files, and new paths that Git does not track (the
  topmost new folder or file becomes a new output);
- never: Git-tracked files and folders, metafiles (`*.dvc`, `dvc.yaml`, `dvc.lock`,
  `.gitignore`, `.dvcignore`), pipeline outputs (named by a `dvc.lock`), anything under `.dvc/`
  (EROFS); hard links, symlinks and device files (EPERM).

Durability: each write is appended to the journal's files at once, so it survives a killed
daemon; `fsync` syncs the journal before returning, and `release` (close) schedules a sync that
concurrent closers share, so closed files reach the disk within `SYNC_DELAY` seconds.

Caveat: an unlinked file that is still open can no longer be read or written through its
handle (ESTALE): the staged view is addressed by path.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import trio

from .errors import FsError
from .filesystem import Attr, FileSystem
from .journal import Journal
from .overlay import BaseEntry, Kind, Overlay
from .records import Chmod, Create, Mkdir, Rename, Rmdir, Truncate
from .records import Unlink as UnlinkRecord
from .tree import ROOT_INODE, Node

log = logging.getLogger(__name__)

SYNC_DELAY = 0.05
METAFILE_NAMES = frozenset({b".gitignore", b".dvcignore", b"dvc.yaml", b"dvc.lock"})


def split(path: bytes) -> tuple[bytes, ...]:
    return tuple(path.split(b"/")) if path else ()


def join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


@dataclass(slots=True)
class Handle:
    inode: int
    view: memoryview | None = None  # the base object's bytes, while the path is unmodified
    dirty: bool = False


@dataclass
class _Inodes:
    """Path <-> inode numbers; a rename moves the numbers of everything below it."""

    paths: dict[int, bytes] = field(default_factory=lambda: {ROOT_INODE: b""})
    inodes: dict[bytes, int] = field(default_factory=lambda: {b"": ROOT_INODE})
    next: int = ROOT_INODE + 1

    def of(self, path: bytes) -> int:
        inode = self.inodes.get(path)
        if inode is None:
            inode = self.inodes[path] = self.next
            self.paths[inode] = path
            self.next += 1
        return inode

    def path(self, inode: int) -> bytes:
        try:
            return self.paths[inode]
        except KeyError:
            raise FsError(errno.ESTALE, f"inode {inode} no longer has a path") from None

    def drop(self, path: bytes) -> None:
        inode = self.inodes.pop(path, None)
        if inode is not None:
            del self.paths[inode]

    def move(self, old: bytes, new: bytes) -> None:
        self.drop(new)
        prefix = old + b"/"
        moved = [p for p in self.inodes if p == old or p.startswith(prefix)]
        for path in moved:
            inode = self.inodes.pop(path)
            target = new + path[len(old) :]
            self.drop(target)
            self.inodes[target] = inode
            self.paths[inode] = target


class WritableFileSystem:
    def __init__(self, base: FileSystem, journal: Journal, nursery: trio.Nursery) -> None:
        self.base = base
        self.journal = journal
        self.settings = base.settings
        self.ids = _Inodes()
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._mtimes: dict[bytes, int] = {}
        self._nursery = nursery
        self._sync_pending = False
        self._sync_done = trio.Event()
        self._frozen: trio.Event | None = None

    @property
    def overlay(self) -> Overlay:
        return self.journal.overlay

    # -- base callbacks (synchronous; `_prepare` makes them cheap) ------------------------------

    def _base(self, path: bytes) -> Node | None:
        return self.base.base_node_now(split(path))

    def base_stat(self, path: bytes) -> BaseEntry | None:
        node = self._base(path)
        if node is None:
            return None
        return BaseEntry(node.is_dir, 0 if node.is_dir else node.size or 0)

    def base_size(self, path: bytes) -> int:
        node = self._base(path)
        return 0 if node is None or node.size is None else node.size

    def base_reader(self, path: bytes, offset: int, size: int) -> bytes:
        node = self._base(path)
        if node is None:
            return b""
        return self.base.read_base_now(node, offset, size)

    def base_listing(self, path: bytes) -> Iterable[bytes]:
        node = self._base(path)
        if node is None or not node.is_dir:
            return []
        return [child.name for child in self.base.base_listing_now(node)]

    def base_executable(self, path: bytes) -> bool:
        node = self._base(path)
        return bool(node is not None and node.exec)

    async def _prepare(self, path: bytes) -> None:
        """Load (off the loop) the base entries the overlay will ask about for `path`."""
        resolution = self.overlay.resolve(path)
        target = resolution.base_path if resolution.base_path is not None else path
        node = await self.base.base_node(split(target))
        if node is not None and node.is_dir:
            await self.base.ready_dir(node)

    # -- classification ----------------------------------------------------------------------

    def check_writable(self, path: bytes) -> None:
        """EROFS unless `dvc add` could record a change at `path` (see module docstring)."""
        parts = split(path)
        if not parts or parts[0] in (b".dvc", b".git"):
            raise FsError(errno.EROFS, f"{path!r} is read-only")
        name = parts[-1]
        if name in METAFILE_NAMES or name.endswith(b".dvc"):
            raise FsError(errno.EROFS, f"{path!r} is a metafile")
        output = self.output_root(path)
        if output is None:
            raise FsError(errno.EROFS, f"{path!r} is tracked by Git")
        entry = self.base.tree.metafiles.get(output)
        if entry is not None and entry[1]:
            raise FsError(errno.EROFS, f"{path!r} is a pipeline output (dvc.lock)")

    def output_root(self, path: bytes) -> tuple[bytes, ...] | None:
        """The output a path belongs to (existing or new); None for Git-tracked paths."""
        tree = self.base.tree
        node = tree.node(ROOT_INODE)
        parts = split(path)
        for i, part in enumerate(parts):
            if node.out is not None:
                return node.out.path
            child = tree.lookup(node, part)
            if child is None:
                return parts[: i + 1]
            if child.out is None and not child.is_dir:
                return None
            node = child
        return node.out.path if node.out is not None else None

    # -- metadata ----------------------------------------------------------------------------

    def _stat(self, path: bytes) -> Attr:
        inode = self.ids.of(path)
        resolution = self.overlay.resolve(path)
        if resolution.kind is Kind.ABSENT:
            self.ids.drop(path)
            raise FsError(errno.ENOENT)
        if resolution.kind is Kind.BASE:
            node = self._base(resolution.base_path or b"")
            if node is None:
                self.ids.drop(path)
                raise FsError(errno.ENOENT)
            attr = self.base.attr(node)
            return Attr(inode, self._mode(path, attr.mode), attr.size, attr.mtime_ns, attr.nlink)
        mtime = self._mtimes.get(path, self.base.tree.mtime_ns)
        if resolution.kind is Kind.DIR:
            return Attr(inode, stat.S_IFDIR | 0o755, 4096, mtime, 2)
        size = self.overlay.size(path, self.base_size)
        exe = self.overlay.executable(path, self.base_executable)
        return Attr(inode, stat.S_IFREG | (0o755 if exe else 0o644), size, mtime)

    def _mode(self, path: bytes, mode: int) -> int:
        """Base entries show write permission where a write would be accepted."""
        if stat.S_ISLNK(mode):
            return mode
        if stat.S_ISDIR(mode):
            return mode | 0o200 if self._accepts_children(path) else mode
        try:
            self.check_writable(path)
        except FsError:
            return mode
        return mode | 0o200

    def _accepts_children(self, path: bytes) -> bool:
        """Folders where new entries may be made: Git folders and non-pipeline outputs."""
        parts = split(path)
        if parts and parts[0] in (b".dvc", b".git"):
            return False
        root = self.output_root(path) if parts else None
        entry = self.base.tree.metafiles.get(root) if root is not None else None
        return not (entry is not None and entry[1])

    async def getattr(self, inode: int) -> Attr:
        path = self.ids.path(inode)
        await self._prepare(path)
        return self._stat(path)

    async def lookup(self, parent_inode: int, name: bytes) -> Attr:
        path = join(self.ids.path(parent_inode), name)
        await self._prepare(path)
        return self._stat(path)

    def parent_inode(self, inode: int) -> int:
        path = self.ids.path(inode)
        return self.ids.of(path.rpartition(b"/")[0]) if path else ROOT_INODE

    async def opendir(self, inode: int) -> int:
        path = self.ids.path(inode)
        await self._prepare(path)
        if not self.overlay.is_dir(path, self.base_stat):
            raise FsError(errno.ENOTDIR)
        return inode

    async def readdir(self, inode: int, start: int) -> Iterator[tuple[bytes, Attr, int]]:
        path = self.ids.path(inode)
        await self._prepare(path)
        names = self.overlay.listdir(path, self.base_listing)
        return self._entries(path, names, start)

    def _entries(
        self, path: bytes, names: list[bytes], start: int
    ) -> Iterator[tuple[bytes, Attr, int]]:
        """Lazily, as the kernel's buffer takes them (see `FileSystem.readdir`)."""
        for i in range(start, len(names)):
            child = join(path, names[i])
            try:
                yield names[i], self._stat(child), i + 1
            except FsError as exc:
                log.warning("readdir: %r: %s", child, exc.message)

    async def readlink(self, inode: int) -> bytes:
        path = self.ids.path(inode)
        node = self._base(path)
        if node is None or self.overlay.resolve(path).kind is not Kind.BASE:
            raise FsError(errno.EINVAL)
        return await self.base.readlink(node.inode)

    def statfs(self) -> os.statvfs_result:
        return self.base.statfs()

    # -- files -------------------------------------------------------------------------------

    async def open(self, inode: int, flags: int) -> int:
        path = self.ids.path(inode)
        write = flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND) != 0
        await self._prepare(path)
        if write:
            self.check_writable(path)
            await self._unfrozen()
            if flags & os.O_TRUNC:
                self.journal.append(Truncate(path, 0))
        handle = Handle(inode)
        resolution = self.overlay.resolve(path)
        if resolution.kind is Kind.BASE:
            node = self._base(resolution.base_path or b"")
            if node is not None and node.obj is not None:
                if write:
                    await self.base.prefetch(node)  # later partial overwrites merge with it
                handle.view = self.base.map_cached(node.obj)
        return self._new_handle(handle)

    def _new_handle(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise FsError(errno.EBADF) from None

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        handle = self._handle(fh)
        path = self.ids.path(handle.inode)
        resolution = self.overlay.resolve(path)
        if resolution.kind is Kind.BASE:
            if handle.view is not None:
                return handle.view[offset : offset + size]
            node = self._base(resolution.base_path or b"")
            if node is None:
                raise FsError(errno.ENOENT)
            handle.view = await self.base.load(node)
            return handle.view[offset : offset + size]
        if resolution.base_path is not None:
            node = self._base(resolution.base_path)
            if node is not None:
                await self.base.prefetch(node)
        return self.overlay.read(path, offset, size, self.base_reader)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        await self._unfrozen()
        path = self.ids.path(handle.inode)
        self.journal.write(path, offset, data)
        handle.dirty = True
        self._touch(path)
        return len(data)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        if handle.view is not None:
            self.base.unmap(handle.view)
        if handle.dirty:
            self._schedule_sync()

    async def fsync(self, fh: int) -> None:
        await trio.to_thread.run_sync(self.journal.sync)

    def _touch(self, path: bytes) -> None:
        self._mtimes[path] = time.time_ns()

    # -- namespace ---------------------------------------------------------------------------

    async def create(self, parent_inode: int, name: bytes, mode: int) -> tuple[int, Attr]:
        path = join(self.ids.path(parent_inode), name)
        await self._mutable(path)
        if self.overlay.exists(path, self.base_stat):
            raise FsError(errno.EEXIST)
        self._require_dir(path.rpartition(b"/")[0])
        self.journal.append(Create(path, 0o755 if mode & 0o100 else 0o644))
        self._touch(path)
        fh = self._new_handle(Handle(self.ids.of(path), dirty=True))
        return fh, self._stat(path)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int) -> Attr:
        path = join(self.ids.path(parent_inode), name)
        await self._mutable(path)
        if self.overlay.exists(path, self.base_stat):
            raise FsError(errno.EEXIST)
        self._require_dir(path.rpartition(b"/")[0])
        self.journal.append(Mkdir(path))
        self._touch(path)
        self._schedule_sync()
        return self._stat(path)

    def _require_dir(self, path: bytes) -> None:
        if not self.overlay.is_dir(path, self.base_stat):
            raise FsError(errno.ENOTDIR)

    async def unlink(self, parent_inode: int, name: bytes) -> None:
        path = join(self.ids.path(parent_inode), name)
        await self._mutable(path)
        if not self.overlay.exists(path, self.base_stat):
            raise FsError(errno.ENOENT)
        if self.overlay.is_dir(path, self.base_stat):
            raise FsError(errno.EISDIR)
        self.journal.append(UnlinkRecord(path))
        self.ids.drop(path)
        self._schedule_sync()

    async def rmdir(self, parent_inode: int, name: bytes) -> None:
        path = join(self.ids.path(parent_inode), name)
        await self._mutable(path)
        if not self.overlay.exists(path, self.base_stat):
            raise FsError(errno.ENOENT)
        if not self.overlay.is_dir(path, self.base_stat):
            raise FsError(errno.ENOTDIR)
        await self._prepare_tree(path)
        if self.overlay.listdir(path, self.base_listing):
            raise FsError(errno.ENOTEMPTY)
        self.journal.append(Rmdir(path))
        self.ids.drop(path)
        self._schedule_sync()

    async def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> None:
        old = join(self.ids.path(old_parent), old_name)
        new = join(self.ids.path(new_parent), new_name)
        await self._mutable(old)
        await self._mutable(new)
        if flags & ~1:  # RENAME_EXCHANGE (2) and anything else: not representable
            raise FsError(errno.EINVAL)
        if not self.overlay.exists(old, self.base_stat):
            raise FsError(errno.ENOENT)
        if old == new:
            return
        if new.startswith(old + b"/"):
            raise FsError(errno.EINVAL)
        self._check_replace(old, new, noreplace=bool(flags & 1))
        await self._prepare_tree(old)
        self.journal.append(Rename(old, new))
        self.ids.move(old, new)
        self._mtimes.pop(new, None)
        self._schedule_sync()

    def _check_replace(self, old: bytes, new: bytes, noreplace: bool) -> None:
        if not self.overlay.exists(new, self.base_stat):
            self._require_dir(new.rpartition(b"/")[0])
            return
        if noreplace:
            raise FsError(errno.EEXIST)
        src_dir = self.overlay.is_dir(old, self.base_stat)
        dst_dir = self.overlay.is_dir(new, self.base_stat)
        if src_dir and not dst_dir:
            raise FsError(errno.ENOTDIR)
        if dst_dir and not src_dir:
            raise FsError(errno.EISDIR)
        if dst_dir and self.overlay.listdir(new, self.base_listing):
            raise FsError(errno.ENOTEMPTY)

    async def _prepare_tree(self, path: bytes) -> None:
        """Load every base entry below `path` (a renamed or removed folder's listing)."""
        await self._prepare(path)
        if self.overlay.is_dir(path, self.base_stat):
            for name in self.overlay.listdir(path, self.base_listing):
                await self._prepare_tree(join(path, name))

    async def setattr(self, inode: int, size: int | None, mode: int | None) -> Attr:
        path = self.ids.path(inode)
        await self._prepare(path)
        if size is not None:
            await self._mutable(path)
            if self.overlay.is_dir(path, self.base_stat):
                raise FsError(errno.EISDIR)
            node = self._base(path)
            if node is not None and node.obj is not None:
                await self.base.prefetch(node)
            self.journal.append(Truncate(path, size))
            self._touch(path)
            self._schedule_sync()
        if mode is not None and not self.overlay.is_dir(path, self.base_stat):
            exe = bool(mode & 0o100)
            if exe != self.overlay.executable(path, self.base_executable):
                await self._mutable(path)
                self.journal.append(Chmod(path, exe))
                self._schedule_sync()
        return self._stat(path)

    async def _mutable(self, path: bytes) -> None:
        self.check_writable(path)
        await self._prepare(path)
        await self._unfrozen()

    # -- durability and the commit gate ------------------------------------------------------

    def _schedule_sync(self) -> None:
        if not self._sync_pending:
            self._sync_pending = True
            self._nursery.start_soon(self._sync_soon)

    async def _sync_soon(self) -> None:
        await trio.sleep(SYNC_DELAY)  # closers within the window share one fsync
        self._sync_pending = False
        try:
            await trio.to_thread.run_sync(self.journal.sync)
        except FsError as exc:
            log.error("journal sync failed: %s", exc.message)

    async def _unfrozen(self) -> None:
        while self._frozen is not None:
            await self._frozen.wait()

    def freeze(self) -> trio.Event:
        """Hold mutations (status and commit read a stable view); set the event to release."""
        if self._frozen is not None:
            raise FsError(errno.EBUSY, "a commit is already running")
        self._frozen = trio.Event()
        return self._frozen

    def thaw(self) -> None:
        event, self._frozen = self._frozen, None
        if event is not None:
            event.set()
