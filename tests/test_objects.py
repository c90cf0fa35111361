"""Object identity, cache layout and download verification (including DVC 2's dos2unix md5)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusefs.objects import DOS2UNIX_BLOCK, HashInfo, Md5Check

A = hashlib.md5(b"a").hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def dvc2_md5(data: bytes) -> str:
    """What DVC 2 recorded for a text file: CRLF→LF within each 1 MiB read."""
    digest = hashlib.md5()
    for i in range(0, len(data), DOS2UNIX_BLOCK):
        digest.update(data[i : i + DOS2UNIX_BLOCK].replace(b"\r\n", b"\n"))
    return digest.hexdigest()


def check(expected: HashInfo, chunks: Iterable[bytes]) -> bool:
    verifier = Md5Check(expected)
    for chunk in chunks:
        verifier.update(chunk)
    return verifier.ok()


def test_relpath_layouts() -> None:
    assert HashInfo(A).relpath == f"files/md5/{A[:2]}/{A[2:]}"
    assert HashInfo(A, legacy=True).relpath == f"{A[:2]}/{A[2:]}"
    assert HashInfo(A, is_dir=True).relpath == f"files/md5/{A[:2]}/{A[2:]}.dir"
    assert HashInfo(A, is_dir=True, legacy=True).relpath == f"{A[:2]}/{A[2:]}.dir"
    assert HashInfo(A, is_dir=True).oid == A + ".dir"
    assert str(HashInfo(A)) == A


def test_parse() -> None:
    assert HashInfo.parse(A, legacy=False) == HashInfo(A)
    assert HashInfo.parse(A + ".dir", legacy=True) == HashInfo(A, is_dir=True, legacy=True)


@pytest.mark.parametrize(
    "value", [None, 5, b"x", A.upper(), A[:31], A + "a", A + ".DIR", ".dir", "", f" {A}", f"{A}\n"]
)
def test_parse_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="md5"):
        HashInfo.parse(value, legacy=False)


def test_file_entry_keeps_the_layout() -> None:
    directory = HashInfo(A, is_dir=True, legacy=True)
    entry = directory.file_entry(md5(b"x"))
    assert entry == HashInfo(md5(b"x"), is_dir=False, legacy=True)


TEXT = b"line one\r\nline two\r\n\r\nlast\r\n"


def test_raw_md5_is_accepted_for_both_layouts() -> None:
    for legacy in (False, True):
        assert check(HashInfo(md5(TEXT), legacy=legacy), [TEXT])
        assert not check(HashInfo(md5(TEXT + b"!"), legacy=legacy), [TEXT])


def test_dos2unix_md5_is_accepted_for_legacy_objects() -> None:
    expected = dvc2_md5(TEXT)
    assert expected != md5(TEXT)
    assert check(HashInfo(expected, legacy=True), [TEXT])


def test_dos2unix_md5_is_refused_for_dvc3_objects() -> None:
    assert not check(HashInfo(dvc2_md5(TEXT), legacy=False), [TEXT])


def test_crlf_split_across_update_chunks() -> None:
    cut = TEXT.index(b"\r\n") + 1  # chunk one ends with CR, chunk two starts with LF
    chunks = [TEXT[:cut], TEXT[cut:]]
    assert chunks[0].endswith(b"\r") and chunks[1].startswith(b"\n")
    assert check(HashInfo(dvc2_md5(TEXT), legacy=True), chunks)


def test_byte_by_byte_updates() -> None:
    assert check(HashInfo(dvc2_md5(TEXT), legacy=True), [bytes([b]) for b in TEXT])


@pytest.mark.parametrize("data", [b"abc\r", b"\r", b"a\r\rb\r", b"a\r\r\nb", b"\r\r\n\r"])
def test_lone_cr_at_a_chunk_end(data: bytes) -> None:
    expected = HashInfo(dvc2_md5(data), legacy=True)
    assert check(expected, [data])
    assert check(expected, [data[:i] for i in (len(data) - 1,)] + [data[-1:]])
    assert check(expected, [bytes([b]) for b in data] + [b""])


def test_only_a_dos2unix_change_is_accepted() -> None:
    data = b"a\r\nb"
    assert not check(HashInfo(md5(b"a\nb!"), legacy=True), [data])
    assert not check(HashInfo(md5(b"ab"), legacy=True), [data])  # not "strip all CR/LF"
    assert not check(HashInfo(md5(b"a\r\nb".replace(b"\r", b"")), legacy=True), [b"a\rb"])


def test_crlf_across_a_dvc_block_boundary_is_kept_as_dvc_2_did() -> None:
    data = b"x" * (DOS2UNIX_BLOCK - 1) + b"\r\n" + b"y\r\n"
    naive = md5(data.replace(b"\r\n", b"\n"))
    dvc2 = dvc2_md5(data)
    assert naive != dvc2
    assert check(HashInfo(dvc2, legacy=True), [data])
    assert check(
        HashInfo(dvc2, legacy=True), [data[:1000], data[1000:DOS2UNIX_BLOCK], data[DOS2UNIX_BLOCK:]]
    )
    assert not check(HashInfo(naive, legacy=True), [data])


def test_ok_can_be_asked_twice_and_updates_may_continue() -> None:
    verifier = Md5Check(HashInfo(dvc2_md5(b"a\r\nb\r"), legacy=True))
    verifier.update(b"a\r\nb\r")
    assert verifier.ok()
    assert verifier.ok()
    verifier.update(b"\n")
    assert not verifier.ok()
    assert verifier.hexdigest() == md5(b"a\r\nb\r\n")


def test_memoryview_chunks() -> None:
    assert check(HashInfo(dvc2_md5(TEXT), legacy=True), [memoryview(TEXT)])  # type: ignore[list-item]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\r\r"]), max_size=30).map(b"".join),
    st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_dos2unix_is_independent_of_chunking(data: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert check(HashInfo(dvc2_md5(data), legacy=True), chunks)
    assert check(HashInfo(md5(data), legacy=True), chunks)
    assert check(HashInfo(md5(data), legacy=False), chunks)
    if b"\r\n" in data:
        assert not check(HashInfo(dvc2_md5(data), legacy=False), chunks)
