"""Large objects through a real mount: served range by range while they download.

Objects of at least `STREAM_MIN` bytes are fetched in parallel ranges into a sparse temp file;
reads wait only for what they touch; the object lands in the cache only after its md5 matched.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fusefs.filesystem import STREAM_MIN
from tests.dvcrepo import RepoBuilder
from tests.mounting import cached_objects, fusefs_env, mounted, requires_fuse, wait_for

pytestmark = [requires_fuse, pytest.mark.mount]

SIZE = STREAM_MIN + (9 << 20) + 12345  # several chunks and a ragged last one


@dataclass
class Big:
    repo: Path
    remote: Path
    data: bytes
    md5: str


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, dvc: str) -> Big:
    root = tmp_path_factory.mktemp("big")
    repo = RepoBuilder(root / "repo")
    repo.init()
    repo.add_remote("origin", str(root / "remote"))
    data = random.Random(7).randbytes(SIZE)
    repo.write("big.bin", data)
    repo.dvc_add("big.bin")
    repo.commit("a large object")
    repo.push()
    repo.drop_cache()
    return Big(repo.path, root / "remote", data, hashlib.md5(data).hexdigest())


def _remote_object(big: Big) -> Path:
    return big.remote / "files" / "md5" / big.md5[:2] / big.md5[2:]


def test_random_and_sequential_reads_while_streaming(big: Big, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    cache = tmp_path / "cache"
    with mounted(
        tmp_path / "mnt", "--repo", str(big.repo), "--cache-dir", str(cache), env=env
    ) as mnt:
        rng = random.Random(1)
        with open(mnt / "big.bin", "rb") as f:
            f.seek(SIZE - 100)  # a footer first, as a parquet reader does
            assert f.read() == big.data[-100:]
            for _ in range(20):
                offset = rng.randrange(SIZE)
                f.seek(offset)
                assert f.read(70_000) == big.data[offset : offset + 70_000]
            f.seek(0)
            assert f.read() == big.data
        wait_for(lambda: big.md5 in cached_objects(cache), what="the verified object")
    assert not list((cache / ".fusefs" / "tmp").iterdir())


def test_corrupt_large_object_fails_and_is_dropped(big: Big, tmp_path: Path) -> None:
    remote_copy = _remote_object(big)
    pristine = remote_copy.read_bytes()
    remote_copy.chmod(0o644)
    corrupted = bytearray(pristine)
    corrupted[-5] ^= 0xFF  # in the last chunk: the first MiB still arrives as usual
    remote_copy.write_bytes(bytes(corrupted))
    try:
        env = fusefs_env(tmp_path)
        cache = tmp_path / "cache"
        with mounted(
            tmp_path / "mnt", "--repo", str(big.repo), "--cache-dir", str(cache), env=env
        ) as mnt:
            with open(mnt / "big.bin", "rb") as f:
                first = f.read(1 << 20)
            assert first == big.data[: 1 << 20], "early ranges are served before the check"
            deadline = time.monotonic() + 30
            while True:  # once the final check failed, every read answers EIO
                try:
                    fd = os.open(mnt / "big.bin", os.O_RDONLY | os.O_DIRECT)
                except OSError:
                    fd = os.open(mnt / "big.bin", os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.pread(fd, 4096, SIZE - 4096)
                except OSError as exc:
                    assert exc.errno == errno.EIO
                    break
                finally:
                    os.close(fd)
                assert time.monotonic() < deadline, "the corrupt object was never refused"
            assert big.md5 not in cached_objects(cache)
        log = next((tmp_path / "fusefs-state" / "logs").iterdir()).read_text()
        assert f"object {big.md5}" in log and "dropped" in log
    finally:
        remote_copy.write_bytes(pristine)
        remote_copy.chmod(0o444)


def test_two_daemons_on_one_cache_download_once(big: Big, tmp_path: Path) -> None:
    env_a, env_b = fusefs_env(tmp_path / "a"), fusefs_env(tmp_path / "b")
    cache = tmp_path / "shared-cache"
    args = ("--repo", str(big.repo), "--cache-dir", str(cache))
    with (
        mounted(tmp_path / "ma", *args, env=env_a) as ma,
        mounted(tmp_path / "mb", *args, env=env_b) as mb,
    ):
        readers = [
            subprocess.Popen(["sha256sum", str(m / "big.bin")], stdout=subprocess.PIPE, text=True)
            for m in (ma, mb, ma, mb)
        ]
        sums = {p.communicate()[0].split()[0] for p in readers}
        assert sums == {hashlib.sha256(big.data).hexdigest()}
        wait_for(lambda: big.md5 in cached_objects(cache), what="the verified object")
    logs = [
        next((tmp_path / side / "fusefs-state" / "logs").iterdir()).read_text()
        for side in ("a", "b")
    ]
    assert sum(log.count(f"object {big.md5} ") for log in logs) == 1, "one download in all"
    assert not list((cache / ".fusefs" / "tmp").iterdir())
