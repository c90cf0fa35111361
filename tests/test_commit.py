"""The commit engine against the real dvc CLI.

The same edits are made twice on one base commit: (a) in a real checkout with ``dvc add`` /
``dvc remove`` / ``git commit``, (b) as a `CommitRequest` given to `make_commit`. The Git trees
must be identical (so every ``.dvc`` file and ``.gitignore`` is byte-identical), and a fresh
clone of (b) + ``dvc pull`` must give (a)'s working tree, with ``dvc status`` clean.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import pytest

from fusefs import commit as commit_module
from fusefs.cache import Cache
from fusefs.commit import (
    BranchMovedError,
    CommitError,
    CommitRequest,
    OutputPlan,
    Progress,
    RemovedOutput,
    StagedFile,
    make_commit,
    remote_put,
)
from fusefs.config import RemoteConfig
from fusefs.errors import RemoteError
from fusefs.git import Repo, locate
from fusefs.objects import HashInfo
from fusefs.remote import Remote
from tests.dvcrepo import (
    DVC2_DATA_V1,
    RepoBuilder,
    build_dvc2_repo,
    diff_snapshots,
    isolated_env,
    legacy_md5,
    reference_checkout,
    run,
    snapshot,
)

IMAGES = {
    "a/b/x.bin": bytes(range(256)) * 8,
    "a/y.txt": b"y\n",
    "a b/ü space.txt": "grüße\n".encode(),
    "del.txt": b"deleted by the commit\n",
    "keep.txt": b"kept\n",
}
CHANGED_IMAGES = {"a/b/x.bin": b"x changed\n", "new/added.txt": b"added\n"}
NEW_FOLDER = {"one.txt": b"one\n", "sub/two.bin": b"\x00\x01two"}
EXTRA = b"#!/bin/sh\necho extra\n"
MODEL_V2 = b"MODEL v2\x00"
LOG = b"a log\n"


@dataclass(frozen=True)
class Base:
    work: Path  # the builder's working tree (main checked out)
    remote: Path  # the remote in .dvc/config (the round trip pushes to it)
    pristine: Path  # a copy of it as the base commit left it
    commit: str


def _git(cwd: Path, *args: str) -> str:
    return run(["git", *args], cwd, isolated_env(cwd.parent / f".{cwd.name}.env"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, dvc: str) -> Base:
    root = tmp_path_factory.mktemp("commit")
    repo = RepoBuilder(root / "work", isolated_env(root / "env"))
    repo.init()
    repo.add_remote("origin", str(root / "remote"))
    for rel, data in IMAGES.items():
        repo.write(f"data/images/{rel}", data)
    repo.write("single.bin", b"removed by the commit\n")
    repo.write("model.pt", b"MODEL v1\x00")
    repo.write("src/code.py", b"print('git file')\n")
    repo.write(".gitignore", b"*.log\n")  # dvc adds no entry for run.log
    repo.dvc_add("data/images", "single.bin", "model.pt")
    commit = repo.commit("base")
    repo.push()
    shutil.copytree(root / "remote", root / "pristine")
    return Base(repo.path, root / "remote", root / "pristine", commit)


@pytest.fixture
def upstream(base: Base, tmp_path: Path) -> Path:
    """A private bare copy of the base repository."""
    dest = tmp_path / "upstream.git"
    _git(tmp_path, "clone", "-q", "--bare", str(base.work), str(dest))
    return dest


@pytest.fixture
def open_repo(tmp_path: Path) -> Iterator[Callable[[Path], Repo]]:
    """Opens repositories the way fusefs does, and closes them after the test."""
    repos: list[Repo] = []

    def opener(path: Path) -> Repo:
        repos.append(Repo(locate(str(path), tmp_path / "state")))
        return repos[-1]

    yield opener
    for repo in repos:
        repo.close()


def _reference(base: Base, dest: Path) -> str:
    """(a): the edits made in a real checkout with dvc; returns the commit."""
    env = isolated_env(dest.parent / f"{dest.name}.env")
    run(["git", "clone", "-q", str(base.work), str(dest)], dest.parent, env)
    repo = RepoBuilder(dest, env)
    repo.dvc("config", "--local", "cache.dir", str(dest.parent / f"{dest.name}.cache"))
    repo.dvc("pull", "-q")
    for rel, data in CHANGED_IMAGES.items():
        repo.write(f"data/images/{rel}", data)
    repo.remove("data/images/del.txt")
    for rel, data in NEW_FOLDER.items():
        repo.write(f"new_folder/{rel}", data)
    repo.write("src/extra.bin", EXTRA, exec=True)
    repo.write("model.pt", MODEL_V2)
    repo.write("run.log", LOG)
    repo.dvc_add("data/images", "new_folder", "src/extra.bin", "model.pt", "run.log")
    repo.dvc_remove("single.bin.dvc")
    return repo.commit("edits")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _opener(data: bytes) -> Callable[[], BinaryIO]:
    return lambda: io.BytesIO(data)


def _changed(relpath: str, data: bytes, isexec: bool = False) -> StagedFile:
    return StagedFile(relpath, len(data), None, _opener(data), isexec)


def _unchanged(relpath: str, data: bytes) -> StagedFile:
    return StagedFile(relpath, len(data), _md5(data), None)


def _blob(git_dir: Path, rev: str, path: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{rev}:{path}"], capture_output=True, check=True
    ).stdout


def _request(upstream: Path, base: str, **changes: object) -> CommitRequest:
    images = {k: v for k, v in IMAGES.items() if k != "del.txt"}
    files = [_unchanged(rel, data) for rel, data in images.items() if rel not in CHANGED_IMAGES]
    files += [_changed(rel, data) for rel, data in CHANGED_IMAGES.items()]
    outputs = [
        OutputPlan(
            "data/images",
            True,
            "data/images.dvc",
            _blob(upstream, base, "data/images.dvc"),
            files,
        ),
        OutputPlan(
            "new_folder",
            True,
            "new_folder.dvc",
            None,
            [_changed(rel, data) for rel, data in NEW_FOLDER.items()],
        ),
        OutputPlan("src/extra.bin", False, "src/extra.bin.dvc", None, [_changed("", EXTRA, True)]),
        OutputPlan(
            "model.pt",
            False,
            "model.pt.dvc",
            _blob(upstream, base, "model.pt.dvc"),
            [_changed("", MODEL_V2)],
        ),
        OutputPlan("run.log", False, "run.log.dvc", None, [_changed("", LOG)]),
    ]
    request = CommitRequest(
        base=base,
        branch="main",
        message="edits",
        author=None,
        outputs=outputs,
        removed=[RemovedOutput("single.bin", "single.bin.dvc")],
        push=True,
    )
    return replace(request, **changes)  # type: ignore[arg-type]


def _remote(path: Path) -> Remote:
    return Remote(RemoteConfig("origin", str(path)))


def _tip(git_dir: Path, branch: str = "main") -> str:
    return _git(git_dir, "rev-parse", f"refs/heads/{branch}").strip()


def _tree_listing(git_dir: Path, rev: str) -> list[str]:
    return _git(git_dir, "ls-tree", "-r", "--full-tree", rev).splitlines()


def test_round_trip_matches_dvc(
    base: Base, upstream: Path, tmp_path: Path, open_repo: Callable[[Path], Repo], dvc: str
) -> None:
    expected = _reference(base, tmp_path / "a")
    events: list[Progress] = []
    repo = open_repo(upstream)
    result = make_commit(
        repo,
        Cache(tmp_path / "fcache"),
        _remote(base.remote),
        _request(upstream, base.commit),
        progress=events.append,
    )
    assert _tip(upstream) == result.commit
    assert _git(upstream, "rev-parse", f"{result.commit}^").strip() == base.commit
    # Same tree as dvc + git: every .dvc file and .gitignore byte-identical.
    a_listing = _tree_listing(tmp_path / "a", expected)
    assert _tree_listing(upstream, result.commit) == a_listing
    assert any(line.endswith("\t.gitignore") for line in a_listing)
    assert any(line.endswith("\tsrc/.gitignore") for line in a_listing)
    assert _blob(upstream, result.commit, ".gitignore") == b"*.log\n/model.pt\n/new_folder\n"
    assert result.metafiles == [
        "data/images.dvc",
        "model.pt.dvc",
        "new_folder.dvc",
        "run.log.dvc",
        "src/extra.bin.dvc",
        "single.bin.dvc",
    ]
    # 7 new file objects + 2 new .dir objects, all pushed (the remote had none of them).
    assert (result.objects_added, result.objects_pushed) == (9, 9)
    modes = {oct(p.stat().st_mode & 0o777) for p in base.remote.rglob("*") if p.is_file()}
    assert modes == {"0o444"}  # read-only, as dvc push leaves them
    uploads = [e for e in events if e.phase == "upload"]
    assert uploads[-1].objects_done == uploads[-1].objects_total == 9
    assert uploads[-1].bytes_done == uploads[-1].bytes_total == result.bytes_pushed

    clone = reference_checkout(upstream, result.commit, tmp_path / "clone")
    assert diff_snapshots(snapshot(tmp_path / "a"), snapshot(clone)) == []
    env = isolated_env(tmp_path / "clone.env")
    status = run([dvc, "status"], clone, env)
    assert "Data and pipelines are up to date" in status
    outs = ["data/images", "new_folder", "src/extra.bin", "model.pt", "run.log"]
    run([dvc, "add", "-q", *outs], clone, env)
    assert run(["git", "status", "--porcelain"], clone, env) == ""


def test_branch_moved_is_refused(
    base: Base, upstream: Path, tmp_path: Path, open_repo: Callable[[Path], Repo]
) -> None:
    tree = _git(upstream, "rev-parse", f"{base.commit}^{{tree}}").strip()
    other = _git(upstream, "commit-tree", tree, "-p", base.commit, "-m", "elsewhere").strip()
    _git(upstream, "update-ref", "refs/heads/main", other)
    before = _git(upstream, "for-each-ref")
    repo = open_repo(upstream)
    with pytest.raises(BranchMovedError, match=r"branch main moved .*staged changes kept"):
        make_commit(
            repo, Cache(tmp_path / "c"), _remote(base.remote), _request(upstream, base.commit)
        )
    assert _git(upstream, "for-each-ref") == before


def test_push_to_git_url(
    base: Base, upstream: Path, tmp_path: Path, open_repo: Callable[[Path], Repo]
) -> None:
    mirror = tmp_path / "mirror.git"
    _git(tmp_path, "clone", "-q", "--bare", str(upstream), str(mirror))
    repo = open_repo(mirror)
    request = _request(mirror, base.commit, author="Jane Doe <jane@example.org>", push=False)
    result = make_commit(repo, Cache(tmp_path / "c"), None, request, push_url=f"file://{upstream}")
    assert _tip(upstream) == _tip(mirror) == result.commit
    assert _git(upstream, "log", "-1", "--format=%an <%ae>").strip() == (
        "Jane Doe <jane@example.org>"
    )
    assert result.objects_pushed == 0


def test_push_url_refuses_moved_branch(
    base: Base, upstream: Path, tmp_path: Path, open_repo: Callable[[Path], Repo]
) -> None:
    mirror = tmp_path / "mirror.git"
    _git(tmp_path, "clone", "-q", "--bare", str(upstream), str(mirror))
    tree = _git(upstream, "rev-parse", f"{base.commit}^{{tree}}").strip()
    other = _git(upstream, "commit-tree", tree, "-p", base.commit, "-m", "pushed by someone")
    _git(upstream, "update-ref", "refs/heads/main", other.strip())
    repo = open_repo(mirror)
    with pytest.raises(BranchMovedError, match="moved since the mount's base"):
        make_commit(
            repo,
            Cache(tmp_path / "c"),
            None,
            _request(mirror, base.commit, push=False),
            push_url=f"file://{upstream}",
        )
    assert _tip(mirror) == base.commit
    assert _tip(upstream) == other.strip()


def test_unusable_remote_leaves_branch(
    base: Base, upstream: Path, tmp_path: Path, open_repo: Callable[[Path], Repo]
) -> None:
    """The remote's folder cannot be created (a file is in the way): the upload fails."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"")
    cache = Cache(tmp_path / "c")
    shutil.copytree(base.pristine / "files", cache.root / "files")  # base objects are cached
    with pytest.raises(RemoteError, match=r"cannot (check|upload)"):
        make_commit(
            open_repo(upstream),
            cache,
            _remote(blocker / "remote"),
            _request(upstream, base.commit),
        )
    assert _tip(upstream) == base.commit


def test_upload_failing_midway_leaves_branch(
    base: Base,
    upstream: Path,
    tmp_path: Path,
    open_repo: Callable[[Path], Repo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote_dir = tmp_path / "remote"
    shutil.copytree(base.pristine, remote_dir)
    uploaded: list[HashInfo] = []

    def flaky_put(remote: Remote, hinfo: HashInfo, local_path: Path) -> None:
        if len(uploaded) == 3:
            raise RemoteError(f"cannot upload object {hinfo}: connection reset")
        remote_put(remote, hinfo, local_path)
        uploaded.append(hinfo)

    monkeypatch.setattr(commit_module, "remote_put", flaky_put)
    with pytest.raises(RemoteError, match="connection reset"):
        make_commit(
            open_repo(upstream),
            Cache(tmp_path / "c"),
            _remote(remote_dir),
            _request(upstream, base.commit),
        )
    assert _tip(upstream) == base.commit
    assert len(uploaded) == 3 and not any(h.is_dir for h in uploaded)  # files go first


def test_unsupported_metafile_refused_before_work(
    base: Base, upstream: Path, tmp_path: Path, open_repo: Callable[[Path], Repo]
) -> None:
    request = _request(upstream, base.commit)
    commented = b"# keep me\n" + request.outputs[0].existing  # type: ignore[operator]
    request.outputs[0] = replace(request.outputs[0], existing=commented)
    repo = open_repo(upstream)
    cache = Cache(tmp_path / "c")
    with pytest.raises(CommitError, match=r"data/images.dvc cannot be rewritten.*comments"):
        make_commit(repo, cache, _remote(base.remote), request)
    assert not (cache.root / "files").exists()
    assert _tip(upstream) == base.commit


def test_checked_out_branch_refused(
    base: Base, tmp_path: Path, open_repo: Callable[[Path], Repo]
) -> None:
    repo = open_repo(base.work)
    with pytest.raises(CommitError, match="checked out in"):
        make_commit(
            repo,
            Cache(tmp_path / "c"),
            None,
            _request(base.work / ".git", base.commit, push=False),
        )
    assert _tip(base.work / ".git") == base.commit


def test_dvc2_output_is_rehashed(
    dvc: str, tmp_path: Path, open_repo: Callable[[Path], Repo]
) -> None:
    """Re-adding a DVC 2 output: every file hashed again (plain md5), ``hash: md5`` added,
    objects in the DVC 3 layout -- as ``dvc add`` in DVC 3 does."""
    dvc2_repo = build_dvc2_repo(tmp_path / "dvc2")  # pushed to: the shared one stays DVC 2-only
    data = {k: v for k, v in DVC2_DATA_V1.items() if k != "sub/b.bin"}
    data |= {"a.txt": b"alpha v2\r\n", "new.txt": b"changed by the commit\n"}
    ref = tmp_path / "a"
    env = isolated_env(tmp_path / "a.env")
    run(["git", "clone", "-q", str(dvc2_repo.path), str(ref)], tmp_path, env)
    builder = RepoBuilder(ref, env)
    builder.dvc("config", "--local", "cache.dir", str(tmp_path / "a.cache"))
    builder.dvc("pull", "-q", "data.dvc")
    builder.write("data/new.txt", data["new.txt"])
    builder.dvc_add("data")
    expected = builder.commit("rehash")

    upstream = tmp_path / "upstream.git"
    _git(tmp_path, "clone", "-q", "--bare", str(dvc2_repo.path), str(upstream))
    base = _tip(upstream)
    files = [StagedFile(rel, len(b), legacy_md5(b), _opener(b)) for rel, b in data.items()]
    plan = OutputPlan("data", True, "data.dvc", _blob(upstream, base, "data.dvc"), files, True)
    request = CommitRequest(base, "main", "rehash", None, [plan], [], push=True)
    remote = _remote(dvc2_repo.remote)
    result = make_commit(open_repo(upstream), Cache(tmp_path / "c"), remote, request)
    assert _tree_listing(upstream, result.commit) == _tree_listing(ref, expected)
    assert b"hash: md5" in _blob(upstream, result.commit, "data.dvc")
    clone = reference_checkout(upstream, result.commit, tmp_path / "clone")
    assert (clone / "data" / "new.txt").read_bytes() == data["new.txt"]
    assert (clone / "data" / "a.txt").read_bytes() == data["a.txt"]
