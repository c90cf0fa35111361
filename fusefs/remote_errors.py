"""How a remote failure is classified, read from the whole exception chain.

Backends let whatever fsspec, botocore, aiohttp or asyncssh raise propagate; these functions
walk its `__cause__`/`__context__` chain and decide: transient (timeouts, dropped connections,
5xx, 408/429, short bodies: `Remote` retries them), permanent (missing, denied, other 4xx:
never retried), a lost connection (the backend must connect anew), or a mistake of the user's
that a mount-time probe shows (a one-line `UserError`). Pure functions over exceptions.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator


class _ShortRead(OSError):
    """A body ended before (or went past) the length asked for."""


_TRANSIENT_ERRNOS = {
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EBUSY,
    errno.EAGAIN,
    getattr(errno, "EREMOTEIO", errno.EIO),
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_status(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    if isinstance(status, int) and 100 <= status < 600:
        return status
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(code, int):
            return code
    return None


def _aws_code(exc: BaseException) -> str | None:
    for item in _chain(exc):
        response = getattr(item, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            if isinstance(code, str):
                return code
    return None


def _is_transient(exc: BaseException) -> bool:
    for item in _chain(exc):
        if isinstance(item, FileNotFoundError | PermissionError):
            return False
        if isinstance(item, _ShortRead | TimeoutError | ConnectionError):
            return True
        status = _http_status(item)
        if status is not None:
            return status >= 500 or status in (408, 429)
        if isinstance(item, OSError) and item.errno in _TRANSIENT_ERRNOS:
            return True
        name = type(item).__name__
        module = type(item).__module__
        if module.startswith("aiohttp") and name.startswith(
            ("ClientConnect", "ServerDisconnected", "ClientPayload", "ServerTimeout", "ClientOS")
        ):
            return True
        if module.startswith("botocore") and name in (
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ConnectionClosedError",
            "IncompleteReadError",
            "ResponseStreamingError",
            "HTTPClientError",
        ):
            return True
        if module.startswith("asyncssh") and name in (
            "ConnectionLost",
            "ChannelOpenError",
            "SFTPConnectionLost",
            "SFTPNoConnection",
        ):
            return True
        if name == "FSTimeoutError":
            return True
    return False


def _is_connection_loss(exc: BaseException) -> bool:
    """Failures after which a stateful connection (ssh) must be made anew."""
    for item in _chain(exc):
        module = type(item).__module__
        if module.startswith("asyncssh") or isinstance(
            item, ConnectionError | TimeoutError | EOFError
        ):
            return True
    return False


def _describe(exc: BaseException) -> str:
    for item in _chain(exc):
        if isinstance(item, TimeoutError | asyncio.TimeoutError):
            return f"timed out ({item})" if str(item) else "timed out"
    text = str(exc) or type(exc).__name__
    if type(exc).__module__ != "builtins" or isinstance(exc, _ShortRead):
        text = f"{type(exc).__name__}: {text}"
    return text


def _user_problem(exc: BaseException, scheme: str) -> str | None:
    """What to tell the user when a mount-time probe shows a mistake of theirs."""
    code = _aws_code(exc)
    if code in ("NoSuchBucket",):
        return "bucket does not exist"
    if code in (
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "AccountProblem",
    ):
        return f"access denied ({code}): check the credentials"
    for item in _chain(exc):
        name = type(item).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"):
            return f"no usable credentials: {item}"
        if name == "HostKeyNotVerifiable":
            return f"host key not verifiable: {item}"
        if name == "PermissionDenied" and type(item).__module__.startswith("asyncssh"):
            return f"authentication failed: {item}"
        status = _http_status(item)
        if status in (401, 403):
            return f"access denied (HTTP {status}): check the credentials"
        if isinstance(item, _MissingBucket):
            return "bucket does not exist"
        if isinstance(item, PermissionError):
            return f"access denied: {item}"
    return None


class _MissingBucket(FileNotFoundError):
    pass
