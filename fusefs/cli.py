"""The `fusefs` command: argument parsing, human output and exit codes.

Exit status: 0 success, 1 a problem with what was asked (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UserError
from .state import MountRecord, log_path

MOUNT_EXAMPLES = """\
examples:
  cd my-dvc-repo && fusefs mount --rev v3 /mnt/data
  fusefs mount --repo /srv/git/data.git --rev main /mnt/data
  fusefs mount --repo https://example.com/org/data.git --rev HEAD~2 /mnt/data
  fusefs mount -f --debug --rev v1 /mnt/data     # foreground, log to stderr
  fusefs mount --repo /srv/git/data.git --cache-size 50G /mnt/data   # evict LRU above 50 GiB
"""

UMOUNT_EXAMPLES = """\
examples:
  fusefs umount /mnt/data
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusefs",
        description="Mount any Git revision of a DVC repository as a directory tree.",
        epilog="Run 'fusefs COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"fusefs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_mount(sub)
    um = sub.add_parser(
        "umount",
        help="unmount and wait for the daemon to exit",
        epilog=UMOUNT_EXAMPLES,
        description="Unmount a fusefs mount and wait for its daemon to exit.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    um.add_argument("mountpoint", type=Path)
    um.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (default 30)")
    um.set_defaults(func=cmd_umount)
    _add_staging_commands(sub)
    _add_cache_commands(sub)
    return parser


def _add_mount(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "mount",
        help="mount a revision (returns once the mount is ready)",
        description="Mount a Git revision of a DVC repository read-only. Files of DVC outputs "
        "are fetched from the remote on first read, verified, and kept in the cache.",
        epilog=MOUNT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    p.add_argument(
        "--repo",
        default=".",
        metavar="PATH|URL",
        help="working tree, bare repository or Git URL (default: current directory)",
    )
    p.add_argument("--rev", default="HEAD", help="tag, branch, sha, HEAD~2... (default HEAD)")
    p.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="object cache (default: the repository's DVC cache for a working tree, "
        "else $XDG_CACHE_HOME/fusefs)",
    )
    p.add_argument(
        "--cache-size",
        type=_size_arg,
        metavar="SIZE",
        help="keep the cache's objects under SIZE (4096, 500M, 50G, 1T; binary units) by "
        "evicting the least recently used ones that no mount has open (default: no limit)",
    )
    p.add_argument(
        "--remote", metavar="NAME", help="DVC remote to fetch from (default: core.remote)"
    )
    p.add_argument(
        "--allow-other",
        action="store_true",
        help="let other users read the mount (kernel checks permissions)",
    )
    p.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground, logging to stderr"
    )
    p.add_argument("--debug", action="store_true", help="log every request")
    p.add_argument(
        "--rw",
        action="store_true",
        help="writable: stage changes for 'fusefs commit' (--rev must be a branch)",
    )
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_mount)


def cmd_mount(args: argparse.Namespace) -> int:
    mountpoint = args.mountpoint.absolute()
    if not args.foreground:
        return _spawn_daemon(args, mountpoint)
    from .daemon import MountOptions, prepare, serve

    options = MountOptions(
        mountpoint=mountpoint,
        repo=args.repo,
        rev=args.rev,
        cache_dir=args.cache_dir,
        remote=args.remote,
        allow_other=args.allow_other,
        debug=args.debug,
        rw=args.rw,
        cache_size=args.cache_size,
    )
    try:
        prepared = prepare(options)
        serve(prepared, lambda: _report_ready(args.ready_fd))
    except UserError as exc:
        if args.ready_fd is not None:
            _write_fd(args.ready_fd, f"error: {exc}\n")
        raise
    return 0


def _report_ready(fd: int | None) -> None:
    logging.getLogger("fusefs").info("mounted; serving")
    if fd is not None:
        _write_fd(fd, "ready\n")


def _write_fd(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
        os.close(fd)
    except OSError:
        pass


def _spawn_daemon(args: argparse.Namespace, mountpoint: Path) -> int:
    """Start the daemon in its own session and wait until it reports ready or fails."""
    logfile = log_path(mountpoint)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    cmd = [
        sys.executable,
        "-m",
        "fusefs",
        "mount",
        "-f",
        "--ready-fd",
        str(write_fd),
        "--repo",
        args.repo,
        "--rev",
        args.rev,
        str(mountpoint),
    ]
    for flag, value in (
        ("--cache-dir", args.cache_dir),
        ("--remote", args.remote),
        ("--cache-size", args.cache_size),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    flags = (("--allow-other", args.allow_other), ("--debug", args.debug), ("--rw", args.rw))
    cmd += [f for f, on in flags if on]
    with open(logfile, "ab") as log_out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_out,
            stderr=log_out,
            pass_fds=[write_fd],
            start_new_session=True,
        )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.readline().decode("utf-8", "replace").strip()
    if answer == "ready":
        return 0
    proc.wait()
    if answer.startswith("error: "):
        raise UserError(answer[len("error: ") :])
    raise UserError(f"the mount daemon exited with status {proc.returncode}; see {logfile}")


def cmd_umount(args: argparse.Namespace) -> int:
    from .daemon import unmount

    mountpoint = args.mountpoint.absolute()
    record = MountRecord.load(mountpoint)
    unmount(mountpoint)
    if record is not None:
        _wait_exit(record.pid, args.timeout)
    return 0


def _wait_exit(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise UserError(f"daemon {pid} did not exit within {timeout:g} s")


STATUS_EXAMPLES = """\
examples:
  fusefs status /mnt/data
  fusefs status --json /mnt/data | jq '.changes[].path'
"""

COMMIT_EXAMPLES = """\
examples:
  fusefs commit /mnt/data -m "add batch 7"
  fusefs commit /mnt/data -m "add batch 7" --push --author "Ada <ada@example.com>"
"""

DISCARD_EXAMPLES = """\
examples:
  fusefs discard /mnt/data                         # everything staged
  fusefs discard /mnt/data /mnt/data/data/images/batch7
"""


def _add_staging_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    raw = argparse.RawDescriptionHelpFormatter
    st = sub.add_parser(
        "status",
        help="list staged changes of a writable mount",
        epilog=STATUS_EXAMPLES,
        description="List what is staged in a writable mount: added, modified, deleted and "
        "renamed paths with sizes, like git status.",
        formatter_class=raw,
    )
    st.add_argument("mountpoint", type=Path)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)
    co = sub.add_parser(
        "commit",
        help="commit staged changes as dvc add + git commit would",
        epilog=COMMIT_EXAMPLES,
        formatter_class=raw,
        description="Hash staged files into the cache, write .dir objects, .dvc files and "
        ".gitignore entries as dvc add does, and make one Git commit on the mounted branch. "
        "Refuses if the branch moved since the mount's base; nothing staged is lost on failure.",
    )
    co.add_argument("mountpoint", type=Path)
    co.add_argument("-m", "--message", required=True, help="commit message")
    co.add_argument(
        "--push",
        action="store_true",
        help="upload new objects to the default DVC remote before the branch moves",
    )
    co.add_argument("--author", help='commit author, "Name <email>"')
    co.set_defaults(func=cmd_commit)
    di = sub.add_parser(
        "discard",
        help="throw staged changes away",
        epilog=DISCARD_EXAMPLES,
        description="Drop staged changes of a writable mount, all of them or those at and "
        "below the given paths (inside the mount).",
        formatter_class=raw,
    )
    di.add_argument("mountpoint", type=Path)
    di.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    di.set_defaults(func=cmd_discard)


def _control(mountpoint: Path, message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    from .control import request
    from .state import control_socket

    mountpoint = mountpoint.absolute()
    if MountRecord.load(mountpoint) is None:
        raise UserError(f"{mountpoint} is not a fusefs mount")
    sock = control_socket(mountpoint)
    if not sock.exists():
        raise UserError(f"{mountpoint} is not a writable mount (mount it with --rw)")
    for reply in request(sock, message):
        if "progress" in reply:
            yield reply
        elif reply.get("ok"):
            yield reply
            return
        else:
            raise UserError(str(reply.get("error", "the daemon refused")))
    raise UserError("the daemon closed the connection without an answer")


def _final(mountpoint: Path, message: dict[str, Any]) -> dict[str, Any]:
    replies = list(_control(mountpoint, message))
    return replies[-1]


def cmd_status(args: argparse.Namespace) -> int:
    reply = _final(args.mountpoint, {"op": "status"})
    if args.json:
        print(json.dumps(reply, indent=1))
        return 0
    changes = reply["changes"]
    print(f"On branch {reply['branch']} (base {reply['base'][:12]})")
    if not changes:
        print("nothing staged")
        return 0
    for c in changes:
        name = c["path"] + ("/" if c["is_dir"] else "")
        if c["kind"] == "renamed":
            name = f"{c['old_path']} -> {name}"
        print(f"  {c['kind']:>9}  {_size(c['size']):>9}  {name}")
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def cmd_commit(args: argparse.Namespace) -> int:
    message = {
        "op": "commit",
        "message": args.message,
        "push": args.push,
        "author": args.author,
    }
    bar = _ProgressBar()
    result: dict[str, Any] = {}
    for reply in _control(args.mountpoint, message):
        if "progress" in reply:
            bar.show(reply["progress"])
        else:
            result = reply
    bar.done()
    pushed = f", pushed {result['objects_pushed']} ({_size(result['bytes_pushed'])})"
    print(
        f"[{result['commit'][:12]}] {args.message.splitlines()[0]}: "
        f"{len(result['metafiles'])} metafile(s), {result['objects_added']} new object(s) "
        f"({_size(result['bytes_added'])}){pushed if args.push else ''}"
    )
    for tree in result.get("checked_out", []):
        print(
            f"note: the branch is checked out in {tree}, whose index and files still show "
            f"the old revision; to bring them forward: cd {shlex.quote(tree)} && "
            f"git read-tree -m -u {result['base'][:12]} HEAD && dvc checkout",
            file=sys.stderr,
        )
    return 0


class _ProgressBar:
    """One status line on stderr while a commit hashes and uploads (only on a terminal)."""

    def __init__(self) -> None:
        self.active = sys.stderr.isatty()
        self.start = time.monotonic()

    def show(self, p: dict[str, Any]) -> None:
        if not self.active:
            return
        frac = min(p["bytes_done"] / max(p["bytes_total"], 1), 1.0)
        rate = p["bytes_done"] / max(time.monotonic() - self.start, 1e-6)
        eta = (p["bytes_total"] - p["bytes_done"]) / rate if rate > 0 else 0.0
        sys.stderr.write(
            f"\r{p['phase']:>6} [{'#' * int(frac * 30):<30}] "
            f"{_size(p['bytes_done'])}/{_size(p['bytes_total'])} "
            f"{p['objects_done']}/{p['objects_total']} objects "
            f"{_size(int(rate))}/s ETA {eta:.0f}s "
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.active:
            sys.stderr.write("\n")


def cmd_discard(args: argparse.Namespace) -> int:
    mountpoint = args.mountpoint.absolute()
    rel = []
    for path in args.paths:
        try:
            rel.append(str(path.absolute().relative_to(mountpoint)))
        except ValueError:
            raise UserError(f"{path} is not inside {mountpoint}") from None
    reply = _final(mountpoint, {"op": "discard", "paths": rel})
    print(f"discarded {reply['discarded']} staged change(s)")
    return 0


def _size_arg(text: str) -> int:
    from .cachectl import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


CACHE_STATUS_EXAMPLES = """\
examples:
  fusefs cache status                              # the default cache (~/.cache/fusefs)
  fusefs cache status --cache-dir ~/src/my-dataset/.dvc/cache
  fusefs cache status --json | jq .bytes
"""

CACHE_GC_EXAMPLES = """\
examples:
  fusefs cache gc                                  # only temp files of dead downloads
  fusefs cache gc --size 20G --dry-run             # what trimming to 20 GiB would remove
  fusefs cache gc --cache-dir /scratch/dvc-cache --size 0   # everything no mount has open
"""

PREFETCH_EXAMPLES = """\
examples:
  fusefs prefetch /mnt/data/data/images            # a whole directory, 8 readers
  fusefs prefetch --jobs 32 /mnt/data/train /mnt/data/labels.csv
"""


def _add_cache_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    raw = argparse.RawDescriptionHelpFormatter
    cache_dir_help = (
        "object cache (default: $FUSEFS_CACHE_DIR, else $XDG_CACHE_HOME/fusefs, the cache of "
        "bare-repository and URL mounts)"
    )
    ca = sub.add_parser(
        "cache",
        help="inspect or trim an object cache",
        description="Inspect or trim an object cache shared by mounts and DVC.",
        formatter_class=raw,
    )
    cache_sub = ca.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    cs = cache_sub.add_parser(
        "status",
        help="objects, bytes, pinned objects, last uses, mounts using caches",
        description="Count a cache's objects and bytes, the objects pinned (mapped by a "
        "running mount), the oldest and newest last use, and list the running mounts with "
        "the cache each uses.",
        epilog=CACHE_STATUS_EXAMPLES,
        formatter_class=raw,
    )
    cs.add_argument("--cache-dir", type=Path, metavar="DIR", help=cache_dir_help)
    cs.add_argument("--json", action="store_true", help="machine-readable output")
    cs.set_defaults(func=cmd_cache_status)
    cg = cache_sub.add_parser(
        "gc",
        help="remove stale temp files; with --size, evict LRU objects down to SIZE",
        description="Remove temp files of downloads that died (untouched for a day). With "
        "--size, also remove objects, least recently used first and .dir manifests last, "
        "until the objects take at most SIZE; objects a running mount has open and objects "
        "hard-linked into a DVC workspace are kept. Safe while mounts use the cache.",
        epilog=CACHE_GC_EXAMPLES,
        formatter_class=raw,
    )
    cg.add_argument("--cache-dir", type=Path, metavar="DIR", help=cache_dir_help)
    cg.add_argument(
        "--size",
        type=_size_arg,
        metavar="SIZE",
        help="trim objects to SIZE (4096, 500M, 50G, 1T; binary units); default: remove no object",
    )
    cg.add_argument("--dry-run", action="store_true", help="report what would go; remove nothing")
    cg.set_defaults(func=cmd_cache_gc)
    pf = sub.add_parser(
        "prefetch",
        help="read files through a mount so their objects are cached",
        description="Warm the cache for files and directories inside a fusefs mount: read "
        "every file through the mount with several threads, so the daemon fetches and "
        "verifies each object into its cache. Shows progress on a terminal. Exit status 1 if "
        "a file could not be read (they are listed), 130 when interrupted (what finished stays "
        "cached).",
        epilog=PREFETCH_EXAMPLES,
        formatter_class=raw,
    )
    pf.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    pf.add_argument(
        "-j", "--jobs", type=int, default=8, metavar="N", help="parallel readers (default 8)"
    )
    pf.set_defaults(func=cmd_prefetch)


def _cache_dir(arg: Path | None) -> Path:
    from .state import default_cache_dir

    root = Path(os.path.realpath(arg if arg is not None else default_cache_dir()))
    if not root.is_dir():
        raise UserError(f"cache {root} does not exist")
    return root


def _running_mounts() -> list[MountRecord]:
    from .state import state_dir

    records = []
    for path in sorted((state_dir() / "mounts").glob("*.json")):
        try:
            record = MountRecord(**json.loads(path.read_text()))
            os.kill(record.pid, 0)
        except (OSError, ValueError, TypeError):
            continue  # unreadable, or left behind by a daemon that died
        records.append(record)
    return records


def _same(cache_dir: str, root: Path) -> bool:
    return Path(os.path.realpath(cache_dir)) == root


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_cache_status(args: argparse.Namespace) -> int:
    from .cachectl import format_size, scan

    root = _cache_dir(args.cache_dir)
    stats = scan(root)
    mounts = _running_mounts()
    if args.json:
        doc = {
            "cache_dir": stats.root,
            "objects": stats.objects,
            "bytes": stats.bytes,
            "manifests": stats.manifests,
            "pinned": stats.pinned,
            "pinned_bytes": stats.pinned_bytes,
            "oldest_use": stats.oldest_use,
            "newest_use": stats.newest_use,
            "stale_tmp": stats.stale_tmp,
            "mounts": [
                {
                    "mountpoint": m.mountpoint,
                    "pid": m.pid,
                    "cache_dir": m.cache_dir,
                    "cache_size": m.cache_size,
                    "uses_this_cache": _same(m.cache_dir, root),
                }
                for m in mounts
            ],
        }
        print(json.dumps(doc, indent=1))
        return 0
    print(f"cache:      {stats.root}")
    print(f"objects:    {stats.objects} ({stats.manifests} .dir manifests)")
    print(f"size:       {format_size(stats.bytes)} ({stats.bytes} bytes)")
    print(f"pinned:     {stats.pinned} objects, {format_size(stats.pinned_bytes)} (open in mounts)")
    print(f"oldest use: {_when(stats.oldest_use)}")
    print(f"newest use: {_when(stats.newest_use)}")
    if stats.stale_tmp:
        print(f"stale temp files: {stats.stale_tmp} (fusefs cache gc removes them)")
    if not mounts:
        print("running mounts: none")
    else:
        print("running mounts:")
        for m in mounts:
            limit = f", limit {format_size(m.cache_size)}" if m.cache_size is not None else ""
            here = "  *" if _same(m.cache_dir, root) else "   "
            print(f"{here} {m.mountpoint} (pid {m.pid}): {m.cache_dir}{limit}")
    return 0


def cmd_cache_gc(args: argparse.Namespace) -> int:
    from .cachectl import format_size, gc

    root = _cache_dir(args.cache_dir)
    report = gc(root, args.size, args.dry_run)
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{verb} {report.removed} objects ({format_size(report.freed)}) and "
        f"{report.tmp_removed} stale temp files ({format_size(report.tmp_freed)}); "
        f"objects: {format_size(report.before)} -> {format_size(report.after)}"
    )
    kept = []
    if report.pinned:
        kept.append(f"{report.pinned} open in mounts")
    if report.linked:
        kept.append(f"{report.linked} hard-linked into a workspace")
    if kept:
        print(f"kept {', '.join(kept)}")
    if report.target is not None and report.after > report.target:
        print(
            f"fusefs: cannot trim to {format_size(report.target)}: the rest is in use",
            file=sys.stderr,
        )
    return 0


def cmd_prefetch(args: argparse.Namespace) -> int:
    from . import prefetch

    if args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    progress, elapsed, interrupted = prefetch.run(args.paths, args.jobs)
    for path, reason in progress.failed:
        print(f"fusefs: {path}: {reason}", file=sys.stderr)
    print(prefetch.summary(progress, elapsed) + (" (interrupted)" if interrupted else ""))
    if interrupted:
        return 130
    return 1 if progress.failed else 0


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if getattr(args, "debug", False) else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("fsspec", "s3fs", "botocore", "aiobotocore", "asyncio", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    try:
        result: int = args.func(args)
        return result
    except UserError as exc:
        print(f"fusefs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `fusefs status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
