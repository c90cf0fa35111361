#!/usr/bin/env python3
"""Read-path benchmark of a fusefs mount against baselines measured in the same run.

Sections (all with a warm object cache: the working tree's own ``.dvc/cache``, filled by
``dvc add``, is passed as ``--cache-dir``):

1. sequential read of one large cached object through the mount, cold (page cache of the
   mounted file and of the cache file dropped with ``posix_fadvise(DONTNEED)``) and warm,
   against reading the cache file directly (cold, then warm); 1 MiB ``readinto`` calls.
2. open+read+close of many small files of one DVC directory output through the mount against
   the same files in the working tree on local disk, with 1 and 8 threads.
3. ``fusefs mount`` + ``find`` with an lstat of every entry of a revision whose one directory
   output holds many tiny files, against ``dvc checkout`` of it into a fresh clone.

Every figure is printed as an absolute number and as a ratio against its baseline, where the
ratio is always a *speed* ratio: fusefs throughput / baseline throughput, or baseline time /
fusefs time. Ratio > 1 means fusefs was faster, < 1 slower.

Usage: ``python scripts/bench_read.py [--quick] [--only N] [--repeat K] [--keep]``.
Scratch data lives under /tmp/fusefs-bench and is deleted at the end (unless --keep).
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(REPO_ROOT))

from tests.dvcrepo import RepoBuilder, dvc_bin, isolated_env, run  # noqa: E402

BENCH_ROOT = Path("/tmp/fusefs-bench")
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


ROWS: list[Row] = []
NOTES: list[str] = []


def say(msg: str) -> None:
    print(msg, flush=True)


def note(msg: str) -> None:
    NOTES.append(msg)
    say(f"  note: {msg}")


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


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
    env: Mapping[str, str], repo: Path, rev: str, cache: Path, mountpoint: Path
) -> Iterator[float]:
    """Mount, yield the wall time `fusefs mount` took, and always unmount."""
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
                "--cache-dir",
                str(cache),
                str(mountpoint),
            ),
            BENCH_ROOT,
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


def check_bdi(mountpoint: Path) -> None:
    """Report what the daemon's read-ahead tuning did to this mount's bdi."""
    device = mount_device(mountpoint)
    if device is None:
        note(f"{mountpoint} not in mountinfo")
        return
    bdi_root = Path("/sys/class/bdi")
    names = sorted(p.name for p in bdi_root.iterdir()) if bdi_root.is_dir() else []
    matches = [n for n in names if n == device or n.startswith(device + "-")]
    expected = bdi_root / device / "read_ahead_kb"
    if matches:
        for name in matches:
            value = (bdi_root / name / "read_ahead_kb").read_text().strip()
            note(f"mount dev {device}: /sys/class/bdi/{name}/read_ahead_kb = {value}")
    else:
        note(
            f"mount dev {device}: no /sys/class/bdi/{device}* (daemon writes {expected}); "
            f"bdi entries: {' '.join(names)}"
        )
    conn = Path("/sys/fs/fuse/connections")
    minor = device.split(":")[1]
    if (conn / minor).is_dir():
        for knob in ("max_background", "congestion_threshold"):
            note(f"fuse connection {minor}: {knob} = {(conn / minor / knob).read_text().strip()}")
    else:
        note(f"no {conn / minor} (fusectl mounted: {any(conn.iterdir()) if conn.is_dir() else 0})")


# ---------------------------------------------------------------------------
# Helpers


def daemon_pid(env: Mapping[str, str]) -> int | None:
    records = list((Path(env["FUSEFS_STATE_DIR"]) / "mounts").glob("*.json"))
    if len(records) != 1:
        return None
    pid: int = json.loads(records[0].read_text())["pid"]
    return pid


def read_syscalls(pid: int | None) -> int:
    """The daemon's read() syscall count: one per FUSE request it receives (cached reads)."""
    if pid is None:
        return 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("syscr:"):
                return int(line.split()[1])
    return 0


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def drop_cache(fd: int) -> None:
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def resident(path: Path) -> str:
    """Resident page-cache bytes of a file per fincore(1), for the cold-read sanity check."""
    if shutil.which("fincore") is None:
        return "?"
    proc = subprocess.run(
        ["fincore", "-n", "-b", "-o", "RES", str(path)], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "?"


def out_md5(dvcfile: Path) -> str:
    for line in dvcfile.read_text().splitlines():
        key, _, value = line.strip().lstrip("- ").partition(": ")
        if key == "md5":
            return value.strip()
    raise ValueError(f"no md5 in {dvcfile}")


def cache_path(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def new_repo(name: str) -> tuple[RepoBuilder, dict[str, str]]:
    base = BENCH_ROOT / name
    env = isolated_env(base / "env")
    env["FUSEFS_STATE_DIR"] = str(base / "fusefs-state")
    repo = RepoBuilder(base / "repo", env)
    repo.init()
    return repo, env


# ---------------------------------------------------------------------------
# 1. Large sequential read


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


def section_large(size: int, repeat: int) -> None:
    say(f"\n[1] sequential read of a {size / MiB:.0f} MiB cached object")
    repo, env = new_repo("large")
    block = os.urandom(CHUNK)
    big = repo.path / "big.bin"
    with open(big, "wb") as out:
        for i in range(size // CHUNK):
            out.write(i.to_bytes(8, "little") + block[8:])
    build, _ = timed(lambda: repo.dvc_add("big.bin"))
    repo.commit("large object")
    cache = repo.path / ".dvc" / "cache"
    obj = cache_path(cache, out_md5(repo.path / "big.bin.dvc"))
    os.sync()
    say(f"  dvc add: {build:.1f} s; object {obj.relative_to(cache)}")

    def direct(cold: bool) -> float:
        elapsed, total = read_sequential(obj, [obj] if cold else [])
        assert total == size, (total, size)
        return size / MiB / elapsed

    direct_cold, direct_warm = [], []
    for _ in range(repeat):
        with open(obj, "rb") as f:
            drop_cache(f.fileno())
        say(f"  cache file resident after DONTNEED: {resident(obj)} B")
        direct_cold.append(direct(cold=True))
        direct_warm.append(direct(cold=False))
    say(f"  direct cold MiB/s: {' '.join(f'{v:.0f}' for v in direct_cold)}")
    say(f"  direct warm MiB/s: {' '.join(f'{v:.0f}' for v in direct_warm)}")

    mnt = BENCH_ROOT / "large" / "mnt"
    fuse_cold, fuse_warm = [], []
    with mounted(env, repo.path, "main", cache, mnt) as mount_time:
        say(f"  mounted in {mount_time:.2f} s")
        check_bdi(mnt)
        target = mnt / "big.bin"
        pid = daemon_pid(env)
        for _ in range(repeat):
            before = read_syscalls(pid)
            elapsed, total = read_sequential(target, [obj])
            assert total == size, (total, size)
            fuse_cold.append(size / MiB / elapsed)
            middle = read_syscalls(pid)
            elapsed, total = read_sequential(target)
            assert total == size, (total, size)
            fuse_warm.append(size / MiB / elapsed)
            after = read_syscalls(pid)
        say(
            f"  daemon read() syscalls (~FUSE requests) per pass: cold {middle - before}, "
            f"warm {after - middle}"
        )
        say(f"  fusefs cold MiB/s: {' '.join(f'{v:.0f}' for v in fuse_cold)}")
        say(f"  fusefs warm MiB/s: {' '.join(f'{v:.0f}' for v in fuse_warm)}")
        ra_cold = cold_with_read_ahead(mnt, target, obj, size, repeat, pid)
    label = f"seq read {size / MiB:.0f} MiB"
    ROWS.append(
        Row(
            f"{label}, cold",
            "cache file direct",
            median(direct_cold),
            median(fuse_cold),
            "MiB/s",
            True,
        )
    )
    ROWS.append(
        Row(
            f"{label}, warm",
            "cache file direct",
            median(direct_warm),
            median(fuse_warm),
            "MiB/s",
            True,
        )
    )
    if ra_cold:
        ROWS.append(
            Row(
                f"{label}, cold, read_ahead_kb=1024 set by bench",
                "cache file direct",
                median(direct_cold),
                median(ra_cold),
                "MiB/s",
                True,
            )
        )


def cold_with_read_ahead(
    mnt: Path, target: Path, obj: Path, size: int, repeat: int, pid: int | None
) -> list[float]:
    """Cold passes with the mount's read_ahead_kb forced to 1024 (what the daemon intends)."""
    device = mount_device(mnt)
    knob = Path("/sys/class/bdi") / str(device) / "read_ahead_kb"
    try:
        old = knob.read_text().strip()
        if old == "1024":
            return []
        knob.write_text("1024")
    except OSError as exc:
        note(f"cannot set {knob}: {exc}")
        return []
    rates = []
    before = read_syscalls(pid)
    for _ in range(repeat):
        elapsed, total = read_sequential(target, [obj])
        assert total == size, (total, size)
        rates.append(size / MiB / elapsed)
    requests = (read_syscalls(pid) - before) // repeat
    samples = " ".join(f"{v:.0f}" for v in rates)
    say(f"  fusefs cold MiB/s, read_ahead_kb 1024 (was {old}): {samples}")
    say(f"  daemon read() syscalls per cold pass at 1024: {requests}")
    return rates


# ---------------------------------------------------------------------------
# 2. Many small files


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


def timed_total(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    total = fn()
    return time.perf_counter() - start, total


def section_small(count: int, size: int, repeat: int) -> None:
    say(f"\n[2] open+read+close of {count:,} cached {size} B files (one directory output)")
    repo, env = new_repo("small")
    per_dir = 100
    rels = [f"d{i // per_dir:04d}/f{i:06d}.bin" for i in range(count)]
    for rel in rels:
        target = repo.path / "data" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(os.urandom(size))
    build, _ = timed(lambda: repo.dvc_add("data"))
    repo.commit("small files")
    cache = repo.path / ".dvc" / "cache"
    say(f"  dvc add: {build:.1f} s")
    expected = count * size

    def measure(root: Path, threads: int) -> list[float]:
        paths = [root / rel for rel in rels]
        rates = []
        for _ in range(repeat):
            elapsed, total = read_many(paths, threads)
            assert total == expected, (total, expected)
            rates.append(count / elapsed)
        return rates

    workspace = repo.path / "data"
    read_many([workspace / rel for rel in rels], 8)  # warm-up: dentries and pages
    base = {threads: measure(workspace, threads) for threads in (1, 8)}
    mnt = BENCH_ROOT / "small" / "mnt"
    with mounted(env, repo.path, "main", cache, mnt) as mount_time:
        say(f"  mounted in {mount_time:.2f} s")
        pid = daemon_pid(env)
        before = read_syscalls(pid)
        first, total = read_many([mnt / "data" / rel for rel in rels], 1)
        first_requests = (read_syscalls(pid) - before) / count
        assert total == expected, (total, expected)
        pid = daemon_pid(env)
        before = read_syscalls(pid)
        fuse = {threads: measure(mnt / "data", threads) for threads in (1, 8)}
        per_file = (read_syscalls(pid) - before) / (2 * repeat * count)
    say(f"  daemon read() syscalls (~FUSE requests) per warm open/read/close: {per_file:.2f}")
    for threads in (1, 8):
        say(
            f"  {threads} thread(s) checkout files/s: {' '.join(f'{v:.0f}' for v in base[threads])}"
        )
        say(
            f"  {threads} thread(s) fusefs   files/s: {' '.join(f'{v:.0f}' for v in fuse[threads])}"
        )
    say(
        f"  fusefs first pass on a fresh mount, 1 thread: {count / first:.0f} files/s, "
        f"{first_requests:.2f} daemon read() syscalls per file"
    )
    label = f"{count // 1000}k x {size // 1024} KiB open/read/close"
    ROWS.append(
        Row(
            f"{label}, 1 thr, fresh mount",
            "checkout, 1 thr",
            median(base[1]),
            count / first,
            "files/s",
            True,
        )
    )
    for threads in (1, 8):
        ROWS.append(
            Row(
                f"{label}, {threads} thr",
                f"checkout, {threads} thr",
                median(base[threads]),
                median(fuse[threads]),
                "files/s",
                True,
            )
        )


# ---------------------------------------------------------------------------
# 3. Mount + find + stat of a many-file revision vs dvc checkout


def find_stat(root: Path) -> int:
    """`find` printing type, size and mode (an lstat of every entry); returns entry count."""
    proc = subprocess.run(
        ["find", str(root), "-printf", "%y %s %m\n"], capture_output=True, check=True
    )
    return proc.stdout.count(b"\n")


def section_tree(count: int, repeat: int) -> None:
    say(f"\n[3] mount + find + stat of a revision with {count:,} files vs dvc checkout")
    repo, env = new_repo("tree")
    per_dir = 100
    for i in range(count):
        target = repo.path / "data" / f"g{i // (per_dir * 100):02d}" / f"d{i // per_dir:05d}"
        if i % per_dir == 0:
            target.mkdir(parents=True, exist_ok=True)
        (target / f"f{i:06d}.txt").write_bytes(f"{i}\n".encode())
    build, _ = timed(lambda: repo.dvc_add("data"))
    repo.commit("many tiny files")
    cache = repo.path / ".dvc" / "cache"
    say(f"  dvc add of {count:,} files: {build:.1f} s")

    checkout_times = []
    checkout_entries = 0
    for i in range(repeat):
        clone = BENCH_ROOT / "tree" / f"clone{i}"
        run(["git", "clone", "-q", str(repo.path), str(clone)], BENCH_ROOT, env)
        run([dvc_bin(), "config", "--local", "cache.dir", str(cache)], clone, env)
        elapsed, _ = timed(lambda c=clone: run([dvc_bin(), "checkout", "-q"], c, env))  # type: ignore[misc]
        checkout_times.append(elapsed)
        checkout_entries = find_stat(clone / "data")
        shutil.rmtree(clone)
    say(f"  dvc checkout s: {' '.join(f'{v:.2f}' for v in checkout_times)}")

    fuse_times, mount_times, find_times = [], [], []
    fuse_entries = 0
    mnt = BENCH_ROOT / "tree" / "mnt"
    for _ in range(repeat):
        with mounted(env, repo.path, "main", cache, mnt) as mount_time:
            find_time, fuse_entries = timed(lambda: find_stat(mnt / "data"))  # type: ignore[assignment]
        mount_times.append(mount_time)
        find_times.append(find_time)
        fuse_times.append(mount_time + find_time)
    say(f"  fusefs mount s: {' '.join(f'{v:.2f}' for v in mount_times)}")
    say(f"  fusefs find+stat s: {' '.join(f'{v:.2f}' for v in find_times)}")
    if fuse_entries != checkout_entries:
        note(f"entry count differs: checkout {checkout_entries}, fusefs {fuse_entries}")
    else:
        say(f"  entries under data/: {fuse_entries:,} (both)")
    ROWS.append(
        Row(
            f"{count // 1000}k files: mount+find+stat",
            "dvc checkout",
            median(checkout_times),
            median(fuse_times),
            "s",
            False,
        )
    )


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="sizes scaled down 10x (smoke run)")
    parser.add_argument("--only", type=int, choices=(1, 2, 3), help="run one section")
    parser.add_argument("--repeat", type=int, default=3, help="samples per figure (median)")
    parser.add_argument(
        "--tree-repeat", type=int, default=1, help="samples for section 3 (default 1)"
    )
    parser.add_argument("--keep", action="store_true", help=f"keep {BENCH_ROOT}")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    if BENCH_ROOT.exists():
        shutil.rmtree(BENCH_ROOT)
    BENCH_ROOT.mkdir(parents=True)
    sections: dict[int, Callable[[], None]] = {
        1: lambda: section_large(GiB // scale // CHUNK * CHUNK, args.repeat),
        2: lambda: section_small(10_000 // scale, 4096, args.repeat),
        3: lambda: section_tree(100_000 // scale, args.tree_repeat),
    }
    say(f"fusefs read benchmark{' (--quick)' if args.quick else ''}; {os.cpu_count()} CPUs")
    start = time.perf_counter()
    try:
        for number, section in sections.items():
            if args.only in (None, number):
                t0 = time.perf_counter()
                section()
                say(f"  section {number} took {time.perf_counter() - t0:.0f} s")
    finally:
        for mnt in BENCH_ROOT.glob("*/mnt"):
            unmount(os.environ, mnt)
        print_table(ROWS)
        say(f"\ntotal {time.perf_counter() - start:.0f} s")
        if not args.keep and not any(is_mounted(m) for m in BENCH_ROOT.glob("*/mnt")):
            shutil.rmtree(BENCH_ROOT, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
