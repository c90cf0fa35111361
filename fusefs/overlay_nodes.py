"""Nodes of the overlay's staged tree, and the extents that hold a staged file's bytes.

Node kinds: a directory with an `origin` (the base directory whose listing shows through; None
= opaque, i.e. created), a file (extents over an optional origin base file), a whiteout (hides a
base entry) and a redirect (a renamed base entry not otherwise touched, kind unknown: everything
at and below it is the base at its origin).

A write to a base file copies up nothing: it records an extent, and unwritten ranges still read
from the base file, below the smallest size the file was ever truncated to (so
truncate-then-extend reads zeros). Until truncated, a base file's size is ``max(base size, end
of the furthest write)``, evaluated against the base when asked. Extents coalesce when a write
continues the previous one in both the file and the blob log, so a file written sequentially is
one extent; interleaved writes to several files get one extent per interleaved chunk.

Private to `fusefs.overlay`, which owns the tree these nodes form.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from typing import Final

from .records import _U64_MAX

BaseSize = Callable[[bytes], int]


class Extents:
    """Sorted, non-overlapping runs ``(file_offset, length, blob_offset)`` of staged bytes.

    A write that continues the previous run both in the file and in the blob log extends it, so a
    file written sequentially in one stream is a single run whatever the chunk size.
    """

    __slots__ = ("_items", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._items: list[tuple[int, int, int]] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(self._items)

    def cut(self, start: int, end: int) -> None:
        """Forget staged bytes in ``[start, end)``, splitting runs that straddle the bounds."""
        items = self._items
        lo = bisect_left(self._starts, start)
        if lo > 0 and items[lo - 1][0] + items[lo - 1][1] > start:
            lo -= 1
        hi = bisect_left(self._starts, end)
        if lo >= hi:
            return
        keep: list[tuple[int, int, int]] = []
        first, last = items[lo], items[hi - 1]
        if first[0] < start:
            keep.append((first[0], start - first[0], first[2]))
        if last[0] + last[1] > end:
            keep.append((end, last[0] + last[1] - end, last[2] + end - last[0]))
        items[lo:hi] = keep
        self._starts[lo:hi] = [k[0] for k in keep]

    def put(self, start: int, length: int, blob: int) -> None:
        """Record that ``[start, start + length)`` now reads from the blob log at `blob`."""
        if length == 0:
            return
        self.cut(start, start + length)
        i = bisect_left(self._starts, start)
        items = self._items
        if i > 0:
            ps, pn, pb = items[i - 1]
            if ps + pn == start and pb + pn == blob:
                start, length, blob = ps, pn + length, pb
                i -= 1
                del items[i], self._starts[i]
        if i < len(items):
            ns, nn, nb = items[i]
            if start + length == ns and blob + length == nb:
                length += nn
                del items[i], self._starts[i]
        items.insert(i, (start, length, blob))
        self._starts.insert(i, start)

    def segments(self, start: int, end: int) -> Iterator[tuple[int, int, int | None]]:
        """Cover ``[start, end)`` with ``(offset, length, blob_offset or None for a gap)``."""
        items = self._items
        i = max(bisect_right(self._starts, start) - 1, 0)
        pos = start
        while pos < end:
            if i >= len(items) or items[i][0] >= end:
                yield pos, end - pos, None
                return
            s, n, b = items[i]
            if s + n <= pos:
                i += 1
            elif s > pos:
                yield pos, s - pos, None
                pos = s
            else:
                stop = min(s + n, end)
                yield pos, stop - pos, b + pos - s
                pos, i = stop, i + 1


class _Whiteout:
    __slots__ = ()


_WHITEOUT: Final = _Whiteout()


class _Redirect:
    """A moved base entry of unknown kind: everything at and below it is the base at `origin`."""

    __slots__ = ("origin",)

    def __init__(self, origin: bytes) -> None:
        self.origin = origin


class _File:
    """A staged file: extents over `origin`'s base bytes (if any), visible below `base_limit`.

    `size` is None while the file is a base file that was never truncated: its size is then
    ``max(base size, written_end)``, known only to the base tree.
    """

    __slots__ = ("base_limit", "executable", "extents", "origin", "size", "written_end")

    def __init__(self, origin: bytes | None, size: int | None, executable: bool | None) -> None:
        self.origin = origin
        self.size = size
        self.written_end = 0
        self.base_limit: int | None = None
        self.extents = Extents()
        self.executable = executable

    def write(self, offset: int, length: int, blob: int) -> None:
        if length == 0:
            return
        self.extents.put(offset, length, blob)
        self.written_end = max(self.written_end, offset + length)
        if self.size is not None:
            self.size = max(self.size, offset + length)

    def truncate(self, size: int) -> None:
        self.extents.cut(size, _U64_MAX)
        self.size = size
        self.written_end = min(self.written_end, size)
        if self.origin is not None:
            self.base_limit = size if self.base_limit is None else min(self.base_limit, size)

    def current_size(self, base_size: BaseSize) -> int:
        if self.size is not None:
            return self.size
        assert self.origin is not None
        return max(base_size(self.origin), self.written_end)

    def changed(self) -> bool:
        return bool(self.extents) or self.size is not None or self.executable is not None


class _Dir:
    """A staged directory; `origin` is the base directory it shows through (None: opaque)."""

    __slots__ = ("children", "origin")

    def __init__(self, origin: bytes | None) -> None:
        self.origin = origin
        self.children: dict[bytes, _Node] = {}

    def has_live_children(self) -> bool:
        return any(child is not _WHITEOUT for child in self.children.values())


_Node = _File | _Dir | _Redirect | _Whiteout
