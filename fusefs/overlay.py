"""The staged view of a writable mount: an `Overlay` of staged nodes over the read-only base tree.

Replaying journal records (`Overlay.apply`) builds the overlay; any path without a staged node
falls through to the base tree, possibly at another base path (below a renamed directory).
Renaming a directory moves its node, so everything staged below it moves too. No FUSE and no
I/O in here: the base tree is reached only through callbacks, and staged bytes through the
blob reader given at construction. Node kinds and extent semantics: `fusefs.overlay_nodes`.

Invariants
----------
* `Overlay.apply` raises `FsError` and leaves the view unchanged when the staged view refutes a
  record; it never consults the base tree, so replay is deterministic and the overlay only makes
  sense over the base revision it was staged against.

Caveats
-------
* Whiteouts are conservative: removing an entry from a directory that shows a base directory
  always leaves a whiteout, even for names the base does not have. They hide nothing, and
  `Overlay.changes` drops those it cannot match to a base entry.
* Removing a base directory forgets the staged whiteouts below it: `changes` reports the
  directory as deleted, meaning everything below it in the base is gone. A renamed directory
  likewise stands for everything below its origin.
* RESET with paths (``fusefs discard PATH``) drops the staged state at and below each path, which
  then shows whatever the base has at that position. Discarding the destination of a rename does
  not restore its source; discard both paths (`changes` lists the pair).
* Not thread-safe; the caller serialises access.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, assert_never

from .errors import FsError
from .overlay_nodes import _WHITEOUT, BaseSize, _Dir, _File, _Node, _Redirect, _Whiteout
from .records import (
    Chmod,
    Create,
    Header,
    Mkdir,
    Record,
    Rename,
    Reset,
    Rmdir,
    Truncate,
    Unlink,
    Write,
    validate_path,
)


class BaseEntry(NamedTuple):
    is_dir: bool
    size: int


BlobReader = Callable[[int, int], bytes]
BaseReader = Callable[[bytes, int, int], bytes]
BaseListing = Callable[[bytes], Iterable[bytes]]
BaseStat = Callable[[bytes], BaseEntry | None]


class Kind(Enum):
    FILE = "file"
    DIR = "dir"
    BASE = "base"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a path's content comes from.

    FILE/DIR: staged; `base_path` is the base entry whose bytes or listing show through (None
    if none). BASE: nothing staged; the path is whatever the base tree has at `base_path`
    (which differs from the path below a renamed directory). ABSENT: deleted or never existed.
    """

    kind: Kind
    base_path: bytes | None = None


class ChangeKind(Enum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"
    RENAMED = "renamed"


@dataclass(frozen=True, slots=True)
class Change:
    """One line of ``fusefs status``; `path` is a base path for DELETED, else a staged one."""

    kind: ChangeKind
    path: bytes
    is_dir: bool
    size: int
    old_path: bytes | None = None
    modified: bool = False


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def _parts(path: bytes) -> list[bytes]:
    return validate_path(path, allow_root=True).split(b"/") if path else []


def _err(code: int, path: bytes) -> FsError:
    return FsError(code, f"{os.strerror(code)}: {path.decode(errors='replace')}")


def _slot_origin(parent: _Dir, name: bytes, child: _Node | None, path: bytes) -> bytes:
    """The base path a slot without a staged file or directory shows; ENOENT if none."""
    if isinstance(child, _Redirect):
        return child.origin
    if child is None and parent.origin is not None:
        return _join(parent.origin, name)
    raise _err(errno.ENOENT, path)


class Overlay:
    """The staged view: a tree of staged nodes over a read-only base tree.

    Paths are relative bytes; b"" is the root. Query methods take callbacks into the base tree
    and pass them base paths, which differ from the queried path below a renamed directory.
    """

    def __init__(self, blob_reader: BlobReader) -> None:
        self._blob = blob_reader
        self._root = _Dir(b"")

    # ---- replay

    def apply(self, rec: Record) -> None:
        """Apply one record. Raises `FsError` (view unchanged) if the staged view refutes it."""
        match rec:
            case Header():
                pass
            case Create() | Mkdir():
                self._create(rec)
            case Unlink():
                self._unlink(rec.path)
            case Rmdir():
                self._rmdir(rec.path)
            case Rename():
                self._rename(rec.old, rec.new)
            case Truncate():
                self._file_at(rec.path).truncate(rec.size)
            case Write():
                self._file_at(rec.path).write(rec.offset, rec.length, rec.blob_offset)
            case Chmod():
                self._file_at(rec.path).executable = rec.executable
            case Reset():
                self._reset(rec.paths)
            case _:
                assert_never(rec)

    def _dir_at(self, path: bytes, parts: list[bytes]) -> _Dir:
        """The staged directory at `parts`, materialising pass-through nodes on the way.

        Pass-through nodes (a `_Dir` whose origin is the base directory already shown there)
        change nothing visible, so failing operations may leave them behind.
        """
        node = self._root
        for name in parts:
            child = node.children.get(name)
            if isinstance(child, _File):
                raise _err(errno.ENOTDIR, path)
            if not isinstance(child, _Dir):
                child = _Dir(_slot_origin(node, name, child, path))
                node.children[name] = child
            node = child
        return node

    def _parent(self, path: bytes) -> tuple[_Dir, bytes]:
        parts = _parts(path)
        return self._dir_at(path, parts[:-1]), parts[-1]

    def _file_at(self, path: bytes) -> _File:
        parent, name = self._parent(path)
        child = parent.children.get(name)
        if isinstance(child, _File):
            return child
        if isinstance(child, _Dir):
            raise _err(errno.EISDIR, path)
        node = _File(_slot_origin(parent, name, child, path), None, None)
        parent.children[name] = node
        return node

    @staticmethod
    def _remove(parent: _Dir, name: bytes) -> None:
        if parent.origin is None:
            parent.children.pop(name, None)
        else:
            parent.children[name] = _WHITEOUT

    def _create(self, rec: Create | Mkdir) -> None:
        parent, name = self._parent(rec.path)
        if isinstance(parent.children.get(name), _File | _Dir | _Redirect):
            raise _err(errno.EEXIST, rec.path)
        if isinstance(rec, Create):
            parent.children[name] = _File(None, 0, bool(rec.mode & 0o111))
        else:
            parent.children[name] = _Dir(None)

    def _unlink(self, path: bytes) -> None:
        parent, name = self._parent(path)
        child = parent.children.get(name)
        if isinstance(child, _Dir):
            raise _err(errno.EISDIR, path)
        if not isinstance(child, _File):
            _slot_origin(parent, name, child, path)
        self._remove(parent, name)

    def _rmdir(self, path: bytes) -> None:
        parent, name = self._parent(path)
        child = parent.children.get(name)
        if isinstance(child, _File):
            raise _err(errno.ENOTDIR, path)
        if isinstance(child, _Dir) and (child.origin is None and child.has_live_children()):
            raise _err(errno.ENOTEMPTY, path)
        if not isinstance(child, _Dir):
            _slot_origin(parent, name, child, path)
        self._remove(parent, name)

    def _rename(self, old: bytes, new: bytes) -> None:
        if old == new:
            return
        if new.startswith(old + b"/"):
            raise _err(errno.EINVAL, new)
        src, src_name = self._parent(old)
        dst, dst_name = self._parent(new)
        node = src.children.get(src_name)
        if not isinstance(node, _File | _Dir | _Redirect):
            node = _Redirect(_slot_origin(src, src_name, node, old))
        self._check_target(dst.children.get(dst_name), node, new)
        self._remove(src, src_name)
        home = None if dst.origin is None else _join(dst.origin, dst_name)
        if isinstance(node, _Redirect) and node.origin == home:  # moved back: nothing staged
            dst.children.pop(dst_name, None)
        else:
            dst.children[dst_name] = node

    @staticmethod
    def _check_target(target: _Node | None, node: _Node, path: bytes) -> None:
        if isinstance(target, _Dir):
            if isinstance(node, _File):
                raise _err(errno.EISDIR, path)
            if target.has_live_children():
                raise _err(errno.ENOTEMPTY, path)
        if isinstance(target, _File) and isinstance(node, _Dir):
            raise _err(errno.ENOTDIR, path)

    def _reset(self, paths: tuple[bytes, ...]) -> None:
        if not paths:
            self._root = _Dir(b"")
        for path in paths:
            node: _Node | None = self._root
            parts = _parts(path)
            for name in parts[:-1]:
                node = node.children.get(name) if isinstance(node, _Dir) else None
            if isinstance(node, _Dir):
                node.children.pop(parts[-1], None)

    # ---- queries

    def _walk(self, path: bytes) -> _File | _Dir | bytes | None:
        """The staged node at `path`, the base path it falls through to, or None if absent."""
        parts = _parts(path)
        node: _Node = self._root
        for i, name in enumerate(parts):
            if isinstance(node, _Redirect):
                return b"/".join([node.origin, *parts[i:]])
            if not isinstance(node, _Dir):
                return None
            child = node.children.get(name)
            if child is None:
                return None if node.origin is None else _join(node.origin, b"/".join(parts[i:]))
            node = child
        if isinstance(node, _Redirect):
            return node.origin
        return None if isinstance(node, _Whiteout) else node

    def is_empty(self) -> bool:
        """Whether nothing is staged."""
        return not self._root.children

    def resolve(self, path: bytes) -> Resolution:
        """Where the content of `path` comes from; see `Resolution`."""
        target = self._walk(path)
        if isinstance(target, bytes):
            return Resolution(Kind.BASE, target)
        if isinstance(target, _File):
            return Resolution(Kind.FILE, target.origin)
        if isinstance(target, _Dir):
            return Resolution(Kind.DIR, target.origin)
        return Resolution(Kind.ABSENT)

    def exists(self, path: bytes, base_stat: BaseStat) -> bool:
        """Whether `path` is in the merged view (b"" is the root)."""
        target = self._walk(path)
        if isinstance(target, bytes):
            return base_stat(target) is not None
        return target is not None

    def is_dir(self, path: bytes, base_stat: BaseStat) -> bool:
        """Whether `path` is a directory of the merged view."""
        target = self._walk(path)
        if isinstance(target, bytes):
            entry = base_stat(target)
            return entry is not None and entry.is_dir
        return isinstance(target, _Dir)

    def _file_target(self, path: bytes) -> _File | bytes:
        target = self._walk(path)
        if target is None:
            raise _err(errno.ENOENT, path)
        if isinstance(target, _Dir):
            raise _err(errno.EISDIR, path)
        return target

    def size(self, path: bytes, base_size: BaseSize) -> int:
        """Size of the file at `path`; ENOENT if absent, EISDIR for a staged directory."""
        target = self._file_target(path)
        if isinstance(target, bytes):
            return base_size(target)
        return target.current_size(base_size)

    def executable(self, path: bytes, base_executable: Callable[[bytes], bool]) -> bool:
        """The exec bit of the file at `path`: staged by CREATE/CHMOD, else the base's."""
        target = self._file_target(path)
        if isinstance(target, bytes):
            return base_executable(target)
        if target.executable is not None:
            return target.executable
        return target.origin is not None and base_executable(target.origin)

    def extent_count(self, path: bytes) -> int:
        """Number of staged runs of a file (0 if nothing staged): a diagnostic."""
        target = self._walk(path)
        return len(target.extents) if isinstance(target, _File) else 0

    def read(self, path: bytes, offset: int, size: int, base_reader: BaseReader) -> bytes:
        """Up to `size` bytes at `offset`; short only at end of file."""
        if offset < 0 or size < 0:
            raise ValueError("negative offset or size")
        target = self._file_target(path)
        if isinstance(target, bytes):
            return base_reader(target, offset, size)
        end = offset + size if target.size is None else min(offset + size, target.size)
        out = bytearray()
        for start, length, blob in target.extents.segments(offset, end):
            if blob is not None:
                out += self._blob(blob, length)
                continue
            piece = self._gap(target, start, length, base_reader)
            out += piece
            if len(piece) < length:
                break
        return bytes(out)

    @staticmethod
    def _gap(f: _File, start: int, length: int, base_reader: BaseReader) -> bytes:
        """Bytes of an unstaged range: base bytes below the limit, then zeros up to end of file."""
        stop = start + length if f.base_limit is None else min(start + length, f.base_limit)
        base = b""
        if f.origin is not None and start < stop:
            base = base_reader(f.origin, start, stop - start)[: stop - start]
        fill_to = start + length
        if f.size is None:  # lazily sized: past base EOF only holes below written_end exist
            fill_to = min(fill_to, max(start + len(base), f.written_end))
        return base + bytes(max(0, fill_to - start - len(base)))

    def listdir(self, path: bytes, base_listing: BaseListing) -> list[bytes]:
        """Sorted names in the directory at `path` (b"" is the root)."""
        target = self._walk(path)
        if isinstance(target, bytes):
            return sorted(base_listing(target))
        if target is None:
            raise _err(errno.ENOENT, path)
        if isinstance(target, _File):
            raise _err(errno.ENOTDIR, path)
        names = set(base_listing(target.origin)) if target.origin is not None else set()
        for name, child in target.children.items():
            if child is _WHITEOUT:
                names.discard(name)
            else:
                names.add(name)
        return sorted(names)

    # ---- status

    def changes(self, base_stat: BaseStat) -> list[Change]:
        """Staged changes relative to the base, sorted by path, for ``fusefs status``.

        A renamed entry is reported once as RENAMED (not also as a deletion of its origin);
        entries below a renamed, added or deleted directory are implied unless staged.
        """
        out: list[Change] = []
        moved: set[bytes] = set()
        self._collect(self._root, b"", base_stat, out, moved)
        kept = [c for c in out if not (c.kind is ChangeKind.DELETED and c.path in moved)]
        return sorted(kept, key=lambda c: (c.path, c.kind.value))

    def _collect(
        self, d: _Dir, path: bytes, base_stat: BaseStat, out: list[Change], moved: set[bytes]
    ) -> None:
        for name, child in d.children.items():
            here = _join(path, name)
            home = None if d.origin is None else _join(d.origin, name)
            replaced = base_stat(home) if home is not None else None
            if isinstance(child, _Whiteout):
                if replaced is not None:
                    out.append(Change(ChangeKind.DELETED, home or here, *replaced))
                continue
            origin = child.origin
            if origin is not None and origin == home:
                if isinstance(child, _File):
                    out.append(self._file_change(ChangeKind.MODIFIED, here, child, base_stat))
            elif origin is not None:
                moved.add(origin)
                out.append(self._moved_change(here, child, base_stat))
                if replaced is not None:
                    out.append(Change(ChangeKind.DELETED, here, *replaced))
            elif not isinstance(child, _Redirect):
                out.extend(self._created_changes(here, child, replaced, base_stat))
            if isinstance(child, _Dir):
                self._collect(child, here, base_stat, out, moved)

    @staticmethod
    def _file_change(kind: ChangeKind, path: bytes, f: _File, base_stat: BaseStat) -> Change:
        size = f.current_size(lambda p: (base_stat(p) or BaseEntry(False, 0)).size)
        return Change(kind, path, False, size)

    def _moved_change(self, path: bytes, node: _File | _Dir | _Redirect, st: BaseStat) -> Change:
        assert node.origin is not None
        if isinstance(node, _File):
            size = self._file_change(ChangeKind.RENAMED, path, node, st).size
            return Change(ChangeKind.RENAMED, path, False, size, node.origin, node.changed())
        if isinstance(node, _Dir):
            return Change(ChangeKind.RENAMED, path, True, 0, node.origin)
        entry = st(node.origin) or BaseEntry(False, 0)
        return Change(ChangeKind.RENAMED, path, entry.is_dir, entry.size, node.origin)

    def _created_changes(
        self, path: bytes, node: _File | _Dir, replaced: BaseEntry | None, st: BaseStat
    ) -> list[Change]:
        if isinstance(node, _Dir):
            added = Change(ChangeKind.ADDED, path, True, 0)
        elif replaced is not None and not replaced.is_dir:
            return [self._file_change(ChangeKind.MODIFIED, path, node, st)]
        else:
            added = self._file_change(ChangeKind.ADDED, path, node, st)
        if replaced is None:
            return [added]
        return [Change(ChangeKind.DELETED, path, *replaced), added]
