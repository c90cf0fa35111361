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
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchlib import (  # noqa: E402
    CHUNK,
    GiB,
    MiB,
    Row,
    bench_env,
    cache_path,
    daemon_pid,
    drop_cache,
    fresh_dir,
    median,
    mount_device,
    mounted,
    note,
    out_md5,
    print_table,
    read_many,
    read_sequential,
    remove_scratch,
    run_section,
    say,
    timed,
    unmount_all,
)

from tests.dvcrepo import RepoBuilder, dvc_bin, run  # noqa: E402

BENCH_ROOT = Path("/tmp/fusefs-bench")
ROWS: list[Row] = []


# ---------------------------------------------------------------------------
# The mount's read-ahead


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


def read_syscalls(pid: int | None) -> int:
    """The daemon's read() syscall count: one per FUSE request it receives (cached reads)."""
    if pid is None:
        return 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("syscr:"):
                return int(line.split()[1])
    return 0


def resident(path: Path) -> str:
    """Resident page-cache bytes of a file per fincore(1), for the cold-read sanity check."""
    if shutil.which("fincore") is None:
        return "?"
    proc = subprocess.run(
        ["fincore", "-n", "-b", "-o", "RES", str(path)], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "?"


def new_repo(name: str) -> tuple[RepoBuilder, dict[str, str]]:
    base = BENCH_ROOT / name
    env = bench_env(base)
    repo = RepoBuilder(base / "repo", env)
    repo.init()
    return repo, env


# ---------------------------------------------------------------------------
# 1. Large sequential read


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
    with mounted(env, repo.path, "main", cache, mnt, BENCH_ROOT) as mount_time:
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
    with mounted(env, repo.path, "main", cache, mnt, BENCH_ROOT) as mount_time:
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
        with mounted(env, repo.path, "main", cache, mnt, BENCH_ROOT) as mount_time:
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
    fresh_dir(BENCH_ROOT)
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
                run_section(number, section)
    finally:
        unmount_all(os.environ, BENCH_ROOT, "*/mnt")
        print_table(ROWS)
        say(f"\ntotal {time.perf_counter() - start:.0f} s")
        remove_scratch(BENCH_ROOT, "*/mnt", args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
