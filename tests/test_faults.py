"""Bad input through a real mount: clear errors, the rest of the revision keeps serving.

One repository holds good outputs next to hostile ones (broken YAML, an alias bomb, a manifest
whose entry climbs out with `..`, an output path leaving the repository); objects are then
removed or corrupted on the folder remote to check what a read answers.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dvcrepo import RepoBuilder
from tests.mounting import cached_objects, fusefs_env, mounted, requires_fuse

pytestmark = [requires_fuse, pytest.mark.mount]

BOMB = b"""outs:
- &a [x, x, x, x, x, x, x, x, x]
- &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
- &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
- &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
- &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
- &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
- &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
"""


@dataclass
class Hostile:
    path: Path
    remote: Path


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _put(remote: Path, data: bytes, suffix: str = "") -> str:
    oid = _md5(data) + suffix
    target = remote / "files" / "md5" / oid[:2] / oid[2:]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return oid


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, dvc: str) -> Hostile:
    root = tmp_path_factory.mktemp("hostile")
    repo = RepoBuilder(root / "repo")
    repo.init()
    remote = root / "remote"
    repo.add_remote("origin", str(remote))
    repo.write("good/a.txt", b"alpha\n")
    repo.write("good/sub/b.txt", b"beta\n")
    repo.write("victim.bin", b"will go missing\n")
    repo.write("corrupt.bin", b"will be corrupted\n")
    repo.write("holey/present.txt", b"present\n")
    repo.write("holey/absent.txt", b"absent from the remote\n")
    repo.dvc_add("good", "victim.bin", "corrupt.bin", "holey")
    repo.push()
    repo.drop_cache()
    manifest = json.dumps(
        [{"md5": _md5(b"x"), "relpath": "../../escape.txt"}, {"md5": _md5(b"y"), "relpath": "ok"}]
    ).encode()
    evil = _put(remote, manifest, ".dir")
    _put(remote, b"x")
    repo.write("evil.dvc", f"outs:\n- md5: {evil}\n  hash: md5\n  path: evil\n".encode())
    repo.write("broken.dvc", b"outs: [\n  - md5: {\n")
    repo.write("bomb.dvc", BOMB)
    repo.write("climb.dvc", f"outs:\n- md5: {_md5(b'x')}\n  hash: md5\n  path: ../x\n".encode())
    repo.commit("good and hostile outputs")
    victim = remote / "files" / "md5" / _md5(b"will go missing\n")[:2]
    (victim / _md5(b"will go missing\n")[2:]).unlink()
    absent = _md5(b"absent from the remote\n")
    (remote / "files" / "md5" / absent[:2] / absent[2:]).unlink()
    corrupt = remote / "files" / "md5" / _md5(b"will be corrupted\n")[:2]
    target = corrupt / _md5(b"will be corrupted\n")[2:]
    target.chmod(0o644)
    target.write_bytes(b"will be CORRUPTED\n")
    return Hostile(repo.path, remote)


@pytest.fixture
def mnt(hostile: Hostile, tmp_path: Path) -> Iterator[Path]:
    env = fusefs_env(tmp_path)
    with mounted(
        tmp_path / "mnt",
        "--repo",
        str(hostile.path),
        "--cache-dir",
        str(tmp_path / "cache"),
        env=env,
    ) as path:
        yield path


def _errno(fn: object) -> int:
    try:
        fn()  # type: ignore[operator]
    except OSError as exc:
        return exc.errno or 0
    return 0


def test_good_outputs_serve_next_to_hostile_ones(mnt: Path) -> None:
    assert (mnt / "good/a.txt").read_bytes() == b"alpha\n"
    assert (mnt / "good/sub/b.txt").read_bytes() == b"beta\n"
    names = set(os.listdir(mnt))
    assert {"broken.dvc", "bomb.dvc", "evil.dvc", "climb.dvc"} <= names, "metafiles are served"
    assert "broken" not in names and "x" not in names
    assert not (mnt.parent / "x").exists()


def test_manifest_entry_climbing_out_is_eio(mnt: Path) -> None:
    assert (mnt / "evil").is_dir()
    assert _errno(lambda: os.listdir(mnt / "evil")) == errno.EIO
    assert _errno(lambda: (mnt / "evil" / "ok").stat()) == errno.EIO
    assert (mnt / "good/a.txt").read_bytes() == b"alpha\n"


def test_missing_object_is_eio_and_mount_survives(mnt: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    assert _errno(lambda: (mnt / "victim.bin").read_bytes()) == errno.EIO
    assert time.monotonic() - start < 10
    assert (mnt / "good/a.txt").read_bytes() == b"alpha\n"
    log = next((tmp_path / "fusefs-state" / "logs").iterdir()).read_text()
    assert _md5(b"will go missing\n") in log and "origin" in log


def test_corrupted_object_is_eio_and_never_cached(mnt: Path, tmp_path: Path) -> None:
    bad = _md5(b"will be corrupted\n")
    for _ in range(2):
        assert _errno(lambda: (mnt / "corrupt.bin").read_bytes()) == errno.EIO
    assert bad not in cached_objects(tmp_path / "cache")
    assert not list((tmp_path / "cache" / ".fusefs" / "tmp").iterdir())
    log = next((tmp_path / "fusefs-state" / "logs").iterdir()).read_text()
    assert f"object {bad}" in log


def test_dead_remote_then_back(hostile: Hostile, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    moved = hostile.remote.with_name("remote-away")
    with mounted(
        tmp_path / "mnt",
        "--repo",
        str(hostile.path),
        "--cache-dir",
        str(tmp_path / "cache"),
        env=env,
    ) as mnt:
        hostile.remote.rename(moved)
        try:
            assert _errno(lambda: os.listdir(mnt / "good")) == errno.EIO
        finally:
            moved.rename(hostile.remote)
        assert sorted(os.listdir(mnt / "good")) == ["a.txt", "sub"]
        assert (mnt / "good/a.txt").read_bytes() == b"alpha\n"


def test_missing_member_of_a_directory_output(mnt: Path, tmp_path: Path) -> None:
    assert sorted(os.listdir(mnt / "holey")) == ["absent.txt", "present.txt"]
    assert (mnt / "holey/present.txt").read_bytes() == b"present\n"
    assert _errno(lambda: (mnt / "holey/absent.txt").read_bytes()) == errno.EIO
    log = next((tmp_path / "fusefs-state" / "logs").iterdir()).read_text()
    assert _md5(b"absent from the remote\n") in log


def test_per_output_remote_and_remote_option(tmp_path: Path, dvc: str) -> None:
    repo = RepoBuilder(tmp_path / "repo")
    repo.init()
    repo.add_remote("origin", str(tmp_path / "origin-remote"))
    repo.add_remote("backup", str(tmp_path / "backup-remote"), default=False)
    repo.write("a.txt", b"only on backup, no remote: field\n")
    repo.write("b.txt", b"only on backup, remote: backup\n")
    repo.dvc_add("a.txt", "b.txt")
    repo.push(remote="backup")
    meta = repo.path / "b.txt.dvc"
    meta.write_text(meta.read_text() + "  remote: backup\n")
    repo.commit("b names its remote")
    repo.drop_cache()
    env = fusefs_env(tmp_path)
    with mounted(
        tmp_path / "m1", "--repo", str(repo.path), "--cache-dir", str(tmp_path / "c1"), env=env
    ) as mnt:
        assert (mnt / "b.txt").read_bytes() == b"only on backup, remote: backup\n"
        assert _errno(lambda: (mnt / "a.txt").read_bytes()) == errno.EIO
    with mounted(
        tmp_path / "m2",
        "--repo",
        str(repo.path),
        "--remote",
        "backup",
        "--cache-dir",
        str(tmp_path / "c2"),
        env=env,
    ) as mnt:
        assert (mnt / "a.txt").read_bytes() == b"only on backup, no remote: field\n"
