"""The fixture factory itself: built repositories must be what they claim to be."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from tests.dvcrepo import (
    BLOB,
    DVC2_DATA_V1,
    SNAPSHOT_EXCLUDES,
    DvcNotFoundError,
    Entry,
    SampleRepo,
    diff_snapshots,
    dir_manifest,
    dvc_bin,
    isolated_env,
    legacy_md5,
    plain_md5,
    reference_checkout,
    run,
    snapshot,
)

REVS = ["v1", "v2", "v3", "main"]


@pytest.fixture(scope="module")
def checkouts(sample_repo: SampleRepo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One reference checkout per revision of the sample repo."""
    root = tmp_path_factory.mktemp("checkouts")
    return {rev: reference_checkout(sample_repo.path, rev, root / rev) for rev in REVS}


def git(repo: Path, *args: str) -> str:
    return run(["git", *args], repo, isolated_env(repo.parent / ".git-env")).strip()


def file_entry(data: bytes, exec: bool = False) -> Entry:
    return ("file", exec, hashlib.sha256(data).hexdigest(), len(data))


# --- dvc_bin -----------------------------------------------------------------


def test_dvc_bin_honours_fusefs_dvc(monkeypatch: pytest.MonkeyPatch, dvc: str) -> None:
    monkeypatch.setenv("FUSEFS_DVC", dvc)
    assert dvc_bin() == dvc


def test_dvc_bin_rejects_bad_fusefs_dvc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FUSEFS_DVC", str(tmp_path / "missing"))
    with pytest.raises(DvcNotFoundError, match="FUSEFS_DVC"):
        dvc_bin()


# --- sample repository: git side -----------------------------------------------


def test_tags_and_branch(sample_repo: SampleRepo) -> None:
    repo = sample_repo.path
    assert sample_repo.tags == ["v1", "v2", "v3"]
    assert git(repo, "tag", "--list").split() == sample_repo.tags
    assert git(repo, "cat-file", "-t", "v1") == "commit"  # lightweight
    assert git(repo, "cat-file", "-t", "v2") == "tag"  # annotated
    assert git(repo, "rev-parse", "main~1") == git(repo, "rev-parse", "v3^{commit}")
    assert git(repo, "symbolic-ref", "--short", "HEAD") == "main"


def test_remotes_are_committed_with_absolute_urls(sample_repo: SampleRepo) -> None:
    for rev in sample_repo.tags:
        config = git(sample_repo.path, "show", f"{rev}:.dvc/config")
        assert "remote = origin" in config
        assert f"url = {sample_repo.remote}" in config
        assert f"url = {sample_repo.remotes['backup']}" in config
    assert sample_repo.remote.is_absolute()


def test_objects_only_on_remotes(sample_repo: SampleRepo) -> None:
    assert sample_repo.cache is None
    assert not (sample_repo.path / ".dvc" / "cache").exists()
    listings = [
        sorted(p.relative_to(remote) for p in remote.rglob("*") if p.is_file())
        for remote in sample_repo.remotes.values()
    ]
    assert listings[0] == listings[1]
    assert all(path.parts[:2] == ("files", "md5") for path in listings[0])


def test_git_modes_in_tree(sample_repo: SampleRepo) -> None:
    tree = git(sample_repo.path, "ls-tree", "-r", "v3").splitlines()
    modes = {line.split("\t")[1]: line.split()[0] for line in tree}
    assert modes["scripts/run.sh"] == "100755"
    assert modes["links/readme"] == "120000"
    assert modes["src/pkg/util/notes.txt"] == "100644"
    assert modes["pipelines/prep/dvc.lock"] == "100644"
    assert "data/images/a/b/x.bin" not in modes  # dvc output, gitignored


# --- sample repository: reference checkouts ----------------------------------------

# Paths every revision has, and what they are.
COMMON = {
    "data/images/a/b/y.bin": "file",
    "data/images/ünï cødé/file with space.txt": "file",
    "data/images/🦄 emoji/🌈.txt": "file",
    "data/images/a b/c.txt": "file",
    "models/sub/model.pt": "file",
    "models/sub/model.pt.dvc": "file",
    "raw files/größe.csv": "file",
    "summary.txt": "file",
    "pipelines/prep/shards/nested/empty.txt": "file",
    "pipelines/prep/shards/nested/ümlaut copy.txt": "file",
    "pipelines/prep/count.txt": "file",
    "src/pkg/util/notes.txt": "file",
    "links/readme": "link",
    "links/dangling": "link",
    ".dvc/config": "file",
}
ONLY = {
    "data/images/to_delete.txt": {"v1"},
    "data/images/new/added.txt": {"v2", "v3", "main"},
    "data/labels.csv": {"v2", "v3", "main"},
    "data/empty.bin": {"v1", "v2"},
    "data/empty.bin.dvc": {"v1", "v2"},
    "scripts/tool.py": {"v3", "main"},
    "links/images": {"v3", "main"},
}


@pytest.mark.parametrize("rev", REVS)
def test_checkout_has_expected_paths(checkouts: dict[str, Path], rev: str) -> None:
    snap = snapshot(checkouts[rev])
    for path, kind in COMMON.items():
        assert snap[path][0] == kind, path
    for path, revs in ONLY.items():
        assert (path in snap) == (rev in revs), path


def test_checkout_contents_v1(checkouts: dict[str, Path]) -> None:
    snap = snapshot(checkouts["v1"])
    assert snap["data/images/a/b/x.bin"] == file_entry(BLOB)
    assert snap["data/images/copy_of_x.bin"] == snap["data/images/a/b/x.bin"]
    assert snap["data/images/empty.txt"] == file_entry(b"")
    assert snap["data/empty.bin"] == file_entry(b"")
    assert snap["models/sub/model.pt"] == file_entry(b"MODEL-v1\x00\x01\x02")
    assert snap["summary.txt"] == file_entry(b"input v1\n")
    assert snap["pipelines/prep/shards/part-0.txt"] == file_entry(b"raw v1\n")
    assert snap["links/model"] == ("link", "../models/sub/model.pt")


def test_exec_bits(checkouts: dict[str, Path]) -> None:
    snap = snapshot(checkouts["v1"])
    assert snap["scripts/run.sh"][:2] == ("file", True)  # git 100755
    assert snap["tools/fetch.sh"][:2] == ("file", True)  # dvc file output with `isexec: true`
    # .dir manifests carry no isexec: dvc pull drops the bit inside directory outputs.
    assert snap["data/images/run_me.sh"][:2] == ("file", False)


def test_changes_between_tags(checkouts: dict[str, Path]) -> None:
    v1, v2, v3, main = (snapshot(checkouts[rev]) for rev in REVS)
    assert v2["data/images/a/b/x.bin"] == file_entry(BLOB[::-1])
    assert v2["data/images/copy_of_x.bin"] == file_entry(BLOB)
    assert v2["summary.txt"] == file_entry(b"input v2\n")
    assert v3["pipelines/prep/shards/part-0.txt"] == file_entry(b"raw v3, longer\n")
    assert v3["pipelines/prep/count.txt"] == file_entry(b"15\n")
    assert main["models/sub/model.pt"] == file_entry(b"MODEL-main\x00")
    assert v3["models/sub/model.pt"] == v1["models/sub/model.pt"]
    changed = {line.split("'")[1] for line in diff_snapshots(v1, v2)}
    assert {"data/images/to_delete.txt", "data/labels.csv", "data/images/new"} <= changed


def test_pull_from_non_default_remote(
    sample_repo: SampleRepo, checkouts: dict[str, Path], tmp_path: Path
) -> None:
    dest = reference_checkout(sample_repo.path, "v2", tmp_path / "co", remote="backup")
    assert diff_snapshots(snapshot(dest), snapshot(checkouts["v2"])) == []


def test_pipeline_in_subfolder(checkouts: dict[str, Path]) -> None:
    lock = yaml.safe_load((checkouts["v1"] / "pipelines/prep/dvc.lock").read_text())
    outs = {out["path"]: out for stage in lock["stages"].values() for out in stage["outs"]}
    assert outs["shards"]["md5"].endswith(".dir")
    assert outs["shards"]["nfiles"] == 3
    assert outs["count.txt"]["hash"] == "md5"


def test_dir_manifest_bytes_match_dvc3(sample_repo: SampleRepo, checkouts: dict[str, Path]) -> None:
    """dir_manifest (used for the DVC 2 repo) reproduces what dvc 3 itself stored."""
    images = checkouts["v1"] / "data/images"
    files = {
        p.relative_to(images).as_posix(): p.read_bytes() for p in images.rglob("*") if p.is_file()
    }
    meta = yaml.safe_load((checkouts["v1"] / "data/images.dvc").read_text())["outs"][0]
    stored = sample_repo.remote / "files/md5" / meta["md5"][:2] / meta["md5"][2:]
    assert len(files) == meta["nfiles"]
    assert dir_manifest(files, plain_md5) == stored.read_bytes()


def test_reference_checkout_leaves_source_untouched(
    sample_repo: SampleRepo, tmp_path: Path
) -> None:
    before = snapshot(sample_repo.path, exclude=())
    reference_checkout(sample_repo.path, "v1", tmp_path / "co")
    assert diff_snapshots(before, snapshot(sample_repo.path, exclude=())) == []


# --- DVC 2 repository ------------------------------------------------------------


def test_dvc2_metafiles_have_no_hash_field(dvc2_repo: SampleRepo) -> None:
    repo = dvc2_repo.path
    for rev in dvc2_repo.tags:
        for name in ("data.dvc", "model.bin.dvc", "dvc.lock"):
            text = git(repo, "show", f"{rev}:{name}")
            assert "md5: " in text
            assert "hash:" not in text


def test_dvc2_objects_use_legacy_layout(dvc2_repo: SampleRepo) -> None:
    assert dvc2_repo.cache is not None
    for root in (dvc2_repo.remote, dvc2_repo.cache):
        objects = [p.relative_to(root) for p in root.rglob("*") if p.is_file()]
        assert objects
        for obj in objects:
            assert len(obj.parts) == 2 and len(obj.parts[0]) == 2, obj
    crlf = DVC2_DATA_V1["crlf.txt"]
    name = legacy_md5(crlf)
    assert name == plain_md5(b"one\ntwo\n") != plain_md5(crlf)
    assert (dvc2_repo.remote / name[:2] / name[2:]).read_bytes() == crlf


@pytest.mark.parametrize("rev", ["v1", "v2"])
def test_dvc2_repo_pulls_with_dvc3(
    dvc2_repo: SampleRepo, dvc: str, tmp_path: Path, rev: str
) -> None:
    dest = reference_checkout(dvc2_repo.path, rev, tmp_path / "co")
    snap = snapshot(dest)
    assert snap["data/crlf.txt"] == file_entry(DVC2_DATA_V1["crlf.txt"])
    assert snap["data/ü space/ñ.txt"] == file_entry(b"unicode\n")
    assert ("data/sub/b.bin" in snap) == (rev == "v1")
    assert ("data/new.txt" in snap) == (rev == "v2")
    assert snap["model.bin"] == file_entry(b"MODEL\x00" + rev.encode())
    assert snap["out.txt"] == snap["params.txt"]
    # dvc 3 re-hashes the workspace with md5-dos2unix here: proves the metafiles' hashes.
    status = run([dvc, "status"], dest, isolated_env(tmp_path / "env"))
    assert "up to date" in status
    # dvc 3 recognised the outputs as legacy: its cache uses the legacy layout too.
    cache = tmp_path / "co.cache"
    assert not (cache / "files").exists()
    assert any(cache.glob("??/*.dir"))


# --- snapshot ------------------------------------------------------------------------


def test_snapshot_excludes_runtime_files(checkouts: dict[str, Path]) -> None:
    root = checkouts["v1"]
    for rel in (".git", ".dvc/tmp", ".dvc/config.local"):
        assert (root / rel).exists(), rel
    snap = snapshot(root)
    prefixes = tuple(f"{path}/" for path in SNAPSHOT_EXCLUDES)
    assert not [key for key in snap if key in SNAPSHOT_EXCLUDES or key.startswith(prefixes)]
    assert {".dvc", ".dvc/config", ".dvc/.gitignore", ".dvcignore"} <= snap.keys()


def test_snapshot_entries(tmp_path: Path) -> None:
    (tmp_path / "d/.git").mkdir(parents=True)  # only the top-level .git is skipped
    (tmp_path / "d/.git/f").write_bytes(b"x")
    (tmp_path / "run").write_bytes(b"#!")
    (tmp_path / "run").chmod(0o755)
    (tmp_path / "to_d").symlink_to("d")
    os.mkdir(os.path.join(os.fsencode(tmp_path), b"bad\xff"))
    (tmp_path / ".git").mkdir()
    assert snapshot(tmp_path) == {
        "bad\udcff": ("dir",),
        "d": ("dir",),
        "d/.git": ("dir",),
        "d/.git/f": file_entry(b"x"),
        "run": file_entry(b"#!", exec=True),
        "to_d": ("link", "d"),  # not followed
    }


def test_diff_snapshots() -> None:
    a: dict[str, Entry] = {"same": ("dir",), "gone": ("dir",), "ch": ("link", "x")}
    b: dict[str, Entry] = {"same": ("dir",), "new": ("dir",), "ch": ("link", "y")}
    assert diff_snapshots(a, b) == [
        "differs:        'ch' ('link', 'x') != ('link', 'y')",
        "only in first:  'gone' ('dir',)",
        "only in second: 'new' ('dir',)",
    ]
    assert diff_snapshots(a, a) == []
