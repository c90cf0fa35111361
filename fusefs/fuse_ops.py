"""pyfuse3 binding: translates types and errors, decides nothing.

The one error contract: pyfuse3 ends the whole filesystem when a handler raises anything but
`FUSEError`, so every handler goes through `_guard`, which turns `FsError` into its errno and
anything else into a logged EIO.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from .errors import FsError
from .filesystem import Attr, FileSystem

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# A revision never changes: let the kernel keep entries and attributes (nearly) forever.
FOREVER = 365 * 24 * 3600.0


def _guard(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
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

    def __init__(self, fs: FileSystem) -> None:
        super().__init__()
        self.fs = fs
        self.uid = fs.settings.uid
        self.gid = fs.settings.gid

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = attr.inode
        entry.generation = 0
        entry.entry_timeout = FOREVER
        entry.attr_timeout = FOREVER
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
            parent = self.fs.tree.node(parent_inode).parent or parent_inode
            return self._entry(await self.fs.getattr(parent))
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
        write = flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND) != 0
        fh = await self.fs.open(inode, write)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @_guard
    async def read(self, fh: int, off: int, size: int) -> Any:
        return await self.fs.read(fh, off, size)

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
        out.f_bfree = out.f_bavail = 0
        out.f_files = len(self.fs.tree.nodes)
        out.f_ffree = out.f_favail = 0
        out.f_namemax = 255
        return out

    @_guard
    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        if mode & os.W_OK:
            raise FsError(errno.EROFS)
        return True

    async def forget(self, inode_list: Any) -> None:
        return None  # nodes of an immutable revision live as long as the mount

    @_guard
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
        raise FsError(errno.EROFS)

    @_guard
    async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        raise FsError(errno.EROFS)

    @_guard
    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> Any:
        raise FsError(errno.EROFS)

    @_guard
    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        raise FsError(errno.EROFS)

    @_guard
    async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
        raise FsError(errno.EROFS)

    @_guard
    async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
        raise FsError(errno.EROFS)

    @_guard
    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Any) -> Any:
        raise FsError(errno.EROFS)

    @_guard
    async def link(self, inode: int, new_parent: int, new_name: bytes, ctx: Any) -> Any:
        raise FsError(errno.EROFS)

    @_guard
    async def rename(
        self, p_old: int, n_old: bytes, p_new: int, n_new: bytes, flags: int, ctx: Any
    ) -> None:
        raise FsError(errno.EROFS)

    @_guard
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        raise FsError(errno.EROFS)

    @_guard
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        raise FsError(errno.EROFS)
