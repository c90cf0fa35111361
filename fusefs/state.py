"""Where fusefs keeps its own files: per-user state (mount registry, logs, cloned repositories)
and the default object cache. Overridable with FUSEFS_STATE_DIR and FUSEFS_CACHE_DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


def state_dir() -> Path:
    explicit = os.environ.get("FUSEFS_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fusefs"


def default_cache_dir() -> Path:
    explicit = os.environ.get("FUSEFS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fusefs"


def mount_id(mountpoint: Path) -> str:
    return hashlib.sha1(str(mountpoint).encode(), usedforsecurity=False).hexdigest()[:16]


@dataclass(frozen=True)
class MountRecord:
    """What a running daemon publishes about itself, for `umount` and the control commands."""

    pid: int
    mountpoint: str
    repo: str
    rev: str
    commit: str
    cache_dir: str
    log: str
    cache_size: int | None = None  # --cache-size in bytes, None when unbounded

    @staticmethod
    def path_for(mountpoint: Path) -> Path:
        return state_dir() / "mounts" / f"{mount_id(mountpoint)}.json"

    def save(self) -> None:
        path = self.path_for(Path(self.mountpoint))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, mountpoint: Path) -> MountRecord | None:
        try:
            return cls(**json.loads(cls.path_for(mountpoint).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def remove(self) -> None:
        current = self.load(Path(self.mountpoint))
        if current is not None and current.pid == self.pid:
            self.path_for(Path(self.mountpoint)).unlink(missing_ok=True)


def control_socket(mountpoint: Path) -> Path:
    return state_dir() / "mounts" / f"{mount_id(mountpoint)}.sock"


def log_path(mountpoint: Path) -> Path:
    return state_dir() / "logs" / f"{mount_id(mountpoint)}.log"
