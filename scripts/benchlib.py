"""Helpers shared by the fusefs benchmark scripts (bench_read.py, bench_write.py,
bench_remote.py).

Provides:

- size constants (``KiB``, ``MiB``, ``GiB``) and ``CHUNK``, the 1 MiB size of a read or write;
- results: ``Row`` (one baseline/fusefs comparison), ``say``, ``note`` (collected in
  ``NOTES``), ``median``, ``samples`` and ``print_table``, the final ratio table;
- mounting: ``fusefs_cmd``, ``mounted`` (mount, time it, always unmount), ``unmount``,
  ``unmount_all``, ``is_mounted`` and ``mount_device`` (both from /proc/self/mountinfo);
- the mount daemon and the data: ``bench_env``, ``daemon_pid``, ``out_md5``, ``cache_path``;
- timing and reading: ``timed``, ``timed_total``, ``drop_cache``, ``read_sequential``,
  ``read_many``;
- the run: ``fresh_dir``, ``run_section``, ``remove_scratch``.

The scripts run as ``python scripts/bench_X.py`` from the repository root, so this folder is on
``sys.path`` and they import this module as ``benchlib``; it puts the repository root on
``sys.path`` itself for ``tests.dvcrepo``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.dvcrepo import isolated_env, run  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
CHUNK = MiB


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Row:
    """One comparison: a baseline and a fusefs figure of the same kind."""

    name: str
    baseline_name: str
    baseline: float
    fusefs: float
    unit: str
    higher_is_better: bool  # throughput (True) or time (False)

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.fusefs / self.baseline if self.baseline else float("nan")
        return self.baseline / self.fusefs if self.fusefs else float("nan")

    @property
    def ratio_kind(self) -> str:
        return "fusefs/base thrpt" if self.higher_is_better else "base/fusefs time"


NOTES: list[str] = []


def say(msg: str) -> None:
    print(msg, flush=True)


def note(msg: str) -> None:
    NOTES.append(msg)
    say(f"  note: {msg}")


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def samples(values: Sequence[float], digits: int) -> str:
    return " ".join(f"{v:.{digits}f}" for v in values)


def fmt(value: float, unit: str) -> str:
    return f"{value:,.3f} {unit}" if value < 10 else f"{value:,.1f} {unit}"


def print_table(rows: Sequence[Row]) -> None:
    say("")
    say("ratio = fusefs speed / baseline speed: fusefs throughput / baseline throughput, or")
    say("baseline time / fusefs time. ratio > 1: fusefs faster; ratio < 1: fusefs slower.")
    headers = ("measurement", "baseline", "baseline value", "fusefs value", "ratio", "ratio is")
    table = [
        (
            r.name,
            r.baseline_name,
            fmt(r.baseline, r.unit),
            fmt(r.fusefs, r.unit),
            f"{r.ratio:.3f}",
            r.ratio_kind,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    say(line)
    say("-" * len(line))
    for t in table:
        say("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)))


# ---------------------------------------------------------------------------
# Mounting


def is_mounted(mountpoint: Path) -> bool:
    """From mountinfo: a stat() of a mount whose daemon is stuck would hang."""
    target = str(mountpoint).encode()
    with open("/proc/self/mountinfo", "rb") as info:
        return any(_unescape(line.split()[4]) == target for line in info)


def _unescape(field: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def mount_device(mountpoint: Path) -> str | None:
    target = str(mountpoint).encode()
    found = None
    with open("/proc/self/mountinfo", "rb") as info:
        for line in info:
            fields = line.split()
            if _unescape(fields[4]) == target:
                found = fields[2].decode()
    return found


def fusefs_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fusefs", *args]


@contextlib.contextmanager
def mounted(
    env: Mapping[str, str],
    repo: Path,
    rev: str,
    cache: Path,
    mountpoint: Path,
    cwd: Path,
    *,
    rw: bool = False,
) -> Iterator[float]:
    """Mount (writable with `rw`), yield the wall time `fusefs mount` took, always unmount."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        run(
            fusefs_cmd(
                "mount",
                "--repo",
                str(repo),
                "--rev",
                rev,
                *(["--rw"] if rw else []),
                "--cache-dir",
                str(cache),
                str(mountpoint),
            ),
            cwd,
            env,
        )
        yield time.perf_counter() - start
    finally:
        unmount(env, mountpoint)


def unmount(env: Mapping[str, str], mountpoint: Path) -> None:
    if not is_mounted(mountpoint):
        return
    proc = subprocess.run(
        fusefs_cmd("umount", str(mountpoint)),
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 and is_mounted(mountpoint):
        say(f"  fusefs umount failed ({proc.stderr.strip()}); lazy unmount")
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def unmount_all(env: Mapping[str, str], root: Path, pattern: str) -> None:
    """Unmount whatever is still mounted at the mountpoints `root.glob(pattern)` finds."""
    for mnt in root.glob(pattern):
        unmount(env, mnt)


# ---------------------------------------------------------------------------
# The daemon and the data


def bench_env(base: Path) -> dict[str, str]:
    """An isolated git/dvc environment under `base` whose fusefs state lives there too."""
    env = isolated_env(base / "env")
    env["FUSEFS_STATE_DIR"] = str(base / "fusefs-state")
    return env


def daemon_pid(env: Mapping[str, str]) -> int | None:
    records = list((Path(env["FUSEFS_STATE_DIR"]) / "mounts").glob("*.json"))
    if len(records) != 1:
        return None
    pid: int = json.loads(records[0].read_text())["pid"]
    return pid


def out_md5(dvcfile: Path) -> str:
    for line in dvcfile.read_text().splitlines():
        key, _, value = line.strip().lstrip("- ").partition(": ")
        if key == "md5":
            return value.strip()
    raise ValueError(f"no md5 in {dvcfile}")


def cache_path(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


# ---------------------------------------------------------------------------
# Timing and reading


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def timed_total(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    total = fn()
    return time.perf_counter() - start, total


def drop_cache(fd: int) -> None:
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def read_sequential(path: Path, cold_also: Sequence[Path] = ()) -> tuple[float, int]:
    """Read a file front to back in 1 MiB readinto calls; optionally drop caches first."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        if cold_also:
            drop_cache(fd)
            for other in cold_also:
                ofd = os.open(other, os.O_RDONLY)
                try:
                    drop_cache(ofd)
                finally:
                    os.close(ofd)
        total = 0
        start = time.perf_counter()
        while n := f.readinto(view):
            total += n
        return time.perf_counter() - start, total


def read_many(paths: Sequence[Path], threads: int) -> tuple[float, int]:
    """open+read+close of every path, split over `threads` threads; (seconds, bytes)."""

    def worker(chunk: Sequence[Path]) -> int:
        total = 0
        for path in chunk:
            fd = os.open(path, os.O_RDONLY)
            try:
                while data := os.read(fd, 65536):
                    total += len(data)
            finally:
                os.close(fd)
        return total

    if threads == 1:
        return timed_total(lambda: worker(paths))
    step = -(-len(paths) // threads)
    chunks = [paths[i : i + step] for i in range(0, len(paths), step)]
    with ThreadPoolExecutor(threads) as pool:
        return timed_total(lambda: sum(pool.map(worker, chunks)))


# ---------------------------------------------------------------------------
# The run


def fresh_dir(root: Path) -> None:
    """Delete `root` if it exists, then create it empty."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


def run_section(number: int, section: Callable[..., object], *args: object) -> None:
    """Run one numbered section and say how long it took."""
    t0 = time.perf_counter()
    section(*args)
    say(f"  section {number} took {time.perf_counter() - t0:.0f} s")


def remove_scratch(root: Path, mounts: str, keep: bool) -> None:
    """Delete `root` unless `keep` or a mountpoint `root.glob(mounts)` finds is still mounted."""
    if not keep and not any(is_mounted(m) for m in root.glob(mounts)):
        shutil.rmtree(root, ignore_errors=True)
