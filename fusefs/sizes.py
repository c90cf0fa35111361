"""Object sizes learnt from remotes, remembered forever in LMDB.

Objects are content-addressed, so a size once seen never changes: listing a folder of a
dataset asks the remote once per object in the lifetime of the cache, not once per mount.
The store lives in the cache's private folder and is shared by every daemon using that cache
(LMDB handles concurrent readers and writers across processes). Absence is never remembered.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from pathlib import Path

import lmdb

from .objects import HashInfo

log = logging.getLogger(__name__)

_SIZE = struct.Struct("<Q")
MAP_SIZE = 1 << 32  # address space only; the file grows with what is stored


class SizeStore:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=MAP_SIZE, subdir=True, max_dbs=0, lock=True)

    @staticmethod
    def _key(hinfo: HashInfo) -> bytes:
        return hinfo.relpath.encode()

    def get_many(self, hashes: Iterable[HashInfo]) -> dict[HashInfo, int]:
        found = {}
        with self._env.begin(buffers=False) as txn:
            for hinfo in hashes:
                raw = txn.get(self._key(hinfo))
                if raw is not None:
                    found[hinfo] = _SIZE.unpack(raw)[0]
        return found

    def put_many(self, sizes: dict[HashInfo, int]) -> None:
        if not sizes:
            return
        try:
            with self._env.begin(write=True) as txn:
                for hinfo, size in sizes.items():
                    txn.put(self._key(hinfo), _SIZE.pack(size))
        except lmdb.Error as exc:  # a full disk must not fail a listing: sizes are a cache
            log.warning("cannot remember %d object sizes: %s", len(sizes), exc)

    def forget(self, hinfo: HashInfo) -> None:
        try:
            with self._env.begin(write=True) as txn:
                txn.delete(self._key(hinfo))
        except lmdb.Error as exc:
            log.warning("cannot forget the size of %s: %s", hinfo, exc)

    def close(self) -> None:
        self._env.close()
