"""The mount daemon's lifecycle: prepare (everything that can fail with a user's mistake), mount,
serve until unmounted or signalled, and always unmount on the way out.

`prepare` does all blocking set-up before the kernel sees a mount, so `fusefs mount` can report
an unknown revision or a missing mountpoint as one line. Once mounted, SIGINT/SIGTERM end the FUSE
loop and the filesystem is unmounted; if the process dies anyway, libfuse's `auto_unmount` (a
`fusermount3` watching the session) removes the mount, so no dead mount is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from . import control
from . import tree as treemod
from .cache import Cache
from .cachectl import Evictor, format_size
from .config import DvcConfig, user_config_files
from .controller import Controller
from .errors import FsError, UserError
from .filesystem import FileSystem, RemoteSet, Settings
from .fuse_ops import FOREVER, Operations
from .git import GitError, Repo, git, is_url, locate
from .journal import Journal
from .remote import Remote
from .state import MountRecord, control_socket, default_cache_dir, log_path, state_dir
from .writable import WritableFileSystem

log = logging.getLogger(__name__)

# Writable mounts change under the kernel only through it, except on commit and discard (which
# invalidate what they touch); a short timeout bounds the cost of anything missed.
RW_TIMEOUT = 1.0


@dataclass(frozen=True)
class MountOptions:
    mountpoint: Path
    repo: str = "."
    rev: str = "HEAD"
    cache_dir: Path | None = None
    remote: str | None = None
    allow_other: bool = False
    debug: bool = False
    max_tasks: int = 64
    rw: bool = False
    cache_size: int | None = None  # --cache-size: evict LRU objects above this many bytes


@dataclass
class Prepared:
    options: MountOptions
    repo: Repo
    tree: treemod.RevisionTree
    cache: Cache
    remotes: RemoteSet
    journal: Journal | None = None
    branch: str | None = None
    evictor: Evictor | None = None


def check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise UserError("no FUSE available: /dev/fuse is missing (load the fuse module)")
    if shutil.which("fusermount3") is None:
        raise UserError(
            "no FUSE available: fusermount3 is not installed (Debian: apt install fuse3)"
        )


def check_mountpoint(path: Path) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"mountpoint {path} does not exist") from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise UserError(f"mountpoint {path}: {exc.strerror}") from None
        log.warning("%s is a dead mount; clearing it", path)
        unmount(path, lazy=True)
        st = os.stat(path)
    if not os.path.isdir(path):
        raise UserError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise UserError(f"mountpoint {path} is busy: something is already mounted there")
    del st


def unmount(path: Path, lazy: bool = False) -> None:
    cmd = ["fusermount3", "-u", "-q", *(["-z"] if lazy else []), str(path)]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 and os.geteuid() == 0:
        proc = subprocess.run(
            ["umount", *(["-l"] if lazy else []), str(path)], capture_output=True, check=False
        )
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip()
        raise UserError(f"cannot unmount {path}: {msg or 'not mounted'}")


def prepare(options: MountOptions) -> Prepared:
    """Everything short of mounting; raises UserError with a one-line reason."""
    check_fuse()
    check_mountpoint(options.mountpoint)
    location = locate(options.repo, state_dir())
    repo = Repo(location)
    commit = repo.resolve(options.rev)
    branch = journal = None
    if options.rw:
        branch = _branch(repo, options.rev)
        journal, commit = _open_staging(repo, branch, commit)
    entries = repo.ls_tree(commit)
    if not treemod.is_dvc_repo(entries):
        raise UserError(f"{options.repo} at {options.rev} is not a DVC repository (no .dvc/)")
    config = _load_config(repo, entries)
    cache = Cache(_cache_root(options, config, repo))
    remotes = RemoteSet(_remote(config, options.remote), lambda name: _named_remote(config, name))
    tree = treemod.build(repo, commit, entries)
    log.info(
        "revision %s (%s): %d nodes, %d outputs, %d problems",
        options.rev,
        commit[:12],
        len(tree.nodes),
        len(tree.outs),
        len(tree.problems),
    )
    configured = set(config.remote_names())
    for name in sorted({o.remote for o in tree.outs if o.remote} - configured):
        log.warning("outputs name remote %r, which is not configured: reading them fails", name)
    evictor = None if options.cache_size is None else Evictor(cache.root, options.cache_size)
    if evictor is not None:
        cache.on_install = evictor.note_added
    return Prepared(options, repo, tree, cache, remotes, journal, branch, evictor)


def _branch(repo: Repo, rev: str) -> str:
    """The branch a writable mount commits to; tags, shas and expressions are refused."""
    name = rev
    if rev == "HEAD":
        try:
            name = git(repo.git_dir, "symbolic-ref", "--short", "HEAD").decode().strip()
        except GitError:
            raise UserError("--rw needs --rev to be a branch, and HEAD is detached") from None
    try:
        git(repo.git_dir, "show-ref", "--verify", "--quiet", f"refs/heads/{name}")
    except GitError:
        raise UserError(
            f"--rw needs --rev to be a branch; {rev!r} is not a branch of {repo.location.origin}"
        ) from None
    return name


def staging_dir(repo: Repo, branch: str) -> Path:
    key = f"{repo.git_dir.resolve()}\0{branch}".encode()
    return state_dir() / "staging" / hashlib.sha1(key, usedforsecurity=False).hexdigest()[:16]


def _open_staging(repo: Repo, branch: str, tip: str) -> tuple[Journal, str]:
    """Open (and replay) the branch's staging area; returns it and the revision to show.

    Staged changes belong to the revision they were made on: if the branch moved since, the
    mount shows that older revision, and a commit will refuse rather than overwrite.
    """
    try:
        journal = Journal.open(staging_dir(repo, branch), base_rev=tip.encode())
    except FsError as exc:
        raise UserError(f"staging area of branch {branch!r}: {exc.message}") from None
    base = journal.base_rev.decode()
    if base == tip:
        return journal, tip
    if journal.overlay.is_empty():
        journal.start_generation(tip.encode())
        return journal, tip
    log.warning(
        "branch %s moved from %s to %s since changes were staged; showing %s with them",
        branch,
        base[:12],
        tip[:12],
        base[:12],
    )
    return journal, base


def _load_config(repo: Repo, entries: list) -> DvcConfig:  # type: ignore[type-arg]
    config = DvcConfig()
    for path in user_config_files():
        if path.is_file():
            config.merge(path.read_text(), path.parent)
    worktree = repo.location.worktree
    dvc_dir = worktree / ".dvc" if worktree is not None else None
    blob = next((e.sha for e in entries if e.path == b".dvc/config"), None)
    if blob is not None:
        config.merge(repo.read_blob(blob).decode("utf-8", "replace"), dvc_dir)
    if dvc_dir is not None and (dvc_dir / "config.local").is_file():
        config.merge((dvc_dir / "config.local").read_text(), dvc_dir)
    return config


def _cache_root(options: MountOptions, config: DvcConfig, repo: Repo) -> Path:
    if options.cache_dir is not None:
        return options.cache_dir.resolve()
    worktree = repo.location.worktree
    if worktree is None:
        return default_cache_dir()
    configured = config.cache_dir
    return Path(configured) if configured else worktree / ".dvc" / "cache"


def _remote(config: DvcConfig, name: str | None, required: bool = False) -> Remote | None:
    remote_config = config.remote(name)
    if remote_config is None:
        if required or name:
            raise UserError(f"remote {name!r} is not configured")
        return None
    url = remote_config.url
    if "://" not in url and not os.path.isabs(url):
        raise UserError(
            f"remote {remote_config.name!r} has a relative url {url!r} and the "
            "repository has no working tree to resolve it against"
        )
    remote = Remote(remote_config)
    remote.check()
    return remote


def _named_remote(config: DvcConfig, name: str) -> Remote:
    remote = _remote(config, name, required=True)
    assert remote is not None
    return remote


def serve(prepared: Prepared, ready: Callable[[], None]) -> None:
    """Mount and serve until unmounted or signalled (blocking)."""
    trio.run(_serve, prepared, ready)


async def _serve(prepared: Prepared, ready: Callable[[], None]) -> None:
    opts = prepared.options
    settings = Settings(uid=os.getuid(), gid=os.getgid())
    async with trio.open_nursery() as nursery:
        base = FileSystem(
            prepared.tree, prepared.repo, prepared.cache, prepared.remotes, settings, nursery
        )
        fs: FileSystem | WritableFileSystem = base
        controller = None
        timeout = FOREVER
        if prepared.journal is not None:
            assert prepared.branch is not None
            fs = WritableFileSystem(base, prepared.journal, nursery)
            location = prepared.repo.location
            push_url = (
                location.origin if location.worktree is None and is_url(location.origin) else None
            )
            controller = Controller(fs, prepared.branch, push_url)
            timeout = RW_TIMEOUT
        mount_opts = {"fsname=fusefs", "subtype=fusefs", "default_permissions", "auto_unmount"}
        if controller is None:
            mount_opts.add("ro")
        if opts.allow_other:
            mount_opts.add("allow_other")
        try:
            pyfuse3.init(Operations(fs, timeout), str(opts.mountpoint), mount_opts)
        except RuntimeError as exc:
            raise UserError(f"cannot mount at {opts.mountpoint}: {exc}") from None
        record = _publish(prepared)
        try:
            nursery.start_soon(_tune_when_ready, opts.mountpoint)
            if controller is not None:
                await nursery.start(
                    control.serve, control_socket(opts.mountpoint), controller.handle
                )
            ready()
            nursery.start_soon(_on_signals)
            if prepared.evictor is not None:
                nursery.start_soon(_evict_loop, prepared.evictor)
            await pyfuse3.main(min_tasks=4, max_tasks=opts.max_tasks)
        finally:
            log.info("unmounting %s", opts.mountpoint)
            pyfuse3.close(unmount=True)
            record.remove()
            prepared.repo.close()
            prepared.remotes.close()
            if prepared.journal is not None:
                prepared.journal.close()
            nursery.cancel_scope.cancel()


async def _on_signals() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: unmounting", signum)
            pyfuse3.terminate()
            return


# -- cache size control (--cache-size) --------------------------------------------------------

EVICT_INTERVAL = 1.0  # seconds between rounds when no fetch is noted


async def _evict_loop(evictor: Evictor) -> None:
    """Keep the cache under its limit: a round every EVICT_INTERVAL, or at once after a fetch
    reported through `evictor.note_added`. Rounds run in a worker thread."""
    token = trio.lowlevel.current_trio_token()
    wake = trio.Event()

    def poke() -> None:  # from any thread
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(lambda: wake.set())

    evictor.on_added = poke
    warned = False
    try:
        while True:
            try:
                report = await trio.to_thread.run_sync(evictor.maybe_evict, abandon_on_cancel=True)
            except OSError as exc:
                log.error("cache eviction in %s failed: %s", evictor.root, exc)
            else:
                if report.evicted:
                    log.info(
                        "evicted %d objects (%s); cache holds %s of %s",
                        report.evicted,
                        format_size(report.freed),
                        format_size(report.total),
                        format_size(report.limit),
                    )
                if report.over and not warned:
                    log.warning(
                        "cache %s holds %s, over its limit of %s: the rest is in use "
                        "(%d pinned, %d hard-linked objects)",
                        evictor.root,
                        format_size(report.total),
                        format_size(report.limit),
                        report.pinned,
                        report.linked,
                    )
                warned = report.over
            with trio.move_on_after(EVICT_INTERVAL):
                await wake.wait()
            wake = trio.Event()
    finally:
        evictor.on_added = None


def _publish(prepared: Prepared) -> MountRecord:
    opts = prepared.options
    record = MountRecord(
        pid=os.getpid(),
        mountpoint=str(opts.mountpoint),
        repo=prepared.repo.location.origin,
        rev=opts.rev,
        commit=prepared.tree.commit,
        cache_dir=str(prepared.cache.root),
        log=str(log_path(opts.mountpoint)),
        cache_size=opts.cache_size,
    )
    record.save()
    return record


def _mount_device(mountpoint: Path) -> tuple[int, int] | None:
    """major:minor of a mount, from mountinfo: a stat() of our own mount would wait on us."""
    target = str(mountpoint).encode()
    found = None
    with open("/proc/self/mountinfo", "rb") as info:
        for line in info:  # the last match is the newest mount at that path
            fields = line.split()
            if _unescape_mountinfo(fields[4]) == target:
                major, minor = fields[2].split(b":")
                found = (int(major), int(minor))
    return found


def _unescape_mountinfo(field: bytes) -> bytes:
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)


async def _tune_when_ready(mountpoint: Path) -> None:
    """Tune once the kernel finished FUSE's INIT handshake, which resets read-ahead.

    A statfs of the mount is answered only after INIT, so it is the signal; it runs in a thread
    because this loop is the one that answers it.
    """
    try:
        await trio.to_thread.run_sync(os.statvfs, mountpoint, abandon_on_cancel=True)
    except OSError as exc:
        log.debug("cannot statfs %s: %s", mountpoint, exc)
        return
    _tune_bdi(mountpoint)


def _ensure_fusectl() -> None:
    """max_background lives in the fusectl filesystem, which is not always mounted."""
    connections = Path("/sys/fs/fuse/connections")
    if os.geteuid() != 0 or not connections.is_dir() or os.path.ismount(connections):
        return
    subprocess.run(
        ["mount", "-t", "fusectl", "none", str(connections)], capture_output=True, check=False
    )


def _tune_bdi(mountpoint: Path) -> None:
    """Larger kernel read-ahead and more background requests (best effort: needs root).

    With the default 128 KiB read-ahead FUSE reads arrive in 128 KiB pieces; 1 MiB requests
    halve the per-byte overhead of sequential reads. The default `max_background` of 12
    throttles many concurrent readers.
    """
    device = _mount_device(mountpoint)
    if device is None:
        return
    major, minor = device
    _ensure_fusectl()
    for path, value in (
        (f"/sys/class/bdi/{major}:{minor}/read_ahead_kb", "1024"),
        (f"/sys/fs/fuse/connections/{minor}/max_background", "64"),
        (f"/sys/fs/fuse/connections/{minor}/congestion_threshold", "48"),
    ):
        try:
            Path(path).write_text(value)
        except OSError as exc:
            log.debug("cannot tune %s: %s", path, exc)
