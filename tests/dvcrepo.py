"""Build real Git+DVC repositories for tests, and check them out the way a user would.

Everything here drives the real ``git`` and ``dvc`` command-line tools; the only
hand-written DVC files are those of :func:`build_dvc2_repo`, which imitates a
repository produced by DVC 2 (which cannot be installed next to DVC 3).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_DVC = REPO_ROOT / ".venv-dvc" / "bin" / "dvc"

# Fixed base time: commits get increasing timestamps from here so that rebuilding
# the same content yields the same commit ids (modulo the absolute remote paths).
_EPOCH = 1_700_000_000


class DvcNotFoundError(RuntimeError):
    """No usable ``dvc`` executable was found."""


class CommandError(RuntimeError):
    """A subprocess exited non-zero; the message carries its full output."""


def dvc_bin() -> str:
    """Locate the dvc CLI: $FUSEFS_DVC, then ``.venv-dvc/bin/dvc``, then PATH.

    An explicitly set FUSEFS_DVC that does not point at an executable is an error
    rather than a silent fallback, so a typo cannot make tests use another dvc.
    """
    explicit = os.environ.get("FUSEFS_DVC")
    if explicit:
        if os.access(explicit, os.X_OK) and Path(explicit).is_file():
            return explicit
        raise DvcNotFoundError(f"FUSEFS_DVC={explicit!r} is not an executable file")
    if os.access(LOCAL_DVC, os.X_OK):
        return str(LOCAL_DVC)
    found = shutil.which("dvc")
    if found:
        return found
    raise DvcNotFoundError(
        f"dvc CLI not found: set FUSEFS_DVC, run `make dev` to create {LOCAL_DVC}, "
        "or put dvc on PATH"
    )


def isolated_env(state_dir: Path) -> dict[str, str]:
    """Environment for git/dvc that ignores the user's and the system's config.

    dvc keeps per-repo index databases in its "site cache" (``/var/tmp/dvc`` by
    default) and reads global/system config; all of that is redirected into
    ``state_dir`` so tests neither read nor leave state outside their tmp tree.
    """
    dirs = {name: state_dir / name for name in ("home", "xdg", "dvc-global", "dvc-system")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    # The updater would otherwise try the network now and then.
    (dirs["dvc-global"] / "config").write_text("[core]\n    check_update = false\n")
    env = dict(os.environ)
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "DVC_ROOT"):
        env.pop(var, None)
    env.update(
        HOME=str(dirs["home"]),
        XDG_CONFIG_HOME=str(dirs["xdg"]),
        XDG_CACHE_HOME=str(state_dir / "xdg-cache"),
        DVC_GLOBAL_CONFIG_DIR=str(dirs["dvc-global"]),
        DVC_SYSTEM_CONFIG_DIR=str(dirs["dvc-system"]),
        DVC_SITE_CACHE_DIR=str(state_dir / "dvc-site-cache"),
        DVC_NO_ANALYTICS="1",
        DVC_STUDIO_OFFLINE="1",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_AUTHOR_NAME="Fixture Author",
        GIT_AUTHOR_EMAIL="author@fusefs.invalid",
        GIT_COMMITTER_NAME="Fixture Committer",
        GIT_COMMITTER_EMAIL="committer@fusefs.invalid",
        LC_ALL="C.UTF-8",
    )
    return env


_default_env: dict[str, str] | None = None


def _fallback_env() -> dict[str, str]:
    global _default_env
    if _default_env is None:
        _default_env = isolated_env(Path(tempfile.mkdtemp(prefix="fusefs-dvc-env-")))
    return _default_env


def run(cmd: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> str:
    """Run ``cmd`` in ``cwd`` and return its stdout; raise CommandError on failure."""
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=dict(env) if env is not None else _fallback_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        check=False,
    )
    if proc.returncode != 0:
        raise CommandError(
            f"command failed (exit {proc.returncode}) in {cwd}: {cmd}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc.stdout


# ---------------------------------------------------------------------------
# Repository builder


class RepoBuilder:
    """A Git+DVC working tree under construction, driven through the real CLIs."""

    def __init__(self, path: Path, env: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.env = dict(env) if env is not None else isolated_env(path.parent / ".env")
        self._commits = 0

    def git(self, *args: str) -> str:
        return run(["git", *args], self.path, self._dated_env())

    def dvc(self, *args: str, subdir: str = ".") -> str:
        return run([dvc_bin(), *args], self.path / subdir, self.env)

    def _dated_env(self) -> dict[str, str]:
        # Commits and annotated tags get a deterministic, strictly increasing date.
        date = f"@{_EPOCH + 60 * self._commits} +0000"
        return {**self.env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}

    def git_init(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def init(self) -> str:
        """``git init -b main`` + ``dvc init``, committed; returns the commit id."""
        self.git_init()
        self.dvc("init", "-q")
        return self.commit("Initialize DVC")

    def write(self, relpath: str, data: bytes, exec: bool = False) -> None:
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        # Unlink first: a checked-out DVC file may be a link into the cache, and
        # writing through it would corrupt the cached object.
        if target.is_symlink() or target.exists():
            target.unlink()
        target.write_bytes(data)
        target.chmod(0o755 if exec else 0o644)

    def symlink(self, relpath: str, target: str) -> None:
        link = self.path / relpath
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)

    def remove(self, relpath: str) -> None:
        target = self.path / relpath
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()

    def dvc_add(self, *relpaths: str) -> None:
        # One call for all targets: each dvc invocation costs ~0.5 s of startup.
        self.dvc("add", "-q", *relpaths)

    def dvc_remove(self, *dvcfiles: str) -> None:
        """``dvc remove`` (drops the .dvc file and its .gitignore entry) + delete outs."""
        self.dvc("remove", "-q", "--outs", *dvcfiles)

    def git_add(self, *relpaths: str) -> None:
        self.git("add", "--", *relpaths)

    def commit(self, msg: str, stage_all: bool = True) -> str:
        """Commit and return the sha.

        By default everything not ignored is staged (``git add -A``), which is what
        a user does after following dvc's "git add ..." hints: the builder owns the
        whole tree, and dvc's .gitignore entries keep outputs out of git.
        """
        if stage_all:
            self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", msg)
        self._commits += 1
        return self.git("rev-parse", "HEAD").strip()

    def tag(self, name: str, annotated: bool = False) -> None:
        if annotated:
            self.git("tag", "-a", name, "-m", f"Release {name}")
        else:
            self.git("tag", name)

    def add_remote(self, name: str, url: str, default: bool = True) -> None:
        """``dvc remote add``. Use a plain path: dvc 3.67 does not understand
        ``file:///abs`` URLs (it treats them as the relative path ``file:/abs`` and
        pushes into ``<cwd>/file:/abs``), and rejects ``file://host/abs``."""
        self.dvc("remote", "add", *(["-d"] if default else []), name, url)

    def push(self, remote: str | None = None, all_commits: bool = False) -> None:
        args = ["push", "-q"]
        if remote:
            args += ["-r", remote]
        if all_commits:
            args.append("--all-commits")
        self.dvc(*args)

    def drop_cache(self) -> None:
        """Delete the local cache so that objects only exist on the remote(s)."""
        cache = self.path / ".dvc" / "cache"
        if cache.exists():
            shutil.rmtree(cache)

    def stage_add(
        self, name: str, cmd: str, deps: Iterable[str], outs: Iterable[str], wdir: str = "."
    ) -> None:
        """``dvc stage add``; run in ``wdir`` so the dvc.yaml lands in that folder."""
        args = ["stage", "add", "-q", "-n", name]
        for dep in deps:
            args += ["-d", dep]
        for out in outs:
            args += ["-o", out]
        self.dvc(*args, cmd, subdir=wdir)

    def repro(self) -> None:
        # Plain `dvc repro` only looks at ./dvc.yaml; -P covers every dvc.yaml.
        self.dvc("repro", "-q", "-P")


# ---------------------------------------------------------------------------
# The sample DVC 3 repository


@dataclass
class SampleRepo:
    path: Path
    remote: Path
    tags: list[str]
    dvc2: bool = False
    # All remotes by name (the default one is ``remote``); all hold every object.
    remotes: dict[str, Path] = field(default_factory=dict)
    default_remote: str = "origin"
    branch: str = "main"
    # The working tree's own cache, or None if it was dropped (objects remote-only).
    cache: Path | None = None


BLOB = bytes(range(256)) * 4  # binary, contains NUL bytes


def _sample_v1(repo: RepoBuilder) -> None:
    files = {
        "data/images/a/b/x.bin": BLOB,
        "data/images/a/b/y.bin": b"y" * 100,
        "data/images/a b/c.txt": b"sorts before a/ as a string\n",
        "data/images/copy_of_x.bin": BLOB,
        "data/images/ünï cødé/file with space.txt": "grüße\n".encode(),
        "data/images/🦄 emoji/🌈.txt": b"rainbow\n",
        "data/images/empty.txt": b"",
        "data/images/to_delete.txt": b"deleted in v2\n",
        "data/empty.bin": b"",
        "models/sub/model.pt": b"MODEL-v1\x00\x01\x02",
        "raw files/größe.csv": b"a,b\n1,2\n",
    }
    for relpath, data in files.items():
        repo.write(relpath, data)
    repo.write("data/images/run_me.sh", b"#!/bin/sh\necho in a dir output\n", exec=True)
    repo.write("tools/fetch.sh", b"#!/bin/sh\necho dvc-tracked exec\n", exec=True)
    repo.dvc_add("data/images", "data/empty.bin", "models/sub/model.pt", "raw files/größe.csv")
    repo.dvc_add("tools/fetch.sh")
    _sample_git_files_v1(repo)
    _sample_pipelines_v1(repo)


def _sample_git_files_v1(repo: RepoBuilder) -> None:
    repo.write("README.md", b"# sample v1\n")
    repo.write("scripts/run.sh", b"#!/bin/sh\necho v1\n", exec=True)
    repo.write("src/pkg/util/notes.txt", b"plain git file, nested\n")
    repo.symlink("links/readme", "../README.md")
    repo.symlink("links/model", "../models/sub/model.pt")
    repo.symlink("links/dangling", "../does/not/exist")


def _sample_pipelines_v1(repo: RepoBuilder) -> None:
    repo.write("params/input.txt", b"input v1\n")
    repo.write("pipelines/prep/raw.txt", b"raw v1\n")
    repo.stage_add(
        "summarize", "cp params/input.txt summary.txt", ["params/input.txt"], ["summary.txt"]
    )
    shard_cmd = (
        "mkdir -p shards/nested && cp raw.txt shards/part-0.txt "
        "&& : > shards/nested/empty.txt && cp raw.txt 'shards/nested/ümlaut copy.txt'"
    )
    repo.stage_add("shard", shard_cmd, ["raw.txt"], ["shards"], wdir="pipelines/prep")
    repo.stage_add(
        "count", "wc -c < raw.txt > count.txt", ["raw.txt"], ["count.txt"], wdir="pipelines/prep"
    )
    repo.repro()


def _sample_v2(repo: RepoBuilder) -> None:
    repo.write("data/images/a/b/x.bin", BLOB[::-1])
    repo.remove("data/images/to_delete.txt")
    repo.write("data/images/new/added.txt", b"added in v2\n")
    repo.write("data/labels.csv", b"label\ncat\n")
    repo.dvc_add("data/images", "data/labels.csv")
    repo.write("params/input.txt", b"input v2\n")
    repo.write("scripts/run.sh", b"#!/bin/sh\necho v2\n", exec=True)
    repo.repro()


def _sample_v3(repo: RepoBuilder) -> None:
    repo.dvc_remove("data/empty.bin.dvc")
    repo.write("pipelines/prep/raw.txt", b"raw v3, longer\n")
    repo.write("scripts/tool.py", b"#!/usr/bin/env python3\nprint('v3')\n", exec=True)
    repo.symlink("links/images", "../data/images")
    repo.repro()


def build_sample_repo(root: Path) -> SampleRepo:
    """Build the sample repository under ``root``; takes ~8 s (about 15 dvc calls).

    ``root/repo`` is the working tree, ``root/remote`` the default folder remote
    ``origin`` and ``root/backup`` the non-default remote ``backup`` (both absolute
    paths in the committed ``.dvc/config``; both hold every object of every commit,
    ``files/md5/ab/cdef...`` layout). The tree's ``.dvc/cache`` is deleted at the
    end, so objects exist only on the remotes.

    v1 (lightweight tag)
      dvc outputs (``.dvc`` file next to each):
        data/images/            dir: a/b/x.bin, a/b/y.bin, "a b/c.txt",
                                copy_of_x.bin (== x.bin), "ünï cødé/file with space.txt",
                                "🦄 emoji/🌈.txt", empty.txt (empty), to_delete.txt,
                                run_me.sh (exec on disk; dvc does not record it)
        data/empty.bin          empty single file
        models/sub/model.pt     .dvc in the subfolder models/sub/
        "raw files/größe.csv"   unicode + space in file and directory name
        tools/fetch.sh          single file with ``isexec: true``
      pipeline outputs:
        summary.txt             ./dvc.yaml stage ``summarize`` (deps params/input.txt)
        pipelines/prep/shards/  pipelines/prep/dvc.yaml stage ``shard`` (dir: part-0.txt,
                                nested/empty.txt, "nested/ümlaut copy.txt")
        pipelines/prep/count.txt  stage ``count`` in the same dvc.yaml
      git only: README.md, scripts/run.sh (100755), src/pkg/util/notes.txt,
        params/input.txt, pipelines/prep/raw.txt, symlinks links/readme -> ../README.md,
        links/model -> ../models/sub/model.pt, links/dangling -> ../does/not/exist,
        plus the .gitignore files dvc writes next to each output.
    v2 (annotated tag): x.bin changed (copy_of_x.bin not), to_delete.txt deleted,
      data/images/new/added.txt added, new output data/labels.csv, params/input.txt
      (so summary.txt) changed, scripts/run.sh changed.
    v3 (lightweight tag): output data/empty.bin removed (``dvc remove``), raw.txt
      changed (so shards/ and count.txt), new git exec scripts/tool.py, new symlink
      links/images -> ../data/images.
    main: one commit past v3: models/sub/model.pt and README.md changed.
    """
    repo = RepoBuilder(root / "repo", isolated_env(root / "env"))
    remotes = {"origin": root / "remote", "backup": root / "backup"}
    repo.init()
    repo.add_remote("origin", str(remotes["origin"]))
    repo.add_remote("backup", str(remotes["backup"]), default=False)
    _sample_v1(repo)
    repo.commit("v1: images, models, pipelines")
    repo.tag("v1")
    _sample_v2(repo)
    repo.commit("v2: change images, add labels")
    repo.tag("v2", annotated=True)
    _sample_v3(repo)
    repo.commit("v3: drop empty.bin, new raw input")
    repo.tag("v3")
    repo.write("models/sub/model.pt", b"MODEL-main\x00")
    repo.write("README.md", b"# sample, past v3\n")
    repo.dvc_add("models/sub/model.pt")
    repo.commit("main: retrain model")
    for name in remotes:
        repo.push(name, all_commits=True)
    repo.drop_cache()
    return SampleRepo(
        path=repo.path, remote=remotes["origin"], tags=["v1", "v2", "v3"], remotes=remotes
    )


# ---------------------------------------------------------------------------
# A DVC 2-style repository, written by hand

_HASH_CHUNK = 2**20
_TEXT_CHARS = bytes(range(32, 127)) + b"\n\r\t\f\b"


def _is_text(block: bytes) -> bool:
    """dvc_data's ``istextblock``: decides whether DVC 2 hashed with dos2unix."""
    if not block:
        return True
    if b"\x00" in block:
        return False
    return len(block.translate(None, _TEXT_CHARS)) / len(block) <= 0.30


def legacy_md5(data: bytes) -> str:
    """The ``md5`` DVC 2 recorded: CRLF -> LF first if the file looks like text.

    Text-ness is judged on the first 512 bytes, per 1 MiB chunk (as dvc_data does).
    The stored object keeps the original bytes; only the name uses this hash.
    """
    hasher = hashlib.md5(usedforsecurity=False)
    for start in range(0, max(len(data), 1), _HASH_CHUNK):
        chunk = data[start : start + _HASH_CHUNK]
        hasher.update(chunk.replace(b"\r\n", b"\n") if _is_text(chunk[:512]) else chunk)
    return hasher.hexdigest()


def plain_md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def dir_manifest(files: Mapping[str, bytes], hash_fn: Callable[[bytes], str] = legacy_md5) -> bytes:
    """The bytes of a ``.dir`` object: DVC's ``json.dumps(list, sort_keys=True)``.

    Entries are sorted by the relpath *string* (so ``"a b/c"`` sorts before
    ``"a/b"``), and non-ASCII names are ``\\uXXXX``-escaped (ensure_ascii default).
    """
    entries = sorted(
        ({"md5": hash_fn(data), "relpath": rel} for rel, data in files.items()),
        key=lambda entry: entry["relpath"],
    )
    return json.dumps(entries, sort_keys=True).encode("utf-8")


class LegacyStore:
    """Writes objects in DVC 2's layout (``<root>/ab/cdef...``) to cache and remote."""

    def __init__(self, *roots: Path) -> None:
        self.roots = roots

    def put(self, name: str, data: bytes) -> None:
        for root in self.roots:
            obj = root / name[:2] / name[2:]
            obj.parent.mkdir(parents=True, exist_ok=True)
            if obj.exists():
                continue
            obj.write_bytes(data)
            obj.chmod(0o444)  # DVC 2 made cache objects read-only too

    def add_file(self, data: bytes) -> str:
        name = legacy_md5(data)
        self.put(name, data)
        return name

    def add_dir(self, files: Mapping[str, bytes]) -> str:
        for data in files.values():
            self.add_file(data)
        manifest = dir_manifest(files)
        name = plain_md5(manifest) + ".dir"  # JSON has no CRLF: legacy == plain md5
        self.put(name, manifest)
        return name


def _dvc2_out(path: str, md5: str, size: int, nfiles: int | None = None) -> str:
    # DVC 2 key order: md5, size, nfiles, path -- and no `hash: md5` line.
    lines = [f"- md5: {md5}", f"  size: {size}"]
    if nfiles is not None:
        lines.append(f"  nfiles: {nfiles}")
    lines.append(f"  path: {path}")
    return "outs:\n" + "\n".join(lines) + "\n"


def _dvc2_lock(params: bytes, out: bytes) -> str:
    return (
        "schema: '2.0'\nstages:\n  gen:\n    cmd: cp params.txt out.txt\n"
        "    deps:\n    - path: params.txt\n"
        f"      md5: {legacy_md5(params)}\n      size: {len(params)}\n"
        "    outs:\n    - path: out.txt\n"
        f"      md5: {legacy_md5(out)}\n      size: {len(out)}\n"
    )


_DVC2_YAML = (
    "stages:\n  gen:\n    cmd: cp params.txt out.txt\n    deps:\n    - params.txt\n"
    "    outs:\n    - out.txt\n"
)


def _dvc2_commit(
    repo: RepoBuilder,
    store: LegacyStore,
    data: Mapping[str, bytes],
    model: bytes,
    params: bytes,
) -> None:
    """Write one DVC 2 revision: workspace files, metafiles and objects."""
    if (repo.path / "data").exists():
        repo.remove("data")
    for rel, content in data.items():
        repo.write(f"data/{rel}", content)
    dir_name = store.add_dir(data)
    total = sum(len(content) for content in data.values())
    repo.write("data.dvc", _dvc2_out("data", dir_name, total, len(data)).encode())
    repo.write("model.bin", model)
    repo.write("model.bin.dvc", _dvc2_out("model.bin", store.add_file(model), len(model)).encode())
    repo.write("params.txt", params)
    repo.write("out.txt", params)  # what `cp params.txt out.txt` produced
    store.add_file(params)
    repo.write("dvc.lock", _dvc2_lock(params, params).encode())


def _dvc2_skeleton(repo: RepoBuilder, remote: Path) -> None:
    """What ``dvc init`` + ``dvc remote add -d`` wrote in DVC 2."""
    repo.write(".dvc/.gitignore", b"/config.local\n/tmp\n/cache\n")
    repo.write(
        ".dvc/config",
        f"[core]\n    remote = storage\n['remote \"storage\"']\n    url = {remote}\n".encode(),
    )
    repo.write(".dvcignore", b"# Add patterns of files dvc should ignore\n")
    repo.write(".gitignore", b"/data\n/model.bin\n/out.txt\n")
    repo.write("dvc.yaml", _DVC2_YAML.encode())
    repo.write("README.md", b"# made by DVC 2\n")


DVC2_DATA_V1 = {
    "a.txt": b"alpha\n",
    "crlf.txt": b"one\r\ntwo\r\n",  # legacy md5 hashes the LF version
    "sub/b.bin": b"\x00\r\n\x01binary keeps CRLF in its hash\r\n",
    "empty": b"",
    "ü space/ñ.txt": b"unicode\n",
    "a b/c.txt": b"sorts before a.txt\n",
}


def build_dvc2_repo(root: Path) -> SampleRepo:
    """A repository as DVC 2 left it: no ``hash:`` fields, legacy object layout.

    Tags v1 (lightweight) and v2 (annotated; main points at it). Between them
    ``data/a.txt`` changes, ``data/sub/b.bin`` goes, ``data/new.txt`` appears, and
    ``model.bin``/``params.txt``/``out.txt`` change. Objects live in
    ``root/remote/ab/cdef...`` and ``repo/.dvc/cache/ab/cdef...``.
    """
    repo = RepoBuilder(root / "repo", isolated_env(root / "env"))
    remote = root / "remote"
    store = LegacyStore(remote, repo.path / ".dvc" / "cache")
    repo.git_init()
    _dvc2_skeleton(repo, remote)
    _dvc2_commit(repo, store, DVC2_DATA_V1, b"MODEL\x00v1", b"lr: 0.1\n")
    repo.commit("v1 (dvc 2)")
    repo.tag("v1")
    data_v2 = {k: v for k, v in DVC2_DATA_V1.items() if k != "sub/b.bin"}
    data_v2 |= {"a.txt": b"alpha v2\r\n", "new.txt": b"new in v2\n"}
    _dvc2_commit(repo, store, data_v2, b"MODEL\x00v2", b"lr: 0.2\n")
    repo.commit("v2 (dvc 2)")
    repo.tag("v2", annotated=True)
    return SampleRepo(
        path=repo.path,
        remote=remote,
        tags=["v1", "v2"],
        dvc2=True,
        remotes={"storage": remote},
        default_remote="storage",
        cache=repo.path / ".dvc" / "cache",
    )


# ---------------------------------------------------------------------------
# Reference checkout and tree snapshots


def reference_checkout(src_repo: Path, rev: str, dest: Path, remote: str | None = None) -> Path:
    """``git clone`` + ``git checkout REV`` + ``dvc pull`` into ``dest``.

    Uses a private cache (``<dest>.cache`` next to dest, via ``config.local``) and
    private dvc state, so ``src_repo`` and its cache are neither read for data nor
    modified: every object must come from the remote.
    """
    env = isolated_env(dest.parent / f"{dest.name}.env")
    run(["git", "clone", "-q", "--no-checkout", str(src_repo), str(dest)], dest.parent, env)
    run(["git", "-c", "advice.detachedHead=false", "checkout", "-q", rev], dest, env)
    cache = dest.parent / f"{dest.name}.cache"
    run([dvc_bin(), "config", "--local", "cache.dir", str(cache)], dest, env)
    run([dvc_bin(), "pull", "-q", *(["-r", remote] if remote else [])], dest, env)
    return dest


FileEntry = tuple[Literal["file"], bool, str, int]
Entry = tuple[Literal["dir"]] | FileEntry | tuple[Literal["link"], str]

SNAPSHOT_EXCLUDES = (".git", ".dvc/cache", ".dvc/tmp", ".dvc/config.local")
"""Paths (relative to the tree root, and only there) that :func:`snapshot` skips.

These are what a working tree has beyond ``git checkout REV && dvc pull``'s
*content*: ``.git``; ``.dvc/cache`` (objects, if the cache is in-repo);
``.dvc/tmp`` (dvc's runtime state: ``lock``, ``btime``, ``rwlock``, ``updater``...,
created by any dvc command); ``.dvc/config.local`` (machine-local config, which
reference_checkout writes to point the cache elsewhere). All three ``.dvc``
entries are listed in the git-tracked ``.dvc/.gitignore``. Everything else is kept,
including git-tracked ``.dvc/config``, ``.dvc/.gitignore`` and ``.dvcignore``.
"""


def _file_entry(path: Path, st: os.stat_result) -> FileEntry:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ("file", bool(st.st_mode & stat.S_IXUSR), digest, st.st_size)


def _entry(path: Path) -> Entry:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ("dir",)
    if stat.S_ISREG(st.st_mode):
        return _file_entry(path, st)
    raise ValueError(f"unexpected file type {stat.filemode(st.st_mode)} at {path}")


def snapshot(root: Path, exclude: Iterable[str] = SNAPSHOT_EXCLUDES) -> dict[str, Entry]:
    """Describe every path under ``root`` (not following symlinks), minus ``exclude``.

    Keys are POSIX paths relative to root (non-UTF-8 bytes kept via surrogateescape,
    which is what ``os`` returns for str paths). ``is_exec`` is the owner-exec bit.
    """
    skipped = set(exclude)
    result: dict[str, Entry] = {}
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        with os.scandir(root / rel_dir) as entries:
            for item in entries:
                rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
                if rel in skipped:
                    continue
                result[rel] = _entry(Path(item.path))
                if result[rel][0] == "dir":
                    pending.append(rel)
    return dict(sorted(result.items()))


def diff_snapshots(a: Mapping[str, Entry], b: Mapping[str, Entry]) -> list[str]:
    """Human-readable differences between two snapshots, sorted by path."""
    lines = []
    for path in sorted(a.keys() | b.keys()):
        left, right = a.get(path), b.get(path)
        if left == right:
            continue
        if right is None:
            lines.append(f"only in first:  {path!r} {left}")
        elif left is None:
            lines.append(f"only in second: {path!r} {right}")
        else:
            lines.append(f"differs:        {path!r} {left} != {right}")
    return lines
