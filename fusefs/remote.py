"""A DVC remote seen through fsspec: sizes, existence and the bytes of objects.

Knows nothing of FUSE or trees. All public calls block (run them in worker threads).

Invariants:
- every failure surfaces as `RemoteError` naming the object and the remote, with `__cause__`
  kept; a missing object is a `RemoteError` that says so (errno EIO);
- every remote call is bounded: each attempt by the backends' connect/read timeouts, and the
  call as a whole (all its attempts, each one's own backoff included) by `Limits.deadline`,
  enforced here by cancelling the request on the event loop, so a stalled server cannot hold
  a thread for longer than the deadline;
- transient failures (timeouts, dropped connections, 5xx, 408/429, short bodies) are retried
  with exponential backoff, at most `Limits.attempts` times; permanent ones (missing, denied,
  4xx) are not;
- bytes are read in ranges of known length, and a range that comes back shorter (or longer)
  than asked is never passed on: it is a retried failure. The caller still verifies the md5;
- sizes are immutable facts about content-addressed objects, so once learnt they are kept;
  absence is not (an object may be pushed later) and is never remembered.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import errno
import hashlib
import importlib
import logging
import os
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .config import RemoteConfig
from .errors import RemoteError, UserError
from .objects import HashInfo

log = logging.getLogger(__name__)

CHUNK = 4 << 20

T = TypeVar("T")

# A batch of this many unknown sizes or fewer is always asked for one by one.
_FEW = 8
# Remembered sizes beyond this many are forgotten (at ~150 bytes each, ~150 MB).
_MAX_KNOWN = 1_000_000

_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "azure": "adlfs", "ssh": "sshfs", "s3": "s3fs"}
_SUPPORTED = ("s3", "gs", "gcs", "azure", "http", "https", "ssh", "file")


@dataclass(frozen=True)
class Limits:
    """How long and how often a remote is tried. All times in seconds."""

    deadline: float = 30.0  # one call (a size, a range of bytes, a batch), all attempts
    connect_timeout: float = 5.0
    read_timeout: float = 10.0  # no byte for this long: the attempt fails
    attempts: int = 4
    backoff: float = 0.25  # before the 2nd attempt; doubles after each
    max_backoff: float = 4.0
    concurrency: int = 16  # requests in flight for one batch of sizes

    @classmethod
    def for_remote(cls, config: RemoteConfig, base: Limits | None = None) -> Limits:
        """`base` overridden by the remote's own DVC timeouts (`connect_timeout`,
        `read_timeout`; ssh's and azure's `timeout` is the connect timeout)."""
        limits = base or cls()
        opts = config.options
        changes: dict[str, float] = {}
        for key, attr in (
            ("timeout", "connect_timeout"),
            ("connect_timeout", "connect_timeout"),
            ("connection_timeout", "connect_timeout"),
            ("read_timeout", "read_timeout"),
        ):
            if key in opts:
                changes[attr] = _number(config, key)
        return replace(limits, **changes)  # type: ignore[arg-type]

    def backoff_for(self, attempt: int) -> float:
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))


class _ShortRead(OSError):
    """A body ended before (or went past) the length asked for."""


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


# -- errors ---------------------------------------------------------------------------------

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


# -- options --------------------------------------------------------------------------------


def _scheme(url: str) -> str:
    if "://" not in url:
        return "file"
    scheme = url.split("://", 1)[0].lower()
    return "s3" if scheme == "s3a" else scheme


def _bool(config: RemoteConfig, key: str, default: bool) -> bool:
    value = config.options.get(key)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on", "enable"):
        return True
    if lowered in ("0", "false", "no", "off", "disable"):
        return False
    raise UserError(f"remote {config.name!r}: {key} = {value!r} is not a boolean")


def _number(config: RemoteConfig, key: str) -> float:
    value = config.options[key]
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"remote {config.name!r}: {key} = {value!r} is not a number") from None
    if number <= 0:
        raise UserError(f"remote {config.name!r}: {key} must be positive, not {value!r}")
    return number


def _ssl_verify(config: RemoteConfig) -> bool | str:
    """DVC's `ssl_verify`: a boolean, or the path of a CA bundle."""
    value = config.options.get("ssl_verify")
    if value is None:
        return True
    try:
        return _bool(config, "ssl_verify", True)
    except UserError:
        return os.path.expanduser(value)


def _require(config: RemoteConfig, scheme: str) -> None:
    package = _PACKAGES.get(scheme)
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError:
        raise UserError(
            f"remote {config.name!r} ({config.url}): install {package} to use {scheme}:// remotes"
        ) from None


def storage_options(config: RemoteConfig, limits: Limits | None = None) -> dict[str, Any]:
    """fsspec options for a remote's DVC settings, as DVC's own plugins map them.

    Credentials that are not configured are left to the backend's usual lookup (for S3:
    AWS_* variables, ~/.aws, instance roles; for ssh: ~/.ssh/config and the agent).
    """
    scheme = _scheme(config.url)
    limits = Limits.for_remote(config, limits)
    if scheme not in _SUPPORTED:
        raise UserError(
            f"remote {config.name!r} ({config.url}): {scheme}:// remotes are not supported "
            f"(supported: {', '.join(s for s in _SUPPORTED if s != 'gcs')}, local paths)"
        )
    _require(config, scheme)
    if scheme == "s3":
        return _s3_options(config, limits)
    if scheme in ("http", "https"):
        return _http_options(config, limits)
    if scheme == "ssh":
        return _ssh_options(config, limits)
    if scheme in ("gs", "gcs"):
        return _gs_options(config)
    if scheme == "azure":
        return _azure_options(config)
    return {}


def _s3_options(config: RemoteConfig, limits: Limits) -> dict[str, Any]:
    opts = config.options
    client: dict[str, Any] = {}
    if "region" in opts:
        client["region_name"] = opts["region"]
    if "endpointurl" in opts:
        client["endpoint_url"] = opts["endpointurl"]
    verify = _ssl_verify(config)
    if verify is not True:
        client["verify"] = verify
    result: dict[str, Any] = {
        "anon": _bool(config, "allow_anonymous_login", False),
        "use_ssl": _bool(config, "use_ssl", True),
        "client_kwargs": client,
        "config_kwargs": {
            "connect_timeout": limits.connect_timeout,
            "read_timeout": limits.read_timeout,
            # Retries are ours (bounded by the deadline), not botocore's.
            "retries": {"max_attempts": 1, "mode": "standard"},
        },
        "use_listings_cache": False,
        "skip_instance_cache": True,
    }
    for dvc_key, s3fs_key in (
        ("access_key_id", "key"),
        ("secret_access_key", "secret"),
        ("session_token", "token"),
        ("profile", "profile"),
    ):
        if dvc_key in opts:
            result[s3fs_key] = opts[dvc_key]
    if "region" not in opts and "endpointurl" not in opts and not os.environ.get("AWS_REGION"):
        result["cache_regions"] = True  # find the bucket's region, as DVC does
    extra = _sse_options(config)
    if extra:
        result["s3_additional_kwargs"] = extra
    if "credentialpath" in opts or "configpath" in opts:
        result["session"] = _aws_session(config)
    return result


def _sse_options(config: RemoteConfig) -> dict[str, str]:
    """Server-side encryption request parameters (reads need only SSE-C's, but the others
    are harmless and keep a remote's settings in one place)."""
    opts = config.options
    extra: dict[str, str] = {}
    if "sse" in opts:
        extra["ServerSideEncryption"] = opts["sse"]
    if "sse_kms_key_id" in opts:
        extra["SSEKMSKeyId"] = opts["sse_kms_key_id"]
    if "sse_customer_key" in opts:
        if "sse_kms_key_id" in opts:
            raise UserError(
                f"remote {config.name!r}: sse_kms_key_id and sse_customer_key "
                "are mutually exclusive"
            )
        try:
            key = base64.b64decode(opts["sse_customer_key"], validate=True)
        except ValueError:
            raise UserError(f"remote {config.name!r}: sse_customer_key is not base64") from None
        extra["SSECustomerAlgorithm"] = opts.get("sse_customer_algorithm", "AES256")
        extra["SSECustomerKey"] = key.decode("latin-1")
        digest = hashlib.md5(key, usedforsecurity=False).digest()
        extra["SSECustomerKeyMD5"] = base64.b64encode(digest).decode()
    elif "sse_customer_algorithm" in opts:
        extra["SSECustomerAlgorithm"] = opts["sse_customer_algorithm"]
    return extra


def _aws_session(config: RemoteConfig) -> Any:
    """A botocore session reading the configured credentials/config files (DVC sets
    AWS_SHARED_CREDENTIALS_FILE/AWS_CONFIG_FILE instead; the process environment is
    left alone here)."""
    session = importlib.import_module("aiobotocore.session").AioSession(
        profile=config.options.get("profile")
    )
    if "credentialpath" in config.options:
        session.set_config_variable(
            "credentials_file", os.path.expanduser(config.options["credentialpath"])
        )
    if "configpath" in config.options:
        session.set_config_variable("config_file", os.path.expanduser(config.options["configpath"]))
    return session


def _http_options(config: RemoteConfig, limits: Limits) -> dict[str, Any]:
    import aiohttp

    opts = config.options
    client: dict[str, Any] = {
        "timeout": aiohttp.ClientTimeout(
            total=None,
            connect=limits.connect_timeout,
            sock_connect=limits.connect_timeout,
            sock_read=limits.read_timeout,
        ),
        "trust_env": True,  # proxies from the environment, as DVC
        "ssl_verify": _ssl_verify(config),
    }
    auth = opts.get("auth", "").lower()
    password = opts.get("password")
    if auth and password is None and _bool(config, "ask_password", False):
        raise UserError(
            f"remote {config.name!r}: ask_password cannot prompt from a mount; set the "
            "password with `dvc remote modify --local`"
        )
    if auth == "basic":
        if "user" not in opts or password is None:
            raise UserError(
                f"remote {config.name!r}: HTTP 'basic' authentication needs user and password"
            )
        token = base64.b64encode(f"{opts['user']}:{password}".encode()).decode("ascii")
        client["headers"] = {"Authorization": f"Basic {token}"}
    elif auth == "custom":
        header = opts.get("custom_auth_header")
        if header is None or password is None:
            raise UserError(
                f"remote {config.name!r}: HTTP 'custom' authentication needs "
                "custom_auth_header and password"
            )
        client["headers"] = {header: password}
    elif auth:
        raise UserError(f"remote {config.name!r}: HTTP auth {auth!r} is not supported")
    return {"client_kwargs": client, "get_client": _http_client, "skip_instance_cache": True}


async def _http_client(ssl_verify: bool | str = True, **kwargs: Any) -> Any:
    """fsspec's `get_client`: an aiohttp session with our timeouts and TLS settings."""
    import aiohttp

    kwargs.pop("loop", None)  # fsspec passes its loop; the session uses the running one

    context: ssl.SSLContext | bool
    if isinstance(ssl_verify, str):
        context = ssl.create_default_context(cafile=ssl_verify)
    elif ssl_verify:
        context = ssl.create_default_context()
    else:
        context = False
    connector = aiohttp.TCPConnector(ssl=context, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, **kwargs)


def _ssh_options(config: RemoteConfig, limits: Limits) -> dict[str, Any]:
    from fsspec.utils import infer_storage_options

    opts = config.options
    parsed = infer_storage_options(config.url)
    result: dict[str, Any] = {"host": parsed["host"]}
    user = parsed.get("username") or opts.get("user") or opts.get("username")
    if user:
        result["username"] = user
    port = parsed.get("port") or opts.get("port")
    if port:
        try:
            result["port"] = int(port)
        except ValueError:
            raise UserError(f"remote {config.name!r}: port {port!r} is not a number") from None
    for key in ("password", "passphrase"):
        if key in opts:
            result[key] = opts[key]
        elif _bool(config, f"ask_{key}", False):
            raise UserError(
                f"remote {config.name!r}: ask_{key} cannot prompt from a mount; set {key} "
                "with `dvc remote modify --local`"
            )
    if "keyfile" in opts:
        result["client_keys"] = [os.path.expanduser(opts["keyfile"])]
    # DVC does not check host keys (sshfs's default); a `known_hosts` file turns it on.
    result["known_hosts"] = (
        os.path.expanduser(opts["known_hosts"]) if "known_hosts" in opts else None
    )
    result["gss_auth"] = _bool(config, "gss_auth", False)
    if not _bool(config, "allow_agent", True):
        result["agent_path"] = None
    if "max_sessions" in opts:
        result["max_sessions"] = int(_number(config, "max_sessions"))
    result["connect_timeout"] = limits.connect_timeout
    # A server that stops answering is dropped after about read_timeout.
    result["keepalive_interval"] = max(limits.read_timeout / 2, 0.5)
    result["keepalive_count_max"] = 2
    result["compression_algs"] = None
    result["skip_instance_cache"] = True
    return result


def _gs_options(config: RemoteConfig) -> dict[str, Any]:
    opts = config.options
    result: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if "projectname" in opts:
        result["project"] = opts["projectname"]
    if _bool(config, "allow_anonymous_login", False):
        result["token"] = "anon"
    elif "credentialpath" in opts:
        result["token"] = os.path.expanduser(opts["credentialpath"])
    if "endpointurl" in opts:
        result["endpoint_url"] = opts["endpointurl"]
    return result


def _azure_options(config: RemoteConfig) -> dict[str, Any]:
    opts = config.options
    result: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    for key in (
        "connection_string",
        "sas_token",
        "account_name",
        "account_key",
        "tenant_id",
        "client_id",
        "client_secret",
    ):
        if key in opts:
            result[key] = opts[key]
    if _bool(config, "allow_anonymous_login", False):
        result["anon"] = True
    for key in (
        "exclude_environment_credential",
        "exclude_visual_studio_code_credential",
        "exclude_shared_token_cache_credential",
        "exclude_managed_identity_credential",
    ):
        if key in opts:
            result.setdefault("credential_kwargs", {})[key] = _bool(config, key, False)
    return result


# -- backends -------------------------------------------------------------------------------


def _make_backend(config: RemoteConfig, scheme: str, limits: Limits) -> _Backend:
    options = storage_options(config, limits)
    if scheme == "file":
        url = config.url
        path = urlsplit(url).path if url.startswith("file://") else url
        if url.startswith("file://") and urlsplit(url).netloc not in ("", "localhost"):
            raise UserError(f"remote {config.name!r} ({url}): file:// URLs must be local")
        return _LocalBackend(os.path.abspath(path).rstrip("/") or "/")
    try:
        if scheme == "s3":
            from s3fs import S3FileSystem

            root = config.url.split("://", 1)[1].strip("/")
            return _S3Backend(lambda: S3FileSystem(**options), root, limits)
        if scheme in ("http", "https"):
            from fsspec.implementations.http import HTTPFileSystem

            return _HttpBackend(lambda: HTTPFileSystem(**options), config.url.rstrip("/"), limits)
        if scheme == "ssh":
            from fsspec.utils import infer_storage_options

            root = infer_storage_options(config.url)["path"].rstrip("/") or "/"
            return _SshBackend(options, root, limits)
        if scheme in ("gs", "gcs"):
            gcs = importlib.import_module("gcsfs").GCSFileSystem
            root = config.url.split("://", 1)[1].strip("/")
            return _FsspecBackend(lambda: gcs(**options), root, limits)
        azure = importlib.import_module("adlfs").AzureBlobFileSystem
        root = config.url.split("://", 1)[1].strip("/")
        return _FsspecBackend(lambda: azure(**options), root, limits)
    except ImportError as exc:
        raise UserError(f"remote {config.name!r} ({config.url}): {exc}") from None


def _common_prefix(first: str, last: str) -> str:
    """The longest string both start with (of sorted strings, every one starts with it)."""
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


class _Backend(ABC):
    """Primitive operations on remote paths; `timeout` bounds the whole operation."""

    root: str
    can_list = True

    @abstractmethod
    def size(self, path: str, timeout: float) -> int: ...

    @abstractmethod
    def read(self, path: str, start: int, end: int, total: int, timeout: float) -> bytes: ...

    @abstractmethod
    def sizes(self, paths: list[str], timeout: float) -> dict[str, int]:
        """Sizes of those of `paths` that exist; raises if any could not be decided."""

    @abstractmethod
    def probe(self, timeout: float) -> None: ...

    def filesystem(self) -> Any:
        return None

    @abstractmethod
    def reset(self) -> None:
        """Forget connections after a connection-level failure."""

    def close(self) -> None:
        self.reset()


class _LocalBackend(_Backend):
    """A folder (local disk or a network mount): plain system calls, no retries needed."""

    def __init__(self, root: str) -> None:
        self.root = root

    def filesystem(self) -> Any:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem()

    def size(self, path: str, timeout: float) -> int:
        st = os.stat(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, "not a file", path)
        return st.st_size

    def read(self, path: str, start: int, end: int, total: int, timeout: float) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)

    def sizes(self, paths: list[str], timeout: float) -> dict[str, int]:
        found: dict[str, int] = {}
        for path in paths:
            with suppress(FileNotFoundError, NotADirectoryError):
                st = os.stat(path)
                found[path] = st.st_size
        return found

    def reset(self) -> None:
        pass  # nothing is kept open

    def probe(self, timeout: float) -> None:
        if not os.path.isdir(self.root):
            log.warning("remote folder %s does not exist (nothing pushed yet?)", self.root)


class _AsyncBackend(_Backend):
    """A backend on an fsspec async filesystem, driven on fsspec's event-loop thread."""

    def __init__(self, factory: Callable[[], Any], root: str, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self._factory = factory
        self._fs: Any = None
        self._lock = threading.Lock()

    def filesystem(self) -> Any:
        with self._lock:
            if self._fs is None:
                self._fs = self._factory()
            return self._fs

    def reset(self) -> None:
        with self._lock:
            self._fs = None

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Run a coroutine on the filesystem's loop; cancelled once `timeout` passes."""
        fs = self.filesystem()
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(make(fs), timeout), fs.loop)
        try:
            return future.result(timeout + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:.1f}s") from None

    async def _gather_sizes(
        self, paths: list[str], one: Callable[[str], Coroutine[Any, Any, int]]
    ) -> dict[str, int]:
        gate = asyncio.Semaphore(self.limits.concurrency)

        async def size_of(path: str) -> int | None:
            async with gate:
                try:
                    return await one(path)
                except FileNotFoundError:
                    return None

        sizes = await asyncio.gather(*(size_of(p) for p in paths))
        return {p: s for p, s in zip(paths, sizes, strict=True) if s is not None}

    async def _list_sizes(self, fs: Any, folders: list[str]) -> dict[str, int]:
        gate = asyncio.Semaphore(self.limits.concurrency)

        async def listing(folder: str) -> dict[str, int]:
            async with gate:
                try:
                    entries = await self._ls(fs, folder)
                except FileNotFoundError:
                    return {}
            return {
                self._full(e["name"]): int(e["size"]) for e in entries if e.get("type") == "file"
            }

        found: dict[str, int] = {}
        for part in await asyncio.gather(*(listing(f) for f in folders)):
            found.update(part)
        return found

    async def _ls(self, fs: Any, folder: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await fs._ls(folder, detail=True, refresh=True)
        return entries

    def _full(self, name: str) -> str:
        return name

    def sizes(self, paths: list[str], timeout: float) -> dict[str, int]:
        folders = sorted({_parent(p) for p in paths})
        wanted = set(paths)
        if self.can_list and len(paths) > _FEW and 2 * len(folders) <= len(paths):
            listed = self._run(lambda fs: self._list_sizes(fs, folders), timeout)
            return {p: s for p, s in listed.items() if p in wanted}
        return self._run(lambda fs: self._gather_sizes(paths, lambda p: self._size(fs, p)), timeout)

    def size(self, path: str, timeout: float) -> int:
        return self._run(lambda fs: self._size(fs, path), timeout)

    async def _size(self, fs: Any, path: str) -> int:
        info = await fs._info(path)
        if info.get("type") != "file" or info.get("size") is None:
            raise FileNotFoundError(errno.ENOENT, "not a file", path)
        return int(info["size"])

    def read(self, path: str, start: int, end: int, total: int, timeout: float) -> bytes:
        return self._run(lambda fs: self._read(fs, path, start, end), timeout)

    async def _read(self, fs: Any, path: str, start: int, end: int) -> bytes:
        data: bytes = await fs._cat_file(path, start=start, end=end)
        return data

    def probe(self, timeout: float) -> None:
        async def probe(fs: Any) -> None:
            with suppress(FileNotFoundError):
                await fs._info(self.root)

        self._run(probe, timeout)


class _FsspecBackend(_AsyncBackend):
    """Google Cloud Storage, Azure Blob Storage: plain fsspec calls."""


class _S3Backend(_AsyncBackend):
    """S3 through s3fs; sizes of many objects by one paginated listing when that is cheaper."""

    def filesystem(self) -> Any:
        with self._lock:
            if self._fs is None:
                fs = self._factory()
                fs.retries = 1  # retries are ours: one place decides, bounded by the deadline
                self._fs = fs
            return self._fs

    def _split(self, path: str) -> tuple[str, str]:
        bucket, _, key = path.partition("/")
        return bucket, key

    async def _size(self, fs: Any, path: str) -> int:
        bucket, key = self._split(path)
        head = await fs._call_s3("head_object", Bucket=bucket, Key=key)
        return int(head["ContentLength"])

    async def _list_sizes(self, fs: Any, folders: list[str]) -> dict[str, int]:
        raise NotImplementedError  # sizes() below lists by key range instead

    def sizes(self, paths: list[str], timeout: float) -> dict[str, int]:
        """One HEAD each for a few; for more, a listing from the first key to the last, which
        costs a request per 1000 keys, given up (for HEADs of the rest) once it costs more
        requests than HEADs would."""
        if len(paths) <= _FEW:
            return super().sizes(paths, timeout)
        return self._run(lambda fs: self._scan(fs, sorted(paths)), timeout)

    async def _scan(self, fs: Any, paths: list[str]) -> dict[str, int]:
        bucket = self._split(paths[0])[0]
        keys = [self._split(p)[1] for p in paths]
        found: dict[str, int] = {}
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": _common_prefix(keys[0], keys[-1])}
        first = keys[0]
        if first:
            params["StartAfter"] = first[:-1]  # S3 starts strictly after: anything before
        settled = 0  # keys[:settled] are decided (found, or absent from the listing)
        requests = 0
        while settled < len(keys):
            page = await fs._call_s3("list_objects_v2", **params)
            requests += 1
            contents = page.get("Contents", [])
            for item in contents:
                found[f"{bucket}/{item['Key']}"] = int(item["Size"])
            if not page.get("IsTruncated", False) or not contents:
                settled = len(keys)
                break
            last = contents[-1]["Key"]
            while settled < len(keys) and keys[settled] <= last:
                settled += 1
            remaining = len(keys) - settled
            # Keys are spread evenly (they are hashes): pages still needed, estimated from
            # the pages so far, against one HEAD per key left.
            if remaining * requests / max(settled, 1) >= remaining:
                break
            params["ContinuationToken"] = page["NextContinuationToken"]
        rest = [f"{bucket}/{k}" for k in keys[settled:]]
        if rest:
            found.update(await self._gather_sizes(rest, lambda p: self._size(fs, p)))
        wanted = set(paths)
        return {p: s for p, s in found.items() if p in wanted}

    def probe(self, timeout: float) -> None:
        bucket, prefix = self._split(self.root)

        async def probe(fs: Any) -> None:
            try:
                await fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)
            except FileNotFoundError as exc:
                if _aws_code(exc) in ("NoSuchBucket", None):
                    raise _MissingBucket(bucket) from exc
                raise

        self._run(probe, timeout)


class _HttpBackend(_AsyncBackend):
    """An HTTP(S) remote (`<url>/files/md5/ab/cd...`): HEAD for sizes, ranged GET for bytes.

    Status codes are read here rather than through fsspec's helpers, which turn every failure
    of a HEAD (a timeout, a 401) into FileNotFoundError.
    """

    can_list = False

    async def _session(self, fs: Any) -> Any:
        return await fs.set_session()

    async def _size(self, fs: Any, path: str) -> int:
        session = await self._session(fs)
        headers = {"Accept-Encoding": "identity"}
        async with session.head(path, allow_redirects=True, headers=headers) as response:
            self._raise_for(response, path)
            length = response.headers.get("Content-Length")
        if length is None:
            raise OSError(errno.EIO, f"no Content-Length for {path}")
        return int(length)

    def _raise_for(self, response: Any, path: str) -> None:
        if response.status == 404 or response.status == 410:
            raise FileNotFoundError(errno.ENOENT, f"HTTP {response.status}", path)
        response.raise_for_status()

    async def _read(self, fs: Any, path: str, start: int, end: int) -> bytes:
        session = await self._session(fs)
        headers = {"Accept-Encoding": "identity", "Range": f"bytes={start}-{end - 1}"}
        async with session.get(path, headers=headers) as response:
            self._raise_for(response, path)
            if response.status == 206:
                data: bytes = await response.read()
                return data
            # The server ignored the range and sends the whole object: skip to `start`.
            skipped = 0
            parts: list[bytes] = []
            kept = 0
            while kept < end - start:
                block = await response.content.read(1 << 20)
                if not block:
                    break
                if skipped < start:
                    cut = min(start - skipped, len(block))
                    skipped += cut
                    block = block[cut:]
                parts.append(block[: end - start - kept])
                kept += len(parts[-1])
            return b"".join(parts)

    def probe(self, timeout: float) -> None:
        async def probe(fs: Any) -> None:
            session = await self._session(fs)
            async with session.head(self.root + "/", allow_redirects=True) as response:
                if response.status in (401, 403) or response.status >= 500:
                    response.raise_for_status()

        self._run(probe, timeout)


class _SshBackend(_AsyncBackend):
    """An SFTP remote. sshfs connects once, when constructed, and never again: a connection
    that failed is dropped here, and the next attempt connects anew."""

    def __init__(self, options: dict[str, Any], root: str, limits: Limits) -> None:
        options = dict(options)
        host = options.pop("host")

        def connect() -> Any:
            from sshfs import SSHFileSystem

            return SSHFileSystem(host, timeout=limits.connect_timeout, **options)

        super().__init__(connect, root, limits)

    def reset(self) -> None:
        with self._lock:
            fs, self._fs = self._fs, None
        if fs is not None:
            with suppress(Exception):
                type(fs)._finalize(fs.loop, fs._pool, fs._stack)

    def _run(self, make: Callable[[Any], Coroutine[Any, Any, T]], timeout: float) -> T:
        started = time.monotonic()
        self.filesystem()  # connecting blocks this thread, within connect_timeout
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            raise TimeoutError("connecting used up the deadline")
        return super()._run(make, left)

    async def _ls(self, fs: Any, folder: str) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await fs._ls(folder, detail=True)
        return entries

    async def _read(self, fs: Any, path: str, start: int, end: int) -> bytes:
        from asyncssh.sftp import SFTPNoSuchFile

        try:
            async with fs._pool.get() as channel, channel.open(path, "rb") as handle:
                data: bytes = await handle.read(end - start, start)
        except SFTPNoSuchFile as exc:
            raise FileNotFoundError(errno.ENOENT, str(exc), path) from exc
        return data
