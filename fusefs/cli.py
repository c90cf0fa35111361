"""The `fusefs` command: argument parsing, human output and exit codes.

Exit status: 0 success, 1 a problem with what was asked (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import UserError
from .state import MountRecord, log_path

MOUNT_EXAMPLES = """\
examples:
  cd my-dvc-repo && fusefs mount --rev v3 /mnt/data
  fusefs mount --repo /srv/git/data.git --rev main /mnt/data
  fusefs mount --repo https://example.com/org/data.git --rev HEAD~2 /mnt/data
  fusefs mount -f --debug --rev v1 /mnt/data     # foreground, log to stderr
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
    for flag, value in (("--cache-dir", args.cache_dir), ("--remote", args.remote)):
        if value is not None:
            cmd += [flag, str(value)]
    cmd += [f for f, on in (("--allow-other", args.allow_other), ("--debug", args.debug)) if on]
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


if __name__ == "__main__":
    sys.exit(main())
