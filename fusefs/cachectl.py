"""Size control of an object cache: scanning, least-recently-used eviction and `cache gc`.

What is an object: a regular file named like DVC's layout, `files/md5/ab/<30 hex>[.dir]`
(DVC 3) or `ab/<30 hex>[.dir]` (DVC 2). Everything else under the cache root (DVC's `runs/`,
`.fusefs/`, stray files) is neither counted nor removed, except temp files under `.fusefs/tmp/`
untouched for a day (a download that died with its process).

Order of eviction: data objects by last use, oldest first (last use is the later of atime and
mtime: mounts bump atime at most hourly when they open an object, and a fresh download's mtime is
its arrival); `.dir` manifests only when no data object can go (they are small and every listing
of a directory output needs one).

Never evicted:
- pinned objects: a mount holds a shared `flock` on every object it has mapped, so an exclusive
  non-blocking `flock` fails on them (unlinking them would free nothing until unmapped anyway);
- objects with more than one hard link (a DVC workspace links them: unlinking frees nothing).

An evicted object is unlinked while the evictor holds the exclusive `flock` on it. A process that
opened it before keeps reading the unlinked inode; one that opens it after gets ENOENT and
fetches it again. So any number of evictors and mounts may share one cache directory.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

STALE_TMP = 24 * 3600.0  # a temp file untouched this long belongs to a dead download
LOW_WATER = 0.95  # an eviction round trims to this fraction of the limit (fewer rounds)

_HEX2 = re.compile(r"[0-9a-f]{2}")
_REST = re.compile(r"[0-9a-f]{30}(\.dir)?")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


def parse_size(text: str) -> int:
    """`50G`, `500M`, `1.5T`, `10GiB`, `4096` (bytes). Units are binary: 1K = 1024."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid size {text!r} (examples: 4096, 500M, 50G, 1T)")
    number, unit, _ = match.groups()
    return int(float(number) * 1024 ** _UNITS[unit.lower()])


def format_size(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass(slots=True)
class _Entry:
    size: int
    used: float  # max(atime, mtime)
    is_dir: bool


@dataclass(slots=True)
class _Dir:
    mtime_ns: int
    stable: bool  # listed after its mtime settled: an unchanged mtime means unchanged names
    entries: dict[str, _Entry] = field(default_factory=dict)


@dataclass(frozen=True)
class CacheStats:
    root: str
    objects: int
    bytes: int
    manifests: int  # .dir objects among `objects`
    pinned: int
    pinned_bytes: int
    oldest_use: float | None  # epoch seconds
    newest_use: float | None
    stale_tmp: int  # temp files older than a day (removed by gc)


@dataclass(frozen=True)
class EvictionReport:
    evicted: int = 0
    freed: int = 0
    pinned: int = 0  # candidates skipped because a mount has them mapped
    linked: int = 0  # candidates skipped because they have other hard links
    total: int = 0  # bytes of objects after the round
    limit: int = 0

    @property
    def over(self) -> bool:
        return self.total > self.limit


@dataclass(frozen=True)
class GcReport:
    dry_run: bool
    before: int  # bytes of objects before
    after: int  # bytes of objects after (what would remain, for a dry run)
    removed: int  # objects removed (or that would be)
    freed: int
    pinned: int
    linked: int
    tmp_removed: int
    tmp_freed: int
    target: int | None


def object_dirs(root: Path) -> Iterator[Path]:
    """The two-hex-digit folders of both layouts that exist."""
    for base in (root / "files" / "md5", root):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(base):
                if _HEX2.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    yield Path(entry.path)


def _used(st: os.stat_result) -> float:
    return max(st.st_atime, st.st_mtime)


def _list_dir(path: Path, old: dict[str, _Entry]) -> dict[str, _Entry]:
    """Objects of one folder; entries already known keep their recorded stat."""
    entries: dict[str, _Entry] = {}
    try:
        it = os.scandir(path)
    except FileNotFoundError:
        return entries
    with it:
        for entry in it:
            if not _REST.fullmatch(entry.name):
                continue
            known = old.get(entry.name)
            if known is not None:
                entries[entry.name] = known
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.is_file(follow_symlinks=False):
                entries[entry.name] = _Entry(st.st_size, _used(st), entry.name.endswith(".dir"))
    return entries


class _Outcome(enum.Enum):
    EVICTED = enum.auto()
    PINNED = enum.auto()
    LINKED = enum.auto()
    GONE = enum.auto()
    USED = enum.auto()


def _evict_one(path: Path, entry: _Entry, dry_run: bool = False) -> tuple[_Outcome, int]:
    """Unlink one object unless pinned, linked or used since it was scanned.

    Returns (outcome, bytes freed). The exclusive flock is held across the unlink, so a mount
    that opened the object meanwhile blocks on its shared flock until the name is gone and then
    pins an inode that stays readable for it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, OSError):
        return _Outcome.GONE, 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _Outcome.PINNED, 0
            raise
        st = os.fstat(fd)
        if st.st_nlink > 1:
            return _Outcome.LINKED, 0
        if _used(st) > entry.used + 1.0:
            entry.used = _used(st)
            return _Outcome.USED, 0
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return _Outcome.GONE, 0
        if (current.st_dev, current.st_ino) != (st.st_dev, st.st_ino):
            return _Outcome.USED, 0  # replaced by a fresh copy meanwhile
        if not dry_run:
            try:
                os.unlink(path)
            except FileNotFoundError:
                return _Outcome.GONE, 0
        return _Outcome.EVICTED, st.st_size
    finally:
        os.close(fd)


class _Index:
    """What objects a cache holds, refreshed incrementally by folder mtimes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: dict[Path, _Dir] = {}
        self.total = 0

    def refresh(self) -> None:
        seen: dict[Path, _Dir] = {}
        now_ns = time.time_ns()
        for path in object_dirs(self.root):
            try:
                mtime_ns = os.stat(path).st_mtime_ns
            except FileNotFoundError:
                continue
            old = self.dirs.get(path)
            if old is not None and old.stable and old.mtime_ns == mtime_ns:
                seen[path] = old
                continue
            # A name added within the filesystem's timestamp granularity of our listing may not
            # change the mtime again: list such a folder again next time.
            stable = now_ns - mtime_ns > 2_000_000_000
            entries = _list_dir(path, old.entries if old is not None else {})
            seen[path] = _Dir(mtime_ns, stable, entries)
        self.dirs = seen
        self.total = sum(e.size for d in seen.values() for e in d.entries.values())

    def candidates(self) -> list[tuple[Path, str, _Entry]]:
        """Every object, least recently used first, manifests after all data objects."""
        found = [(p, name, e) for p, d in self.dirs.items() for name, e in d.entries.items()]
        found.sort(key=lambda c: (c[2].is_dir, c[2].used))
        return found

    def trim(self, target: int, dry_run: bool = False) -> tuple[int, int, int, int]:
        """Evict down to `target` bytes; returns (evicted, freed, pinned, linked)."""
        evicted = freed = pinned = linked = 0
        if self.total <= target:
            return 0, 0, 0, 0
        for folder, name, entry in self.candidates():
            if self.total <= target:
                break
            outcome, size = _evict_one(folder / name, entry, dry_run)
            if outcome == _Outcome.PINNED:
                pinned += 1
            elif outcome == _Outcome.LINKED:
                linked += 1
            elif outcome in (_Outcome.EVICTED, _Outcome.GONE):
                if outcome == _Outcome.EVICTED:
                    evicted += 1
                    freed += size
                self.total -= entry.size
                if not dry_run:
                    self.dirs[folder].entries.pop(name, None)
        return evicted, freed, pinned, linked


class Evictor:
    """Keeps one cache directory under `limit` bytes of objects; see the module docstring.

    `maybe_evict` refreshes its index incrementally (a stat per object folder; only folders
    whose mtime changed are listed again, and only new names are stat'ed), so it sees objects
    added or removed by any process, and evicts when the objects exceed the limit, down to
    `LOW_WATER` of it. The first call scans the whole cache. Thread-safe; one round runs at a
    time. `note_added` is a cheap hint after a fetch: it wakes whoever waits on `on_added`.
    """

    def __init__(self, root: Path, limit: int, low_water: float = LOW_WATER) -> None:
        if limit < 0:
            raise ValueError("cache size limit must not be negative")
        self.root = root
        self.limit = limit
        self.low_water = low_water
        self.on_added: Callable[[], None] | None = None
        self._index = _Index(root)
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending = 0
        self._last_tmp_sweep = 0.0

    @property
    def total(self) -> int:
        """Bytes of objects as of the last round, plus what was noted added since."""
        return self._index.total + self._pending

    def note_added(self, size: int) -> None:
        with self._pending_lock:
            self._pending += size
        callback = self.on_added
        if callback is not None:
            callback()

    def maybe_evict(self) -> EvictionReport:
        with self._lock:
            with self._pending_lock:
                self._pending = 0
            self._index.refresh()
            now = time.time()
            if now - self._last_tmp_sweep > 3600:
                self._last_tmp_sweep = now
                sweep_tmp(self.root)
            index = self._index
            if index.total <= self.limit:
                return EvictionReport(total=index.total, limit=self.limit)
            with evict_lock(self.root):
                index.refresh()  # another evictor may have trimmed while we waited
                evicted, freed, pinned, linked = index.trim(int(self.limit * self.low_water))
            return EvictionReport(evicted, freed, pinned, linked, index.total, self.limit)


@contextlib.contextmanager
def evict_lock(root: Path) -> Iterator[None]:
    """One eviction round at a time per cache, across processes.

    Without it, two evictors walking the same LRU order would each see the other's flock on
    the object being unlinked as a pin, skip it, and together evict more than needed.
    """
    locks = root / ".fusefs" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / "evict.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sweep_tmp(root: Path, dry_run: bool = False, max_age: float = STALE_TMP) -> tuple[int, int]:
    """Remove temp files under `.fusefs/tmp` untouched for `max_age`; returns (count, bytes)."""
    count = freed = 0
    cutoff = time.time() - max_age
    try:
        it = os.scandir(root / ".fusefs" / "tmp")
    except FileNotFoundError:
        return 0, 0
    with it:
        for entry in it:
            try:
                st = entry.stat(follow_symlinks=False)
                if not entry.is_file(follow_symlinks=False) or st.st_mtime >= cutoff:
                    continue
                if not dry_run:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue
            count += 1
            freed += st.st_size
    return count, freed


def is_pinned(path: Path) -> bool:
    """Whether a mount has the object mapped (holds a shared flock on it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)  # releases the lock
    return False


def scan(root: Path) -> CacheStats:
    """Count a cache's objects, bytes, pinned objects and the range of last uses."""
    index = _Index(root)
    index.refresh()
    objects = manifests = pinned = pinned_bytes = 0
    oldest: float | None = None
    newest: float | None = None
    for folder, name, entry in index.candidates():
        objects += 1
        manifests += entry.is_dir
        oldest = entry.used if oldest is None else min(oldest, entry.used)
        newest = entry.used if newest is None else max(newest, entry.used)
        if entry.size > 0 and is_pinned(folder / name):
            pinned += 1
            pinned_bytes += entry.size
    stale, _ = sweep_tmp(root, dry_run=True)
    return CacheStats(
        str(root),
        objects,
        index.total,
        manifests,
        pinned,
        pinned_bytes,
        oldest,
        newest,
        stale,
    )


def gc(root: Path, target: int | None, dry_run: bool = False) -> GcReport:
    """Remove stale temp files and, with a `target`, evict objects down to `target` bytes.

    Eviction follows the same order and rules as `Evictor` (LRU data objects, then manifests;
    pinned and hard-linked objects stay), but trims exactly to `target`. A dry run removes
    nothing and reports what would go.
    """
    tmp_removed, tmp_freed = sweep_tmp(root, dry_run)
    index = _Index(root)
    index.refresh()
    before = index.total
    removed = freed = pinned = linked = 0
    if target is not None and before > target:
        with evict_lock(root):
            index.refresh()
            removed, freed, pinned, linked = index.trim(target, dry_run)
    return GcReport(
        dry_run,
        before,
        index.total,
        removed,
        freed,
        pinned,
        linked,
        tmp_removed,
        tmp_freed,
        target,
    )
