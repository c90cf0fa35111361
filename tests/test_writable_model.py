"""A writable mount against a plain dictionary model, driven by hypothesis through the kernel.

Each example starts from the mounted revision (`fusefs discard` resets the staging area), then
applies random creates, overwrites, appends, truncates, renames, unlinks, mkdirs and rmdirs
inside a DVC directory output and a new folder; after every step the mount must list and read
exactly what the model holds.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.dvcrepo import SampleRepo, run
from tests.mounting import fusefs, fusefs_env, mounted, requires_fuse

pytestmark = [requires_fuse, pytest.mark.mount]

NAMES = st.sampled_from(["a", "b", "ü c", "d.bin"])
FOLDERS = ["data/images", "data/images/a", "new_folder"]
DATA = st.binary(max_size=3000)


class _Mount:
    path: Path
    env: dict[str, str]


MOUNT = _Mount()


@pytest.fixture(scope="module")
def rw_mount(sample_repo: SampleRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    tmp = tmp_path_factory.mktemp("model")
    bare = tmp / "origin.git"
    run(["git", "clone", "-q", "--bare", str(sample_repo.path), str(bare)], tmp)
    env = fusefs_env(tmp)
    with mounted(
        tmp / "mnt",
        "--repo",
        str(bare),
        "--rev",
        "main",
        "--rw",
        "--cache-dir",
        str(tmp / "cache"),
        env=env,
    ) as mnt:
        MOUNT.path, MOUNT.env = mnt, env
        yield


def _walk(root: Path, rel: str) -> tuple[dict[str, bytes], set[str]]:
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    base = root / rel
    if not base.exists():
        return files, dirs
    for dirpath, dirnames, filenames in os.walk(base):
        for d in dirnames:
            dirs.add(os.path.relpath(os.path.join(dirpath, d), root))
        for f in filenames:
            full = os.path.join(dirpath, f)
            files[os.path.relpath(full, root)] = Path(full).read_bytes()
    return files, dirs


class WritableModel(RuleBasedStateMachine):
    @initialize()
    def reset(self) -> None:
        status = fusefs("status", "--json", str(MOUNT.path), env=MOUNT.env).stdout
        if '"changes": []' not in status:
            fusefs("discard", str(MOUNT.path), env=MOUNT.env)
        self.root = MOUNT.path
        self.files, self.dirs = _walk(self.root, "data/images")
        self.dirs.add("data/images")

    def _folder(self, data: st.DataObject) -> str | None:
        folders = sorted(d for d in self.dirs if d.startswith(("data/images", "new_folder")))
        return data.draw(st.sampled_from(folders)) if folders else None

    @rule(data=st.data(), name=NAMES, content=DATA)
    def write(self, data: st.DataObject, name: str, content: bytes) -> None:
        folder = self._folder(data)
        path = f"{folder}/{name}"
        if folder is None or path in self.dirs:
            return
        (self.root / path).write_bytes(content)
        self.files[path] = content

    @rule(data=st.data(), content=DATA)
    def append(self, data: st.DataObject, content: bytes) -> None:
        if not self.files:
            return
        path = data.draw(st.sampled_from(sorted(self.files)))
        with open(self.root / path, "ab") as f:
            f.write(content)
        self.files[path] += content

    @rule(data=st.data(), size=st.integers(0, 4000))
    def truncate(self, data: st.DataObject, size: int) -> None:
        if not self.files:
            return
        path = data.draw(st.sampled_from(sorted(self.files)))
        os.truncate(self.root / path, size)
        old = self.files[path]
        self.files[path] = old[:size] + b"\0" * max(0, size - len(old))

    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        if not self.files:
            return
        path = data.draw(st.sampled_from(sorted(self.files)))
        (self.root / path).unlink()
        del self.files[path]

    @rule(data=st.data(), name=NAMES)
    def rename(self, data: st.DataObject, name: str) -> None:
        folder = self._folder(data)
        if not self.files or folder is None:
            return
        src = data.draw(st.sampled_from(sorted(self.files)))
        dst = f"{folder}/{name}"
        if dst in self.dirs or dst == src:
            return
        (self.root / src).rename(self.root / dst)
        self.files[dst] = self.files.pop(src)

    @rule(name=st.sampled_from(["new_folder", "data/images/x", "new_folder/y"]))
    def mkdir(self, name: str) -> None:
        parent = name.rpartition("/")[0]
        if name in self.dirs or name in self.files or (parent and parent not in self.dirs):
            return
        (self.root / name).mkdir()
        self.dirs.add(name)

    @rule(data=st.data())
    def rmtree(self, data: st.DataObject) -> None:
        candidates = sorted(d for d in self.dirs if d not in ("data/images",))
        if not candidates:
            return
        victim = data.draw(st.sampled_from(candidates))
        shutil.rmtree(self.root / victim)
        prefix = victim + "/"
        self.files = {p: b for p, b in self.files.items() if not p.startswith(prefix)}
        self.dirs = {d for d in self.dirs if d != victim and not d.startswith(prefix)}

    @invariant()
    def mount_matches_model(self) -> None:
        files, dirs = _walk(self.root, "data/images")
        more_files, more_dirs = _walk(self.root, "new_folder")
        files |= more_files
        dirs |= more_dirs | {"data/images"}
        if (self.root / "new_folder").is_dir():
            dirs.add("new_folder")
        assert dirs == self.dirs
        assert files.keys() == self.files.keys()
        for path, content in self.files.items():
            assert files[path] == content, path


@pytest.mark.usefixtures("rw_mount")
def test_writable_mount_matches_model() -> None:
    WritableModel.TestCase.settings = settings(
        max_examples=15,
        stateful_step_count=15,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    WritableModel.TestCase().runTest()
