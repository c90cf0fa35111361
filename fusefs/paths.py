"""Validation of the paths found in metafiles and `.dir` manifests.

Invariant: every name the tree serves passed `split_relpath`. The rules follow `git fsck`: no
empty component, no `.`, `..` or `.git` (any case), no leading `/`, no NUL. Real `dvc checkout`
writes outside the workspace for a `..` entry; a mount must never serve one.
"""

from __future__ import annotations

from collections.abc import Iterable


class BadPath(ValueError):
    """A path that must not be served."""


def _encode(path: str | bytes) -> bytes:
    if isinstance(path, bytes):
        return path
    try:
        return path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise BadPath(f"path {path!r} is not valid Unicode") from None


def split_relpath(path: str | bytes) -> tuple[bytes, ...]:
    """Split a '/'-separated relative path into validated byte components."""
    raw = _encode(path)
    if not raw:
        raise BadPath("empty path")
    if raw.startswith(b"/"):
        raise BadPath(f"absolute path {raw!r}")
    if b"\0" in raw:
        raise BadPath(f"NUL byte in path {raw!r}")
    parts = tuple(raw.split(b"/"))
    for part in parts:
        check_name(part, raw)
    return parts


def check_name(part: bytes, whole: bytes | None = None) -> None:
    """Reject a single path component that git would refuse to check out."""
    where = f" in {whole!r}" if whole is not None else ""
    if part in (b"", b".", b".."):
        raise BadPath(f"component {part!r}{where}")
    if part.lower() == b".git":
        raise BadPath(f".git component{where}")
    if b"\0" in part or b"/" in part:
        raise BadPath(f"bad component {part!r}{where}")


def join_parts(base: tuple[bytes, ...], rel: str | bytes) -> tuple[bytes, ...]:
    """Resolve `rel` (which may use `..` to reach a sibling) against a directory `base`.

    Metafile paths may climb out of the metafile's folder (`path: ../data`), but never out of the
    repository root.
    """
    raw = _encode(rel)
    if not raw or raw.startswith(b"/") or b"\0" in raw:
        raise BadPath(f"bad path {raw!r}")
    parts = list(base)
    for part in raw.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not parts:
                raise BadPath(f"path {raw!r} climbs out of the repository")
            parts.pop()
            continue
        check_name(part, raw)
        parts.append(part)
    if not parts:
        raise BadPath(f"path {raw!r} names the repository root")
    return tuple(parts)


def find_collisions(paths: Iterable[tuple[bytes, ...]]) -> list[str]:
    """Duplicates and file/folder collisions among a set of file paths, as messages."""
    seen: set[tuple[bytes, ...]] = set()
    problems: list[str] = []
    ordered = sorted(paths)
    for parts in ordered:
        if parts in seen:
            problems.append(f"duplicate entry {b'/'.join(parts)!r}")
        seen.add(parts)
    for parts in ordered:
        for i in range(1, len(parts)):
            if parts[:i] in seen:
                problems.append(f"{b'/'.join(parts[:i])!r} is both a file and a folder")
                break
    return problems
