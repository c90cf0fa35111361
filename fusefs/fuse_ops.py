"""pyfuse3 binding: translates types and errors, decides nothing.

The one error contract: pyfuse3 ends the whole filesystem when a handler raises anything but
`FUSEError`, so every handler goes through `_guard`, which turns `FsError` into its errno and
anything else into a logged EIO.
"""

from __future__ import annotations

import errno
import functools
import logging
import stat
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from .errors import FsError
from .filesystem import Attr, FileSystem
from .writable import WritableFileSystem

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# A revision never changes: let the kernel keep entries and attributes (nearly) forever.
FOREVER = 365 * 24 * 3600.0


def _guard(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s%r", fn.__name__, args[1:])
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            if exc.errno not in (errno.ENOENT, errno.EROFS):
                log.debug("%s: %s", fn.__name__, exc.message)
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            log.exception("unexpected error in %s; answering EIO", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: FileSystem | WritableFileSystem, timeout: float = FOREVER) -> None:
        super().__init__()
        self.fs = fs
        self.uid = fs.settings.uid
        self.gid = fs.settings.gid
        self.timeout = timeout

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attr.inode
        entry.generation = 0
        entry.entry_timeout = self.timeout
        entry.attr_timeout = self.timeout
        entry.st_mode = attr.mode
        entry.st_nlink = attr.nlink
        entry.st_uid = self.uid
        entry.st_gid = self.gid
        entry.st_rdev = 0
        entry.st_size = attr.size
        entry.st_blksize = 1 << 20
        entry.st_blocks = (attr.size + 511) // 512
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = attr.mtime_ns
        return entry

    @_guard
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        if name == b".":
            return self._entry(await self.fs.getattr(parent_inode))
        if name == b"..":
            return self._entry(await self.fs.getattr(self.fs.parent_inode(parent_inode)))
        return self._entry(await self.fs.lookup(parent_inode, name))

    @_guard
    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self._entry(await self.fs.getattr(inode))

    @_guard
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return await self.fs.readlink(inode)

    @_guard
    async def opendir(self, inode: int, ctx: Any) -> int:
        return await self.fs.opendir(inode)

    @_guard
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        for name, attr, next_id in await self.fs.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, name, self._entry(attr), next_id):
                break

    @_guard
    async def releasedir(self, fh: int) -> None:
        return None

    @_guard
    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        fh = await self.fs.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @_guard
    async def read(self, fh: int, off: int, size: int) -> Any:
        return await self.fs.read(fh, off, size)

    @_guard
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @_guard
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh)

    @_guard
    async def release(self, fh: int) -> None:
        await self.fs.release(fh)

    @_guard
    async def statfs(self, ctx: Any) -> Any:
        st = self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = st.f_bsize
        out.f_frsize = st.f_frsize
        out.f_blocks = st.f_blocks
        out.f_bfree = st.f_bfree
        out.f_bavail = st.f_bavail
        out.f_files = st.f_files
        out.f_ffree = st.f_ffree
        out.f_favail = st.f_favail
        out.f_namemax = 255
        return out

    async def forget(self, inode_list: Any) -> None:
        return None  # inode numbers stay valid for the life of the mount

    @_guard
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
        if fields.update_uid or fields.update_gid:
            raise FsError(errno.EPERM, "DVC does not record file owners")
        size = attr.st_size if fields.update_size else None
        mode = attr.st_mode if fields.update_mode else None
        return self._entry(await self.fs.setattr(inode, size, mode))

    @_guard
    async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        if not stat.S_ISREG(mode):
            raise FsError(errno.EPERM, "only regular files can be created")
        fh, attr = await self.fs.create(parent, name, mode)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), self._entry(attr)

    @_guard
    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> Any:
        return self._entry(await self.fs.mkdir(parent, name, mode))

    @_guard
    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        if not stat.S_ISREG(mode):
            raise FsError(errno.EPERM, "DVC cannot record device files, sockets or FIFOs")
        fh, attr = await self.fs.create(parent, name, mode)
        await self.fs.release(fh)
        return self._entry(attr)

    @_guard
    async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
        await self.fs.unlink(parent, name)

    @_guard
    async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
        await self.fs.rmdir(parent, name)

    @_guard
    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Any) -> Any:
        raise FsError(errno.EPERM, "DVC cannot record symlinks inside outputs")

    @_guard
    async def link(self, inode: int, new_parent: int, new_name: bytes, ctx: Any) -> Any:
        raise FsError(errno.EPERM, "DVC cannot record hard links")

    @_guard
    async def rename(
        self, p_old: int, n_old: bytes, p_new: int, n_new: bytes, flags: int, ctx: Any
    ) -> None:
        await self.fs.rename(p_old, n_old, p_new, n_new, flags)

    # No xattr handlers: pyfuse3 answers ENOSYS, after which the kernel stops asking (it would
    # otherwise query security.capability before every write).
