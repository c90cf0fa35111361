"""Cache size control: size parsing, scans, LRU eviction with pins, `fusefs cache`, `--cache-size`
mounts and `fusefs prefetch`."""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from fusefs.cachectl import Evictor, gc, parse_size, scan
from tests.dvcrepo import RepoBuilder, isolated_env
from tests.mounting import cached_objects, fusefs, fusefs_env, mounted, requires_fuse, wait_for

NOW = time.time()
KIB = 1024


# -- unit tests on a hand-made cache -------------------------------------------------------------


def put(
    root: Path, data: bytes, age: float, *, manifest: bool = False, legacy: bool = False
) -> Path:
    """An object as a cache holds it, last used `age` seconds ago."""
    md5 = hashlib.md5(data).hexdigest() + (".dir" if manifest else "")
    path = root / ("" if legacy else "files/md5") / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o444)
    os.utime(path, (NOW - age, NOW - age))
    return path


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def present(paths: list[Path]) -> list[bool]:
    return [p.exists() for p in paths]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4096", 4096),
        ("500M", 500 << 20),
        ("50G", 50 << 30),
        ("1T", 1 << 40),
        ("1.5k", 1536),
        ("10GiB", 10 << 30),
        ("2gb", 2 << 30),
        ("0", 0),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "G", "5X", "-1G", "1 0M", "1e3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_scan_counts_objects_of_both_layouts_only(tmp_path: Path) -> None:
    put(tmp_path, blob(1000, 1), 300)
    put(tmp_path, blob(2000, 2), 100, legacy=True)
    put(tmp_path, b'[{"md5": "x"}]', 50, manifest=True)
    (tmp_path / ".fusefs" / "tmp").mkdir(parents=True)
    (tmp_path / ".fusefs" / "tmp" / "partial").write_bytes(b"x" * 5000)
    (tmp_path / "runs" / "ab").mkdir(parents=True)
    (tmp_path / "runs" / "ab" / ("c" * 30)).write_bytes(b"run cache")  # not an object folder
    (tmp_path / "files" / "md5" / "ab").mkdir(parents=True, exist_ok=True)
    (tmp_path / "files" / "md5" / "ab" / "notanobject").write_bytes(b"junk")
    stats = scan(tmp_path)
    assert (stats.objects, stats.bytes, stats.manifests, stats.pinned) == (3, 3014, 1, 0)
    assert stats.oldest_use == pytest.approx(NOW - 300)
    assert stats.newest_use == pytest.approx(NOW - 50)
    assert stats.stale_tmp == 0


def test_gc_evicts_least_recently_used_first_and_manifests_last(tmp_path: Path) -> None:
    manifest = put(tmp_path, b"m" * 100, 10_000, manifest=True)  # oldest of all
    objs = [put(tmp_path, blob(1000, i), age) for i, age in enumerate([50, 400, 200, 300])]
    report = gc(tmp_path, target=2100)
    assert present(objs) == [True, False, True, False]
    assert manifest.exists()
    assert (report.removed, report.freed, report.before, report.after) == (2, 2000, 4100, 2100)
    gc(tmp_path, target=100)
    assert present(objs) == [False] * 4 and manifest.exists()
    gc(tmp_path, target=0)
    assert not manifest.exists()


def test_gc_dry_run_removes_nothing(tmp_path: Path) -> None:
    objs = [put(tmp_path, blob(1000, i), 100 + i) for i in range(3)]
    report = gc(tmp_path, target=1000, dry_run=True)
    assert (report.removed, report.freed, report.after) == (2, 2000, 1000)
    assert present(objs) == [True] * 3


def test_gc_without_size_removes_only_stale_temp_files(tmp_path: Path) -> None:
    obj = put(tmp_path, blob(1000, 1), 10 * 86400)
    tmp = tmp_path / ".fusefs" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "stale").write_bytes(b"s" * 10)
    os.utime(tmp / "stale", (NOW - 2 * 86400, NOW - 2 * 86400))
    (tmp / "fresh").write_bytes(b"f")
    (tmp_path / ".fusefs" / "locks").mkdir()
    (tmp_path / ".fusefs" / "locks" / "x.lock").touch()
    os.utime(tmp_path / ".fusefs" / "locks" / "x.lock", (0, 0))
    report = gc(tmp_path, target=None)
    assert (report.removed, report.tmp_removed, report.tmp_freed) == (0, 1, 10)
    assert obj.exists() and (tmp / "fresh").exists() and not (tmp / "stale").exists()
    assert (tmp_path / ".fusefs" / "locks" / "x.lock").exists()


def test_pinned_and_hard_linked_objects_are_kept(tmp_path: Path) -> None:
    pinned, linked, free = (put(tmp_path, blob(1000, i), 300 - i) for i in range(3))
    os.link(linked, tmp_path / "workspace-file")
    fd = os.open(pinned, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        assert scan(tmp_path).pinned == 1
        report = gc(tmp_path, target=0)
        assert (report.removed, report.pinned, report.linked) == (1, 1, 1)
        assert present([pinned, linked, free]) == [True, True, False]
    finally:
        os.close(fd)
    gc(tmp_path, target=0)
    assert not pinned.exists()


def test_an_evicted_object_stays_readable_where_it_is_mapped(tmp_path: Path) -> None:
    data = blob(300 * KIB, 7)
    path = put(tmp_path, data, 100)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        gc(tmp_path, target=0)  # mapped but not pinned: a plain reader, not a mount
        assert not path.exists()
        assert m[:] == data


def test_evictor_keeps_a_running_total_and_sees_other_writers(tmp_path: Path) -> None:
    evictor = Evictor(tmp_path, limit=5000, low_water=1.0)
    objs = [put(tmp_path, blob(1000, i), 1000 - i) for i in range(4)]
    report = evictor.maybe_evict()
    assert (report.evicted, report.total) == (0, 4000)
    evictor.note_added(0)
    objs += [
        put(tmp_path, blob(1000, i), 500 - i) for i in range(4, 7)
    ]  # written by "another process"
    report = evictor.maybe_evict()
    assert (report.evicted, report.freed, report.total) == (2, 2000, 5000)
    assert present(objs) == [False, False, True, True, True, True, True]
    objs[3].chmod(0o644)
    objs[3].unlink()  # removed by someone else
    assert evictor.maybe_evict().total == 4000


def test_evictor_trims_to_its_low_water_mark(tmp_path: Path) -> None:
    objs = [put(tmp_path, blob(1000, i), 100 - i) for i in range(10)]
    report = Evictor(tmp_path, limit=9000, low_water=0.5).maybe_evict()
    assert (report.evicted, report.total) == (6, 4000)
    assert present(objs) == [False] * 6 + [True] * 4


def test_two_evictors_on_one_cache(tmp_path: Path) -> None:
    objs = [put(tmp_path, blob(2000, i), 10_000 - i) for i in range(200)]
    pinned = objs[0]  # the least recently used of all
    fd = os.open(pinned, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    evictors = [Evictor(tmp_path, limit=100_000, low_water=1.0) for _ in range(2)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(evictor: Evictor) -> None:
        try:
            barrier.wait()
            evictor.maybe_evict()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in evictors]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        stats = scan(tmp_path)
        assert stats.bytes <= 100_000
        assert stats.bytes >= 100_000 - 2 * 2000, "evictors racing remove little beyond the limit"
        assert pinned.exists()
        survivors = [p for p in objs if p.exists()]
        assert survivors[1:] == objs[-len(survivors) + 1 :], "the most recently used survive"
        for e in evictors:
            assert e.maybe_evict().total == stats.bytes
    finally:
        os.close(fd)


# -- real mounts ---------------------------------------------------------------------------------

FILE_SIZE = 512 * KIB  # above the daemon's small-file threshold: such objects are mapped
FILES = 12
LIMIT = 2 * 1024 * KIB  # the dataset is 3x the limit


@dataclass
class Dataset:
    repo: Path
    remote: Path
    files: dict[str, bytes]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, dvc: str) -> Dataset:
    root = tmp_path_factory.mktemp("dataset")
    repo = RepoBuilder(root / "work", isolated_env(root / "env"))
    repo.init()
    repo.add_remote("origin", str(root / "remote"))
    files = {f"data/shard-{i:02}.bin": blob(FILE_SIZE, 100 + i) for i in range(FILES)}
    files["data/small/labels.csv"] = b"id,label\n1,cat\n"
    for rel, data in files.items():
        repo.write(rel, data)
    repo.dvc_add("data")
    repo.commit("dataset")
    repo.push()
    repo.drop_cache()
    return Dataset(repo.path, root / "remote", files)


def cache_bytes(cache: Path) -> int:
    return scan(cache).bytes if cache.exists() else 0


@contextmanager
def dataset_mount(ds: Dataset, tmp_path: Path, cache: Path, *args: str) -> Iterator[Path]:
    env = fusefs_env(tmp_path)
    with mounted(
        tmp_path / "mnt", "--repo", str(ds.repo), "--cache-dir", str(cache), *args, env=env
    ) as mnt:
        yield mnt


@pytest.mark.mount
@requires_fuse
def test_dataset_larger_than_the_cache_streams_through(dataset: Dataset, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = fusefs_env(tmp_path)
    bound = LIMIT + FILE_SIZE  # the limit plus the object just fetched
    with dataset_mount(dataset, tmp_path, cache, "--cache-size", "2M") as mnt:
        for epoch in range(2):
            for rel, data in sorted(dataset.files.items()):
                assert (mnt / rel).read_bytes() == data, f"epoch {epoch}: {rel}"
                assert cache_bytes(cache) <= bound + LIMIT, "one poll interval behind at most"
                wait_for(lambda: cache_bytes(cache) <= bound, what="eviction after a fetch")
        wait_for(lambda: cache_bytes(cache) <= LIMIT, what="the cache under its limit")
        held = {o for o in cached_objects(cache) if not o.endswith(".dir")}
        assert 0 < len(held) <= LIMIT // FILE_SIZE
        assert any(o.endswith(".dir") for o in cached_objects(cache)), "manifest kept"

        # While a file is open (mapped, pinned), status counts it and gc keeps it.
        with open(mnt / "data/shard-00.bin", "rb") as f:
            # Out of the kernel's page cache, so the read reaches the daemon and maps it.
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert f.read(10) == dataset.files["data/shard-00.bin"][:10]
            out = json.loads(
                fusefs("cache", "status", "--cache-dir", str(cache), "--json", env=env).stdout
            )
            assert out["pinned"] == 1 and out["objects"] >= 2 and 0 < out["bytes"] <= bound
            (me,) = [m for m in out["mounts"] if m["mountpoint"] == str(mnt)]
            assert me["uses_this_cache"] and me["cache_size"] == LIMIT
            text = fusefs("cache", "status", "--cache-dir", str(cache), env=env).stdout
            assert "pinned:     1 objects, 512.0 KiB" in text
            assert f"  * {mnt} (pid {me['pid']}): {cache.resolve()}, limit 2.0 MiB" in text
            before = cached_objects(cache)
            dry = fusefs(
                "cache", "gc", "--cache-dir", str(cache), "--size", "0", "--dry-run", env=env
            )
            assert dry.stdout.startswith("would remove ")
            assert cached_objects(cache) == before
            gone = fusefs("cache", "gc", "--cache-dir", str(cache), "--size", "0", env=env)
            assert "kept 1 open in mounts" in gone.stdout
            assert "cannot trim to 0 B: the rest is in use" in gone.stderr
            assert cache_bytes(cache) == FILE_SIZE
            assert f.read() == dataset.files["data/shard-00.bin"][10:]
        log = (tmp_path / "fusefs-state" / "logs").glob("*.log")
        assert any("evicted" in p.read_text() for p in log)


@pytest.mark.mount
@requires_fuse
def test_prefetch_caches_a_directory(dataset: Dataset, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = fusefs_env(tmp_path)
    with dataset_mount(dataset, tmp_path, cache) as mnt:
        proc = fusefs("prefetch", "--jobs", "4", str(mnt / "data"), env=env)
        total = FILES * FILE_SIZE + len(dataset.files["data/small/labels.csv"])
        assert proc.stdout.startswith(f"prefetched {FILES + 1} files, 6.0 MiB in ")
        assert proc.stdout.rstrip().endswith("; 0 failed")
        assert proc.stderr == ""  # no progress bar without a terminal
        assert cache_bytes(cache) >= total
        wanted = {hashlib.md5(d).hexdigest() for d in dataset.files.values()}
        assert wanted <= cached_objects(cache)
    # Without the remote's objects, a new mount serves everything from the cache.
    remote = dataset.remote
    moved = remote.with_name("remote.away")
    remote.rename(moved)
    remote.mkdir()
    try:
        with dataset_mount(dataset, tmp_path, cache) as mnt:
            for rel, data in dataset.files.items():
                assert (mnt / rel).read_bytes() == data
    finally:
        shutil.rmtree(remote)
        moved.rename(remote)


@pytest.mark.mount
@requires_fuse
def test_prefetch_reports_failures_and_refuses_paths_outside_mounts(
    dataset: Dataset, tmp_path: Path
) -> None:
    env = fusefs_env(tmp_path)
    outside = fusefs("prefetch", str(tmp_path), env=env, check=False)
    assert (outside.returncode, outside.stderr) == (
        1,
        f"fusefs: {tmp_path} is not inside a fusefs mount\n",
    )
    cache = tmp_path / "cache"
    with dataset_mount(dataset, tmp_path, cache) as mnt:
        victim = dataset.remote / "files" / "md5"
        data = dataset.files["data/shard-03.bin"]
        md5 = hashlib.md5(data).hexdigest()
        path = victim / md5[:2] / md5[2:]
        saved = path.read_bytes()
        path.chmod(0o644)
        path.write_bytes(bytes(len(saved)))  # corrupt on the remote, same size
        try:
            proc = fusefs("prefetch", str(mnt / "data"), env=env, check=False)
        finally:
            path.write_bytes(saved)
        assert proc.returncode == 1
        assert f"fusefs: {mnt}/data/shard-03.bin: Input/output error" in proc.stderr
        assert proc.stdout.startswith(f"prefetched {FILES} files, ")
        assert proc.stdout.rstrip().endswith("; 1 failed")
