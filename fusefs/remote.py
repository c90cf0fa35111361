"""A DVC remote seen through fsspec: sizes, existence and the bytes of objects.

Knows nothing of FUSE or trees. All public calls block (run them in worker threads). The
protocols themselves are in `fusefs.backends`, the mapping of a remote's DVC settings in
`fusefs.remote_options`, and which failures are worth retrying in `fusefs.remote_errors`.

Invariants:
- every failure surfaces as `RemoteError` naming the object and the remote, with `__cause__`
  kept; a missing object is a `RemoteError` that says so (errno EIO);
- every remote call is bounded: each attempt by the backends' connect/read timeouts, and the
  call as a whole (all its attempts, each one's own backoff included) by `Limits.deadline`,
  which the backends enforce by cancelling the request on the event loop, so a stalled server
  cannot hold a thread for longer than the deadline;
- transient failures (timeouts, dropped connections, 5xx, 408/429, short bodies) are retried
  with exponential backoff, at most `Limits.attempts` times; permanent ones (missing, denied,
  4xx) are not;
- bytes are read in ranges of known length, and a range that comes back shorter (or longer)
  than asked is never passed on: it is a retried failure. The caller still verifies the md5;
- sizes are immutable facts about content-addressed objects, so once learnt they are kept;
  absence is not (an object may be pushed later) and is never remembered.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .backends import _make_backend
from .config import RemoteConfig
from .errors import RemoteError, UserError
from .objects import HashInfo
from .remote_errors import (
    _describe,
    _is_connection_loss,
    _is_transient,
    _ShortRead,
    _user_problem,
)
from .remote_options import Limits, _scheme

log = logging.getLogger(__name__)

CHUNK = 4 << 20

T = TypeVar("T")

# Remembered sizes beyond this many are forgotten (at ~150 bytes each, ~150 MB).
_MAX_KNOWN = 1_000_000


class Remote:
    """One configured remote: where objects live and how to reach them."""

    def __init__(self, config: RemoteConfig, limits: Limits | None = None) -> None:
        self.name = config.name
        self.url = config.url
        self.limits = Limits.for_remote(config, limits)
        self.scheme = _scheme(config.url)
        self._backend = _make_backend(config, self.scheme, self.limits)
        self.root = self._backend.root
        self._known: dict[HashInfo, int] = {}
        self._known_lock = threading.Lock()

    def __str__(self) -> str:
        return f"{self.name!r} ({self.url})"

    @property
    def fs(self) -> Any:
        """The underlying fsspec filesystem (connecting if it is not yet)."""
        return self._backend.filesystem()

    def path(self, hinfo: HashInfo) -> str:
        return f"{self.root}/{hinfo.relpath}"

    def close(self) -> None:
        self._backend.close()

    # -- mount-time check ------------------------------------------------------------------

    def check(self) -> None:
        """One cheap request: UserError if the remote is misconfigured (no such bucket, bad
        credentials, unknown host key); only a warning if it cannot be reached right now."""
        timeout = min(self.limits.deadline, self.limits.connect_timeout + self.limits.read_timeout)
        try:
            self._backend.probe(timeout)
        except Exception as exc:
            problem = _user_problem(exc, self.scheme)
            if problem is not None:
                raise UserError(f"remote {self}: {problem}") from exc
            log.warning(
                "remote %s cannot be reached now (%s); objects already cached still serve",
                self,
                _describe(exc),
            )

    # -- sizes ----------------------------------------------------------------------------

    def size(self, hinfo: HashInfo) -> int:
        """Size of one object; RemoteError when it is missing or the remote fails."""
        with self._known_lock:
            known = self._known.get(hinfo)
        if known is not None:
            return known
        found = self.sizes([hinfo])
        if hinfo not in found:
            raise RemoteError(f"object {hinfo} is missing on remote {self}", errno.EIO)
        return found[hinfo]

    def sizes(self, hashes: Iterable[HashInfo]) -> dict[HashInfo, int]:
        """Sizes of the objects that exist on the remote (missing ones are left out).

        Few objects are asked for one by one, concurrently; many are found by listing the
        folders they live in when that takes fewer requests.
        """
        result: dict[HashInfo, int] = {}
        pending: dict[str, HashInfo] = {}
        with self._known_lock:
            for hinfo in hashes:
                if hinfo in self._known:
                    result[hinfo] = self._known[hinfo]
                else:
                    pending[self.path(hinfo)] = hinfo
        if not pending:
            return result
        first = next(iter(pending.values()))
        found = self._attempts(
            first, "list sizes of", lambda timeout: self._backend.sizes(list(pending), timeout)
        )
        fresh = {pending[path]: size for path, size in found.items() if path in pending}
        self._remember(fresh)
        result.update(fresh)
        return result

    def forget(self, hinfo: HashInfo) -> None:
        """Drop a remembered size (the object turned out not to be what its name says)."""
        with self._known_lock:
            self._known.pop(hinfo, None)

    def _remember(self, sizes: dict[HashInfo, int]) -> None:
        with self._known_lock:
            if len(self._known) + len(sizes) > _MAX_KNOWN:
                self._known.clear()
            self._known.update(sizes)

    # -- bytes ----------------------------------------------------------------------------

    @contextmanager
    def open(self, hinfo: HashInfo) -> Iterator[ObjectReader]:
        """A reader of one object's bytes, in order."""
        yield ObjectReader(self, hinfo)

    def read_range(self, hinfo: HashInfo, start: int, end: int, total: int) -> bytes:
        """Bytes [start, end) of an object of `total` bytes; exactly that many or an error."""
        path = self.path(hinfo)
        want = end - start

        def attempt(timeout: float) -> bytes:
            data = self._backend.read(path, start, end, total, timeout)
            if len(data) != want:
                raise _ShortRead(
                    errno.EIO, f"asked for bytes {start}-{end - 1}, got {len(data)} bytes"
                )
            return data

        return self._attempts(hinfo, "read", attempt)

    # -- retries --------------------------------------------------------------------------

    def _attempts(self, hinfo: HashInfo, what: str, call: Callable[[float], T]) -> T:
        """Run `call(timeout)` until it succeeds, fails for good, or the deadline passes."""
        limits = self.limits
        deadline = time.monotonic() + limits.deadline
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError(f"deadline of {limits.deadline:g}s passed")
                return call(remaining)
            except FileNotFoundError as exc:
                raise RemoteError(f"object {hinfo} is missing on remote {self}") from exc
            except Exception as exc:
                transient = _is_transient(exc)
                if transient and _is_connection_loss(exc):
                    self._backend.reset()
                pause = limits.backoff_for(attempt)
                left = deadline - time.monotonic()
                if not transient or attempt >= limits.attempts or left <= pause:
                    spent = limits.deadline - left
                    tries = f" ({attempt} attempts in {spent:.1f}s)" if attempt > 1 else ""
                    raise RemoteError(
                        f"cannot {what} object {hinfo} on remote {self}{tries}: {_describe(exc)}"
                    ) from exc
                log.info(
                    "remote %s: %s object %s failed (%s); retrying in %.2fs",
                    self,
                    what,
                    hinfo,
                    _describe(exc),
                    pause,
                )
                time.sleep(pause)


class ObjectReader:
    """Reads an object front to back in ranges of at most CHUNK bytes."""

    def __init__(self, remote: Remote, hinfo: HashInfo) -> None:
        self._remote, self._hinfo = remote, hinfo
        self._total: int | None = None
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if self._total is None:
            self._total = self._remote.size(self._hinfo)
        want = CHUNK if size < 0 else min(size, CHUNK)
        end = min(self._pos + want, self._total)
        if end <= self._pos:
            return b""
        data = self._remote.read_range(self._hinfo, self._pos, end, self._total)
        self._pos = end
        return data

    def close(self) -> None:
        pass
