"""The control channel between `fusefs status|commit|discard` and a writable mount's daemon.

A Unix socket in the state directory (mode 0600: only the mount's owner may commit), found
from the mountpoint through the mount record. One request per connection, as a JSON line;
the daemon answers with zero or more `{"progress": ...}` lines and one final line,
`{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from .errors import FsError, UserError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 1 << 20


async def serve(path: Path, handler: Handler, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Accept control connections on `path` until cancelled."""
    path.unlink(missing_ok=True)
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(8)
    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await listener.accept()
                nursery.start_soon(_session, trio.SocketStream(conn), handler)
    finally:
        listener.close()
        path.unlink(missing_ok=True)


async def _session(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        try:
            request = json.loads(await _read_line(stream))
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            await _send(stream, {"ok": False, "error": f"bad request: {exc}"})
            return
        queue: list[dict[str, Any]] = []

        def progress(update: dict[str, Any]) -> None:
            queue.append(update)

        async with trio.open_nursery() as nursery:
            done = trio.Event()
            nursery.start_soon(_pump, stream, queue, done)
            try:
                reply = await handler(request, progress)
            except (FsError, UserError) as exc:
                reply = {"ok": False, "error": getattr(exc, "message", None) or str(exc)}
            except Exception as exc:
                log.exception("control request %r failed", request.get("op"))
                reply = {"ok": False, "error": f"internal error: {exc!r}"}
            done.set()
        await _send(stream, reply)


async def _pump(stream: trio.SocketStream, queue: list[dict[str, Any]], done: trio.Event) -> None:
    """Forward progress updates (the latest one only: a bar needs no backlog)."""
    while not done.is_set():
        with trio.move_on_after(0.2):
            await done.wait()
        if queue:
            update = queue[-1]
            queue.clear()
            try:
                await _send(stream, {"progress": update})
            except trio.BrokenResourceError:
                return


async def _read_line(stream: trio.SocketStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too large")
    return data


async def _send(stream: trio.SocketStream, message: dict[str, Any]) -> None:
    await stream.send_all(json.dumps(message).encode() + b"\n")


def request(path: Path, message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Client side (blocking): send one request, yield every line of the answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as exc:
        raise UserError(f"cannot reach the mount's daemon at {path}: {exc.strerror}") from None
    with sock, sock.makefile("rb") as reader:
        sock.sendall(json.dumps(message).encode() + b"\n")
        for line in reader:
            yield json.loads(line)
