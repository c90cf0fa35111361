"""Single-flight: concurrent requests for one key share one background computation.

The computation runs in a task of a long-lived nursery, not in the first caller, so a caller that
is interrupted (FUSE request cancelled, deadline hit) neither cancels the work for others nor
leaks a half-done result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import outcome
import trio

T = TypeVar("T")


class _Call(Generic[T]):
    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: outcome.Outcome[T] | None = None


class SingleFlight(Generic[T]):
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._calls: dict[Hashable, _Call[T]] = {}

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        call = self._calls.get(key)
        if call is None:
            call = _Call()
            self._calls[key] = call
            self._nursery.start_soon(self._work, key, call, fn)
        await call.done.wait()
        assert call.result is not None
        return call.result.unwrap()

    async def _work(self, key: Hashable, call: _Call[T], fn: Callable[[], Awaitable[T]]) -> None:
        try:
            call.result = await outcome.acapture(fn)
        finally:
            del self._calls[key]
            call.done.set()
