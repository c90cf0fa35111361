"""A DVC remote seen through fsspec: get, size and existence of one object.

Knows nothing of FUSE or trees. All calls are blocking (run them in worker threads); every
failure surfaces as `RemoteError` with the object and remote named, `__cause__` kept.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec

from .config import RemoteConfig
from .errors import RemoteError, UserError
from .objects import HashInfo

log = logging.getLogger(__name__)

CHUNK = 4 << 20


class Remote:
    """One configured remote: a filesystem and the root path objects live under."""

    def __init__(self, config: RemoteConfig) -> None:
        self.name = config.name
        self.url = config.url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(config.url, **storage_options(config))
        except ImportError as exc:
            raise UserError(f"remote {config.name!r} ({config.url}): {exc}") from None
        except (ValueError, OSError) as exc:
            raise UserError(f"remote {config.name!r} ({config.url}): {exc}") from None
        self.root = self.root.rstrip("/")

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"

    def path(self, hinfo: HashInfo) -> str:
        return f"{self.root}/{hinfo.relpath}"

    @contextmanager
    def open(self, hinfo: HashInfo) -> Iterator[_MappedReader]:
        """A streaming reader for one object."""
        with self._mapped(hinfo, "read"):
            handle = self.fs.open(self.path(hinfo), "rb")
        try:
            yield _MappedReader(handle, self, hinfo)
        finally:
            handle.close()

    def size(self, hinfo: HashInfo) -> int:
        with self._mapped(hinfo, "stat"):
            info = self.fs.info(self.path(hinfo))
        return int(info["size"])

    @contextmanager
    def _mapped(self, hinfo: HashInfo, what: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            raise RemoteError(f"object {hinfo} is missing on remote {self}", errno.EIO) from exc
        except RemoteError:
            raise
        except Exception as exc:  # fsspec backends raise far more than OSError
            raise RemoteError(f"cannot {what} object {hinfo} on remote {self}: {exc!r}") from exc


class _MappedReader:
    """File wrapper whose read errors become RemoteError."""

    def __init__(self, handle: Any, remote: Remote, hinfo: HashInfo) -> None:
        self._handle, self._remote, self._hinfo = handle, remote, hinfo

    def read(self, size: int = -1) -> bytes:
        with self._remote._mapped(self._hinfo, "read"):
            data: bytes = self._handle.read(size)
        return data

    def close(self) -> None:
        self._handle.close()


def storage_options(config: RemoteConfig) -> dict[str, Any]:
    """fsspec options for a remote's DVC settings (only those the protocol understands)."""
    return {}
