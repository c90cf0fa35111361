#!/usr/bin/env python3
"""Remote read-path benchmark: a fusefs mount over moto's S3 server on loopback, against s3fs
and ``dvc pull`` measured in the same run, on the same bucket.

Every fusefs figure comes from a fresh mount with a fresh, empty ``--cache-dir``: all bytes
come from the bucket. The dataset is built with the real dvc CLI (``dvc add``); its objects are
uploaded into the bucket in DVC's remote layout (``<prefix>/files/md5/xx/...``) with boto3, and
the repository's committed ``.dvc/config`` names the bucket as its default remote (credentials
come from the environment, as for any DVC user).

Sections:

1. cold sequential read of one large object (1 GiB) through the mount, 1 MiB ``readinto``
   calls, against s3fs ``get`` of the same object to local disk, with s3fs's defaults and with
   fusefs's own access pattern (8 MiB ranges, 6 at a time).
2. time to first byte of that object through the mount (open + read 1 byte, cold), against one
   S3 GET round trip (a 1-byte ranged GET with boto3) of a small object and of the object itself.
3. cold open+read+close of many small files (4-64 KiB) of one directory output through the
   mount (1 reader; 8 threads; ``fusefs prefetch --jobs 8`` first, then 8 threads) against
   ``dvc pull`` of that output into a fresh clone. fusefs time = mount + reads (+ prefetch).
4. the S3 requests an ``ls -l`` of a 10,000-file directory output costs through a fresh mount,
   against one HEAD per file: flat, and the same files in 100 folders of 100 (of which the
   first 10 are listed: each folder's sizes are a batch of their own, and the bucket's other
   objects lie between their keys).

S3 requests are counted on the server side: moto's server (werkzeug) logs one line per request
it answers, ``"GET /bucket/key HTTP/1.1" 200``, to its log file; the lines written between two
marks are classified (HEAD, LIST = ListObjectsV2, GET = GetObject, PUT/POST).

Every figure is printed as an absolute number and as a ratio against its baseline, where the
ratio is always a *speed* ratio: fusefs throughput / baseline throughput, or baseline time (or
request count) / fusefs time. Ratio > 1 means fusefs was faster (or cheaper), < 1 slower.

Caveats of the server, which every client here pays alike: moto answers a ranged GET by reading
the whole object into memory and slicing it, so a ranged GET of a large object costs time
proportional to the object's size (the run measures it: "1-byte GET of this object"; the 8 MiB-
range s3fs baseline pays it as often as fusefs does); and its server closes the connection after
every response, so each request includes a TCP connect. CPU seconds of the moto server, the
mount's daemon and the client (dvc) are printed beside each figure: with 2 cores, the server and
the client compete.

Usage: ``python scripts/bench_remote.py [--quick] [--only N] [--repeat K] [--keep]``.
Scratch data lives under /tmp/fusefs-bench-remote and is deleted at the end (unless --keep).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchlib import (  # noqa: E402
    NOTES,
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
    note,
    out_md5,
    print_table,
    read_many,
    read_sequential,
    remove_scratch,
    run_section,
    samples,
    say,
    timed,
    unmount_all,
)
from benchlib import mounted as mounted_at  # noqa: E402

from tests.dvcrepo import RepoBuilder, dvc_bin, run  # noqa: E402
from tests.servers import S3Server, start_s3  # noqa: E402

BENCH_ROOT = Path("/tmp/fusefs-bench-remote")
BUCKET = "dvc-store"
PREFIX = "store"
STREAM_CHUNK = 8 * MiB  # fusefs/stream.py CHUNK
STREAM_WORKERS = 6  # fusefs/stream.py WORKERS
ROWS: list[Row] = []


def cpu_seconds(pid: int | None) -> tuple[float, float]:
    """(user, system) CPU seconds a process has used so far; (0, 0) if it is gone."""
    if pid is None:
        return 0.0, 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class CpuMeter:
    """CPU used by the moto server, the mount's daemon and this script's children."""

    def __init__(self, bench: Bench, daemon: int | None = None) -> None:
        self.pids = {"moto": bench.s3.process.pid, "daemon": daemon}
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = usage.ru_utime + usage.ru_stime

    def report(self, client: str | None = None) -> str:
        parts = []
        for name, pid in self.pids.items():
            if pid is None:
                continue
            (u0, s0), (u1, s1) = self.start[name], cpu_seconds(pid)
            parts.append(f"{name} {u1 - u0 + s1 - s0:.1f} ({u1 - u0:.1f} user, {s1 - s0:.1f} sys)")
        if client is not None:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            parts.append(f"{client} {usage.ru_utime + usage.ru_stime - self.children:.1f}")
        return "CPU s: " + ", ".join(parts)


# ---------------------------------------------------------------------------
# Request counting from moto's log


# werkzeug colours some lines (206 magenta, 304 cyan...): ANSI escapes around the request.
_ANSI = rb"(?:\x1b\[[0-9;]*m)*"
_REQUEST = re.compile(
    rb'"' + _ANSI + rb"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+" + _ANSI + rb'" (\d{3})'
)


class RequestLog:
    """Requests moto's server answered, from the one line per request it logs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size

    def since(self, mark: int) -> Counter[str]:
        # A request's line is written when its response headers go out, so it is in the
        # file by the time the client has the response; wait only for the size to settle.
        size = -1
        while size != (size := self.path.stat().st_size):
            time.sleep(0.05)
        with open(self.path, "rb") as log:
            log.seek(mark)
            data = log.read()
        counts: Counter[str] = Counter()
        for match in _REQUEST.finditer(data):
            method, target, status = match.groups()
            if method == b"GET":
                kind = "LIST" if b"list-type=2" in target else "GET"
            else:
                kind = method.decode()
            counts[kind] += 1
            if not status.startswith(b"2"):
                counts[f"status {status.decode()}"] += 1
        return counts


def describe(counts: Counter[str]) -> str:
    total = sum(v for k, v in counts.items() if not k.startswith("status"))
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{total} ({parts})" if parts else "0"


def total_requests(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if not k.startswith("status"))


# ---------------------------------------------------------------------------
# The bench: server, dataset, mounts


@dataclass
class Dataset:
    big: str = ""  # md5 of big.bin
    big_size: int = 0
    small: list[str] = field(default_factory=list)  # relpaths under data/
    small_bytes: int = 0
    probe: str = ""  # md5 of probe.txt, a small object for round trips
    tree_count: int = 0
    uploaded: int = 0


@dataclass
class Bench:
    root: Path
    s3: S3Server
    log: RequestLog
    env: dict[str, str]
    repo: RepoBuilder
    data: Dataset = field(default_factory=Dataset)
    mounts: int = 0

    def key(self, md5: str) -> str:
        return f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}"

    def s3fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(
            key=self.s3.key,
            secret=self.s3.secret,
            client_kwargs={"endpoint_url": self.s3.endpoint, "region_name": self.s3.region},
            skip_instance_cache=True,
        )


@dataclass
class Mount:
    path: Path
    cache: Path
    seconds: float
    pid: int | None


@contextlib.contextmanager
def mounted(bench: Bench) -> Iterator[Mount]:
    """A fresh mount of `main` with a fresh, empty cache; always unmounted.

    Caches (and clones) are deleted only at the end: ext4 makes file creation slow for a
    minute after many inodes were freed (its allocator skips recently deleted inodes), which
    would burden whichever measurement follows a deletion.
    """
    bench.mounts += 1
    base = bench.root / "mounts" / f"m{bench.mounts:02d}"
    mnt, cache = base / "mnt", base / "cache"
    with mounted_at(bench.env, bench.repo.path, "main", cache, mnt, bench.root) as seconds:
        yield Mount(mnt, cache, seconds, daemon_pid(bench.env))


def aws_env(base: Mapping[str, str], s3: S3Server, scratch: Path) -> dict[str, str]:
    """Credentials for the moto user; no AWS setting of this machine leaks in."""
    env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=s3.key,
        AWS_SECRET_ACCESS_KEY=s3.secret,
        AWS_CONFIG_FILE=str(scratch / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(scratch / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def build(bench: Bench, big_size: int, small_count: int, tree_count: int) -> None:
    """dvc add the outputs, commit with the bucket as default remote, upload the objects."""
    repo, data = bench.repo, bench.data
    rng = random.Random(42)
    repo.write("probe.txt", b"a small object for round-trip timing\n")
    targets = ["probe.txt"]
    if big_size:
        block = rng.randbytes(MiB)
        with open(repo.path / "big.bin", "wb") as out:
            for i in range(big_size // MiB):
                out.write(i.to_bytes(8, "little") + block[8:])
        targets.append("big.bin")
        data.big_size = big_size
    if small_count:
        for i in range(small_count):
            rel = f"f{i:05d}.bin"
            body = rng.randbytes(rng.randint(4 * KiB, 64 * KiB))
            (repo.path / "data").mkdir(exist_ok=True)
            (repo.path / "data" / rel).write_bytes(body)
            data.small.append(rel)
            data.small_bytes += len(body)
        targets.append("data")
    if tree_count:
        # The same contents twice: flat, and in folders of 100 (the objects are shared).
        for i in range(tree_count):
            body = f"{i}\n".encode()
            flat = repo.path / "tree" / f"t{i:05d}.txt"
            nested = repo.path / "tree_nested" / f"d{i // 100:03d}" / f"t{i:05d}.txt"
            for path in (flat, nested):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(body)
        data.tree_count = tree_count
        targets += ["tree", "tree_nested"]
    seconds, _ = timed(lambda: repo.dvc_add(*targets))
    say(f"  dvc add {' '.join(targets)}: {seconds:.1f} s")
    data.probe = out_md5(repo.path / "probe.txt.dvc")
    if big_size:
        data.big = out_md5(repo.path / "big.bin.dvc")
    repo.dvc("remote", "add", "-d", "s3", f"s3://{BUCKET}/{PREFIX}")
    repo.dvc("remote", "modify", "s3", "endpointurl", bench.s3.endpoint)
    repo.dvc("remote", "modify", "s3", "region", bench.s3.region)
    repo.commit("dataset on S3")

    client = bench.s3.client()
    client.create_bucket(Bucket=BUCKET)
    cache = repo.path / ".dvc" / "cache" / "files" / "md5"
    objects = sorted(p for p in cache.glob("*/*") if p.is_file())
    small = [p for p in objects if p.stat().st_size < 32 * MiB]
    large = [p for p in objects if p.stat().st_size >= 32 * MiB]

    def put(path: Path) -> None:
        key = f"{PREFIX}/files/md5/{path.parent.name}/{path.name}"
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())

    def upload() -> None:
        from boto3.s3.transfer import TransferConfig

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, small))
        config = TransferConfig(multipart_chunksize=64 * MiB, max_concurrency=4)
        for path in large:
            key = f"{PREFIX}/files/md5/{path.parent.name}/{path.name}"
            client.upload_file(str(path), BUCKET, key, Config=config)

    seconds, _ = timed(upload)
    data.uploaded = len(objects)
    say(f"  uploaded {len(objects):,} objects to s3://{BUCKET}/{PREFIX}: {seconds:.1f} s")


# ---------------------------------------------------------------------------
# 1. Large sequential read, cold


def s3fs_get(bench: Bench, local: Path, **options: int) -> tuple[float, Counter[str]]:
    fs = bench.s3fs()
    mark = bench.log.mark()
    meter = CpuMeter(bench)
    seconds, _ = timed(
        lambda: fs.get(f"{BUCKET}/{bench.key(bench.data.big)}", str(local), **options)
    )
    counts = bench.log.since(mark)
    say(f"    {meter.report()}")
    size = local.stat().st_size
    local.unlink()
    assert size == bench.data.big_size, (size, bench.data.big_size)
    return seconds, counts


def wait_installed(path: Path, timeout: float) -> float | None:
    start = time.perf_counter()
    while not path.exists():
        if time.perf_counter() - start > timeout:
            return None
        time.sleep(0.05)
    return time.perf_counter() - start


def section_large(bench: Bench, repeat: int) -> None:
    size = bench.data.big_size
    say(f"\n[1] cold sequential read of a {size / MiB:.0f} MiB object: fusefs vs s3fs get")
    local = bench.root / "s3fs-get.bin"
    variants = {
        "s3fs get (defaults)": {},
        "s3fs get, 8 MiB ranges x6": {
            "chunksize": STREAM_CHUNK,
            "max_concurrency": STREAM_WORKERS,
        },
    }
    base: dict[str, list[float]] = {}
    for name, options in variants.items():
        rates = []
        for _ in range(repeat):
            seconds, counts = s3fs_get(bench, local, **options)
            rates.append(size / MiB / seconds)
        say(f"  {name}: MiB/s {samples(rates, 0)}; requests {describe(counts)}")
        base[name] = rates

    fuse: list[float] = []
    for _ in range(repeat):
        with mounted(bench) as mount:
            target = mount.path / "big.bin"
            mark = bench.log.mark()
            meter = CpuMeter(bench, mount.pid)
            seconds, total = read_sequential(target)
            assert total == size, (total, size)
            fuse.append(size / MiB / seconds)
            obj = cache_path(mount.cache, bench.data.big)
            installed = wait_installed(obj, 120)
            counts = bench.log.since(mark)
            cpu = meter.report()
        after = "not within 120 s" if installed is None else f"{installed:.2f} s after the read"
        say(
            f"  fusefs: mounted in {mount.seconds:.2f} s; read {seconds:.2f} s "
            f"({size / MiB / seconds:.0f} MiB/s); verified object in cache {after}; "
            f"requests {describe(counts)}; {cpu}"
        )
    say(f"  fusefs cold MiB/s: {samples(fuse, 0)}")
    label = f"seq read {size / MiB:.0f} MiB, cold"
    for name, rates in base.items():
        ROWS.append(Row(label, name, median(rates), median(fuse), "MiB/s", True))


# ---------------------------------------------------------------------------
# 2. Time to first byte


def ranged_get_rtt(bench: Bench, md5: str, count: int) -> list[float]:
    client = bench.s3.client()
    key = bench.key(md5)
    client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-0")["Body"].read()  # connect
    times = []
    for _ in range(count):
        start = time.perf_counter()
        body = client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-0")["Body"].read()
        times.append(time.perf_counter() - start)
        assert len(body) == 1
    return times


def section_ttfb(bench: Bench, repeat: int) -> None:
    size = bench.data.big_size
    say(f"\n[2] time to first byte of the {size / MiB:.0f} MiB object (open + read 1 byte, cold)")
    rtt_small = ranged_get_rtt(bench, bench.data.probe, 20)
    rtt_big = ranged_get_rtt(bench, bench.data.big, 5)
    say(f"  boto3 1-byte ranged GET, small object, ms: {samples([t * 1e3 for t in rtt_small], 2)}")
    say(f"  boto3 1-byte ranged GET, this object, ms: {samples([t * 1e3 for t in rtt_big], 2)}")
    ttfb: list[float] = []
    for _ in range(repeat):
        with mounted(bench) as mount:
            target = mount.path / "big.bin"
            mark = bench.log.mark()
            start = time.perf_counter()
            fd = os.open(target, os.O_RDONLY)
            try:
                first = os.read(fd, 1)
                ttfb.append(time.perf_counter() - start)
            finally:
                os.close(fd)
            assert len(first) == 1
            counts = bench.log.since(mark)
            umount_start = time.perf_counter()
        say(
            f"  fusefs TTFB {ttfb[-1] * 1e3:.1f} ms; requests by then (and until the log "
            f"settled) {describe(counts)}; umount with the download running took "
            f"{time.perf_counter() - umount_start:.2f} s"
        )
    rtt, rtt_obj, first_byte = median(rtt_small), median(rtt_big), median(ttfb)
    say(
        f"  fusefs TTFB = {first_byte / rtt:.1f} x one small-object GET round trip "
        f"({rtt * 1e3:.1f} ms), {first_byte / rtt_obj:.2f} x a 1-byte GET of this object "
        f"({rtt_obj * 1e3:.1f} ms)"
    )
    note(
        f"TTFB {first_byte * 1e3:.0f} ms = {first_byte / rtt:.1f} S3 round trips of "
        f"{rtt * 1e3:.1f} ms (1-byte ranged GET of a small object)"
    )
    label = f"TTFB {size / MiB:.0f} MiB object, cold"
    ROWS.append(Row(label, "1 GET round trip, small obj", rtt * 1e3, first_byte * 1e3, "ms", False))
    ROWS.append(
        Row(label, "1-byte GET of this object", rtt_obj * 1e3, first_byte * 1e3, "ms", False)
    )


# ---------------------------------------------------------------------------
# 3. Many small files, cold


def has_prefetch(env: Mapping[str, str]) -> bool:
    proc = subprocess.run(
        fusefs_cmd("prefetch", "--help"), env=dict(env), capture_output=True, check=False
    )
    return proc.returncode == 0


def section_small(bench: Bench, repeat: int) -> None:
    data = bench.data
    count = len(data.small)
    say(
        f"\n[3] cold read of {count:,} files of 4-64 KiB ({data.small_bytes / MiB:.0f} MiB, one "
        "flat directory output): fusefs vs dvc pull"
    )
    native = has_prefetch(bench.env)
    if not native:
        note("`fusefs prefetch --help` failed: prefetch emulated by 8 threads reading every file")
    variants = (("1 reader", 1, False), ("8 threads", 8, False), ("prefetch -j8 + 8 thr", 8, True))
    fuse: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for name, threads, prefetch in variants:
        for _ in range(repeat):
            mark = bench.log.mark()
            with mounted(bench) as mount:
                meter = CpuMeter(bench, mount.pid)
                paths = [mount.path / "data" / rel for rel in data.small]
                prefetch_time = 0.0
                if prefetch and native:
                    cmd = fusefs_cmd("prefetch", "--jobs", "8", str(mount.path / "data"))
                    prefetch_time, out = timed(lambda c=cmd: run(c, bench.root, bench.env))  # type: ignore[misc]
                    say(f"    fusefs prefetch: {str(out).strip()}")
                elif prefetch:
                    prefetch_time, _ = read_many(paths, 8)
                read_time, total = read_many(paths, threads)
                assert total == data.small_bytes, (total, data.small_bytes)
                counts = bench.log.since(mark)
                cpu = meter.report()
            elapsed = mount.seconds + prefetch_time + read_time
            fuse[name].append(elapsed)
            pre = f"prefetch {prefetch_time:.2f} s + " if prefetch else ""
            say(
                f"  fusefs {name}: mount {mount.seconds:.2f} s + {pre}read {read_time:.2f} s = "
                f"{elapsed:.2f} s ({count / (prefetch_time + read_time):.0f} files/s); "
                f"requests {describe(counts)}; {cpu}"
            )

    pulls = []
    for i in range(repeat):
        clone = bench.root / f"clone{i}"
        run(["git", "clone", "-q", str(bench.repo.path), str(clone)], bench.root, bench.env)
        mark = bench.log.mark()
        meter = CpuMeter(bench)
        seconds, _ = timed(lambda c=clone: run([dvc_bin(), "pull", "-q", "data"], c, bench.env))  # type: ignore[misc]
        counts = bench.log.since(mark)
        cpu = meter.report("dvc")
        pulled = sum((clone / "data" / rel).stat().st_size for rel in data.small)
        assert pulled == data.small_bytes, (pulled, data.small_bytes)
        pulls.append(seconds)
        say(f"  dvc pull data: {seconds:.2f} s; requests {describe(counts)}; {cpu}")
    label = f"{count:,} x 4-64 KiB cold, mount+read"
    for name, times in fuse.items():
        ROWS.append(Row(f"{label}, {name}", "dvc pull", median(pulls), median(times), "s", False))


# ---------------------------------------------------------------------------
# 4. Requests of a listing


def list_long(*roots: Path) -> int:
    """`ls -l` (an lstat of every entry) of each folder; the number of entries listed."""
    proc = subprocess.run(
        ["ls", "-l", "--color=never", *map(str, roots)], capture_output=True, check=True
    )
    lines = proc.stdout.decode().splitlines()
    return sum(1 for line in lines if line[:1] in ("-", "d", "l"))


NESTED_DIRS = 10  # folders of tree_nested listed (each is sized by its own batch)


def section_listing(bench: Bench, repeat: int) -> None:
    count = bench.data.tree_count
    say(
        f"\n[4] S3 requests of `ls -l` of a {count:,}-file directory output on a fresh mount "
        f"(bucket holds {bench.data.uploaded:,} objects)"
    )
    dirs = min(NESTED_DIRS, count // 100)
    layouts = (
        ("flat", ["tree"], count),
        (
            f"{count // 100} dirs x 100, {dirs} listed",
            [f"tree_nested/d{i:03d}" for i in range(dirs)],
            dirs * 100,
        ),
    )
    for shape, folders, files in layouts:
        requests, times = [], []
        for _ in range(repeat):
            with mounted(bench) as mount:
                targets = [mount.path / folder for folder in folders]
                mark = bench.log.mark()
                start = time.perf_counter()
                seen = list_long(*targets)
                seconds = time.perf_counter() - start
                counts = bench.log.since(mark)
                assert seen == files, (seen, files)
                mark = bench.log.mark()
                start = time.perf_counter()
                list_long(*targets)
                again = time.perf_counter() - start
                repeat_counts = bench.log.since(mark)
            requests.append(total_requests(counts))
            times.append(seconds)
            say(
                f"  {shape}: ls -l of {files:,} files {seconds:.2f} s, "
                f"requests {describe(counts)}; "
                f"again on the same mount {again:.2f} s, requests {describe(repeat_counts)}"
            )
        per_k = median(requests) / (files / 1000)
        note(
            f"ls -l, {count // 1000}k-file output ({shape}), fresh mount: "
            f"{median(requests):.0f} S3 requests for {files:,} files = {per_k:.1f} per 1,000 "
            f"files, {median(times):.2f} s"
        )
        ROWS.append(
            Row(
                f"ls -l {files:,} files ({shape}), fresh mount",
                "1 HEAD per file",
                float(files),
                float(median(requests)),
                "requests",
                False,
            )
        )


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="sizes scaled down 10x (smoke run)")
    parser.add_argument("--only", type=int, choices=(1, 2, 3, 4), help="run one section")
    parser.add_argument("--repeat", type=int, default=1, help="samples per figure (median)")
    parser.add_argument("--keep", action="store_true", help=f"keep {BENCH_ROOT}")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    wanted = {n for n in (1, 2, 3, 4) if args.only in (None, n)}
    fresh_dir(BENCH_ROOT)
    say(f"fusefs remote benchmark{' (--quick)' if args.quick else ''}; {os.cpu_count()} CPUs")
    start = time.perf_counter()
    s3 = start_s3(BENCH_ROOT / "moto.log")
    bench: Bench | None = None
    try:
        env = aws_env(bench_env(BENCH_ROOT), s3, BENCH_ROOT)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        repo = RepoBuilder(BENCH_ROOT / "repo", env)
        repo.init()
        bench = Bench(BENCH_ROOT, s3, RequestLog(BENCH_ROOT / "moto.log"), env, repo)
        say(f"\n[0] dataset (moto S3 at {s3.endpoint}, IAM auth on)")
        t0 = time.perf_counter()
        build(
            bench,
            big_size=GiB // scale // MiB * MiB if wanted & {1, 2} else 0,
            small_count=5_000 // scale if 3 in wanted else 0,
            tree_count=10_000 // scale if 4 in wanted else 0,
        )
        say(f"  setup took {time.perf_counter() - t0:.0f} s")
        sections: dict[int, Callable[[Bench, int], None]] = {
            1: section_large,
            2: section_ttfb,
            3: section_small,
            4: section_listing,
        }
        for number, section in sections.items():
            if number in wanted:
                run_section(number, section, bench, args.repeat)
    finally:
        unmount_all(bench.env if bench is not None else os.environ, BENCH_ROOT, "mounts/*/mnt")
        s3.stop()
        print_table(ROWS)
        for line in NOTES:
            say(f"note: {line}")
        say(f"\ntotal {time.perf_counter() - start:.0f} s")
        remove_scratch(BENCH_ROOT, "mounts/*/mnt", args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
