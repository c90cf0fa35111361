"""Real-mount helpers: run the `fusefs` CLI as a user would and always clean up.

A mount is a real kernel mount made by `fusefs mount` (daemon in the background); cleanup uses
`fusermount3 -u -z` so a failed test never leaves a mount behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.dvcrepo import isolated_env

requires_fuse = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3 (apt install fuse3)",
)


def fusefs_env(state: Path) -> dict[str, str]:
    """An environment with private fusefs state and no user DVC config."""
    env = isolated_env(state / "env")
    env["FUSEFS_STATE_DIR"] = str(state / "fusefs-state")
    env["FUSEFS_CACHE_DIR"] = str(state / "fusefs-cache")
    return env


def fusefs(
    *args: str, env: dict[str, str], cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "fusefs", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fusefs {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == target for line in info)


def wait_for(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise AssertionError(f"timed out waiting for {what}")


def force_unmount(path: Path) -> None:
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)


@contextmanager
def mounted(
    mountpoint: Path, *args: str, env: dict[str, str], cwd: Path | None = None
) -> Iterator[Path]:
    """`fusefs mount ARGS MOUNTPOINT` ... `fusefs umount MOUNTPOINT`."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    fusefs("mount", *args, str(mountpoint), env=env, cwd=cwd)
    try:
        assert is_mounted(mountpoint)
        yield mountpoint
    finally:
        if is_mounted(mountpoint):
            fusefs("umount", str(mountpoint), env=env, check=False)
        force_unmount(mountpoint)


def cached_objects(cache: Path) -> set[str]:
    """Object ids present in a DVC-layout cache (both layouts), ignoring fusefs's own files."""
    found = set()
    for path in cache.rglob("*"):
        rel = path.relative_to(cache).parts
        if not path.is_file() or rel[0] == ".fusefs":
            continue
        found.add(rel[-2] + rel[-1])
    return found
