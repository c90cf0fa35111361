"""fusefs.dvcwrite against the real ``dvc add`` (byte-for-byte) plus cheap invariants."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusefs.dvcwrite import (
    OutSpec,
    UnsupportedDvcFile,
    dir_manifest,
    dir_md5,
    dvc_file,
    dvc_file_path,
    gitignore_add,
    gitignore_location,
    gitignore_remove,
    md5_bytes,
    md5_file,
    update_dvc_file,
)
from fusefs.dvcyaml import _dump

Run = Callable[..., None]


def _find_dvc() -> str | None:
    env = os.environ.get("FUSEFS_DVC")
    if env:
        return env
    default = Path(__file__).resolve().parent.parent / ".venv-dvc" / "bin" / "dvc"
    if default.exists():
        return str(default)
    return shutil.which("dvc")


DVC = _find_dvc()
needs_dvc = pytest.mark.skipif(
    DVC is None, reason="no dvc CLI (set FUSEFS_DVC or create .venv-dvc)"
)


# ------------------------------------------------------------------ helpers


def _spec_for(root: Path, out: str) -> OutSpec:
    """What we compute for ``out`` (repo-relative) from the working tree alone."""
    p = root / out
    name = out.rsplit("/", 1)[-1]
    if p.is_dir():
        files = [f for f in sorted(p.rglob("*")) if f.is_file()]
        entries = [(f.relative_to(p).as_posix(), md5_file(f)) for f in files]
        manifest = dir_manifest(entries)
        return OutSpec(
            path=name,
            md5=dir_md5(manifest),
            size=sum(f.stat().st_size for f in files),
            nfiles=len(files),
        )
    isexec = bool(p.stat().st_mode & stat.S_IXUSR)
    return OutSpec(path=name, md5=md5_file(p), size=p.stat().st_size, isexec=isexec)


def _manifest_for(p: Path) -> bytes:
    files = [f for f in sorted(p.rglob("*")) if f.is_file()]
    return dir_manifest((f.relative_to(p).as_posix(), md5_file(f)) for f in files)


def _cache_object(root: Path, md5: str) -> bytes:
    return (root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_bytes()


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[Path, Run]]:
    if DVC is None:
        pytest.skip("no dvc CLI")
    root = tmp_path / "repo"
    root.mkdir()
    env = dict(os.environ)
    env["DVC_NO_ANALYTICS"] = "1"
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env["HOME"] = str(tmp_path / "home")
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "t"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "t@example.com"

    def run(*args: str) -> None:
        subprocess.run(args, cwd=root, env=env, check=True, capture_output=True)

    run("git", "init", "-q")
    assert DVC is not None
    run(DVC, "init", "-q")
    yield root, lambda *a: run(DVC, *a)


def _add_and_check(root: Path, dvc: Run, out: str) -> OutSpec:
    """``dvc add out``, then compare .dvc, .dir and .gitignore with our bytes."""
    gi_rel, entry = gitignore_location(out)
    gi = root / gi_rel
    before = gi.read_bytes() if gi.exists() else None
    spec = _spec_for(root, out)
    manifest = _manifest_for(root / out) if (root / out).is_dir() else None

    dvc("add", out)

    assert (root / dvc_file_path(out)).read_bytes() == dvc_file(spec)
    if manifest is not None:
        assert _cache_object(root, spec.md5) == manifest
    assert gi.read_bytes() == gitignore_add(before, entry)
    return spec


# ------------------------------------------------------------------ real dvc add


@needs_dvc
def test_directory_and_files_match_real_dvc(repo: tuple[Path, Run]) -> None:
    root, dvc = repo
    images = root / "data" / "images"
    (images / "sub" / "deeper").mkdir(parents=True)
    (images / "ünï cödé 😀 dir").mkdir()
    (images / "a.txt").write_bytes(b"same")
    (images / "sub" / "b.txt").write_bytes(b"same")  # identical contents
    (images / "sub" / "deeper" / "empty").write_bytes(b"")
    (images / "ünï cödé 😀 dir" / "spaced name 🎉.bin").write_bytes(bytes(range(256)))
    (images / "a.txt.bak").write_bytes(b"x")
    (images / "a-b").write_bytes(b"y")  # '-' sorts before '.' and '/'
    (images / "Z").write_bytes(b"z")  # upper case sorts first
    (images / "empty-dir").mkdir()  # not listed by dvc
    (root / "data" / "other dir").mkdir()
    (root / "data" / "other dir" / "f").write_bytes(b"f")
    (root / "models" / "sub").mkdir(parents=True)
    (root / "models" / "sub" / "model.pt").write_bytes(b"\0model" * 1000)
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty file").write_bytes(b"")

    spec = _add_and_check(root, dvc, "data/images")
    assert spec.nfiles == 7
    _add_and_check(root, dvc, "data/other dir")  # second entry in data/.gitignore
    _add_and_check(root, dvc, "models/sub/model.pt")
    exe = _add_and_check(root, dvc, "run.sh")
    assert exe.isexec
    assert b"isexec: true" in dvc_file(exe)
    _add_and_check(root, dvc, "empty file")
    manifest = json.loads(_cache_object(root, spec.md5))
    assert [e["relpath"] for e in manifest] == sorted(e["relpath"] for e in manifest)


@needs_dvc
@pytest.mark.parametrize(
    "names",
    [
        ["yes", "123", "1e5", "null", "true", "0x1F", "2001-01-01", "-x", "- x", "a:b"],
        ["#hash", "it's #1", "a #b", "[x]", "!bang", "q?*", "back\\slash", "%pct", "@at", "=", "~"],
        ["tab\there", "ünïcödé", "emoji 😀 file", " leading", "trailing ", "'quoted'", '"dq"'],
        ["long name with many words " * 4, "x" * 90, "long 'quoted' # name " * 5],
    ],
)
def test_special_file_names_match_real_dvc(repo: tuple[Path, Run], names: list[str]) -> None:
    root, dvc = repo
    (root / "d").mkdir()
    for i, name in enumerate(names):
        (root / "d" / name).write_bytes(str(i).encode())
        _add_and_check(root, dvc, f"d/{name}")


@needs_dvc
def test_readd_modified_outputs_match_real_dvc(repo: tuple[Path, Run]) -> None:
    root, dvc = repo
    d = root / "data"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x").write_bytes(b"1")
    (root / "f.bin").write_bytes(b"one")
    (root / "tool").write_bytes(b"#!/bin/sh\n")
    (root / "tool").chmod(0o755)
    _add_and_check(root, dvc, "data")
    _add_and_check(root, dvc, "f.bin")
    _add_and_check(root, dvc, "tool")

    (d / "sub" / "x").write_bytes(b"2")
    (d / "new").write_bytes(b"new")
    (root / "f.bin").write_bytes(b"two!")
    (root / "tool").chmod(0o644)  # isexec disappears
    for out in ("data", "f.bin", "tool"):
        old = (root / f"{out}.dvc").read_bytes()
        spec = _spec_for(root, out)
        dvc("add", out)
        assert (root / f"{out}.dvc").read_bytes() == update_dvc_file(old, spec)


@needs_dvc
@pytest.mark.parametrize(
    ("name", "content"),
    [
        # hand-edited file: annotations, quotes, stage md5, falsy fields
        (
            "f",
            'desc: "stage desc"\nmd5: 0cc175b9c0f1b6a831c399e269772662\nfrozen: false\n'
            "outs:\n- md5: '0cc175b9c0f1b6a831c399e269772661'\n  size: 0x1F\n  hash: md5\n"
            "  path: f\n  desc: ''\n  type: 'model'\n  labels:\n    - a\n    - 'b c'\n"
            "  persist: false\n  push: true\n  remote: myremote\n  meta:\n    n: 1.50\n"
            '    b: True\n    z: ~\n    h: 0x1F\n    e: {}\n    s: "yes"\n'
            "meta:\n  author: me\n  tags: []\n",
        ),
        # dvc 2.x file without `hash: md5` (legacy md5): hash is appended at the end
        ("g", "outs:\n- md5: 0cc175b9c0f1b6a831c399e269772661\n  size: 1\n  path: g\n"),
        # directory that used to be a file: nfiles appended at the end
        (
            "h",
            "outs:\n- md5: 0cc175b9c0f1b6a831c399e269772661\n  size: 1\n  hash: md5\n  path: h\n",
        ),
    ],
)
def test_readd_preserves_like_real_dvc(repo: tuple[Path, Run], name: str, content: str) -> None:
    root, dvc = repo
    if name == "h":
        (root / name).mkdir()
        (root / name / "a").write_bytes(b"a")
    else:
        (root / name).write_bytes(b"abc")
        (root / name).chmod(0o755 if name == "g" else 0o644)
    (root / f"{name}.dvc").write_text(content, encoding="utf-8")
    spec = _spec_for(root, name)
    ours = update_dvc_file(content.encode(), spec)
    dvc("add", name)
    assert (root / f"{name}.dvc").read_bytes() == ours


@needs_dvc
def test_gitignore_remove_matches_dvc_remove(repo: tuple[Path, Run]) -> None:
    root, dvc = repo
    (root / "d").mkdir()
    for n in ("a", "b"):
        (root / "d" / n).write_bytes(n.encode())
        dvc("add", f"d/{n}")
    gi = root / "d" / ".gitignore"
    content = gi.read_bytes()
    dvc("remove", "d/a.dvc")
    assert gi.read_bytes() == gitignore_remove(content, "/a")
    content = gi.read_bytes()
    dvc("remove", "d/b.dvc")
    assert not gi.exists()
    assert gitignore_remove(content, "/b") is None


# ------------------------------------------------------------------ emitter vs ruamel

_ALPHABET = [
    *"ab -_:#'\"?!&*|>%@`,[]{}.~=<0123456789eE+\t\n\\/",
    *("é", "😀", "\xa0", "\ufeff", "\x85", "\u2028", "\x00", "\x1b", "  ", "word "),
    *("abcdefghij", "yes", "null", "true"),
]


def _random_doc(rnd: random.Random) -> dict[str, object]:
    def text() -> str:
        n = rnd.choice([0, 1, 2, 3, 5, 8, 20, 40, 70, 75, 78, 80, 82, 85, 100, 150, 250])
        return "".join(rnd.choice(_ALPHABET) for _ in range(n))[: n * 2]

    def key() -> str:
        k = text()[:12]
        return "".join(c for c in k if c not in "\n\x85\u2028") or "k"

    def value(depth: int) -> object:
        r = rnd.random()
        if depth < 3 and r < 0.15:
            return {key(): value(depth + 1) for _ in range(rnd.randint(0, 3))}
        if depth < 3 and r < 0.3:
            return [value(depth + 1) for _ in range(rnd.randint(0, 3))]
        if r < 0.35:
            return rnd.choice([None, True, False, 0, 5, -3])
        return text()

    if rnd.random() < 0.5:
        return {"outs": [{"md5": text(), "size": 1, "hash": "md5", "path": text()}]}
    return {key(): value(0) for _ in range(rnd.randint(1, 4))}


@needs_dvc
def test_yaml_emitter_matches_ruamel() -> None:
    assert DVC is not None
    python = Path(DVC).parent / "python"
    if not python.exists():
        pytest.skip("dvc's python interpreter not found next to the dvc CLI")
    rnd = random.Random(20240601)
    docs = [_random_doc(rnd) for _ in range(2000)]
    code = (
        "import sys, json\n"
        "from dvc.utils.serialize._yaml import dumps_yaml\n"
        "print(json.dumps([dumps_yaml(d) for d in json.load(sys.stdin)]))\n"
    )
    proc = subprocess.run(
        [str(python), "-c", code],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    expected = json.loads(proc.stdout)
    mismatches = [
        (d, e)
        for d, e in zip(docs, expected, strict=True)
        if _dump(d).decode() != e  # type: ignore[arg-type]
    ]
    assert not mismatches[:3]


# ------------------------------------------------------------------ pure invariants


def test_known_outputs() -> None:
    manifest = dir_manifest(
        [
            ("sub/b.txt", "0cc175b9c0f1b6a831c399e269772661"),
            ("empty", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a.txt", "0cc175b9c0f1b6a831c399e269772661"),
        ]
    )
    assert manifest == (
        b'[{"md5": "0cc175b9c0f1b6a831c399e269772661", "relpath": "a.txt"}, '
        b'{"md5": "d41d8cd98f00b204e9800998ecf8427e", "relpath": "empty"}, '
        b'{"md5": "0cc175b9c0f1b6a831c399e269772661", "relpath": "sub/b.txt"}]'
    )
    assert dir_md5(manifest) == "74bd76a2ec9dea80abf6e31b4b8cdc6f.dir"
    assert dir_manifest([("é😀", "x")]) == b'[{"md5": "x", "relpath": "\\u00e9\\ud83d\\ude00"}]'
    spec = OutSpec("images", "74bd76a2ec9dea80abf6e31b4b8cdc6f.dir", 2, nfiles=3)
    assert dvc_file(spec) == (
        b"outs:\n- md5: 74bd76a2ec9dea80abf6e31b4b8cdc6f.dir\n  size: 2\n  nfiles: 3\n"
        b"  hash: md5\n  path: images\n"
    )
    all_digits = OutSpec("x", "12345678901234567890123456789012", 1)
    assert b"md5: '12345678901234567890123456789012'" in dvc_file(all_digits)
    assert b"path: 'yes'" not in dvc_file(OutSpec("yes", "ab", 1))


def test_gitignore_edge_cases() -> None:
    assert gitignore_location("data/images") == ("data/.gitignore", "/images")
    assert gitignore_location("model.pt") == (".gitignore", "/model.pt")
    assert gitignore_add(None, "/a") == b"/a\n"
    assert gitignore_add(b"", "/a") == b"/a\n"
    assert gitignore_add(b"/x", "/a") == b"/x\n/a\n"
    assert gitignore_add(b"/x\r\n", "/a") == b"/x\r\n/a\n"
    assert gitignore_add(b"/x\n/a\n", "/a") == b"/x\n/a\n"
    assert gitignore_add(b"/a", "/a") == b"/a"
    assert gitignore_add(None, "/a[1]*") == b"/a\\[1\\]\\*\n"
    assert gitignore_add(b"/a\\[1\\]\\*\n", "/a[1]*") == b"/a\\[1\\]\\*\n"
    assert gitignore_remove(b"/x\r\n/a\n/y", "/a") == b"/x\n/y"
    assert gitignore_remove(b"  /a  \n", "/a") is None
    assert gitignore_remove(None, "/a") is None
    assert gitignore_remove(b"/b\n", "/a") == b"/b\n"


@pytest.mark.parametrize(
    "content",
    [
        "# comment\nouts:\n- md5: ab\n  size: 1\n  hash: md5\n  path: f\n",
        "outs:\n- md5: ab  # eol\n  size: 1\n  hash: md5\n  path: f\n",
        "outs:\n- md5: ab\n  size: 1\n  hash: md5\n  path: f\n  labels: [a, b]\n",
        "outs:\n- md5: ab\n  size: 1\n  hash: md5\n  path: f\n  desc: |\n    text\n",
        "outs:\n- &x md5: ab\n  size: 1\n  hash: md5\n  path: f\n",
        "cmd: echo\nouts:\n- md5: ab\n  size: 1\n  hash: md5\n  path: f\n",
        "wdir: ..\nouts:\n- md5: ab\n  size: 1\n  hash: md5\n  path: f\n",
        "outs:\n- md5: ab\n  path: f\n- md5: cd\n  path: g\n",
        "outs: [",
    ],
)
def test_update_refuses_what_it_cannot_reproduce(content: str) -> None:
    with pytest.raises(UnsupportedDvcFile):
        update_dvc_file(content.encode(), OutSpec("f", "cd", 2))


def test_update_of_canonical_file_is_fresh_file() -> None:
    old = OutSpec("f", "ab" * 16, 3, isexec=True)
    new = OutSpec("f", "cd" * 16, 4)
    assert update_dvc_file(dvc_file(old), new) == dvc_file(new)
    d_old = OutSpec("d", "ab" * 16 + ".dir", 3, nfiles=1)
    d_new = OutSpec("d", "cd" * 16 + ".dir", 9, nfiles=4)
    assert update_dvc_file(dvc_file(d_old), d_new) == dvc_file(d_new)


_relpaths = st.lists(
    st.lists(
        st.text(
            st.characters(blacklist_characters="/\\\0", blacklist_categories=["Cs"]), min_size=1
        ).filter(lambda s: s not in (".", "..")),
        min_size=1,
        max_size=3,
    ).map("/".join),
    unique=True,
    max_size=20,
)


@given(_relpaths, st.randoms(use_true_random=False))
def test_dir_manifest_invariants(paths: list[str], rnd: random.Random) -> None:
    entries = [(p, hashlib.md5(p.encode("utf-8", "surrogatepass")).hexdigest()) for p in paths]
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    manifest = dir_manifest(shuffled)
    assert manifest == dir_manifest(entries)
    assert not manifest.endswith(b"\n")
    manifest.decode("ascii")
    parsed = json.loads(manifest)
    assert [(e["relpath"], e["md5"]) for e in parsed] == sorted(entries)
    assert all(list(e) == ["md5", "relpath"] for e in parsed)
    assert dir_md5(manifest) == hashlib.md5(manifest).hexdigest() + ".dir"


@given(st.binary(max_size=4096))
def test_md5_file_matches_md5_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    p = tmp_path_factory.mktemp("md5") / "f"
    p.write_bytes(data)
    assert md5_file(p) == md5_bytes(data) == hashlib.md5(data).hexdigest()


def test_dir_manifest_rejects_bad_input() -> None:
    for bad in ("", "/a", "a/", "a//b", "./a", "a/../b"):
        with pytest.raises(ValueError):
            dir_manifest([(bad, "x")])
    with pytest.raises(ValueError):
        dir_manifest([("a", "x"), ("a", "y")])
