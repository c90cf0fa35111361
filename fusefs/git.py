"""Read access to a Git repository through its plumbing.

One long-lived `git cat-file --batch` process serves object reads (guarded by a lock: callers
run in worker threads); everything else is a short `git` invocation. Nothing here writes to a
user's working tree or index.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^[^/:]+@[^/:]+:")


class GitError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class TreeEntry:
    mode: int
    kind: str  # "blob", "tree" or "commit"
    sha: str
    size: int | None
    path: bytes


def git(git_dir: Path, *args: str, input: bytes | None = None) -> bytes:
    """Run a git command against `git_dir`; raise GitError with git's own message on failure."""
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=input,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(msg[-1] if msg else f"git {args[0]} failed")
    return proc.stdout


def is_url(repo: str) -> bool:
    return bool(_URL.match(repo))


@dataclass(frozen=True, slots=True)
class RepoLocation:
    """Where a repository's objects are, and its working tree if it has one."""

    git_dir: Path
    worktree: Path | None
    origin: str  # what the user passed, for messages


def locate(repo: str, state_dir: Path, fetch: bool = True) -> RepoLocation:
    """Resolve a working tree, a bare repository or a URL (cloned bare under `state_dir`)."""
    if is_url(repo):
        return RepoLocation(_mirror(repo, state_dir, fetch), None, repo)
    path = Path(repo).expanduser().resolve()
    if not path.exists():
        raise UserError(f"repository {repo!r} does not exist")
    proc = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--absolute-git-dir", "--is-bare-repository"],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise UserError(f"{repo!r} is not a Git repository")
    git_dir, bare = proc.stdout.decode().splitlines()[:2]
    if bare == "true":
        return RepoLocation(Path(git_dir), None, repo)
    top = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, check=True
    )
    return RepoLocation(Path(git_dir), Path(top.stdout.decode().strip()), repo)


def _mirror(url: str, state_dir: Path, fetch: bool) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rstrip("/").rsplit("/", 1)[-1])[:40]
    digest = hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()[:12]
    dest = state_dir / "repos" / f"{name}-{digest}.git"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        proc = subprocess.run(
            ["git", "clone", "--bare", "--quiet", url, str(tmp)], capture_output=True, check=False
        )
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise UserError(f"cannot clone {url}: {err[-1] if err else 'git clone failed'}")
        os.replace(tmp, dest)
    elif fetch:
        try:
            git(dest, "fetch", "--quiet", "--prune", "--tags", url, "+refs/heads/*:refs/heads/*")
        except GitError as exc:
            log.warning("cannot fetch %s (%s); using the copy from the last fetch", url, exc)
    return dest


class Repo:
    """Object access to one repository."""

    def __init__(self, location: RepoLocation) -> None:
        self.location = location
        self.git_dir = location.git_dir
        self._batch: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def resolve(self, rev: str) -> str:
        """The commit sha `rev` names (tags peeled), or UserError."""
        if rev.startswith("-"):
            raise UserError(f"unknown revision {rev!r}")
        try:
            out = git(
                self.git_dir,
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                f"{rev}^{{commit}}",
            )
        except GitError:
            raise UserError(f"unknown revision {rev!r} in {self.location.origin}") from None
        return out.decode().strip()

    def commit_time(self, sha: str) -> int:
        """Committer time of a commit, in seconds."""
        out = git(self.git_dir, "show", "-s", "--format=%ct", sha)
        return int(out.strip())

    def ls_tree(self, sha: str) -> list[TreeEntry]:
        """Every entry (trees too) of a commit's tree, recursively."""
        out = git(self.git_dir, "ls-tree", "-r", "-t", "-l", "-z", "--full-tree", sha)
        entries = []
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, path = record.split(b"\t", 1)
            mode, kind, obj, size = meta.split()
            entries.append(
                TreeEntry(
                    int(mode, 8),
                    kind.decode(),
                    obj.decode(),
                    None if size == b"-" else int(size),
                    path,
                )
            )
        return entries

    def read_blob(self, sha: str) -> bytes:
        """Bytes of one object via the shared `cat-file --batch` process."""
        with self._lock:
            proc = self._batch_proc()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(sha.encode() + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().split()
            if len(header) != 3:
                raise GitError(f"object {sha} is missing from {self.location.origin}")
            size = int(header[2])
            data = proc.stdout.read(size)
            proc.stdout.read(1)  # the newline after every object
            return data

    def _batch_proc(self) -> subprocess.Popen[bytes]:
        if self._batch is None or self._batch.poll() is not None:
            self._batch = subprocess.Popen(
                ["git", f"--git-dir={self.git_dir}", "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self._batch

    def close(self) -> None:
        with self._lock:
            if self._batch is not None:
                if self._batch.stdin is not None:
                    self._batch.stdin.close()
                self._batch.wait()
                self._batch = None
