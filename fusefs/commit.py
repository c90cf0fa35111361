"""The commit engine: turn a plan of staged DVC outputs into one Git commit on a branch.

`make_commit(repo, cache, remote, request)` produces what ``dvc add <outputs>`` +
``dvc remove <removed>.dvc`` + ``git commit`` would in a checkout of ``request.base``:

* every staged file whose md5 is unknown (or every file of an output in DVC 2 layout, which
  ``rehash`` marks) is streamed once: hashed with md5 and copied into the cache as a DVC 3
  object (``files/md5/ab/cdef...``) through a temp file under ``cache.private/tmp``, placed
  by `Cache.install`; an object already cached is not copied again; once all are stored, one
  `Cache.sync_batch` (syncfs, then one fsync per object folder) makes them durable before
  anything names them;
* a directory output's ``.dir`` manifest is written by `dvcwrite.dir_manifest` and cached the
  same way; its ``.dvc`` file comes from `dvcwrite.dvc_file` (new output) or
  `dvcwrite.update_dvc_file` (existing one), with ``size`` = total bytes and ``nfiles`` for
  directories, ``isexec`` for executable single files, as ``dvc add`` writes them;
* ``.gitignore`` files get ``/<name>`` for every output (unless git already ignores the path,
  as DVC checks) and lose it for removed outputs (`dvcwrite.gitignore_add` / `gitignore_remove`);
* the new tree is built in a temporary index (``GIT_INDEX_FILE``) read from the base commit,
  then ``git commit-tree`` with the base as only parent, and the branch is moved with a
  compare-and-swap (``git update-ref refs/heads/B NEW BASE``, or for a mirror of a Git URL a
  ``git push --force-with-lease=refs/heads/B:BASE`` to that URL, then the mirror's ref).

Interface::

    StagedFile(relpath, size, md5, read, isexec=False)
    OutputPlan(path, is_dir, metafile, existing, files, rehash=False)
    RemovedOutput(path, metafile)
    CommitRequest(base, branch, message, author, outputs, removed, push)
    make_commit(repo, cache, remote, request, progress=None, push_url=None,
                allow_checked_out=False) -> CommitResult
    Progress(phase, objects_done, objects_total, bytes_done, bytes_total)  # "store"/"upload"
    CommitError(UserError), BranchMovedError(CommitError); upload failures are RemoteError
    remote_has(remote, hinfo) / remote_put(remote, hinfo, local_path)

With ``push``, the objects of the changed outputs are checked on the remote (batched through
``Remote.sizes`` when the Remote has it) and the missing ones uploaded from the cache; objects of
outputs the commit leaves alone are not checked (the base commit already named them).

Invariants:
- the user's working tree and index are never read or written; only objects, a temp index and
  (last) one ref change;
- everything that can be refused is refused before any object is written: a branch that moved
  since ``base``, a metafile whose rewrite is not reproduced byte for byte, a plan that does not
  match the base tree, a branch checked out in a working tree (its index would go stale);
- nothing can fail once the ref has moved (a mirror whose copy of a pushed ref cannot be
  updated only logs it: its next fetch catches up); any failure before leaves the repository
  as it was (new cache objects and unreferenced Git objects are harmless);
- with ``push``, every object the changed outputs name is on the remote before the branch
  moves (file objects before the ``.dir`` objects that list them), so a commit never names
  data its remote lacks;
- a branch that moved is reported as `BranchMovedError`; the staging it came from is the
  caller's and is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import re
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import dvcwrite
from .cache import Cache
from .errors import RemoteError, UserError
from .git import Repo
from .objects import HashInfo
from .remote import Remote

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
DEFAULT_NAME = "fusefs"
DEFAULT_EMAIL = "fusefs@localhost"
_ZERO = "0" * 40
_AUTHOR = re.compile(r"^\s*([^<>]*?)\s*<([^<>]*)>\s*$")


# --------------------------------------------------------------------------- request / result


@dataclass(frozen=True)
class StagedFile:
    """One file of an output's new content.

    ``relpath`` is ``/``-separated and relative to the output ("" for a single-file output);
    ``md5`` is the DVC 3 md5 of unchanged content, or None when the bytes must be hashed
    (``read`` then opens them).
    """

    relpath: str
    size: int
    md5: str | None
    read: Callable[[], BinaryIO] | None
    isexec: bool = False


@dataclass(frozen=True)
class OutputPlan:
    """An output added or changed: its complete new content (unchanged files included)."""

    path: str
    is_dir: bool
    metafile: str
    existing: bytes | None
    files: list[StagedFile]
    rehash: bool = False


@dataclass(frozen=True)
class RemovedOutput:
    path: str
    metafile: str


@dataclass(frozen=True)
class CommitRequest:
    base: str
    branch: str
    message: str
    author: str | None
    outputs: list[OutputPlan]
    removed: list[RemovedOutput]
    push: bool


@dataclass(frozen=True)
class CommitResult:
    commit: str
    objects_added: int
    bytes_added: int
    objects_pushed: int
    bytes_pushed: int
    metafiles: list[str]


@dataclass(frozen=True)
class Progress:
    """``phase`` is "store" (hashing into the cache) or "upload" (pushing to the remote)."""

    phase: str
    objects_done: int
    objects_total: int
    bytes_done: int
    bytes_total: int


class CommitError(UserError):
    """The commit was refused or failed before the branch moved; nothing was changed."""


class BranchMovedError(CommitError):
    """The branch no longer points at the base the staging was made on."""


ProgressFn = Callable[[Progress], None]


# --------------------------------------------------------------------------- git plumbing


def _run_git(
    git_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=input,
        capture_output=True,
        env=full_env,
        cwd=cwd,
        check=False,
    )


def _git(
    git_dir: Path, *args: str, env: dict[str, str] | None = None, input: bytes | None = None
) -> bytes:
    proc = _run_git(git_dir, *args, env=env, input=input)
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CommitError(f"git {args[0]} failed: {lines[-1] if lines else proc.returncode}")
    return proc.stdout


def _branch_tip(git_dir: Path, branch: str) -> str | None:
    proc = _run_git(git_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
    return proc.stdout.decode().strip() or None


def _moved(branch: str, base: str, now: str | None) -> BranchMovedError:
    where = f"{base[:12]} → {now[:12]}" if now else f"{base[:12]} → deleted"
    return BranchMovedError(
        f"branch {branch} moved since the mount's base ({where}); staged changes kept. "
        "To commit them on the new tip: copy them out, 'fusefs discard', remount, copy back"
    )


def checked_out_in(repo: Repo, branch: str) -> list[Path]:
    """Working trees of `repo` that have `branch` checked out."""
    out = _git(repo.git_dir, "worktree", "list", "--porcelain").decode("utf-8", "replace")
    found: list[Path] = []
    for block in out.split("\n\n"):
        lines = block.splitlines()
        if f"branch refs/heads/{branch}" in lines and lines[0].startswith("worktree "):
            found.append(Path(lines[0].removeprefix("worktree ")))
    return found


def _tree_entries(git_dir: Path, commit: str, paths: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``path -> (mode, sha)`` of those `paths` that are in the commit's tree (any type)."""
    wanted = sorted(set(paths))
    if not wanted:
        return {}
    literal = {"GIT_LITERAL_PATHSPECS": "1"}  # paths, not glob patterns
    out = _git(git_dir, "ls-tree", "-z", "--full-tree", commit, "--", *wanted, env=literal)
    result: dict[str, tuple[str, str]] = {}
    for record in out.split(b"\0"):
        if record:
            meta, path = record.split(b"\t", 1)
            mode, _kind, sha = meta.decode().split()
            result[path.decode("utf-8", "surrogateescape")] = (mode, sha)
    return result


# --------------------------------------------------------------------------- remote helpers


def remote_has(remote: Remote, hinfo: HashInfo) -> bool:
    """Whether the remote holds the object (False only when it is known to be missing)."""
    try:
        remote.fs.info(remote.path(hinfo))
    except FileNotFoundError:
        return False
    except Exception as exc:
        raise RemoteError(f"cannot check object {hinfo} on remote {remote}: {exc!r}") from exc
    return True


def _missing_on(remote: Remote, hashes: list[HashInfo]) -> list[HashInfo]:
    """Those of `hashes` the remote lacks; one batched request when the Remote offers
    ``sizes`` (listing folders instead of asking object by object)."""
    batch = getattr(remote, "sizes", None)
    if callable(batch):
        found = batch(hashes)
        return [h for h in hashes if h not in found]
    return [h for h in hashes if not remote_has(remote, h)]


def remote_put(remote: Remote, hinfo: HashInfo, local_path: Path) -> None:
    """Upload one object. On a folder remote it is written to a temp name and renamed."""
    fs, dest = remote.fs, remote.path(hinfo)
    try:
        if "file" in _protocols(fs):
            fs.makedirs(posixpath.dirname(dest), exist_ok=True)
            tmp = f"{dest}.{uuid.uuid4().hex}.tmp"
            try:
                fs.put_file(str(local_path), tmp)
                fs.chmod(tmp, 0o444)  # as dvc leaves objects on a folder remote
                fs.mv(tmp, dest)
            finally:
                with contextlib.suppress(OSError):
                    fs.rm_file(tmp)
        else:
            fs.put_file(str(local_path), dest)
    except Exception as exc:
        raise RemoteError(f"cannot upload object {hinfo} to remote {remote}: {exc!r}") from exc


def _protocols(fs: object) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


# --------------------------------------------------------------------------- cache objects


@dataclass
class _Counters:
    objects_added: int = 0
    bytes_added: int = 0
    objects_pushed: int = 0
    bytes_pushed: int = 0


@dataclass
class _Store:
    """Writes objects into the cache and counts what it added."""

    cache: Cache
    progress: ProgressFn | None
    counters: _Counters = field(default_factory=_Counters)
    objects_total: int = 0
    bytes_total: int = 0
    objects_done: int = 0
    bytes_done: int = 0
    touched: set[Path] = field(default_factory=set)  # object folders with unsynced renames

    def tick(self, nbytes: int) -> None:
        self.objects_done += 1
        self.bytes_done += nbytes
        if self.progress is not None:
            self.progress(
                Progress(
                    "store",
                    self.objects_done,
                    self.objects_total,
                    self.bytes_done,
                    self.bytes_total,
                )
            )

    def add_stream(self, src: BinaryIO, size: int, what: str) -> str:
        """Hash `src` while copying it to a temp file; cache it; return its md5."""
        fd, tmp = tempfile.mkstemp(dir=self.cache.private / "tmp", prefix="commit.")
        try:
            md5 = hashlib.md5(usedforsecurity=False)
            written = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(CHUNK):
                    md5.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
            if written != size:
                raise CommitError(f"{what}: staged size is {size} bytes but {written} were read")
            self._install(Path(tmp), HashInfo(md5.hexdigest()), written)
            return md5.hexdigest()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def add_bytes(self, data: bytes, hinfo: HashInfo) -> None:
        if self.cache.exists(hinfo):
            return
        fd, tmp = tempfile.mkstemp(dir=self.cache.private / "tmp", prefix="commit.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            self._install(Path(tmp), hinfo, len(data))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _install(self, tmp: Path, hinfo: HashInfo, size: int) -> None:
        if not self.cache.exists(hinfo):
            dest = self.cache.path(hinfo)
            self.cache.install(tmp, dest, durable=False)
            self.touched.add(dest.parent)
            self.counters.objects_added += 1
            self.counters.bytes_added += size

    def sync(self) -> None:
        """Everything stored so far is on disk (before any ref names it)."""
        if self.touched:
            self.cache.sync_batch(self.touched)
            self.touched.clear()


# --------------------------------------------------------------------------- outputs


OutSpecAndObjects = tuple[dvcwrite.OutSpec, list[HashInfo], bytes | None]


@dataclass(frozen=True)
class _Built:
    """One output after hashing: its metafile bytes and the objects it names."""

    plan: OutputPlan
    dvc_bytes: bytes
    objects: list[HashInfo]  # file objects, then the .dir object


def _needs_hashing(plan: OutputPlan, staged: StagedFile) -> bool:
    return staged.md5 is None or plan.rehash


def _file_md5(store: _Store, plan: OutputPlan, staged: StagedFile) -> str:
    what = f"{plan.path}/{staged.relpath}" if staged.relpath else plan.path
    if not _needs_hashing(plan, staged):
        assert staged.md5 is not None
        return staged.md5
    if staged.read is None:
        raise CommitError(f"{what}: content must be hashed but no reader was staged")
    with staged.read() as src:
        md5 = store.add_stream(src, staged.size, what)
    store.tick(staged.size)
    return md5


def _out_spec(plan: OutputPlan, md5s: list[str]) -> OutSpecAndObjects:
    relpath = posixpath.relpath(plan.path, posixpath.dirname(plan.metafile) or ".")
    size = sum(f.size for f in plan.files)
    if not plan.is_dir:
        spec = dvcwrite.OutSpec(relpath, md5s[0], size, isexec=plan.files[0].isexec)
        return spec, [HashInfo(md5s[0])], None
    manifest = dvcwrite.dir_manifest((f.relpath, m) for f, m in zip(plan.files, md5s, strict=True))
    dir_hash = HashInfo(dvcwrite.md5_bytes(manifest), is_dir=True)
    spec = dvcwrite.OutSpec(relpath, dir_hash.oid, size, nfiles=len(plan.files))
    return spec, [*(HashInfo(m) for m in md5s), dir_hash], manifest


def _dvc_bytes(plan: OutputPlan, spec: dvcwrite.OutSpec) -> bytes:
    if plan.existing is None:
        return dvcwrite.dvc_file(spec)
    try:
        return dvcwrite.update_dvc_file(plan.existing, spec)
    except dvcwrite.UnsupportedDvcFile as exc:
        raise CommitError(
            f"{plan.metafile} cannot be rewritten exactly as dvc would ({exc}); nothing was "
            f"committed: run `dvc add {plan.path}` in a checkout instead"
        ) from exc


def _build_output(store: _Store, plan: OutputPlan) -> _Built:
    md5s = [_file_md5(store, plan, f) for f in plan.files]
    spec, objects, manifest = _out_spec(plan, md5s)
    if manifest is not None:
        store.add_bytes(manifest, objects[-1])
    return _Built(plan, _dvc_bytes(plan, spec), objects)


# --------------------------------------------------------------------------- validation


def _check_plan(request: CommitRequest) -> None:
    seen: set[str] = set()
    items: list[OutputPlan | RemovedOutput] = [*request.outputs, *request.removed]
    for item in items:
        if item.metafile in seen:
            raise CommitError(f"{item.metafile} appears twice in the commit plan")
        seen.add(item.metafile)
        if not item.metafile.endswith(".dvc") or item.path.startswith("/"):
            raise CommitError(f"bad output {item.path!r} / metafile {item.metafile!r}")
    for plan in request.outputs:
        if not plan.is_dir and (len(plan.files) != 1 or plan.files[0].relpath != ""):
            raise CommitError(f"{plan.path}: a single-file output needs exactly one file")
        if plan.is_dir and any(not f.relpath for f in plan.files):
            raise CommitError(f"{plan.path}: a directory output's files need relpaths")
        if plan.existing is not None:
            dummy = dvcwrite.OutSpec(posixpath.basename(plan.path), "0" * 32, 0)
            _dvc_bytes(plan, dummy)  # refuse unsupported metafiles before any work


def _check_base_tree(repo: Repo, request: CommitRequest) -> None:
    """The plan must describe the base: metafiles present/absent as it says, new outputs
    not tracked by git (``dvc add`` refuses those too)."""
    paths = [o.metafile for o in request.outputs] + [r.metafile for r in request.removed]
    paths += [o.path for o in request.outputs if o.existing is None]
    entries = _tree_entries(repo.git_dir, request.base, paths)
    for plan in request.outputs:
        current = entries.get(plan.metafile)
        if plan.existing is None:
            if current is not None:
                raise CommitError(f"{plan.metafile} already exists in {request.base[:12]}")
            if plan.path in entries:
                raise CommitError(f"{plan.path} is tracked by git; it cannot become an output")
        elif current is None or repo.read_blob(current[1]) != plan.existing:
            raise CommitError(f"{plan.metafile} in {request.base[:12]} differs from the staging")
    for removed in request.removed:
        if removed.metafile not in entries:
            raise CommitError(f"{removed.metafile} is not in {request.base[:12]}")


def _check_branch(repo: Repo, request: CommitRequest, allow_checked_out: bool) -> None:
    tip = _branch_tip(repo.git_dir, request.branch)
    if tip != request.base:
        raise _moved(request.branch, request.base, tip)
    if allow_checked_out:
        return
    trees = checked_out_in(repo, request.branch)
    if trees:
        raise CommitError(
            f"branch {request.branch} is checked out in {trees[0]}; moving it would leave that "
            "working tree's index stale. Check out another branch there, then commit again"
        )


# --------------------------------------------------------------------------- .gitignore


def _ignore_files_on(path: str) -> list[str]:
    """``.gitignore`` paths that can affect `path`: root's, then each parent folder's."""
    parts = path.split("/")[:-1]
    return [posixpath.join(*parts[:i], ".gitignore") for i in range(len(parts) + 1)]


def _gitignore_changes(
    repo: Repo, request: CommitRequest, built: list[_Built]
) -> dict[str, bytes | None]:
    """New content (None: delete) of every ``.gitignore`` the commit changes."""
    paths = [b.plan.path for b in built] + [r.path for r in request.removed]
    locations = {loc for p in paths for loc in _ignore_files_on(p)}
    base_entries = _tree_entries(repo.git_dir, request.base, locations)
    base: dict[str, bytes | None] = {
        loc: repo.read_blob(base_entries[loc][1]) if loc in base_entries else None
        for loc in locations
    }
    current = dict(base)
    for removed in request.removed:
        loc, entry = dvcwrite.gitignore_location(removed.path)
        current[loc] = dvcwrite.gitignore_remove(current[loc], entry)
    for b in built:
        loc, entry = dvcwrite.gitignore_location(b.plan.path)
        updated = dvcwrite.gitignore_add(current[loc], entry)
        if updated != current[loc] and not _git_ignores(repo, current, b.plan):
            current[loc] = updated
    return {loc: data for loc, data in current.items() if data != base[loc]}


def _git_ignores(repo: Repo, gitignores: dict[str, bytes | None], plan: OutputPlan) -> bool:
    """Whether git already ignores the output (DVC then leaves ``.gitignore`` alone).

    The ``.gitignore`` files on the output's path, as this commit leaves them so far, are laid
    out in a scratch work tree and git's own matching decides, with the repository's
    ``info/exclude`` and ``core.excludesFile`` applying as they would in a checkout.
    """
    with tempfile.TemporaryDirectory(prefix="fusefs-ignore-") as scratch:
        root = Path(scratch)
        for loc in _ignore_files_on(plan.path):
            data = gitignores.get(loc)
            if data is not None:
                (root / loc).parent.mkdir(parents=True, exist_ok=True)
                (root / loc).write_bytes(data)
        target = root / plan.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if plan.is_dir:
            target.mkdir(exist_ok=True)
        else:
            target.touch()
        proc = _run_git(
            repo.git_dir,
            f"--work-tree={root}",
            "check-ignore",
            "-q",
            "--no-index",
            "--",
            plan.path,
            cwd=root,
        )
    if proc.returncode not in (0, 1):
        raise CommitError(f"git check-ignore failed: {proc.stderr.decode(errors='replace')}")
    return proc.returncode == 0


# --------------------------------------------------------------------------- upload


def _upload(
    cache: Cache,
    remote: Remote,
    built: list[_Built],
    counters: _Counters,
    progress: ProgressFn | None,
) -> None:
    """Push every object the outputs name that the remote lacks: files first, then .dirs."""
    wanted: dict[HashInfo, None] = {}
    for b in built:
        wanted.update((h, None) for h in b.objects if not h.is_dir)
    for b in built:
        wanted.update((h, None) for h in b.objects if h.is_dir)
    missing = _missing_on(remote, list(wanted))
    absent = [h for h in missing if not cache.exists(h)]
    if absent:
        raise CommitError(
            f"{len(absent)} object(s) are neither on remote {remote} nor in the cache "
            f"(first: {absent[0]}); nothing was committed"
        )
    sizes = {h: cache.size(h) or 0 for h in missing}
    total = sum(sizes.values())
    for done, hinfo in enumerate(missing, 1):
        remote_put(remote, hinfo, cache.path(hinfo))
        counters.objects_pushed += 1
        counters.bytes_pushed += sizes[hinfo]
        if progress is not None:
            progress(Progress("upload", done, len(missing), counters.bytes_pushed, total))


# --------------------------------------------------------------------------- tree and commit


def _write_tree(repo: Repo, base: str, changes: dict[str, bytes | None]) -> str:
    """Tree of `base` with `changes` (path -> new bytes, None: delete), via a temp index."""
    modes = _tree_entries(repo.git_dir, base, changes)
    with tempfile.TemporaryDirectory(prefix="fusefs-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _git(repo.git_dir, "read-tree", base, env=env)
        records = []
        for path, data in sorted(changes.items()):
            if data is None:
                records.append(f"0 {_ZERO}\t{path}")
                continue
            sha = _git(repo.git_dir, "hash-object", "-w", "--stdin", input=data).decode().strip()
            mode = modes[path][0] if path in modes else "100644"
            records.append(f"{mode} {sha}\t{path}")
        index_info = "".join(r + "\0" for r in records).encode("utf-8", "surrogateescape")
        _git(repo.git_dir, "update-index", "-z", "--index-info", input=index_info, env=env)
        return _git(repo.git_dir, "write-tree", env=env).decode().strip()


def _identity_env(repo: Repo, author: str | None) -> dict[str, str]:
    """GIT_AUTHOR_*/GIT_COMMITTER_* for commit-tree: `author` if given, else git's configured
    identity, else a fusefs default (for each of author and committer)."""
    env: dict[str, str] = {}
    if author is not None:
        match = _AUTHOR.match(author)
        if not match or not match.group(1):
            raise CommitError(f"author {author!r} is not of the form 'Name <email>'")
        env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"] = match.group(1), match.group(2)
    elif _run_git(repo.git_dir, "var", "GIT_AUTHOR_IDENT").returncode != 0:
        env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"] = DEFAULT_NAME, DEFAULT_EMAIL
    if _run_git(repo.git_dir, "var", "GIT_COMMITTER_IDENT").returncode != 0:
        env["GIT_COMMITTER_NAME"], env["GIT_COMMITTER_EMAIL"] = DEFAULT_NAME, DEFAULT_EMAIL
    return env


def _commit_tree(repo: Repo, request: CommitRequest, tree: str) -> str:
    env = _identity_env(repo, request.author)
    message = request.message if request.message.endswith("\n") else request.message + "\n"
    out = _git(
        repo.git_dir,
        "commit-tree",
        tree,
        "-p",
        request.base,
        "-F",
        "-",
        env=env,
        input=message.encode("utf-8"),
    )
    return out.decode().strip()


def _move_branch(repo: Repo, request: CommitRequest, new: str, push_url: str | None) -> None:
    ref = f"refs/heads/{request.branch}"
    reason = f"fusefs commit: {request.message.splitlines()[0] if request.message else ''}"
    if push_url is not None:
        _push(repo, request, new, push_url)
        proc = _run_git(repo.git_dir, "update-ref", "-m", reason, ref, new)
        if proc.returncode != 0:  # pushed: the mirror catches up on its next fetch
            log.warning("pushed %s but cannot update the mirror's %s", new[:12], ref)
        return
    proc = _run_git(repo.git_dir, "update-ref", "-m", reason, ref, new, request.base)
    if proc.returncode != 0:
        now = _branch_tip(repo.git_dir, request.branch)
        if now != request.base:
            raise _moved(request.branch, request.base, now)
        raise CommitError(f"cannot move {ref}: {proc.stderr.decode(errors='replace').strip()}")


def _push(repo: Repo, request: CommitRequest, new: str, url: str) -> None:
    """Push `new` to the branch at `url` only if it is still at the base (compare-and-swap)."""
    ref = f"refs/heads/{request.branch}"
    proc = _run_git(
        repo.git_dir,
        "push",
        "--porcelain",
        "--quiet",
        f"--force-with-lease={ref}:{request.base}",
        url,
        f"{new}:{ref}",
    )
    if proc.returncode == 0:
        return
    out = proc.stdout.decode("utf-8", "replace")
    if any(line.startswith("!") for line in out.splitlines()):
        now = _remote_tip(repo, url, ref)
        raise _moved(request.branch, request.base, now)
    err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    raise CommitError(f"cannot push to {url}: {err[-1] if err else out.strip()}")


def _remote_tip(repo: Repo, url: str, ref: str) -> str | None:
    proc = _run_git(repo.git_dir, "ls-remote", url, ref)
    line = proc.stdout.decode().split()
    return line[0] if proc.returncode == 0 and line else None


# --------------------------------------------------------------------------- entry point


def make_commit(
    repo: Repo,
    cache: Cache,
    remote: Remote | None,
    request: CommitRequest,
    progress: ProgressFn | None = None,
    push_url: str | None = None,
    allow_checked_out: bool = False,
) -> CommitResult:
    """Commit `request` on its branch; see the module docstring for what is guaranteed.

    Raises `BranchMovedError` when the branch is no longer at ``request.base``, `CommitError`
    for a refused plan or a failed Git step, `RemoteError` when an upload fails; in every
    case the branch has not moved.
    """
    if request.push and remote is None:
        raise CommitError("--push needs a DVC remote, and none is configured")
    _check_plan(request)
    _check_branch(repo, request, allow_checked_out)
    _check_base_tree(repo, request)
    store = _Store(cache, progress)
    hashed = [f for o in request.outputs for f in o.files if _needs_hashing(o, f)]
    store.objects_total, store.bytes_total = len(hashed), sum(f.size for f in hashed)
    built = [_build_output(store, plan) for plan in request.outputs]
    store.sync()
    changes: dict[str, bytes | None] = {b.plan.metafile: b.dvc_bytes for b in built}
    changes.update({r.metafile: None for r in request.removed})
    changes.update(_gitignore_changes(repo, request, built))
    if request.push:
        assert remote is not None
        _upload(cache, remote, built, store.counters, progress)
    tree = _write_tree(repo, request.base, changes)
    new = _commit_tree(repo, request, tree)
    _move_branch(repo, request, new, push_url)
    c = store.counters
    metafiles = sorted(b.plan.metafile for b in built) + sorted(r.metafile for r in request.removed)
    log.info("committed %s on %s: %s", new[:12], request.branch, ", ".join(metafiles))
    return CommitResult(
        new, c.objects_added, c.bytes_added, c.objects_pushed, c.bytes_pushed, metafiles
    )
