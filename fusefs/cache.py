"""A content-addressed object cache in DVC's own layout.

Invariants:
- a file at `root/<relpath>` holds exactly the bytes its name hashes to: objects are downloaded
  to a temp file under `root/.fusefs/tmp`, hashed while they stream, fsync'd, and renamed into
  place only when the hash matches (a mismatch raises IntegrityError and the bytes are dropped);
- one download per object across threads and processes: an exclusive `flock` on a per-object
  lock file is held while fetching, and the object is checked for again once it is held;
- objects are made read-only (0444) as DVC does, so the root may be a user's `.dvc/cache` and
  everything fetched here serves `dvc checkout` too.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import IntegrityError, RemoteError
from .objects import HashInfo, Md5Check
from .remote import CHUNK, Remote
from .sizes import SizeStore

log = logging.getLogger(__name__)


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_str = str(root)
        self.on_install: Callable[[int], None] | None = None  # e.g. the evictor's note_added
        self.private = root / ".fusefs"
        for sub in ("tmp", "locks"):
            (self.private / sub).mkdir(parents=True, exist_ok=True)
        self.sizes = SizeStore(self.private / "sizes.lmdb")

    def path(self, hinfo: HashInfo) -> Path:
        return self.root / hinfo.relpath

    def path_str(self, hinfo: HashInfo) -> str:
        """`path` as a string: cheaper on the per-open hot path."""
        return f"{self._root_str}/{hinfo.relpath}"

    def size(self, hinfo: HashInfo) -> int | None:
        """Size of a cached object, None when it is not cached."""
        try:
            return os.stat(self.path(hinfo)).st_size
        except FileNotFoundError:
            return None

    def exists(self, hinfo: HashInfo) -> bool:
        return self.size(hinfo) is not None

    def fetch(self, hinfo: HashInfo, remote: Remote | None) -> Path:
        """Ensure an object is cached (downloading and verifying it), and return its path."""
        dest = self.path(hinfo)
        if dest.exists():
            return dest
        if remote is None:
            raise RemoteError(f"object {hinfo} is not cached and no remote is configured")
        with self._locked(hinfo):
            if dest.exists():  # another process fetched it while we waited
                return dest
            self._download(hinfo, remote, dest)
        return dest

    @contextmanager
    def _locked(self, hinfo: HashInfo) -> Iterator[None]:
        fd = self.lock_object(hinfo)
        try:
            yield
        finally:
            os.close(fd)

    def lock_object(self, hinfo: HashInfo) -> int:
        """Take the object's download lock (blocking); closing the returned fd releases it."""
        lock_path = self.private / "locks" / f"{hinfo.oid}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _download(self, hinfo: HashInfo, remote: Remote, dest: Path) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.private / "tmp", prefix=hinfo.oid + ".")
        try:
            check = Md5Check(hinfo)
            with os.fdopen(fd, "wb") as out, remote.open(hinfo) as src:
                while chunk := src.read(CHUNK):
                    check.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if not check.ok():
                raise IntegrityError(
                    f"object {hinfo} from remote {remote} hashes to {check.hexdigest()}; dropped"
                )
            self.install(Path(tmp), dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def install(self, tmp: Path, dest: Path, durable: bool = True) -> None:
        """Move a verified temp file into place, read-only.

        durable=True: the rename is fsync'd (its data must already be). durable=False leaves
        that to one `sync_batch` over many installs (a commit of thousands of objects).
        """
        size = os.stat(tmp).st_size
        os.chmod(tmp, 0o444)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        if durable:
            _fsync_dir(dest.parent)
        if self.on_install is not None:
            self.on_install(size)

    def sync_batch(self, dirs: Iterable[Path]) -> None:
        """Make non-durable installs durable: one syncfs of the cache's filesystem for the
        data, then one fsync per object folder for the renames."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _LIBC.syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)
        for folder in set(dirs):
            _fsync_dir(folder)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
