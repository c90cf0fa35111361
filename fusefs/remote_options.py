"""A remote's DVC settings as fsspec needs them: `Limits` and `storage_options`.

Each protocol's options are mapped as DVC's own plugins (dvc-s3, dvc-http, dvc-ssh, dvc-gs,
dvc-azure) map them. Invariants:
- the S3, HTTP and SSH clients get the connect/read timeouts of `Limits`, and botocore's own
  retries are off: retries are `Remote`'s, bounded by the deadline;
- a setting that cannot be honoured from a mount (``ask_password``), a malformed value, an
  unsupported protocol or a missing fsspec package is a `UserError` naming the remote.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import os
import ssl
from dataclasses import dataclass, replace
from typing import Any

from .config import RemoteConfig
from .errors import UserError

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
