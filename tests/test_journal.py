"""Journal format, crash recovery and the overlay's staged view."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fusefs.errors import FsError
from fusefs.journal import Journal, JournalError
from fusefs.overlay import BaseEntry, Change, ChangeKind, Kind, Overlay, Resolution
from fusefs.records import (
    HEADER,
    Chmod,
    CorruptRecordError,
    Create,
    Header,
    Mkdir,
    Op,
    Record,
    Rename,
    Reset,
    Rmdir,
    Truncate,
    Unlink,
    Write,
    WriteData,
    decode_record,
    encode_record,
    validate_path,
)

# --------------------------------------------------------------------------- a base tree

BASE_FILES: dict[bytes, bytes] = {
    b"a": b"alpha contents",
    b"z": b"",
    b"d/x": bytes(range(40)),
    b"d/e/y": b"why" * 9,
}
BASE_DIRS: set[bytes] = {b"d", b"d/e"}
BASE_EXEC: set[bytes] = {b"a"}


def _parent(path: bytes) -> bytes:
    return path.rpartition(b"/")[0]


def base_stat(path: bytes) -> BaseEntry | None:
    if path in BASE_FILES:
        return BaseEntry(False, len(BASE_FILES[path]))
    if path == b"" or path in BASE_DIRS:
        return BaseEntry(True, 0)
    return None


def base_read(path: bytes, offset: int, size: int) -> bytes:
    return BASE_FILES[path][offset : offset + size]


def base_size(path: bytes) -> int:
    return len(BASE_FILES[path])


def base_listing(path: bytes) -> list[bytes]:
    entries = set(BASE_FILES) | BASE_DIRS
    return [p.rpartition(b"/")[2] for p in entries if _parent(p) == path]


def base_exec(path: bytes) -> bool:
    return path in BASE_EXEC


def read_all(overlay: Overlay, path: bytes) -> bytes:
    return overlay.read(path, 0, overlay.size(path, base_size) + 7, base_read)


def snapshot(overlay: Overlay) -> dict[bytes, bytes | None]:
    """Every reachable path of the merged view: file contents, or None for a directory."""
    out: dict[bytes, bytes | None] = {}
    todo = [b""]
    while todo:
        d = todo.pop()
        for name in overlay.listdir(d, base_listing):
            p = d + b"/" + name if d else name
            if overlay.is_dir(p, base_stat):
                out[p] = None
                todo.append(p)
            else:
                out[p] = read_all(overlay, p)
    return out


# --------------------------------------------------------------------------- records

ALL_RECORDS: list[Record] = [
    Header(3, b"0123abcd" * 5),
    Create(b"new/file", 0o755),
    Mkdir(b"dir", 0o700),
    Unlink(b"a"),
    Rmdir(b"d/e"),
    Rename(b"d/x", b"\xff\xfe/odd name"),
    Truncate(b"a", 2**40),
    Write(b"a", 5, 1234, 131072, 2**64 - 1),
    Chmod(b"a", True),
    Chmod(b"a", False),
    Reset(),
    Reset((b"a", b"d/e")),
]


@pytest.mark.parametrize("rec", ALL_RECORDS, ids=lambda r: type(r).__name__)
def test_round_trip(rec: Record) -> None:
    frame = encode_record(rec)
    assert decode_record(frame) == (rec, len(frame))
    assert decode_record(b"junk" + frame + b"more", 4) == (rec, 4 + len(frame))


@pytest.mark.parametrize(
    "path", [b"", b"/a", b"a/", b"a//b", b"./a", b"a/..", b"a\0b", b"x" * 256, "a"]
)
def test_invalid_paths_rejected(path: bytes) -> None:
    with pytest.raises(ValueError):
        validate_path(path)
    with pytest.raises(ValueError):
        Create(path)


def test_invalid_fields_rejected() -> None:
    with pytest.raises(ValueError):
        Truncate(b"a", -1)
    with pytest.raises(ValueError):
        Create(b"a", 0o10000)
    with pytest.raises(ValueError):
        Rename(b"a", b"../b")


def test_every_bit_flip_in_a_record_is_detected() -> None:
    frame = encode_record(Write(b"some/path", 7, 99, 10, 12345))
    for bit in range(len(frame) * 8):
        damaged = bytearray(frame)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptRecordError):
            decode_record(bytes(damaged))


# --------------------------------------------------------------------------- journal on disk


def populate(journal: Journal) -> None:
    """A few records of every kind; the last one is a WRITE."""
    for op in populate_ops():
        journal.append(op)


def record_offsets(path: Path) -> list[int]:
    buf = path.read_bytes()
    offsets, pos = [], 0
    while pos < len(buf):
        offsets.append(pos)
        pos = decode_record(buf, pos)[1]
    return offsets


def expected_view(records: int, tmp: Path) -> dict[bytes, bytes | None]:
    """The view after only the first `records` operations of `populate`."""
    with Journal.open(tmp) as scratch:
        for op in populate_ops()[:records]:
            scratch.append(op)
        return snapshot(scratch.overlay)


def populate_ops() -> list[Op]:
    return [
        Mkdir(b"n"),
        Create(b"n/f", 0o644),
        WriteData(b"n/f", 0, b"hello world"),
        WriteData(b"a", 3, b"XYZ"),
        Truncate(b"d/x", 10),
        Rename(b"d/e", b"moved"),
        Unlink(b"z"),
        Chmod(b"n/f", True),
        WriteData(b"n/f", 6, b"there, friend"),
    ]


def test_reopen_shows_same_overlay(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "s", base_rev=b"abc") as journal:
        populate(journal)
        before = snapshot(journal.overlay)
        changes = journal.overlay.changes(base_stat)
    assert before[b"n/f"] == b"hello there, friend"
    assert before[b"a"] == b"alpXYZcontents"
    assert before[b"moved/y"] == BASE_FILES[b"d/e/y"]
    with Journal.open(tmp_path / "s") as journal:
        assert journal.base_rev == b"abc"
        assert snapshot(journal.overlay) == before
        assert journal.overlay.changes(base_stat) == changes
        assert journal.overlay.executable(b"n/f", base_exec)


def test_torn_tail_at_every_offset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    with Journal.open(src) as journal:
        populate(journal)
    jpath = src / "journal.1"
    offsets = record_offsets(jpath)
    last, size = offsets[-1], jpath.stat().st_size
    before_last = expected_view(len(offsets) - 2, tmp_path / "expected")
    data_size = (src / "data.1").stat().st_size
    for cut in range(last, size):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(src, work)
        os.truncate(work / "journal.1", cut)
        with caplog.at_level(logging.WARNING), Journal.open(work) as journal:
            assert snapshot(journal.overlay) == before_last
        assert (work / "journal.1").stat().st_size == last
        assert (work / "data.1").stat().st_size == data_size - len(b"there, friend")
        shutil.rmtree(work)
    assert "dropping" in caplog.text


def test_torn_blob_log_drops_the_write(tmp_path: Path) -> None:
    src = tmp_path / "src"
    with Journal.open(src) as journal:
        populate(journal)
    offsets = record_offsets(src / "journal.1")
    before_last = expected_view(len(offsets) - 2, tmp_path / "expected")
    data_size = (src / "data.1").stat().st_size
    for cut in range(data_size - len(b"there, friend"), data_size):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(src, work)
        os.truncate(work / "data.1", cut)
        with Journal.open(work) as journal:
            assert snapshot(journal.overlay) == before_last
        assert (work / "journal.1").stat().st_size == offsets[-1]
        shutil.rmtree(work)


def test_flipped_payload_bit_drops_that_record_and_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "s"
    with Journal.open(state) as journal:
        populate(journal)
    jpath = state / "journal.1"
    offsets = record_offsets(jpath)
    victim = offsets[5]  # the TRUNCATE: records 1..4 survive
    buf = bytearray(jpath.read_bytes())
    buf[victim + HEADER.size + 3] ^= 0x10
    jpath.write_bytes(bytes(buf))
    with caplog.at_level(logging.ERROR), Journal.open(state) as journal:
        assert snapshot(journal.overlay) == expected_view(4, tmp_path / "expected")
    assert "checksum mismatch" in caplog.text
    assert jpath.stat().st_size == victim


def test_corrupt_blob_data_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "s"
    with Journal.open(state) as journal:
        populate(journal)
    offsets = record_offsets(state / "journal.1")
    with (state / "data.1").open("r+b") as fh:  # inside "hello world": the 3rd record's data
        fh.seek(4)
        fh.write(b"!")
    with caplog.at_level(logging.ERROR), Journal.open(state) as journal:
        assert snapshot(journal.overlay) == expected_view(2, tmp_path / "expected")
    assert "data checksum mismatch" in caplog.text
    assert (state / "journal.1").stat().st_size == offsets[3]
    assert (state / "data.1").stat().st_size == 0


def test_data_pointer_past_end_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "s"
    with Journal.open(state) as journal:
        journal.append(Create(b"f"))
        journal.write(b"f", 0, b"abc")
    with (state / "journal.1").open("ab") as fh:  # a well-formed record whose data is missing
        fh.write(encode_record(Write(b"f", 3, 3, 5, 0)))
    with caplog.at_level(logging.ERROR), Journal.open(state) as journal:
        assert read_all(journal.overlay, b"f") == b"abc"
    assert "past end of blob log" in caplog.text


def test_rejected_operation_writes_nothing(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        journal.append(Mkdir(b"n"))
        journal.append(Create(b"n/f"))
        sizes = [(tmp_path / name).stat().st_size for name in ("journal.1", "data.1")]
        before = snapshot(journal.overlay)
        rejected: list[Op] = [Create(b"n/f"), Rmdir(b"n"), Unlink(b"n/x"), Rename(b"d", b"d/s")]
        for op in [*rejected, WriteData(b"n/x", 0, b"data")]:
            with pytest.raises(FsError):
                journal.append(op)
        assert [(tmp_path / name).stat().st_size for name in ("journal.1", "data.1")] == sizes
        assert snapshot(journal.overlay) == before


def test_errno_of_rejections(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        journal.append(Mkdir(b"n"))
        journal.append(Create(b"n/f"))
        cases: list[tuple[Op, int]] = [
            (Create(b"n/f"), errno.EEXIST),
            (Unlink(b"n"), errno.EISDIR),
            (Rmdir(b"n"), errno.ENOTEMPTY),
            (Rmdir(b"n/f"), errno.ENOTDIR),
            (Create(b"n/f/g"), errno.ENOTDIR),
            (Rename(b"n", b"n/f2"), errno.EINVAL),
            (WriteData(b"n/missing", 0, b"x"), errno.ENOENT),
        ]
        for op, code in cases:
            with pytest.raises(FsError) as info:
                journal.append(op)
            assert info.value.errno == code, op


def test_lock_excludes_second_opener(tmp_path: Path) -> None:
    with Journal.open(tmp_path), pytest.raises(JournalError) as info:
        Journal.open(tmp_path)
    assert info.value.errno == errno.EBUSY
    Journal.open(tmp_path).close()


def test_closed_journal_refuses(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.close()
    with pytest.raises(JournalError):
        journal.append(Create(b"f"))


def test_new_generation_after_commit(tmp_path: Path) -> None:
    with Journal.open(tmp_path, base_rev=b"rev1") as journal:
        populate(journal)
        assert journal.start_generation(b"rev2") == 2
        assert journal.overlay.changes(base_stat) == []
        journal.append(Create(b"after"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.2", "journal.2", "journal.lock"]
    with Journal.open(tmp_path) as journal:
        assert journal.generation == 2 and journal.base_rev == b"rev2"
        assert [c.path for c in journal.overlay.changes(base_stat)] == [b"after"]


def test_incomplete_newer_generation_ignored(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        journal.append(Create(b"kept"))
    (tmp_path / "journal.2").write_bytes(b"FJRN\x01")  # torn header of a generation
    (tmp_path / "journal.3.tmp").write_bytes(b"")
    with Journal.open(tmp_path) as journal:
        assert journal.generation == 1
        assert journal.overlay.exists(b"kept", base_stat)
        assert journal.start_generation() == 3


def test_crash_after_reset_replays_empty(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    populate(journal)
    journal.append(Reset())
    journal.close(sync=False)
    with Journal.open(tmp_path) as journal:
        assert snapshot(journal.overlay) == snapshot(Overlay(lambda o, n: b""))


def test_discard_paths(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        populate(journal)
        journal.append(Reset((b"a", b"n", b"moved", b"d/e")))
        view = snapshot(journal.overlay)
    assert view[b"a"] == BASE_FILES[b"a"]
    assert b"n" not in view and b"moved" not in view
    assert view[b"d/e/y"] == BASE_FILES[b"d/e/y"]
    assert view[b"d/x"] == BASE_FILES[b"d/x"][:10]
    assert b"z" not in view


def test_changes_summary(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        populate(journal)
        journal.append(Rename(b"a", b"b"))
        journal.append(Create(b"a"))
        journal.append(Unlink(b"moved/y"))
        got = journal.overlay.changes(base_stat)
    assert got == [
        Change(ChangeKind.MODIFIED, b"a", False, 0),
        Change(ChangeKind.RENAMED, b"b", False, 14, b"a", modified=True),
        Change(ChangeKind.DELETED, b"d/e/y", False, 27),
        Change(ChangeKind.MODIFIED, b"d/x", False, 10),
        Change(ChangeKind.RENAMED, b"moved", True, 0, b"d/e"),
        Change(ChangeKind.ADDED, b"n", True, 0),
        Change(ChangeKind.ADDED, b"n/f", False, 19),
        Change(ChangeKind.DELETED, b"z", False, 0),
    ]


def test_swap_reports_two_renames(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        journal.append(Rename(b"a", b"tmp"))
        journal.append(Rename(b"z", b"a"))
        journal.append(Rename(b"tmp", b"z"))
        got = journal.overlay.changes(base_stat)
        assert read_all(journal.overlay, b"z") == BASE_FILES[b"a"]
    assert got == [
        Change(ChangeKind.RENAMED, b"a", False, 0, b"z"),
        Change(ChangeKind.RENAMED, b"z", False, 14, b"a"),
    ]


def test_sequential_writes_coalesce(tmp_path: Path) -> None:
    chunk = 128 * 1024
    with Journal.open(tmp_path) as journal:
        journal.append(Create(b"big"))
        for i in range(64):
            journal.write(b"big", i * chunk, bytes([i]) * chunk)
        overlay = journal.overlay
        assert overlay.extent_count(b"big") == 1
        assert overlay.size(b"big", base_size) == 64 * chunk
        assert overlay.read(b"big", 5 * chunk - 2, 4, base_read) == b"\x04\x04\x05\x05"
        journal.write(b"big", chunk + 10, b"mid")
        assert overlay.extent_count(b"big") == 3
        assert overlay.read(b"big", chunk + 9, 5, base_read) == b"\x01mid\x01"


def test_copy_up_truncate_and_extend(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        ov = journal.overlay
        journal.write(b"d/x", 38, b"!!!!")
        assert ov.size(b"d/x", base_size) == 42
        assert read_all(ov, b"d/x") == bytes(range(38)) + b"!!!!"
        journal.append(Truncate(b"d/x", 4))
        journal.append(Truncate(b"d/x", 8))
        assert read_all(ov, b"d/x") == bytes(range(4)) + bytes(4)
        journal.write(b"a", 20, b"Q")  # base "a" is 14 bytes: a hole of zeros, then Q
        assert read_all(ov, b"a") == BASE_FILES[b"a"] + bytes(6) + b"Q"
        assert ov.read(b"a", 21, 10, base_read) == b""
        assert ov.resolve(b"d/e/y") == Resolution(Kind.BASE, b"d/e/y")
        assert ov.resolve(b"d/x").kind is Kind.FILE
        with pytest.raises(FsError):
            ov.read(b"d", 0, 1, base_read)


# --------------------------------------------------------------------------- stateful model

NAMES = st.sampled_from([b"a", b"b", b"d", b"q"])


class OverlayMachine(RuleBasedStateMachine):
    """The journal's overlay against a dict of files and a set of directories."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="journal-test-")
        self.journal = Journal.open(Path(self.tmp))
        self.reset_model()

    def reset_model(self) -> None:
        self.files = dict(BASE_FILES)
        self.dirs = set(BASE_DIRS)
        self.exec = set(BASE_EXEC)

    def teardown(self) -> None:
        self.journal.close(sync=False)
        shutil.rmtree(self.tmp)

    def exists(self, path: bytes) -> bool:
        return path in self.files or path in self.dirs

    def new_path(self, data: st.DataObject) -> bytes:
        parent = data.draw(st.sampled_from(sorted(self.dirs | {b""})))
        name = data.draw(NAMES)
        return parent + b"/" + name if parent else name

    def below(self, path: bytes) -> list[bytes]:
        prefix = path + b"/"
        return [p for p in [*self.files, *self.dirs] if p.startswith(prefix)]

    @rule(data=st.data(), executable=st.booleans())
    def create(self, data: st.DataObject, executable: bool) -> None:
        path = self.new_path(data)
        if self.exists(path):
            return
        self.journal.append(Create(path, 0o755 if executable else 0o644))
        self.files[path] = b""
        self.exec.discard(path)
        if executable:
            self.exec.add(path)

    @rule(data=st.data())
    def mkdir(self, data: st.DataObject) -> None:
        path = self.new_path(data)
        if self.exists(path):
            return
        self.journal.append(Mkdir(path))
        self.dirs.add(path)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), payload=st.binary(min_size=1, max_size=48))
    def write(self, data: st.DataObject, payload: bytes) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))
        old = self.files[path]
        offset = data.draw(st.integers(0, len(old) + 20))
        self.journal.write(path, offset, payload)
        grown = old.ljust(offset, b"\0")
        self.files[path] = grown[:offset] + payload + grown[offset + len(payload) :]

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))
        size = data.draw(st.integers(0, len(self.files[path]) + 30))
        self.journal.append(Truncate(path, size))
        self.files[path] = self.files[path][:size].ljust(size, b"\0")

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def chmod(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))
        self.journal.append(Chmod(path, path not in self.exec))
        self.exec ^= {path}

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))
        self.journal.append(Unlink(path))
        del self.files[path]
        self.exec.discard(path)

    @precondition(lambda self: any(not self.below(d) for d in self.dirs))
    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(d for d in self.dirs if not self.below(d))))
        self.journal.append(Rmdir(path))
        self.dirs.discard(path)

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def rename_file(self, data: st.DataObject) -> None:
        src = data.draw(st.sampled_from(sorted(self.files)))
        dst = self.new_path(data)
        if not (dst != src and dst not in self.dirs):
            return
        self.journal.append(Rename(src, dst))
        self.files[dst] = self.files.pop(src)
        self.exec.discard(dst)
        if src in self.exec:
            self.exec.discard(src)
            self.exec.add(dst)

    @precondition(lambda self: self.dirs)
    @rule(data=st.data())
    def rename_dir(self, data: st.DataObject) -> None:
        src = data.draw(st.sampled_from(sorted(self.dirs)))
        dst = self.new_path(data)
        if dst == src or dst.startswith(src + b"/") or dst in self.files:
            return
        if dst in self.dirs and self.below(dst):
            return
        self.journal.append(Rename(src, dst))
        self.dirs.discard(dst)

        def move(p: bytes) -> bytes:
            return dst + p[len(src) :] if p == src or p.startswith(src + b"/") else p

        self.files = {move(p): v for p, v in self.files.items()}
        self.dirs = {move(p) for p in self.dirs}
        self.exec = {move(p) for p in self.exec}

    @rule()
    def crash_and_replay(self) -> None:
        self.journal.close(sync=False)
        self.journal = Journal.open(Path(self.tmp))

    @rule(new_generation=st.booleans())
    def commit(self, new_generation: bool) -> None:
        if new_generation:
            self.journal.start_generation()
        else:
            self.journal.append(Reset())
        self.reset_model()

    @invariant()
    def view_matches_model(self) -> None:
        ov = self.journal.overlay
        expected: dict[bytes, bytes | None] = dict(self.files)
        expected.update(dict.fromkeys(self.dirs))
        assert snapshot(ov) == expected
        for path, content in self.files.items():
            assert ov.size(path, base_size) == len(content)
            assert ov.read(path, 3, 5, base_read) == content[3:8]
            assert ov.executable(path, base_exec) == (path in self.exec)
        for path in [*BASE_FILES, *BASE_DIRS, b"q", b"d/q"]:
            assert ov.exists(path, base_stat) == self.exists(path)


TestOverlayMachine = OverlayMachine.TestCase
TestOverlayMachine.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


def test_append_refuses_records_that_are_not_operations(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as journal:
        for rec in (Header(1), Write(b"f", 0, 0, 1, 0)):
            with pytest.raises(TypeError):
                journal.append(rec)  # type: ignore[arg-type]
