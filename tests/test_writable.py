"""Writable mounts through the kernel: edits, `fusefs commit`, and what real DVC reads back.

The reference for every commit is the same edits made in a plain checkout followed by
`dvc add` + `git commit`: a fresh `git clone` + `dvc pull` of both must give the same tree,
and their metafiles must be byte-identical.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.dvcrepo import (
    SampleRepo,
    diff_snapshots,
    dvc_bin,
    isolated_env,
    reference_checkout,
    run,
    snapshot,
)
from tests.mounting import (
    force_unmount,
    fusefs,
    fusefs_env,
    is_mounted,
    mounted,
    requires_fuse,
    wait_for,
)

pytestmark = [requires_fuse, pytest.mark.mount]


@pytest.fixture
def origin(sample_repo: SampleRepo, tmp_path: Path) -> Path:
    """A bare copy of the sample repository, so commits do not touch the shared fixture."""
    bare = tmp_path / "origin.git"
    run(["git", "clone", "-q", "--bare", str(sample_repo.path), str(bare)], tmp_path)
    return bare


def _rw_mount(
    origin: Path | str, tmp_path: Path, env: dict[str, str]
) -> AbstractContextManager[Path]:
    """`fusefs mount --rw` of the origin's main branch, with a private cache."""
    return mounted(
        tmp_path / "mnt",
        "--repo",
        str(origin),
        "--rev",
        "main",
        "--rw",
        "--cache-dir",
        str(tmp_path / "cache"),
        env=env,
    )


def _edits(root: Path) -> None:
    """The same user edits, applied to a mount or to a checkout."""
    images = root / "data/images"
    (images / "a/b/x.bin").write_bytes(b"rewritten through the mount\n")
    (images / "a/b/y.bin").unlink()
    (images / "batch7/deep").mkdir(parents=True)
    for i in range(5):
        (images / "batch7/deep" / f"img {i}.bin").write_bytes(bytes([i]) * (1000 * i))
    (images / "copy_of_x.bin").rename(images / "batch7/moved.bin")
    with open(images / "empty.txt", "r+b") as f:
        f.seek(10)
        f.write(b"sparse")
    (root / "new_folder/sub").mkdir(parents=True)
    (root / "new_folder/sub/ñew file.txt").write_bytes(b"brand new output\n")
    (root / "src/extra.bin").write_bytes(b"\x00\x01 a new single-file output\n")
    (root / "raw files/größe.csv").unlink()


def _reference_commit(origin: Path, tmp_path: Path) -> Path:
    work = tmp_path / "reference"
    env = isolated_env(tmp_path / "reference.env")
    run(["git", "clone", "-q", str(origin), str(work)], tmp_path, env)
    run([dvc_bin(), "config", "--local", "cache.dir", str(tmp_path / "reference.cache")], work, env)
    run([dvc_bin(), "pull", "-q"], work, env)
    _edits(work)
    run([dvc_bin(), "remove", "-q", "raw files/größe.csv.dvc"], work, env)
    run([dvc_bin(), "add", "-q", "data/images", "new_folder", "src/extra.bin"], work, env)
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-q", "-m", "reference"], work, env)
    return work


def test_commit_round_trip_matches_dvc_add(origin: Path, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    with _rw_mount(origin, tmp_path, env) as mnt:
        _edits(mnt)
        status = json.loads(fusefs("status", "--json", str(mnt), env=env).stdout)
        kinds = {c["path"]: c["kind"] for c in status["changes"]}
        assert kinds["data/images/a/b/y.bin"] == "deleted"
        assert kinds["new_folder"] == "added"
        fusefs(
            "commit",
            str(mnt),
            "-m",
            "edits through the mount",
            "--push",
            "--author",
            "Ada <ada@example.com>",
            env=env,
        )
        assert json.loads(fusefs("status", "--json", str(mnt), env=env).stdout)["changes"] == []
        assert (mnt / "new_folder.dvc").is_file(), "the mount shows the new commit"
        assert (mnt / "data/images/batch7/moved.bin").is_file()
    log = run(["git", "log", "-1", "--format=%an <%ae>|%s", "main"], origin)
    assert log.strip() == "Ada <ada@example.com>|edits through the mount"

    work = _reference_commit(_fresh_copy(origin, tmp_path), tmp_path)
    reference = reference_checkout(work, "main", tmp_path / "reference-clone")
    ours = reference_checkout(origin, "main", tmp_path / "ours")
    assert diff_snapshots(snapshot(reference), snapshot(ours)) == []
    for meta in [
        "data/images.dvc",
        "new_folder.dvc",
        "src/extra.bin.dvc",
        ".gitignore",
        "src/.gitignore",
    ]:
        assert (ours / meta).read_bytes() == (reference / meta).read_bytes(), meta
    assert not (ours / "raw files/größe.csv.dvc").exists()
    env2 = isolated_env(tmp_path / "status.env")
    out = run([dvc_bin(), "status"], ours, env2)
    assert "up to date" in out, out
    run([dvc_bin(), "add", "-q", "data/images", "new_folder"], ours, env2)
    assert run(["git", "status", "--porcelain"], ours, env2) == ""


def _fresh_copy(origin: Path, tmp_path: Path) -> Path:
    """The origin as it was before the commit (its parent), for the reference edits."""
    copy = tmp_path / "before.git"
    run(["git", "clone", "-q", "--bare", str(origin), str(copy)], tmp_path)
    run(["git", "update-ref", "refs/heads/main", "main~1"], copy)
    return copy


def _errno(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as exc:
        return exc.errno or 0
    return 0


def test_read_only_parts_and_unsupported_kinds(origin: Path, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    with _rw_mount(origin, tmp_path, env) as mnt:
        erofs = [
            lambda: (mnt / "README.md").write_bytes(b"x"),
            lambda: (mnt / "data/images.dvc").write_bytes(b"x"),
            lambda: (mnt / "summary.txt").write_bytes(b"x"),
            lambda: (mnt / "pipelines/prep/shards/part-0.txt").unlink(),
            lambda: (mnt / "pipelines/prep/shards/new.txt").write_bytes(b"x"),
            lambda: (mnt / ".dvc/config").write_bytes(b"x"),
            lambda: (mnt / "src/x.dvc").write_bytes(b"x"),
            lambda: (mnt / "src").rename(mnt / "src2"),
            lambda: (mnt / "scripts/run.sh").unlink(),
        ]
        for i, attempt in enumerate(erofs):
            assert _errno(attempt) == errno.EROFS, i
        (mnt / "data/images/f.bin").write_bytes(b"ok")
        assert _errno(lambda: os.symlink("f.bin", mnt / "data/images/l")) == errno.EPERM
        assert _errno(lambda: os.link(mnt / "data/images/f.bin", mnt / "data/images/h")) == (
            errno.EPERM
        )
        assert _errno(lambda: os.mkfifo(mnt / "data/images/fifo")) == errno.EPERM
        assert (mnt / "data/images/f.bin").read_bytes() == b"ok"


def test_posix_operations_behave_like_a_disk(origin: Path, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    with _rw_mount(origin, tmp_path, env) as mnt:
        d = mnt / "data/images"
        with open(d / "w.bin", "wb") as f:
            f.write(b"a" * 100)
            f.seek(1000)
            f.write(b"b")
            f.flush()
            os.fsync(f.fileno())
        assert (d / "w.bin").stat().st_size == 1001
        assert (d / "w.bin").read_bytes() == b"a" * 100 + b"\0" * 900 + b"b"
        os.truncate(d / "w.bin", 50)
        assert (d / "w.bin").read_bytes() == b"a" * 50
        (d / "a").rename(d / "renamed")
        assert sorted(os.listdir(d / "renamed/b")) == ["x.bin", "y.bin"]
        assert not (d / "a").exists()
        os.chmod(d / "w.bin", 0o755)
        assert (d / "w.bin").stat().st_mode & 0o111
        with pytest.raises(OSError) as info:
            (d / "renamed").rmdir()
        assert info.value.errno == errno.ENOTEMPTY
        shutil.rmtree(d / "renamed")
        assert not (d / "renamed").exists()
        x = mnt / "models/sub/model.pt"
        original = x.read_bytes()
        with open(x, "r+b") as f:
            f.seek(2)
            f.write(b"ZZ")
        assert x.read_bytes() == original[:2] + b"ZZ" + original[4:]


def test_rw_needs_a_branch(origin: Path, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    (tmp_path / "mnt").mkdir()
    for rev in ["v1", "main~1"]:
        proc = fusefs(
            "mount",
            "--repo",
            str(origin),
            "--rev",
            rev,
            "--rw",
            str(tmp_path / "mnt"),
            env=env,
            check=False,
        )
        force_unmount(tmp_path / "mnt")
        assert proc.returncode == 1
        assert "--rw needs --rev to be a branch" in proc.stderr


def test_branch_moved_refuses_and_keeps_staging(origin: Path, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    with _rw_mount(origin, tmp_path, env) as mnt:
        (mnt / "data/images/new.txt").write_bytes(b"staged\n")
        run(["git", "update-ref", "refs/heads/main", "main~1"], origin)
        proc = fusefs("commit", str(mnt), "-m", "x", env=env, check=False)
        assert proc.returncode == 1
        assert "moved" in proc.stderr
        assert (mnt / "data/images/new.txt").read_bytes() == b"staged\n"
        status = json.loads(fusefs("status", "--json", str(mnt), env=env).stdout)
        assert [c["path"] for c in status["changes"]] == ["data/images/new.txt"]


def test_discard(origin: Path, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    with _rw_mount(origin, tmp_path, env) as mnt:
        before = (mnt / "data/images/a/b/x.bin").read_bytes()
        (mnt / "data/images/a/b/x.bin").write_bytes(b"changed")
        (mnt / "data/images/keep.txt").write_bytes(b"kept")
        fusefs("discard", str(mnt), str(mnt / "data/images/a"), env=env)
        assert (mnt / "data/images/a/b/x.bin").read_bytes() == before
        assert (mnt / "data/images/keep.txt").read_bytes() == b"kept"
        fusefs("discard", str(mnt), env=env)
        assert not (mnt / "data/images/keep.txt").exists()


def test_fsynced_writes_survive_sigkill_and_torn_tail(origin: Path, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [
        "mount",
        "--repo",
        str(origin),
        "--rev",
        "main",
        "--rw",
        "--cache-dir",
        str(tmp_path / "cache"),
        str(mnt),
    ]
    writer = (
        "import os, sys\n"
        "d = sys.argv[1]\n"
        "os.makedirs(d, exist_ok=True)\n"
        "for i in range(10**6):\n"
        "    with open(f'{d}/f{i:05d}', 'wb') as f:\n"
        "        f.write(bytes([i % 251]) * (i * 37 % 5000))\n"
        "        f.flush(); os.fsync(f.fileno())\n"
        "    print(i, flush=True)\n"
    )
    try:
        fusefs(*args, env=env)
        pid = json.loads(next(Path(env["FUSEFS_STATE_DIR"], "mounts").glob("*.json")).read_text())[
            "pid"
        ]
        proc = subprocess.Popen(
            ["python3", "-c", writer, str(mnt / "new_folder")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        done = -1
        for line in proc.stdout:
            done = int(line)
            if done >= 40:
                os.kill(pid, signal.SIGKILL)
                break
        proc.kill()
        proc.wait()
        wait_for(lambda: not is_mounted(mnt), what="auto_unmount after SIGKILL")
        staging = next(Path(env["FUSEFS_STATE_DIR"], "staging").iterdir())
        journal = max(staging.glob("journal.*"))
        with open(journal, "ab") as f:
            f.write(b"FJRN\x01\x02torn record")
        fusefs(*args, env=env)
        for i in range(done + 1):
            data = (mnt / "new_folder" / f"f{i:05d}").read_bytes()
            assert data == bytes([i % 251]) * (i * 37 % 5000), i
        fusefs("umount", str(mnt), env=env)
    finally:
        force_unmount(mnt)


def test_rw_mount_of_a_url_pushes_the_commit(origin: Path, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    before = run(["git", "rev-parse", "main"], origin).strip()
    with _rw_mount(f"file://{origin}", tmp_path, env) as mnt:
        (mnt / "data/images/from_url.txt").write_bytes(b"committed through a URL mount\n")
        fusefs("commit", str(mnt), "-m", "via url", "--push", env=env)
    after = run(["git", "rev-parse", "main"], origin).strip()
    assert after != before
    assert run(["git", "rev-parse", "main~1"], origin).strip() == before
    clone = reference_checkout(origin, "main", tmp_path / "clone")
    assert (clone / "data/images/from_url.txt").read_bytes() == b"committed through a URL mount\n"
