"""From a writable mount's staged view to what `fusefs status` shows and `fusefs commit` makes.

Pure reading of the overlay and the base tree: which outputs changed, which are new, which were
removed, and the complete new content of each (unchanged files keep their known md5, so only
staged bytes are hashed). Runs in a worker thread while mutations are held (`freeze`), so the
view is stable; base entries that are not loaded yet are loaded inline there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .commit import OutputPlan, RemovedOutput, StagedFile
from .overlay import Change, Kind
from .writable import WritableFileSystem, join, split

CHUNK = 1 << 20


def _s(path: bytes | tuple[bytes, ...]) -> str:
    raw = b"/".join(path) if isinstance(path, tuple) else path
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class StatusLine:
    kind: str
    path: str
    is_dir: bool
    size: int
    old_path: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "path": self.path,
            "is_dir": self.is_dir,
            "size": self.size,
            "old_path": self.old_path,
        }


def status(fs: WritableFileSystem) -> list[StatusLine]:
    return [
        StatusLine(
            c.kind.value,
            _s(c.path),
            c.is_dir,
            c.size,
            _s(c.old_path) if c.old_path is not None else None,
        )
        for c in fs.overlay.changes(fs.base_stat)
    ]


class _Reader:
    """A file-like reader over a positional read function."""

    def __init__(self, pread: object, size: int) -> None:
        self._pread = pread
        self._size = size
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self._size - self._pos
        data: bytes = self._pread(self._pos, min(n, CHUNK * 4))  # type: ignore[operator]
        self._pos += len(data)
        return data

    def close(self) -> None:
        return None

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def plan(fs: WritableFileSystem) -> tuple[list[OutputPlan], list[RemovedOutput]]:
    """The outputs a commit must write or remove, from the staged changes."""
    roots = _touched_outputs(fs, fs.overlay.changes(fs.base_stat))
    tree = fs.base.tree
    outputs: list[OutputPlan] = []
    removed: list[RemovedOutput] = []
    for root in sorted(roots):
        path = b"/".join(root)
        existing = tree.metafiles.get(root)
        metafile = existing[0] if existing else path + b".dvc"
        exists = fs.overlay.exists(path, fs.base_stat)
        if not exists:
            if existing:
                removed.append(RemovedOutput(_s(path), _s(metafile)))
            continue
        outputs.append(_output_plan(fs, path, metafile, existing is not None))
    return outputs, removed


def _touched_outputs(fs: WritableFileSystem, changes: list[Change]) -> set[tuple[bytes, ...]]:
    roots = set()
    for change in changes:
        for path in (change.path, change.old_path):
            if path is None:
                continue
            root = fs.output_root(path)
            if root is not None:
                roots.add(root)
    return roots


def _output_plan(fs: WritableFileSystem, path: bytes, metafile: bytes, known: bool) -> OutputPlan:
    base_metafile = fs.base.tree.find(split(metafile)) if known else None
    existing = None
    if base_metafile is not None and base_metafile.blob is not None:
        existing = fs.base.repo.read_blob(base_metafile.blob)
    out_node = fs.base.tree.find(split(path)) if known else None
    legacy = bool(out_node and out_node.obj and out_node.obj.legacy)
    is_dir = fs.overlay.is_dir(path, fs.base_stat)
    if is_dir:
        files = [_staged_file(fs, join(path, rel), rel) for rel in _walk(fs, path, b"")]
    else:
        files = [_staged_file(fs, path, b"")]
    return OutputPlan(_s(path), is_dir, _s(metafile), existing, files, rehash=legacy)


def _walk(fs: WritableFileSystem, root: bytes, rel: bytes) -> Iterator[bytes]:
    for name in fs.overlay.listdir(join(root, rel) if rel else root, fs.base_listing):
        child = join(rel, name)
        if fs.overlay.is_dir(join(root, child), fs.base_stat):
            yield from _walk(fs, root, child)
        else:
            yield child


def _staged_file(fs: WritableFileSystem, path: bytes, rel: bytes) -> StagedFile:
    resolution = fs.overlay.resolve(path)
    exe = fs.overlay.executable(path, fs.base_executable)
    if resolution.kind is Kind.BASE:
        base_path = resolution.base_path or b""
        node = fs.base.base_node_now(split(base_path))
        assert node is not None and node.obj is not None, path
        size = node.size or 0
        known = None if node.obj.legacy else node.obj.md5

        def read_base() -> BinaryIO:
            reader = _Reader(lambda off, n: fs.base_reader(base_path, off, n), size)
            return reader  # type: ignore[return-value]

        return StagedFile(_s(rel), size, known, read_base, exe)
    size = fs.overlay.size(path, fs.base_size)

    def read_staged() -> BinaryIO:
        reader = _Reader(lambda off, n: fs.overlay.read(path, off, n, fs.base_reader), size)
        return reader  # type: ignore[return-value]

    return StagedFile(_s(rel), size, None, read_staged, exe)
