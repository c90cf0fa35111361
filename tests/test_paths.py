"""Path validation: what a metafile or manifest may name, and what it may never name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusefs.paths import BadPath, check_name, find_collisions, join_parts, split_relpath

FORBIDDEN = {b"", b".", b"..", b".git"}


def _assert_safe(parts: tuple[bytes, ...]) -> None:
    assert parts, "a path must name something below the root"
    for part in parts:
        assert part not in FORBIDDEN
        assert part.lower() != b".git"
        assert b"\0" not in part
        assert b"/" not in part


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("a", (b"a",)),
        ("a/b/c.txt", (b"a", b"b", b"c.txt")),
        ("..a/b..", (b"..a", b"b..")),
        (".gitignore", (b".gitignore",)),
        (".git2/x", (b".git2", b"x")),
        ("données/é", ("données".encode(), "é".encode())),
        (b"raw\xff", (b"raw\xff",)),
        ("\udcff", (b"\xff",)),
    ],
)
def test_split_relpath_accepts(path: str | bytes, parts: tuple[bytes, ...]) -> None:
    assert split_relpath(path) == parts


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "/etc/passwd",
        "a//b",
        "a/",
        "./a",
        "a/./b",
        "..",
        "../a",
        "a/../b",
        ".git",
        ".GIT/config",
        "a/.Git/b",
        "a\0b",
        b"a\0",
        "\ud800",
        "a/\udfff/b",
    ],
)
def test_split_relpath_rejects(path: str | bytes) -> None:
    with pytest.raises(BadPath):
        split_relpath(path)


def test_bad_path_is_a_value_error() -> None:
    assert issubclass(BadPath, ValueError)


@pytest.mark.parametrize("name", [b"", b".", b"..", b".git", b".gIT", b"a/b", b"a\0"])
def test_check_name_rejects(name: bytes) -> None:
    with pytest.raises(BadPath):
        check_name(name)


@pytest.mark.parametrize(
    ("base", "rel", "parts"),
    [
        ((), "data", (b"data",)),
        ((b"sub",), "data.csv", (b"sub", b"data.csv")),
        ((b"sub",), "../sibling", (b"sibling",)),
        ((b"a", b"b"), "../../c", (b"c",)),
        ((b"a",), "./x//y/", (b"a", b"x", b"y")),
        ((b"a",), ".", (b"a",)),
    ],
)
def test_join_parts_accepts(base: tuple[bytes, ...], rel: str, parts: tuple[bytes, ...]) -> None:
    assert join_parts(base, rel) == parts


@pytest.mark.parametrize(
    ("base", "rel"),
    [
        ((), "../../etc/passwd"),
        ((b"sub",), "../../etc/passwd"),
        ((), ".."),
        ((b"sub",), ".."),
        ((), "."),
        ((), ""),
        ((), "/etc/passwd"),
        ((), "a\0b"),
        ((), ".git/config"),
        ((b"a",), "../.GIT/hooks/x"),
        ((), "\ud800"),
    ],
)
def test_join_parts_rejects(base: tuple[bytes, ...], rel: str) -> None:
    with pytest.raises(BadPath):
        join_parts(base, rel)


def test_find_collisions() -> None:
    assert find_collisions([(b"a",), (b"b", b"c")]) == []
    assert find_collisions([(b"a",), (b"a",)]) == ["duplicate entry b'a'"]
    assert find_collisions([(b"a", b"b"), (b"a",)]) == ["b'a' is both a file and a folder"]
    assert find_collisions([(b"a", b"b", b"c"), (b"a", b"b")]) != []


_COMPONENT = st.sampled_from(
    [b"", b".", b"..", b".git", b".GiT", b"a", b"b", b"\0", b"x.y", b"\xff"]
)
_PATHS = st.one_of(
    st.lists(_COMPONENT, max_size=6).map(b"/".join),
    st.binary(max_size=40),
    st.text(max_size=40),
)


@given(_PATHS)
def test_split_relpath_only_returns_safe_parts(path: bytes | str) -> None:
    try:
        parts = split_relpath(path)
    except BadPath:
        return
    _assert_safe(parts)
    raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
    assert b"/".join(parts) == raw


@given(st.lists(st.sampled_from([b"a", b"b", b"c.d", b"\xff"]), max_size=4).map(tuple), _PATHS)
def test_join_parts_never_escapes_the_root(base: tuple[bytes, ...], rel: bytes | str) -> None:
    try:
        parts = join_parts(base, rel)
    except BadPath:
        return
    _assert_safe(parts)
