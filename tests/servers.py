"""Real servers on loopback for remote tests: moto's S3, an HTTP file server, sshd, and a TCP
proxy that injects faults.

Invariants: every server listens on 127.0.0.1 only, on a port the kernel picked; start-up is
awaited by polling with a deadline (never a fixed sleep); `stop()` (also on fixture teardown)
leaves no process or thread behind.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:g}s")
        threading.Event().wait(delay)  # poll interval, not a wait for the server
        delay = min(delay * 2, 0.2)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


# -- S3 (moto) -----------------------------------------------------------------------------


@dataclass
class S3Server:
    """moto's S3 server in a subprocess, with IAM auth switched on: only `key`/`secret`
    (an IAM user allowed everything) are accepted."""

    process: subprocess.Popen[bytes]
    port: int
    key: str
    secret: str
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name=self.region,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_s3(log: Path) -> S3Server:
    import boto3

    port = free_port()
    env = dict(os.environ)
    # The first three requests (creating the IAM user, its key and its policy) need no
    # credentials; every later one is checked against IAM.
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_until(lambda: process.poll() is not None or port_open(port), 30, "moto server")
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited: {log.read_text()}")
        iam = boto3.client(
            "iam",
            endpoint_url=f"http://{LOOPBACK}:{port}",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
            region_name="us-east-1",
        )
        iam.create_user(UserName="fusefs")
        created = iam.create_access_key(UserName="fusefs")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="fusefs", PolicyName="all", PolicyDocument=json.dumps(policy))
    except BaseException:
        process.kill()
        process.wait()
        raise
    return S3Server(process, port, created["AccessKeyId"], created["SecretAccessKey"])


# -- HTTP ----------------------------------------------------------------------------------


class _QuietHTTPServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (the fault tests do) are no error of the server


@dataclass
class HttpServer:
    """A static file server over a folder, with byte ranges (unless `ranges` is off) and
    optional basic auth. `requests` records (method, path) of every request."""

    root: Path
    ranges: bool = True
    auth: tuple[str, str] | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> HttpServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                owner.requests.append((self.command, self.path))
                if owner.auth is not None and not self._authorized(owner.auth):
                    self._reply(401, b"", {"WWW-Authenticate": 'Basic realm="dvc"'})
                    return
                target = (owner.root / self.path.lstrip("/")).resolve()
                if not target.is_relative_to(owner.root.resolve()):
                    self._reply(403, b"")
                    return
                if target.is_dir():
                    self._reply(200, b"listing\n", send=body)
                    return
                if not target.is_file():
                    self._reply(404, b"not found\n", send=body)
                    return
                data = target.read_bytes()
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if owner.ranges and match and int(match.group(1)) < len(data):
                    start = int(match.group(1))
                    end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
                    headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
                    self._reply(206, data[start : end + 1], headers, send=body)
                else:
                    self._reply(200, data, send=body)

            def _authorized(self, auth: tuple[str, str]) -> bool:
                import base64

                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {token}"

            def _reply(
                self,
                status: int,
                data: bytes,
                headers: dict[str, str] | None = None,
                send: bool = True,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                if owner.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if send:
                    with contextlib.suppress(OSError):
                        self.wfile.write(data)

        self.server = _QuietHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.thread is not None:
            self.thread.join(10)


# -- SSH -----------------------------------------------------------------------------------


@dataclass
class SshServer:
    process: subprocess.Popen[bytes]
    port: int
    client_key: Path
    known_hosts: Path
    user: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


SSHD = "/usr/sbin/sshd"


def sshd_available() -> str | None:
    """Why sshd cannot run here, or None."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed"
    if os.geteuid() != 0:
        return "sshd on a loopback port needs root here (privilege separation)"
    return None


def start_sshd(workdir: Path) -> SshServer:
    """sshd on a loopback port, with its own host key and one authorized client key."""
    import pwd

    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / name)],
            check=True,
            capture_output=True,
        )
    shutil.copy(workdir / "client_key.pub", workdir / "authorized_keys")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress {LOOPBACK}\nHostKey {workdir / 'host_key'}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile {workdir / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    host_key = (workdir / "host_key.pub").read_text().split()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[{LOOPBACK}]:{port} {host_key[0]} {host_key[1]}\n")
    log = open(workdir / "sshd.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    log.close()
    try:
        wait_until(lambda: process.poll() is not None or _ssh_banner(port), 15, "sshd")
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(workdir / 'sshd.log').read_text()}")
    except BaseException:
        process.kill()
        process.wait()
        raise
    user = pwd.getpwuid(os.geteuid()).pw_name
    return SshServer(process, port, workdir / "client_key", known_hosts, user)


def _ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


# -- fault-injecting TCP proxy ----------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """What the proxy does to each connection accepted under these settings.

    `after` bytes of the server's reply pass untouched (per connection); then, by `mode`:
    "pass" forwards the rest, "stall" forwards nothing more (the connection stays open),
    "reset" aborts the connection (RST), "close" closes it cleanly (FIN, a truncated body).
    `delay` seconds pass before each forwarded piece of the reply. `times` limits the fault to
    that many connections (then it reverts to pass).
    """

    mode: str = "pass"
    after: int = 0
    delay: float = 0.0
    times: int | None = None


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target port, injecting `Faults`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._faults = Faults()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._sockets: set[socket.socket] = set()
        self.connections = 0
        self.faulted = 0
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def set(self, faults: Faults) -> None:
        """New faults for connections from now on; open connections are closed."""
        with self._lock:
            self._faults = faults
            self.faulted = 0
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                faults = self._faults
                if faults.mode != "pass":
                    if faults.times is not None and self.faulted >= faults.times:
                        faults = Faults(delay=faults.delay)
                    else:
                        self.faulted += 1
                self.connections += 1
            threading.Thread(target=self._serve, args=(client, faults), daemon=True).start()

    def _serve(self, client: socket.socket, faults: Faults) -> None:
        try:
            upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
        except OSError:
            _close(client, reset=True)
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets.update((client, upstream))
        up = threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True)
        up.start()
        try:
            self._pump_down(upstream, client, faults)
        finally:
            with self._lock:
                self._sockets.discard(client)
                self._sockets.discard(upstream)
            up.join(5)

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _pump_down(self, upstream: socket.socket, client: socket.socket, faults: Faults) -> None:
        passed = 0
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                if faults.delay:
                    self._closing.wait(faults.delay)  # the injected slowness itself
                if faults.mode != "pass" and passed + len(data) > faults.after:
                    client.sendall(data[: faults.after - passed])
                    if faults.mode == "stall":
                        self._stall(client)
                    _close(client, reset=faults.mode == "reset")
                    return
                client.sendall(data)
                passed += len(data)
        except OSError:
            pass
        _close(client)
        _close(upstream)

    def _stall(self, client: socket.socket) -> None:
        """Hold the connection open, sending nothing, until the client or proxy gives up."""
        while not self._closing.is_set():
            try:
                readable, _, _ = select.select([client], [], [], 0.1)
                if readable and not client.recv(65536):
                    return
            except (OSError, ValueError):  # closed under us
                return

    def stop(self) -> None:
        """Stop listening and drop every connection (as a server that went away)."""
        self._closing.set()
        _close(self._listener)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock, reset=True)
        self._thread.join(5)


def _close(sock: socket.socket, reset: bool = False) -> None:
    with contextlib.suppress(OSError):
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@contextlib.contextmanager
def proxy_to(port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(port)
    try:
        yield proxy
    finally:
        proxy.stop()
