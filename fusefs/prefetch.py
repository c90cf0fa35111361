"""`fusefs prefetch`: read files through a mount so the daemon fetches and verifies their
objects into the cache before a job needs them.

Reading through the mount (not talking to the daemon) keeps the daemon's rules in one place:
the same remote, the same verification, the same single download when a job reads at the same
time. Sizes come from `stat`, which downloads nothing.
"""

from __future__ import annotations

import os
import queue
import re
import stat
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .cachectl import format_size
from .errors import UserError

CHUNK = 1 << 20
FSTYPE = b"fuse.fusefs"
STOP_GRACE = 2.0  # seconds to let readers finish their current read after Ctrl-C


def _unescape(field_: bytes) -> bytes:
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field_)


def fusefs_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Path]:
    """Mountpoints of fusefs mounts (fstype fuse.fusefs)."""
    found = []
    with open(mountinfo, "rb") as info:
        for line in info:
            fields = line.split()
            try:
                sep = fields.index(b"-")
            except ValueError:
                continue
            if fields[sep + 1] == FSTYPE:
                found.append(Path(os.fsdecode(_unescape(fields[4]))))
    return found


def mount_of(path: Path, mounts: Iterable[Path]) -> Path | None:
    """The innermost fusefs mount holding `path` (an absolute, resolved path)."""
    best: Path | None = None
    for mnt in mounts:
        if (path == mnt or mnt in path.parents) and (
            best is None or len(mnt.parts) > len(best.parts)
        ):
            best = mnt
    return best


@dataclass
class Plan:
    files: list[tuple[Path, int]] = field(default_factory=list)
    bytes: int = 0


def plan(paths: Iterable[Path]) -> Plan:
    """Every regular file at or below `paths` (symlinks are not followed), with sizes.

    Raises UserError for a path that does not exist or is not inside a fusefs mount.
    """
    mounts = fusefs_mounts()
    result = Plan()
    seen: set[Path] = set()
    for arg in paths:
        path = Path(os.path.realpath(arg))
        if mount_of(path, mounts) is None:
            raise UserError(f"{arg} is not inside a fusefs mount")
        try:
            st = os.stat(path)
        except OSError as exc:
            raise UserError(f"{arg}: {exc.strerror}") from None
        if stat.S_ISREG(st.st_mode):
            _add(result, seen, path, st.st_size)
            continue
        for dirpath, _dirnames, filenames in os.walk(path):
            for name in sorted(filenames):
                file = Path(dirpath) / name
                try:
                    st = os.lstat(file)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    _add(result, seen, file, st.st_size)
    return result


def _add(result: Plan, seen: set[Path], path: Path, size: int) -> None:
    if path not in seen:
        seen.add(path)
        result.files.append((path, size))
        result.bytes += size


@dataclass
class Progress:
    total_files: int
    total_bytes: int
    files: int = 0
    bytes: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _reader(
    work: queue.SimpleQueue[tuple[Path, int] | None], p: Progress, stop: threading.Event
) -> None:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while not stop.is_set():
        item = work.get()
        if item is None:
            return
        path, _size = item
        try:
            with open(path, "rb", buffering=0) as f:
                while not stop.is_set():
                    n = f.readinto(view)
                    if not n:
                        break
                    with p.lock:
                        p.bytes += n
            if stop.is_set():
                return
            with p.lock:
                p.files += 1
        except OSError as exc:
            with p.lock:
                p.failed.append((path, exc.strerror or str(exc)))


class _Bar:
    def __init__(self, out: TextIO, progress: Progress, start: float) -> None:
        self.out = out
        self.p = progress
        self.start = start
        self.active = out.isatty()

    def show(self) -> None:
        if not self.active:
            return
        p = self.p
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = p.bytes / elapsed
        frac = min(p.bytes / max(p.total_bytes, 1), 1.0)
        eta = f"{(p.total_bytes - p.bytes) / rate:.0f}s" if rate > 0 else "?"
        self.out.write(
            f"\r[{'#' * int(frac * 30):<30}] {format_size(p.bytes)}/{format_size(p.total_bytes)} "
            f"{p.files + len(p.failed)}/{p.total_files} files {format_size(rate)}/s ETA {eta} "
        )
        self.out.flush()

    def done(self) -> None:
        if self.active:
            self.out.write("\n")
            self.out.flush()


def run(paths: list[Path], jobs: int, out: TextIO = sys.stderr) -> tuple[Progress, float, bool]:
    """Read every file under `paths` with `jobs` threads.

    Returns the progress, elapsed seconds, and whether it was interrupted (Ctrl-C). After an
    interrupt, readers stop at their next 1 MiB read; those blocked in a read (the daemon
    answers the first read of an object once it is fully fetched) are left behind after
    STOP_GRACE seconds, and whatever finished stays cached.
    """
    work_plan = plan(paths)
    progress = Progress(len(work_plan.files), work_plan.bytes)
    work: queue.SimpleQueue[tuple[Path, int] | None] = queue.SimpleQueue()
    for item in work_plan.files:
        work.put(item)
    jobs = max(1, min(jobs, len(work_plan.files) or 1))
    for _ in range(jobs):
        work.put(None)
    stop = threading.Event()
    start = time.monotonic()
    threads = [
        threading.Thread(target=_reader, args=(work, progress, stop), daemon=True)
        for _ in range(jobs)
    ]
    for t in threads:
        t.start()
    bar = _Bar(out, progress, start)
    interrupted = False
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                bar.show()
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        deadline = time.monotonic() + STOP_GRACE
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    bar.show()
    bar.done()
    return progress, time.monotonic() - start, interrupted


def summary(progress: Progress, elapsed: float) -> str:
    rate = progress.bytes / max(elapsed, 1e-6) / (1 << 20)
    return (
        f"prefetched {progress.files} files, {format_size(progress.bytes)} in {elapsed:.1f} s "
        f"({rate:.1f} MiB/s); {len(progress.failed)} failed"
    )
