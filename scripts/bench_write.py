#!/usr/bin/env python3
"""Write-path benchmark of a writable (``--rw``) fusefs mount against baselines measured in the
same run.

Every mount is ``fusefs mount --rw`` of branch ``main`` of a bare repository whose one directory
output ``data/`` holds a few small files; the mount's staging journal (``FUSEFS_STATE_DIR``) and
every baseline directory live under /tmp/fusefs-bench-write, so both sides write to the same
filesystem.

Sections:

1. sequential write of one large file (1 MiB ``write`` calls, then ``fsync`` + ``close``) into
   the mount's ``data/`` output against the same into a plain local directory.
2. create+write+close of many small files (100 per folder) into the mount's ``data/`` output
   against the same into a plain local directory, with 1 and 8 threads.
3. ``fusefs commit`` of many new small files (written into a new top-level folder of the mount)
   against ``dvc add`` + ``git add`` + ``git commit`` of the same files in a plain checkout of
   the same repository (warm: dvc and git ran there before), both timed end to end.
4. as 3 with ``fusefs commit --push`` against ``dvc add`` + ``git commit`` + ``dvc push``, each
   to its own folder remote holding the base revision's objects.
5. as 3 for one large new file (the commit's hashing and copying speed).

Baseline and fusefs samples alternate, and sections 1 and 5 delete what each sample wrote on
both sides before the next: on a VM that hands freed memory back to its host, first touches of
fresh page cache cost seconds per GiB, and a side that keeps more cached would pay them alone.

Every figure is printed as an absolute number and as a ratio against its baseline, where the
ratio is always a *speed* ratio: fusefs throughput / baseline throughput, or baseline time /
fusefs time. Ratio > 1 means fusefs was faster, < 1 slower.

Usage: ``python scripts/bench_write.py [--quick] [--only N] [--repeat K] [--keep]``.
Scratch data lives under /tmp/fusefs-bench-write and is deleted at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchlib import (  # noqa: E402
    CHUNK,
    GiB,
    KiB,
    MiB,
    Row,
    bench_env,
    cache_path,
    daemon_pid,
    fresh_dir,
    fusefs_cmd,
    median,
    mounted,
    note,
    out_md5,
    print_table,
    remove_scratch,
    run_section,
    samples,
    say,
    timed,
    unmount_all,
)

from tests.dvcrepo import RepoBuilder, dvc_bin, run  # noqa: E402

BENCH_ROOT = Path("/tmp/fusefs-bench-write")
PER_DIR = 100
ROWS: list[Row] = []


# ---------------------------------------------------------------------------
# Daemon counters


@dataclass(frozen=True)
class Counters:
    """What the daemon did: read() syscalls (~ one per FUSE request), CPU seconds (user +
    system) and bytes it passed to write()-like syscalls."""

    requests: int = 0
    cpu: float = 0.0
    written: int = 0

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.requests - other.requests, self.cpu - other.cpu, self.written - other.written
        )

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.requests + other.requests, self.cpu + other.cpu, self.written + other.written
        )


def counters(pid: int | None) -> Counters:
    if pid is None:
        return Counters()
    with contextlib.suppress(OSError, ValueError, IndexError):
        io = dict(line.split(": ", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        return Counters(int(io["syscr"]), cpu, int(io["wchar"]))
    return Counters()


def describe(c: Counters, per: float, what: str) -> str:
    return (
        f"daemon per {what}: {c.requests / per:.2f} read() syscalls (~FUSE requests), "
        f"{c.cpu / per * 1000:.3f} ms CPU, {c.written / per / KiB:.1f} KiB written"
    )


# ---------------------------------------------------------------------------
# Helpers


def fs_type(path: Path) -> str:
    proc = subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "?"


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@dataclass
class Bench:
    """One section's repository: a bare origin whose branch main a writable mount stages on,
    a folder remote holding its objects, and the environment both git/dvc and fusefs use."""

    base: Path
    env: dict[str, str]
    origin: Path
    remote: Path
    cache: Path
    mnt: Path


def new_bench(name: str) -> Bench:
    """Working tree with output ``data/`` (a few files) pushed to a folder remote, then a bare
    clone of it: a writable mount cannot commit to a branch checked out in a working tree."""
    base = BENCH_ROOT / name
    env = bench_env(base)
    repo = RepoBuilder(base / "work", env)
    repo.init()
    remote = base / "remote"
    repo.add_remote("origin", str(remote))
    for i in range(3):
        repo.write(f"data/seed/s{i}.bin", random.Random(i).randbytes(4 * KiB))
    repo.dvc_add("data")
    repo.commit("data output")
    repo.push()
    origin = base / "origin.git"
    run(["git", "clone", "-q", "--bare", str(repo.path), str(origin)], base, env)
    return Bench(base, env, origin, remote, base / "fusefs-cache", base / "mnt")


def checkout(bench: Bench, remote: Path | None = None) -> Path:
    """A plain clone of the origin with its data pulled: what a `dvc add` user works in."""
    work = bench.base / "checkout"
    run(["git", "clone", "-q", str(bench.origin), str(work)], bench.base, bench.env)
    if remote is not None:
        run(
            [dvc_bin(), "remote", "modify", "--local", "origin", "url", str(remote)],
            work,
            bench.env,
        )
    run([dvc_bin(), "pull", "-q"], work, bench.env)
    return work


def mounted_rw(bench: Bench) -> contextlib.AbstractContextManager[float]:
    """Mount branch main writable, yield the wall time `fusefs mount` took, always unmount."""
    return mounted(bench.env, bench.origin, "main", bench.cache, bench.mnt, BENCH_ROOT, rw=True)


# ---------------------------------------------------------------------------
# Payloads: the same bytes go to the mount and to the baseline


def big_block(seed: int) -> bytes:
    return random.Random(seed).randbytes(CHUNK)


def write_big(path: Path, size: int, seed: int) -> tuple[float, float]:
    """Create `path` with `size` bytes in 1 MiB writes, fsync, close: (write s, fsync+close s).

    Every chunk differs (a counter in front of a per-seed random block), so nothing dedups.
    """
    block = bytearray(big_block(seed))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start = time.perf_counter()
        for i in range(size // CHUNK):
            block[:8] = i.to_bytes(8, "little")
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]
        middle = time.perf_counter()
        os.fsync(fd)
    finally:
        os.close(fd)
    return middle - start, time.perf_counter() - middle


def small_payload(count: int, size: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [(f"d{i // PER_DIR:04d}/f{i:06d}.bin", rng.randbytes(size)) for i in range(count)]


def write_small(root: Path, files: Sequence[tuple[str, bytes]], threads: int = 1) -> float:
    """mkdir of every folder, then create+write+close of every file (no fsync); seconds."""

    def worker(chunk: Sequence[tuple[str, bytes]]) -> None:
        for rel, data in chunk:
            fd = os.open(root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    start = time.perf_counter()
    root.mkdir()
    for folder in sorted({rel.rpartition("/")[0] for rel, _ in files}):
        (root / folder).mkdir()
    if threads == 1:
        worker(files)
    else:
        step = -(-len(files) // threads)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(worker, [files[i : i + step] for i in range(0, len(files), step)]))
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# 1. Large sequential write


def section_large(size: int, repeat: int) -> None:
    """Samples alternate local, fusefs, local...; each fusefs sample is a fresh mount with an
    empty staging area, removed afterwards as the local file is: both sides then start from the
    same amount of page cache in use (on a VM whose freed memory goes back to the host, a side
    that keeps gigabytes cached pays first-touch faults the other does not)."""
    say(f"\n[1] sequential write of a {size / MiB:.0f} MiB file (1 MiB writes, fsync, close)")
    bench = new_bench("large")
    local = bench.base / "local"
    local.mkdir()
    say(f"  filesystem of {BENCH_ROOT}: {fs_type(BENCH_ROOT)}")
    staging = Path(bench.env["FUSEFS_STATE_DIR"]) / "staging"

    def rate(split: tuple[float, float]) -> float:
        return size / MiB / sum(split)

    base_splits, fuse_splits = [], []
    used = Counters()
    for i in range(repeat):
        target = local / f"big{i}.bin"
        os.sync()
        base_splits.append(write_big(target, size, seed=i))
        target.unlink()
        with mounted_rw(bench) as mount_time:
            if i == 0:
                say(f"  mounted in {mount_time:.2f} s")
            pid = daemon_pid(bench.env)
            target = bench.mnt / "data" / f"big{i}.bin"
            os.sync()
            before = counters(pid)
            fuse_splits.append(write_big(target, size, seed=i))
            used = used + (counters(pid) - before)
            got = target.stat().st_size
            assert got == size, (got, size)
            if i == 0:
                say(f"  staging area after one file: {tree_bytes(staging) / MiB:.0f} MiB")
        shutil.rmtree(staging)
    say(f"  {describe(used, repeat * size / MiB, 'MiB')}")
    for label, splits in (("local", base_splits), ("fusefs", fuse_splits)):
        say(
            f"  {label:>6} MiB/s: {samples([rate(s) for s in splits], 0)}  "
            f"(write s: {samples([s[0] for s in splits], 2)}; "
            f"fsync+close s: {samples([s[1] for s in splits], 2)})"
        )
    label = f"seq write {size / MiB:.0f} MiB + fsync"
    ROWS.append(
        Row(
            label,
            "local dir",
            median([rate(s) for s in base_splits]),
            median([rate(s) for s in fuse_splits]),
            "MiB/s",
            True,
        )
    )
    ROWS.append(
        Row(
            f"{label}: write() part only",
            "local dir",
            median([size / MiB / s[0] for s in base_splits]),
            median([size / MiB / s[0] for s in fuse_splits]),
            "MiB/s",
            True,
        )
    )


# ---------------------------------------------------------------------------
# 2. Many small files


def section_small(count: int, size: int, repeat: int) -> None:
    say(f"\n[2] create+write+close of {count:,} files of {size // KiB} KiB ({PER_DIR} per folder)")
    bench = new_bench("small")
    local = bench.base / "local"
    local.mkdir()
    payloads = [small_payload(count, size, seed=i) for i in range(repeat)]
    thread_counts = (1, 8)
    base: dict[int, list[float]] = {t: [] for t in thread_counts}
    fuse: dict[int, list[float]] = {t: [] for t in thread_counts}
    with mounted_rw(bench) as mount_time:
        say(f"  mounted in {mount_time:.2f} s")
        pid = daemon_pid(bench.env)
        used = Counters()
        for threads in thread_counts:
            for i, files in enumerate(payloads):  # alternate local and fusefs samples
                name = f"t{threads}r{i}"
                os.sync()
                base[threads].append(count / write_small(local / name, files, threads))
                os.sync()
                before = counters(pid)
                fuse[threads].append(count / write_small(bench.mnt / "data" / name, files, threads))
                used = used + (counters(pid) - before)
        say(f"  {describe(used, len(thread_counts) * repeat * count, 'file')}")
        rel, data = payloads[-1][-1]
        assert (bench.mnt / "data" / f"t8r{repeat - 1}" / rel).read_bytes() == data
    for threads in thread_counts:
        say(f"  {threads} thread(s) local  files/s: {samples(base[threads], 0)}")
        say(f"  {threads} thread(s) fusefs files/s: {samples(fuse[threads], 0)}")
    label = f"{count / 1000:g}k x {size // KiB} KiB create/write/close"
    for threads in thread_counts:
        ROWS.append(
            Row(
                f"{label}, {threads} thr",
                f"local dir, {threads} thr",
                median(base[threads]),
                median(fuse[threads]),
                "files/s",
                True,
            )
        )


# ---------------------------------------------------------------------------
# 3-5. fusefs commit vs dvc add + git commit


Payload = Callable[[Path, int], None]
"""Writes repeat number i's new output (a folder or a file) at the given path."""


def section_commit(
    number: int, title: str, label: str, kind: str, payload: Payload, repeat: int, push: bool
) -> None:
    """`fusefs commit [--push]` of a new output against the same output made in a checkout by
    `dvc add` + `git add` + `git commit` [+ `dvc push`].

    Samples alternate checkout, mount, checkout...; after each, a new single-file output's bytes
    are dropped on both sides (the checkout's copy, its object in both caches), so neither side
    keeps gigabytes more page cache than the other (see section 1).
    """
    say(f"\n[{number}] {title}")
    bench = new_bench(f"commit{number}")
    base_remote = bench.base / "remote-checkout"
    shutil.copytree(bench.remote, base_remote)
    work = checkout(bench, base_remote)
    run([dvc_bin(), "status", "-q"], work, bench.env)  # warm: imports, site cache
    run(["git", "status", "--short"], work, bench.env)
    work_cache = work / ".dvc" / "cache"
    base_times, base_writes, fuse_times, fuse_writes = [], [], [], []
    push_flag = ["--push"] if push else []
    base_cmd = "dvc add + git commit" + (" + dvc push" if push else "")
    with mounted_rw(bench) as mount_time:
        say(f"  mounted in {mount_time:.2f} s")
        run(fusefs_cmd("status", str(bench.mnt)), BENCH_ROOT, bench.env)  # warm
        pid = daemon_pid(bench.env)
        used = Counters()
        for i in range(repeat):
            name = f"{kind}{i}"
            base_writes.append(timed(lambda n=name, r=i: payload(work / n, r))[0])  # type: ignore[misc]
            os.sync()
            start = time.perf_counter()
            run([dvc_bin(), "add", "-q", name], work, bench.env)
            run(["git", "add", f"{name}.dvc", ".gitignore"], work, bench.env)
            run(["git", "commit", "-q", "-m", f"add {name}"], work, bench.env)
            if push:
                run([dvc_bin(), "push", "-q"], work, bench.env)
            base_times.append(time.perf_counter() - start)

            fuse_writes.append(timed(lambda n=name, r=i: payload(bench.mnt / n, r))[0])  # type: ignore[misc]
            os.sync()
            before = counters(pid)
            start = time.perf_counter()
            cmd = fusefs_cmd("commit", str(bench.mnt), "-m", f"add {name}", *push_flag)
            out = run(cmd, BENCH_ROOT, bench.env)
            fuse_times.append(time.perf_counter() - start)
            used = used + (counters(pid) - before)
            if i == 0:
                say(f"  fusefs commit: {out.strip()}")
            ours = (bench.mnt / f"{name}.dvc").read_bytes()
            theirs = (work / f"{name}.dvc").read_bytes()
            if ours != theirs:
                note(f"{name}.dvc differs:\n{ours.decode()}\nvs dvc add:\n{theirs.decode()}")
            say(f"  sample {i + 1}: {base_times[-1]:.2f} s vs fusefs {fuse_times[-1]:.2f} s")
            if (work / name).is_file():
                drop_object(work / name, out_md5(work / f"{name}.dvc"), [work_cache, bench.cache])
    say(
        f"  daemon per commit: {used.cpu / repeat:.2f} s CPU, "
        f"{used.written / repeat / MiB:.1f} MiB written"
    )
    if push:
        for side, remote in (("fusefs", bench.remote), ("dvc", base_remote)):
            say(f"  {side} remote: {sum(1 for p in remote.rglob('*') if p.is_file())} objects")
    say(f"  write into checkout s: {samples(base_writes, 2)}")
    say(f"  write into mount    s: {samples(fuse_writes, 2)}")
    say(f"  {base_cmd} s: {samples(base_times, 2)}")
    say(f"  fusefs commit{' --push' if push else ''} s: {samples(fuse_times, 2)}")
    ROWS.append(Row(label, base_cmd, median(base_times), median(fuse_times), "s", False))


def drop_object(workspace_file: Path, md5: str, caches: Sequence[Path]) -> None:
    """Delete a committed single-file output's workspace copy and its cached object."""
    workspace_file.unlink()
    for cache in caches:
        cache_path(cache, md5).unlink()


def folder_payload(count: int, size: int) -> Payload:
    def write(root: Path, i: int) -> None:
        write_small(root, small_payload(count, size, seed=1000 + i))

    return write


def file_payload(size: int) -> Payload:
    def write(path: Path, i: int) -> None:
        write_big(path, size, seed=1000 + i)

    return write


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="sizes scaled down 10x (smoke run)")
    parser.add_argument("--only", type=int, choices=(1, 2, 3, 4, 5), help="run one section")
    parser.add_argument("--repeat", type=int, default=3, help="samples per figure (median)")
    parser.add_argument("--keep", action="store_true", help=f"keep {BENCH_ROOT}")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    fresh_dir(BENCH_ROOT)
    big = GiB // scale // CHUNK * CHUNK
    many = 10_000 // scale
    small = 4 * KiB
    many_label = f"{many / 1000:g}k x {small // KiB} KiB new files"
    sections: dict[int, Callable[[], None]] = {
        1: lambda: section_large(big, args.repeat),
        2: lambda: section_small(many, small, args.repeat),
        3: lambda: section_commit(
            3,
            f"commit of {many:,} new {small // KiB} KiB files in a new folder",
            f"commit {many_label}",
            "batch",
            folder_payload(many, small),
            args.repeat,
            push=False,
        ),
        4: lambda: section_commit(
            4,
            f"commit + push of {many:,} new {small // KiB} KiB files to a folder remote",
            f"commit --push {many_label}",
            "pushed",
            folder_payload(many, small),
            args.repeat,
            push=True,
        ),
        5: lambda: section_commit(
            5,
            f"commit of one new {big / MiB:.0f} MiB file",
            f"commit 1 new {big / MiB:.0f} MiB file",
            "big",
            file_payload(big),
            args.repeat,
            push=False,
        ),
    }
    say(f"fusefs write benchmark{' (--quick)' if args.quick else ''}; {os.cpu_count()} CPUs")
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
