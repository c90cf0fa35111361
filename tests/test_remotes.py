"""Remotes against real servers on loopback: S3 (moto, IAM auth on), HTTP, SFTP (sshd), local.

Objects come from a real `dvc add` + `dvc push` to a folder remote; the S3 bucket gets the
same files in the same layout by upload (the dvc CLI used here has no dvc-s3 plugin), the HTTP
and SSH servers serve the pushed folder itself. Faults are injected by a TCP proxy between
client and server. Every download goes through `Cache.fetch`, which verifies md5.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fusefs.cache import Cache
from fusefs.config import RemoteConfig
from fusefs.errors import IntegrityError, RemoteError, UserError
from fusefs.objects import HashInfo
from fusefs.remote import CHUNK, Remote
from fusefs.remote_options import Limits, storage_options
from tests.dvcrepo import RepoBuilder, isolated_env
from tests.servers import (
    LOOPBACK,
    Faults,
    HttpServer,
    S3Server,
    SshServer,
    free_port,
    proxy_to,
    sshd_available,
    start_s3,
    start_sshd,
    wait_until,
)

BUCKET = "dvc-store"
PREFIX = "store"
# Short limits so that fault tests finish quickly; the defaults are 30 s / 5 s / 10 s.
FAST = Limits(deadline=3.0, connect_timeout=1.0, read_timeout=1.0, attempts=4, backoff=0.05)


@pytest.fixture(autouse=True)
def _aws_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No AWS setting of the machine running the tests leaks in; no metadata-service calls."""
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# -- the objects -------------------------------------------------------------------------------


@dataclass
class Store:
    repo: Path
    folder: Path  # the folder remote `dvc push` wrote
    objects: dict[HashInfo, bytes]


def _objects_in(folder: Path) -> dict[HashInfo, bytes]:
    objects = {}
    for path in sorted((folder / "files" / "md5").glob("*/*")):
        name = path.parent.name + path.name
        is_dir = name.endswith(".dir")
        objects[HashInfo(name[:-4] if is_dir else name, is_dir)] = path.read_bytes()
    return objects


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, s3: S3Server, dvc: str) -> Store:
    """A DVC repo (files, a folder output, a 6 MB file spanning two ranges), pushed by dvc to
    a folder remote; its committed `.dvc/config` makes an S3 remote on moto the default."""
    root = tmp_path_factory.mktemp("store")
    repo = RepoBuilder(root / "repo", isolated_env(root / "env"))
    folder = root / "remote"
    repo.init()
    repo.add_remote("folder", str(folder))
    big = random.Random(7).randbytes(6_000_000)
    repo.write("big.bin", big)
    repo.write("small.txt", b"small\n")
    repo.write("empty.txt", b"")
    for i in range(5):
        repo.write(f"data/part-{i}.txt", f"part {i}\n".encode() * (i + 1))
    repo.dvc_add("big.bin", "small.txt", "empty.txt", "data")
    repo.push("folder")
    repo.dvc("remote", "add", "-d", "s3", f"s3://{BUCKET}/{PREFIX}")
    repo.dvc("remote", "modify", "s3", "endpointurl", s3.endpoint)
    repo.dvc("remote", "modify", "s3", "region", s3.region)
    repo.commit("data on S3")
    objects = _objects_in(folder)
    assert len(objects) == 5 + 4  # 5 parts, big, small, empty (one object), the .dir
    return Store(repo.path, folder, objects)


@pytest.fixture(scope="module")
def bucket(s3: S3Server, store: Store) -> str:
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    for hinfo, data in store.objects.items():
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{hinfo.relpath}", Body=data)
    return BUCKET


def s3_config(s3: S3Server, url: str = f"s3://{BUCKET}/{PREFIX}", **extra: str) -> RemoteConfig:
    options = {
        "endpointurl": s3.endpoint,
        "region": s3.region,
        "access_key_id": s3.key,
        "secret_access_key": s3.secret,
        **extra,
    }
    return RemoteConfig("storage", url, options)


def fetch_all(remote: Remote, store: Store, cache_dir: Path) -> None:
    cache = Cache(cache_dir)
    for hinfo, data in store.objects.items():
        path = cache.fetch(hinfo, remote)
        assert path.read_bytes() == data, hinfo


def big_object(store: Store) -> HashInfo:
    return max(store.objects, key=lambda h: len(store.objects[h]))


# -- option mapping ----------------------------------------------------------------------------


def test_s3_options_follow_dvc_names() -> None:
    config = RemoteConfig(
        "r",
        "s3://b/p",
        {
            "endpointurl": "http://127.0.0.1:9",
            "region": "eu-west-1",
            "profile": "team",
            "access_key_id": "AK",
            "secret_access_key": "SK",
            "session_token": "TOK",
            "use_ssl": "false",
            "allow_anonymous_login": "true",
            "ssl_verify": "/etc/ca.pem",
            "sse": "aws:kms",
            "sse_kms_key_id": "kms-key",
            "read_timeout": "7",
            "connect_timeout": "2",
        },
    )
    opts = storage_options(config)
    assert opts["key"] == "AK" and opts["secret"] == "SK" and opts["token"] == "TOK"
    assert opts["profile"] == "team" and opts["anon"] is True and opts["use_ssl"] is False
    assert opts["client_kwargs"] == {
        "region_name": "eu-west-1",
        "endpoint_url": "http://127.0.0.1:9",
        "verify": "/etc/ca.pem",
    }
    assert opts["config_kwargs"]["read_timeout"] == 7.0
    assert opts["config_kwargs"]["connect_timeout"] == 2.0
    assert opts["config_kwargs"]["retries"]["max_attempts"] == 1
    assert opts["s3_additional_kwargs"] == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "kms-key",
    }
    assert opts["use_listings_cache"] is False
    assert "cache_regions" not in opts


def test_s3_credential_files_go_to_a_session(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("[team]\naws_access_key_id = FROMFILE\naws_secret_access_key = S\n")
    config = RemoteConfig("r", "s3://b", {"credentialpath": str(creds), "profile": "team"})
    session = storage_options(config)["session"]
    assert session.get_config_variable("credentials_file") == str(creds)
    assert "AWS_SHARED_CREDENTIALS_FILE" not in os.environ or os.environ[
        "AWS_SHARED_CREDENTIALS_FILE"
    ] != str(creds)


def test_http_and_ssh_options() -> None:
    http = storage_options(
        RemoteConfig(
            "h",
            "https://example.invalid/dvc",
            {"auth": "basic", "user": "u", "password": "p", "ssl_verify": "false"},
        )
    )
    client = http["client_kwargs"]
    assert client["headers"] == {"Authorization": "Basic dTpw"}
    assert client["ssl_verify"] is False
    assert client["timeout"].sock_read == Limits().read_timeout
    custom = storage_options(
        RemoteConfig(
            "h", "http://x/", {"auth": "custom", "custom_auth_header": "X-Token", "password": "t"}
        )
    )
    assert custom["client_kwargs"]["headers"] == {"X-Token": "t"}
    with pytest.raises(UserError, match=r"basic.*needs user and password"):
        storage_options(RemoteConfig("h", "http://x/", {"auth": "basic", "user": "u"}))

    ssh = storage_options(
        RemoteConfig(
            "s", "ssh://alice@host:2222/srv/dvc", {"user": "bob", "keyfile": "~/k", "timeout": "3"}
        )
    )
    assert ssh["host"] == "host" and ssh["port"] == 2222
    assert ssh["username"] == "alice"  # the URL's user wins, as in DVC
    assert ssh["client_keys"] == [os.path.expanduser("~/k")]
    assert ssh["connect_timeout"] == 3.0
    assert ssh["known_hosts"] is None


@pytest.mark.parametrize(
    ("url", "package"), [("gs://bucket/dvc", "gcsfs"), ("azure://container/dvc", "adlfs")]
)
def test_missing_backend_package_is_named(url: str, package: str) -> None:
    try:
        __import__(package)
    except ImportError:
        pass
    else:
        pytest.skip(f"{package} is installed")
    scheme = url.split(":")[0]
    with pytest.raises(UserError) as info:
        Remote(RemoteConfig("x", url))
    assert str(info.value) == f"remote 'x' ({url}): install {package} to use {scheme}:// remotes"


def test_unsupported_scheme() -> None:
    with pytest.raises(UserError, match="hdfs:// remotes are not supported"):
        Remote(RemoteConfig("x", "hdfs://nn/dvc"))


# -- local ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_local_remote(store: Store, tmp_path: Path, form: str) -> None:
    url = str(store.folder) if form == "path" else f"file://{store.folder}"
    remote = Remote(RemoteConfig("folder", url))
    remote.check()
    fetch_all(remote, store, tmp_path / "cache")
    missing = HashInfo("0" * 32)
    assert remote.sizes([*store.objects, missing]) == {h: len(d) for h, d in store.objects.items()}


# -- S3 ---------------------------------------------------------------------------------------


def test_s3_fetch(s3: S3Server, bucket: str, store: Store, tmp_path: Path) -> None:
    remote = Remote(s3_config(s3))
    remote.check()
    fetch_all(remote, store, tmp_path / "cache")


def test_s3_missing_object(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    remote = Remote(s3_config(s3), FAST)
    missing = HashInfo("ab" + "0" * 30)
    with pytest.raises(RemoteError, match=f"object {missing.md5} is missing on remote 'storage'"):
        Cache(tmp_path / "cache").fetch(missing, remote)
    assert remote.sizes([missing]) == {}


def test_s3_corrupted_object(s3: S3Server, bucket: str, store: Store, tmp_path: Path) -> None:
    data = b"what the hash says\n"
    hinfo = HashInfo(hashlib.md5(data).hexdigest())
    s3.client().put_object(Bucket=BUCKET, Key=f"{PREFIX}/{hinfo.relpath}", Body=b"tampered!\n")
    cache = Cache(tmp_path / "cache")
    with pytest.raises(IntegrityError, match=f"object {hinfo.md5} from remote 'storage'"):
        cache.fetch(hinfo, Remote(s3_config(s3)))
    assert not cache.exists(hinfo)
    assert not list((tmp_path / "cache" / ".fusefs" / "tmp").iterdir())


def test_s3_check_missing_bucket(s3: S3Server) -> None:
    remote = Remote(s3_config(s3, url="s3://no-such-bucket/dvc"))
    with pytest.raises(UserError) as info:
        remote.check()
    assert str(info.value) == ("remote 'storage' (s3://no-such-bucket/dvc): bucket does not exist")


@pytest.mark.parametrize("wrong", ["access_key_id", "secret_access_key"])
def test_s3_check_wrong_credentials(s3: S3Server, bucket: str, wrong: str) -> None:
    remote = Remote(s3_config(s3, **{wrong: "WRONG"}))
    with pytest.raises(UserError, match=r"^remote 'storage' \(s3://.*\): access denied \("):
        remote.check()


def test_s3_check_unreachable_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    config = RemoteConfig(
        "storage",
        "s3://b/p",
        {"endpointurl": f"http://{LOOPBACK}:{free_port()}", "region": "us-east-1"},
    )
    config.options.update(access_key_id="k", secret_access_key="s")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="fusefs.remote"):
        Remote(config, FAST).check()
    assert time.monotonic() - started < FAST.deadline
    assert "cannot be reached now" in caplog.text


def _count_s3_requests(remote: Remote) -> list[str]:
    """Every HTTP request the remote's S3 client sends, by operation name."""
    sent: list[str] = []
    remote.check()  # makes the client
    client = remote.fs.s3

    def record(**kwargs: Any) -> None:
        sent.append(kwargs["event_name"].split(".")[-1])

    client.meta.events.register("before-send.s3", record)
    return sent


def test_s3_sizes_request_counts(s3: S3Server, bucket: str, store: Store) -> None:
    """Few sizes: one HEAD each. Many: a listing (1 request per 1000 keys) when cheaper."""
    prefix = "many"
    client = s3.client()
    hashes = []
    rng = random.Random(3)
    count = 1100
    fs = Remote(s3_config(s3, url=f"s3://{BUCKET}/{prefix}")).fs
    payloads = {}
    for i in range(count):
        data = rng.randbytes(rng.randrange(1, 64)) + str(i).encode()
        hinfo = HashInfo(hashlib.md5(data).hexdigest())
        hashes.append(hinfo)
        payloads[f"{BUCKET}/{prefix}/{hinfo.relpath}"] = data
    fs.pipe(payloads)
    del client
    missing = [HashInfo(f"{i:02x}" + "f" * 30) for i in range(0, 256, 51)]
    sizes_of = {h: len(payloads[f"{BUCKET}/{prefix}/{h.relpath}"]) for h in hashes}

    remote = Remote(s3_config(s3, url=f"s3://{BUCKET}/{prefix}"))
    sent = _count_s3_requests(remote)
    few = hashes[:5] + missing[:1]
    assert remote.sizes(few) == {h: sizes_of[h] for h in hashes[:5]}
    assert sent.count("HeadObject") == 6 and len(sent) == 6

    for n in (20, 200, count):
        sent.clear()
        remote = Remote(s3_config(s3, url=f"s3://{BUCKET}/{prefix}"))
        sent = _count_s3_requests(remote)
        sent.clear()
        chosen = rng.sample(hashes, n) + missing
        assert remote.sizes(chosen) == {h: sizes_of[h] for h in chosen if h in sizes_of}
        lists, heads = sent.count("ListObjectsV2"), sent.count("HeadObject")
        print(f"sizes of {len(chosen)} among {count}: {lists} listings, {heads} HEADs")
        assert lists <= 2 and lists + heads <= 2 + n // 10, sent
    # Sizes are remembered: asking again sends nothing.
    sent.clear()
    remote.sizes(hashes[:50])
    assert sent == []


def test_s3_env_credentials(
    s3: S3Server, bucket: str, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    config = RemoteConfig(
        "storage", f"s3://{BUCKET}/{PREFIX}", {"endpointurl": s3.endpoint, "region": s3.region}
    )
    remote = Remote(config)
    remote.check()
    hinfo = big_object(store)
    assert Cache(tmp_path).fetch(hinfo, remote).read_bytes() == store.objects[hinfo]


# -- S3 and HTTP faults, through the proxy -------------------------------------------------------


@pytest.fixture
def http_server(store: Store) -> Iterator[HttpServer]:
    server = HttpServer(store.folder).start()
    try:
        yield server
    finally:
        server.stop()


def _remote_via(kind: str, port: int, s3: S3Server) -> Remote:
    endpoint = f"http://{LOOPBACK}:{port}"
    if kind == "s3":
        config = s3_config(s3)
        config.options["endpointurl"] = endpoint
        return Remote(config, FAST)
    return Remote(RemoteConfig("storage", f"{endpoint}/"), FAST)


@pytest.fixture(params=["s3", "http"])
def faulty(
    request: pytest.FixtureRequest, s3: S3Server, bucket: str, http_server: HttpServer
) -> Iterator[tuple[Any, Remote]]:
    port = s3.port if request.param == "s3" else http_server.port
    with proxy_to(port) as proxy:
        yield proxy, _remote_via(request.param, proxy.port, s3)


def test_reset_mid_body_is_retried_and_resumed(faulty: Any, store: Store, tmp_path: Path) -> None:
    proxy, remote = faulty
    hinfo = big_object(store)
    proxy.set(Faults(mode="reset", after=CHUNK // 2, times=1))
    path = Cache(tmp_path).fetch(hinfo, remote)
    assert path.read_bytes() == store.objects[hinfo]
    assert proxy.faulted == 1


def test_truncated_body_is_never_accepted(faulty: Any, store: Store, tmp_path: Path) -> None:
    proxy, remote = faulty
    hinfo = big_object(store)
    proxy.set(Faults(mode="close", after=300_000))  # every response ends early, cleanly
    cache = Cache(tmp_path)
    started = time.monotonic()
    with pytest.raises(RemoteError, match=f"cannot read object {hinfo} on remote 'storage'"):
        cache.fetch(hinfo, remote)
    assert time.monotonic() - started < FAST.deadline + 1
    assert not cache.exists(hinfo)
    assert proxy.faulted >= 2  # it was retried


def test_stalled_read_fails_within_the_deadline(faulty: Any, store: Store, tmp_path: Path) -> None:
    proxy, remote = faulty
    hinfo = big_object(store)
    remote.size(hinfo)  # the HEAD passes; the body then stalls
    proxy.set(Faults(mode="stall", after=100_000))
    cache = Cache(tmp_path)
    started = time.monotonic()
    with pytest.raises(RemoteError) as info:
        cache.fetch(hinfo, remote)
    elapsed = time.monotonic() - started
    print(f"stalled read failed after {elapsed:.2f}s: {info.value}")
    assert FAST.read_timeout <= elapsed < FAST.deadline + 1
    assert isinstance(info.value.__cause__, BaseException)
    assert not cache.exists(hinfo)


def test_slow_responses_succeed(faulty: Any, store: Store, tmp_path: Path) -> None:
    proxy, remote = faulty
    proxy.set(Faults(delay=0.002))  # per 64 KiB piece: slower, never silent for read_timeout
    hinfo = big_object(store)
    assert Cache(tmp_path).fetch(hinfo, remote).read_bytes() == store.objects[hinfo]


def test_server_gone_mid_read(faulty: Any, store: Store, tmp_path: Path) -> None:
    proxy, remote = faulty
    hinfo = big_object(store)
    remote.size(hinfo)
    proxy.set(Faults(mode="stall", after=CHUNK // 2))
    cache = Cache(tmp_path)
    failure: list[BaseException] = []

    def read() -> None:
        try:
            cache.fetch(hinfo, remote)
        except BaseException as exc:
            failure.append(exc)

    import threading

    thread = threading.Thread(target=read)
    started = time.monotonic()
    thread.start()
    wait_until(lambda: proxy.faulted >= 1, 5, "a stalled connection")
    proxy.stop()  # the server goes away: connections reset, new ones refused
    thread.join(FAST.deadline + 2)
    elapsed = time.monotonic() - started
    print(f"read with the server gone failed after {elapsed:.2f}s: {failure}")
    assert len(failure) == 1 and isinstance(failure[0], RemoteError)
    assert elapsed < FAST.deadline + 1
    assert not cache.exists(hinfo)


# -- HTTP ---------------------------------------------------------------------------------------


def test_http_fetch(http_server: HttpServer, store: Store, tmp_path: Path) -> None:
    remote = Remote(RemoteConfig("web", http_server.url + "/"))
    remote.check()
    fetch_all(remote, store, tmp_path / "cache")
    assert ("GET", "/" + big_object(store).relpath) in http_server.requests
    ranged = {h for h in store.objects if len(store.objects[h]) > CHUNK}
    assert ranged  # the big object came in two ranges
    missing = HashInfo("cd" + "1" * 30)
    assert remote.sizes([*store.objects, missing]) == {h: len(d) for h, d in store.objects.items()}
    with pytest.raises(RemoteError, match=f"object {missing} is missing on remote 'web'"):
        Cache(tmp_path / "cache").fetch(missing, remote)


def test_http_server_without_ranges(store: Store, tmp_path: Path) -> None:
    server = HttpServer(store.folder, ranges=False).start()
    try:
        fetch_all(Remote(RemoteConfig("web", server.url)), store, tmp_path / "cache")
    finally:
        server.stop()


def test_http_basic_auth(store: Store, tmp_path: Path) -> None:
    server = HttpServer(store.folder, auth=("dvc", "s3cret")).start()
    try:
        good = {"auth": "basic", "user": "dvc", "password": "s3cret"}
        remote = Remote(RemoteConfig("web", server.url, good))
        remote.check()
        fetch_all(remote, store, tmp_path / "cache")
        bad = RemoteConfig("web", server.url, {**good, "password": "nope"})
        with pytest.raises(UserError, match=r"access denied \(HTTP 401\)"):
            Remote(bad).check()
        with pytest.raises(RemoteError, match="401"):
            Remote(bad, FAST).size(big_object(store))
    finally:
        server.stop()


# -- SSH ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def ssh_config(sshd: SshServer, store: Store, **extra: str) -> RemoteConfig:
    options = {
        "user": sshd.user,
        "port": str(sshd.port),
        "keyfile": str(sshd.client_key),
        "known_hosts": str(sshd.known_hosts),
        "allow_agent": "false",
        **extra,
    }
    return RemoteConfig("box", f"ssh://{LOOPBACK}{store.folder}", options)


def test_ssh_fetch(sshd: SshServer, store: Store, tmp_path: Path) -> None:
    remote = Remote(ssh_config(sshd, store), FAST)
    remote.check()
    fetch_all(remote, store, tmp_path / "cache")
    missing = HashInfo("ef" + "2" * 30)
    # Many absent objects in few folders: sizes come from listing those folders.
    every = [*store.objects, missing, *(HashInfo(f"ef{i:030x}") for i in range(40))]
    assert remote.sizes(every) == {h: len(d) for h, d in store.objects.items()}
    with pytest.raises(RemoteError, match=f"object {missing} is missing on remote 'box'"):
        Cache(tmp_path / "cache").fetch(missing, remote)
    remote.close()


def test_ssh_reconnects_after_a_dropped_connection(
    sshd: SshServer, store: Store, tmp_path: Path
) -> None:
    with proxy_to(sshd.port) as proxy:
        config = ssh_config(sshd, store, port=str(proxy.port))
        config.options["known_hosts"] = str(_known_hosts_for(sshd, proxy.port, tmp_path))
        remote = Remote(config, FAST)
        hinfo = big_object(store)
        assert remote.size(hinfo) == len(store.objects[hinfo])
        proxy.set(Faults())  # drops the open connection
        assert Cache(tmp_path / "c").fetch(hinfo, remote).read_bytes() == store.objects[hinfo]
        assert proxy.connections == 2
        remote.close()


def _known_hosts_for(sshd: SshServer, port: int, tmp_path: Path) -> Path:
    line = sshd.known_hosts.read_text().split(" ", 1)[1]
    path = tmp_path / "known_hosts"
    path.write_text(f"[{LOOPBACK}]:{port} {line}")
    return path


def test_ssh_check_problems(sshd: SshServer, store: Store, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(UserError, match="access denied: Permission denied"):
        Remote(ssh_config(sshd, store, keyfile=str(other)), FAST).check()
    wrong_hosts = tmp_path / "known_hosts"
    wrong_hosts.write_text(f"[{LOOPBACK}]:{sshd.port} " + (other.with_suffix(".pub")).read_text())
    with pytest.raises(UserError, match="host key not verifiable"):
        Remote(ssh_config(sshd, store, known_hosts=str(wrong_hosts)), FAST).check()


# -- a real mount over S3 ------------------------------------------------------------------------


@pytest.mark.mount
def test_mount_reads_from_s3(
    s3: S3Server, bucket: str, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`fusefs mount` of a repo whose committed .dvc/config names the moto bucket."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID=s3.key,
        AWS_SECRET_ACCESS_KEY=s3.secret,
        FUSEFS_STATE_DIR=str(tmp_path / "state"),
    )
    cmd = [sys.executable, "-m", "fusefs", "mount", "--repo", str(store.repo), "--rev", "main"]
    cmd += ["--cache-dir", str(tmp_path / "cache"), str(mountpoint)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    try:
        repo = store.repo
        for rel in ["big.bin", "small.txt", "empty.txt", *(f"data/part-{i}.txt" for i in range(5))]:
            assert (mountpoint / rel).read_bytes() == (repo / rel).read_bytes(), rel
        fetched = {p.parent.name + p.name for p in (tmp_path / "cache/files/md5").glob("*/*")}
        # Everything came from the bucket (an empty file needs no object to be read).
        assert fetched >= {h.oid for h, data in store.objects.items() if data}
    finally:
        subprocess.run(
            [sys.executable, "-m", "fusefs", "umount", str(mountpoint)],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
