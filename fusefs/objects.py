"""DVC object identity and the on-disk layout shared by caches and remotes.

DVC 3 stores an object with hash `md5` under `files/md5/ab/cdef...`; DVC 2 (and DVC 3 for outputs
whose metafile lacks `hash: md5`, DVC's `md5-dos2unix`) under `ab/cdef...`. A directory's
manifest is the object `<md5>.dir`. Layout is a pure function of `HashInfo`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class HashInfo:
    """One content-addressed object: its md5, whether it is a `.dir` manifest, its layout."""

    md5: str
    is_dir: bool = False
    legacy: bool = False

    @classmethod
    def parse(cls, value: object, legacy: bool) -> HashInfo:
        """Parse a metafile's `md5:` value (`<hex>` or `<hex>.dir`)."""
        if not isinstance(value, str):
            raise ValueError(f"md5 must be a string, not {type(value).__name__}")
        is_dir = value.endswith(".dir")
        hexpart = value[:-4] if is_dir else value
        if not _MD5.fullmatch(hexpart):
            raise ValueError(f"md5 {value!r} is not 32 lowercase hex digits")
        return cls(hexpart, is_dir, legacy)

    @property
    def oid(self) -> str:
        return self.md5 + ".dir" if self.is_dir else self.md5

    @property
    def relpath(self) -> str:
        """Where the object lives below a cache or remote root."""
        prefix = "" if self.legacy else "files/md5/"
        return f"{prefix}{self.oid[:2]}/{self.oid[2:]}"

    def file_entry(self, md5: str) -> HashInfo:
        """An entry of this `.dir` manifest: same layout, not a directory."""
        return HashInfo(md5, False, self.legacy)

    def __str__(self) -> str:
        return self.oid


DOS2UNIX_BLOCK = 1 << 20  # DVC 2 read 1 MiB at a time and converted CRLF within each block


class Md5Check:
    """Incremental md5 that also accepts DVC 2's dos2unix hashes for legacy objects.

    DVC 2 hashed text files after turning CRLF into LF. Raw bytes whose dos2unix md5 matches are
    still exactly the bytes DVC stored, so both digests are accepted for legacy objects. DVC
    converted each 1 MiB block on its own, so a CRLF straddling a block boundary stayed as it
    was; that is reproduced here whatever sizes `update` is called with.
    """

    def __init__(self, expected: HashInfo) -> None:
        self.expected = expected
        self._raw = hashlib.md5(usedforsecurity=False)
        self._d2u = hashlib.md5(usedforsecurity=False) if expected.legacy else None
        self._block = bytearray()  # the part of the current DVC block seen so far
        self._saw_crlf = False

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._raw.update(chunk)
        if self._d2u is None:
            return
        view = memoryview(chunk).cast("B")
        while view:
            room = DOS2UNIX_BLOCK - len(self._block)
            self._block += view[:room]
            view = view[room:]
            if len(self._block) == DOS2UNIX_BLOCK:
                self._d2u.update(self._dos2unix(self._block))
                self._block.clear()

    def _dos2unix(self, block: bytearray) -> bytes:
        if b"\r\n" not in block:
            return bytes(block)
        self._saw_crlf = True
        return bytes(block).replace(b"\r\n", b"\n")

    def ok(self) -> bool:
        """Whether the bytes so far hash to the expected md5 (may be called more than once)."""
        if self._raw.hexdigest() == self.expected.md5:
            return True
        if self._d2u is None:
            return False
        d2u = self._d2u.copy()
        d2u.update(self._dos2unix(self._block))
        return self._saw_crlf and d2u.hexdigest() == self.expected.md5

    def hexdigest(self) -> str:
        return self._raw.hexdigest()
