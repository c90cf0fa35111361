"""Real kernel mounts of real repositories, compared with `git checkout REV && dvc pull`."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.dvcrepo import (
    SampleRepo,
    diff_snapshots,
    reference_checkout,
    run,
    snapshot,
)
from tests.mounting import (
    cached_objects,
    force_unmount,
    fusefs,
    fusefs_env,
    is_mounted,
    mounted,
    requires_fuse,
    wait_for,
)

pytestmark = [requires_fuse, pytest.mark.mount]


def _mount_rev(
    repo: SampleRepo, rev: str, cache: Path, tmp_path: Path, env: dict[str, str]
) -> AbstractContextManager[Path]:
    """`fusefs mount --repo REPO --rev REV --cache-dir CACHE TMP/mnt`."""
    return mounted(
        tmp_path / "mnt", "--repo", str(repo.path), "--rev", rev, "--cache-dir", str(cache), env=env
    )


def _same_as_checkout(repo: SampleRepo, rev: str, tmp_path: Path, *args: str) -> None:
    expected = snapshot(reference_checkout(repo.path, rev, tmp_path / "ref"))
    env = fusefs_env(tmp_path)
    cache = tmp_path / "cache"
    with mounted(
        tmp_path / "mnt",
        "--repo",
        str(repo.path),
        "--rev",
        rev,
        "--cache-dir",
        str(cache),
        *args,
        env=env,
    ) as mnt:
        got = snapshot(mnt)
    assert diff_snapshots(expected, got) == []


@pytest.mark.parametrize("rev", ["v1", "v2", "v3", "main", "HEAD~1"])
def test_revision_matches_checkout(sample_repo: SampleRepo, rev: str, tmp_path: Path) -> None:
    _same_as_checkout(sample_repo, rev, tmp_path)


@pytest.mark.parametrize("rev", ["v1", "v2"])
def test_dvc2_revision_matches_checkout(
    dvc2_repo: SampleRepo, rev: str, tmp_path: Path, dvc: str
) -> None:
    _same_as_checkout(dvc2_repo, rev, tmp_path)


def test_bare_repository_and_url(sample_repo: SampleRepo, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    run(["git", "clone", "-q", "--bare", str(sample_repo.path), str(bare)], tmp_path)
    expected = snapshot(reference_checkout(sample_repo.path, "v2", tmp_path / "ref"))
    env = fusefs_env(tmp_path)
    for i, repo in enumerate([str(bare), f"file://{bare}", f"file://{bare}"]):
        with mounted(tmp_path / f"m{i}", "--repo", repo, "--rev", "v2", env=env) as mnt:
            assert diff_snapshots(expected, snapshot(mnt)) == []
    clones = list((tmp_path / "fusefs-state" / "repos").iterdir())
    assert len(clones) == 1, "a URL is cloned once, then fetched"


def test_default_repo_is_cwd_and_default_rev_is_head(
    sample_repo: SampleRepo, tmp_path: Path
) -> None:
    env = fusefs_env(tmp_path)
    head = run(["git", "rev-parse", "HEAD"], sample_repo.path).strip()
    main = run(["git", "rev-parse", "main"], sample_repo.path).strip()
    assert head == main
    with mounted(
        tmp_path / "mnt", "--cache-dir", str(tmp_path / "c"), env=env, cwd=sample_repo.path
    ) as mnt:
        assert (mnt / "README.md").read_bytes() == (sample_repo.path / "README.md").read_bytes()


def test_listing_downloads_nothing_and_reading_fetches_only_that(
    sample_repo: SampleRepo, tmp_path: Path
) -> None:
    env = fusefs_env(tmp_path)
    cache = tmp_path / "cache"
    with _mount_rev(sample_repo, "v3", cache, tmp_path, env) as mnt:
        sizes = {str(p.relative_to(mnt)): p.lstat().st_size for p in mnt.rglob("*")}
        assert sizes["data/images/a/b/x.bin"] > 0
        assert all(o.endswith(".dir") for o in cached_objects(cache)), "only manifests listed"
        data = (mnt / "data/images/a/b/x.bin").read_bytes()
        assert len(data) == sizes["data/images/a/b/x.bin"]
        fetched = {o for o in cached_objects(cache) if not o.endswith(".dir")}
        assert len(fetched) == 1


def test_concurrent_readers_share_one_download(sample_repo: SampleRepo, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    cache = tmp_path / "cache"
    with _mount_rev(sample_repo, "v3", cache, tmp_path, env) as mnt:
        target = mnt / "models/sub/model.pt"
        procs = [subprocess.Popen(["cat", str(target)], stdout=subprocess.PIPE) for _ in range(8)]
        outs = {p.communicate()[0] for p in procs}
        assert len(outs) == 1
    assert not list((cache / ".fusefs" / "tmp").iterdir()), "no temp files left"


def test_metadata_stable_inodes_commit_mtime(sample_repo: SampleRepo, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    commit_time = int(run(["git", "show", "-s", "--format=%ct", "v2^{commit}"], sample_repo.path))
    with _mount_rev(sample_repo, "v2", tmp_path / "c", tmp_path, env) as mnt:
        first = {p: p.lstat().st_ino for p in mnt.rglob("*")}
        assert len(set(first.values())) == len(first), "inode numbers are unique"
        for path, inode in first.items():
            st = path.lstat()
            assert st.st_ino == inode
            assert int(st.st_mtime) == commit_time
        st = (mnt / "scripts/run.sh").stat()
        assert st.st_mode & 0o111, "git exec bit"
        assert os.readlink(mnt / "links/readme") == os.readlink(sample_repo.path / "links/readme")


def test_writes_are_refused_with_erofs(sample_repo: SampleRepo, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    with _mount_rev(sample_repo, "v1", tmp_path / "c", tmp_path, env) as mnt:
        attempts = [
            lambda: (mnt / "new.txt").write_bytes(b"x"),
            lambda: os.open(mnt / "README.md", os.O_RDWR),
            lambda: (mnt / "data/images/newdir").mkdir(),
            lambda: (mnt / "README.md").unlink(),
            lambda: (mnt / "README.md").rename(mnt / "R.md"),
            lambda: os.chmod(mnt / "README.md", 0o777),
        ]
        for attempt in attempts:
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == errno.EROFS


def test_allow_other_lets_another_user_read(sample_repo: SampleRepo, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to act as another user")
    env = fusefs_env(tmp_path)
    cache = tmp_path / "c"
    public = Path(tempfile.mkdtemp(prefix="fusefs-allow-other-"))  # pytest's tmp is 0700
    public.chmod(0o755)
    try:
        with mounted(
            public / "mnt",
            "--repo",
            str(sample_repo.path),
            "--rev",
            "v1",
            "--cache-dir",
            str(cache),
            "--allow-other",
            env=env,
        ) as mnt:
            out = subprocess.run(
                ["runuser", "-u", "nobody", "--", "cat", str(mnt / "README.md")],
                capture_output=True,
                check=False,
            )
            assert out.returncode == 0, out.stderr
            assert out.stdout == (mnt / "README.md").read_bytes()
    finally:
        shutil.rmtree(public, ignore_errors=True)


# -- lifecycle ---------------------------------------------------------------------------------


def _daemon_pid(env: dict[str, str], mountpoint: Path) -> int:
    import json

    records = list(Path(env["FUSEFS_STATE_DIR"], "mounts").glob("*.json"))
    for record in records:
        data = json.loads(record.read_text())
        if data["mountpoint"] == str(mountpoint):
            return int(data["pid"])
    raise AssertionError("no mount record")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_umount_waits_for_daemon(sample_repo: SampleRepo, tmp_path: Path) -> None:
    env = fusefs_env(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fusefs("mount", "--repo", str(sample_repo.path), str(mnt), env=env)
    pid = _daemon_pid(env, mnt)
    fusefs("umount", str(mnt), env=env)
    assert not is_mounted(mnt)
    assert not _alive(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_signals_leave_no_dead_mount(sample_repo: SampleRepo, tmp_path: Path, sig: int) -> None:
    env = fusefs_env(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        fusefs("mount", "--repo", str(sample_repo.path), str(mnt), env=env)
        pid = _daemon_pid(env, mnt)
        os.kill(pid, sig)
        wait_for(lambda: not is_mounted(mnt), what="the mount to go away")
        wait_for(lambda: not _alive(pid), what="the daemon to exit")
        fusefs("mount", "--repo", str(sample_repo.path), str(mnt), env=env)
        assert (mnt / "README.md").exists()
        fusefs("umount", str(mnt), env=env)
    finally:
        force_unmount(mnt)


# -- user errors -------------------------------------------------------------------------------


def _mount_error(tmp_path: Path, *args: str, cwd: Path | None = None) -> str:
    env = fusefs_env(tmp_path)
    proc = fusefs("mount", *args, env=env, cwd=cwd, check=False)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unknown_revision(sample_repo: SampleRepo, tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    msg = _mount_error(
        tmp_path, "--repo", str(sample_repo.path), "--rev", "nope", str(tmp_path / "mnt")
    )
    assert "unknown revision 'nope'" in msg


def test_not_a_dvc_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    run(["git", "init", "-q"], plain)
    (plain / "f").write_text("x")
    run(["git", "add", "f"], plain)
    run(["git", "commit", "-q", "-m", "x"], plain)
    (tmp_path / "mnt").mkdir()
    msg = _mount_error(tmp_path, "--repo", str(plain), str(tmp_path / "mnt"))
    assert "not a DVC repository" in msg


def test_not_a_git_repository(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    msg = _mount_error(tmp_path, "--repo", str(tmp_path), str(tmp_path / "mnt"))
    assert "not a Git repository" in msg


def test_mountpoint_missing_or_busy(sample_repo: SampleRepo, tmp_path: Path) -> None:
    msg = _mount_error(tmp_path, "--repo", str(sample_repo.path), str(tmp_path / "nowhere"))
    assert "does not exist" in msg
    env = fusefs_env(tmp_path)
    with mounted(tmp_path / "mnt", "--repo", str(sample_repo.path), env=env) as mnt:
        msg = _mount_error(tmp_path, "--repo", str(sample_repo.path), str(mnt))
        assert "busy" in msg
