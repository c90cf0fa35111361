"""Metafile, lock file and `.dir` manifest parsing, with well-formed, odd and hostile input."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusefs.metafile import (
    MAX_METAFILE_BYTES,
    ManifestEntry,
    MetafileError,
    Out,
    load_yaml,
    parse_dvcfile,
    parse_lockfile,
    parse_manifest,
)
from fusefs.objects import HashInfo

A = hashlib.md5(b"a").hexdigest()
B = hashlib.md5(b"b").hexdigest()
C = hashlib.md5(b"c").hexdigest()


def dvcfile(doc: Any, folder: tuple[bytes, ...] = ()) -> tuple[list[Out], list[str]]:
    return parse_dvcfile(yaml.safe_dump(doc).encode(), folder, "x.dvc")


def one_out(doc: Any, folder: tuple[bytes, ...] = ()) -> Out:
    outs, problems = dvcfile(doc, folder)
    assert problems == []
    assert len(outs) == 1
    return outs[0]


def problems_of(out: dict[str, Any], folder: tuple[bytes, ...] = ()) -> list[str]:
    outs, problems = dvcfile({"outs": [out]}, folder)
    assert outs == []
    assert len(problems) == 1
    return problems


# -- .dvc files ------------------------------------------------------------------------------


def test_dvc3_single_file() -> None:
    data = f"""\
outs:
- md5: {A}
  size: 14
  hash: md5
  path: data.csv
""".encode()
    outs, problems = parse_dvcfile(data, (b"sub",), "sub/data.csv.dvc")
    assert problems == []
    assert outs == [
        Out(
            path=(b"sub", b"data.csv"),
            hash=HashInfo(A, is_dir=False, legacy=False),
            size=14,
            nfiles=None,
            isexec=False,
            remote=None,
            source="sub/data.csv.dvc: outs[0]",
        )
    ]
    assert outs[0].hash.relpath == f"files/md5/{A[:2]}/{A[2:]}"


def test_dvc3_directory() -> None:
    out = one_out(
        {"outs": [{"md5": A + ".dir", "size": 99, "nfiles": 3, "hash": "md5", "path": "images"}]}
    )
    assert out.path == (b"images",)
    assert out.hash == HashInfo(A, is_dir=True, legacy=False)
    assert (out.size, out.nfiles) == (99, 3)


def test_dvc2_has_no_hash_field_and_uses_the_legacy_layout() -> None:
    out = one_out({"outs": [{"md5": B, "size": 1, "path": "model.pkl"}]})
    assert out.hash == HashInfo(B, is_dir=False, legacy=True)
    assert out.hash.relpath == f"{B[:2]}/{B[2:]}"


def test_multiple_outs_and_per_output_options() -> None:
    outs, problems = dvcfile(
        {
            "outs": [
                {"md5": A, "path": "a", "hash": "md5", "isexec": True},
                {"md5": B + ".dir", "path": "b", "hash": "md5", "remote": "backup"},
                {"md5": C, "path": "c", "isexec": "yes"},
            ]
        }
    )
    assert problems == []
    assert [o.path for o in outs] == [(b"a",), (b"b",), (b"c",)]
    assert [o.isexec for o in outs] == [True, False, False]
    assert [o.remote for o in outs] == [None, "backup", None]
    assert [o.hash.legacy for o in outs] == [False, False, True]


def test_wdir_moves_the_outputs() -> None:
    out = one_out({"wdir": "../data", "outs": [{"md5": A, "path": "x"}]}, (b"pipelines",))
    assert out.path == (b"data", b"x")
    assert one_out({"wdir": ".", "outs": [{"md5": A, "path": "x"}]}, (b"s",)).path == (b"s", b"x")


@pytest.mark.parametrize("wdir", ["../..", "/abs", 3, ".git", ""])
def test_bad_wdir(wdir: Any) -> None:
    doc = {"wdir": wdir, "outs": [{"md5": A, "path": "x"}]}
    if wdir == "":
        assert one_out(doc, (b"s",)).path == (b"s", b"x")
        return
    with pytest.raises(MetafileError, match="wdir"):
        dvcfile(doc, (b"s",))


def test_cache_false_and_md5less_outs_are_skipped() -> None:
    outs, problems = dvcfile(
        {
            "outs": [
                {"md5": A, "path": "uncached", "cache": False},
                {"path": "not-yet-added"},
                {"path": "sha", "hash": "sha256"},
                {"md5": B, "path": "kept"},
            ]
        }
    )
    assert problems == []
    assert [o.path for o in outs] == [(b"kept",)]


def test_a_bad_output_does_not_hide_the_good_ones() -> None:
    outs, problems = dvcfile({"outs": [{"md5": 5, "path": "bad"}, {"md5": A, "path": "good"}]})
    assert [o.path for o in outs] == [(b"good",)]
    assert len(problems) == 1
    assert "outs[0]" in problems[0]


def test_no_outs() -> None:
    assert dvcfile({"deps": []}) == ([], [])


@pytest.mark.parametrize(
    "out",
    [
        {"md5": 1234, "path": "x"},
        {"md5": None, "path": "x"},
        {"md5": [A], "path": "x"},
        {"md5": A[:-1], "path": "x"},
        {"md5": A + "0", "path": "x"},
        {"md5": A.upper(), "path": "x"},
        {"md5": "z" * 32, "path": "x"},
        {"md5": A + ".dir.dir", "path": "x"},
        {"md5": A, "path": "x", "size": "14"},
        {"md5": A, "path": "x", "size": -1},
        {"md5": A, "path": "x", "size": True},
        {"md5": A, "path": "x", "size": 1.5},
        {"md5": A, "path": "x", "size": 1 << 64},
        {"md5": A, "path": "x", "nfiles": "3"},
        {"md5": A, "path": "x", "remote": 7},
        {"md5": A, "path": "x", "hash": "sha256"},
        {"md5": A, "path": 5},
        {"md5": A},
        {"md5": A, "path": ""},
        {"md5": A, "path": "../../etc/passwd"},
        {"md5": A, "path": "/etc/passwd"},
        {"md5": A, "path": "a\0b"},
        {"md5": A, "path": ".git/hooks/pre-commit"},
        {"md5": A, "path": "sub/.GIT/config"},
        {"md5": A, "path": ".."},
        {"md5": A, "path": "\ud800"},
    ],
)
def test_bad_outputs_are_reported(out: dict[str, Any]) -> None:
    problems = problems_of(out, (b"sub",))
    assert problems[0].startswith("x.dvc: outs[0]: ")


def test_null_hash_means_legacy_as_in_dvc() -> None:
    assert one_out({"outs": [{"md5": A, "path": "x", "hash": None}]}).hash.legacy


def test_dotdot_to_a_sibling_is_allowed() -> None:
    assert one_out({"outs": [{"md5": A, "path": "../sibling"}]}, (b"sub",)).path == (b"sibling",)


def test_dotdot_above_the_root_is_refused_from_any_depth() -> None:
    problems_of({"md5": A, "path": "../../etc/passwd"}, (b"sub",))
    problems_of({"md5": A, "path": "../../../x"}, (b"a", b"b"))


@pytest.mark.parametrize("entry", [A, [A], None, 3])
def test_output_that_is_not_a_mapping(entry: Any) -> None:
    outs, problems = dvcfile({"outs": [entry]})
    assert outs == []
    assert problems and "must be a mapping" in problems[0]


@pytest.mark.parametrize(
    "data",
    [
        b"outs: [",
        b"outs:\n\t- md5: x",
        b"\xff\xfe\x00garbage",
        b"a: 1\n---\nb: 2\n",
        b"!!python/object/apply:os.system ['true']",
        b"outs: !!python/name:os.system",
        b"{? [a, b] : c}",
        b"outs: 1" + b"0" * 5000,
    ],
)
def test_bad_yaml(data: bytes) -> None:
    with pytest.raises(MetafileError, match=r"^x\.dvc: "):
        parse_dvcfile(data, (), "x.dvc")


@pytest.mark.parametrize("data", [b"", b"- a\n- b\n", b"just a string", b"42", b"null"])
def test_top_level_not_a_mapping(data: bytes) -> None:
    with pytest.raises(MetafileError, match="top level must be a mapping"):
        parse_dvcfile(data, (), "x.dvc")


@pytest.mark.parametrize("outs", ["outs: data", "outs: {path: a}", "outs: 3", "outs:"])
def test_outs_not_a_list(outs: str) -> None:
    with pytest.raises(MetafileError, match="outs must be a list"):
        parse_dvcfile(outs.encode(), (), "x.dvc")


def _billion_laughs() -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append("outs: *a9")
    return "\n".join(lines).encode()


def _quick(fn: Any, *args: Any) -> MetafileError:
    start = time.monotonic()
    with pytest.raises(MetafileError) as info:
        fn(*args)
    assert time.monotonic() - start < 1.0
    return info.value


def test_billion_laughs_is_refused_quickly() -> None:
    bomb = _billion_laughs()
    assert len(bomb) < 600
    assert "alias" in str(_quick(parse_dvcfile, bomb, (), "x.dvc"))
    small = b"a: &x [1, 2]\nb: *x\n"  # a single alias is refused too: metafiles never use them
    assert "alias" in str(_quick(load_yaml, small, "x"))


def test_merge_keys_are_refused() -> None:
    _quick(load_yaml, b"base: &b {path: a}\nout:\n  <<: *b\n  md5: x\n", "x")


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,
        b"{a: " * 100_000,
        b"- " * 100_000,
        b"outs: " + b"[" * 100_000 + b"]" * 100_000,
        b"".join(b" " * i + b"k:\n" for i in range(2000)),
    ],
)
def test_deep_nesting_is_a_metafile_error(data: bytes) -> None:
    _quick(parse_dvcfile, data, (), "x.dvc")


def test_moderate_nesting_is_fine() -> None:
    doc = load_yaml(b"a: " + b"[" * 50 + b"1" + b"]" * 50, "x")
    assert isinstance(doc, dict)


def test_oversized_metafile_is_refused_by_size() -> None:
    data = b"# " + b"x" * (20 << 20)
    assert len(data) > MAX_METAFILE_BYTES
    assert "limit" in str(_quick(parse_dvcfile, data, (), "x.dvc"))


# -- dvc.lock --------------------------------------------------------------------------------


def lock(
    doc: Any, dvcyaml: Any = None, folder: tuple[bytes, ...] = (), raw_yaml: bytes | None = None
) -> tuple[list[Out], list[str]]:
    yaml_bytes = raw_yaml if raw_yaml is not None else None
    if dvcyaml is not None:
        yaml_bytes = yaml.safe_dump(dvcyaml).encode()
    return parse_lockfile(yaml.safe_dump(doc).encode(), folder, "dvc.lock", yaml_bytes)


def _paths(outs: list[Out]) -> list[bytes]:
    return sorted(b"/".join(o.path) for o in outs)


def test_lock_schema_2_several_stages() -> None:
    doc = {
        "schema": "2.0",
        "stages": {
            "prepare": {
                "cmd": "python prepare.py",
                "deps": [{"path": "raw", "md5": A + ".dir", "hash": "md5"}],
                "outs": [{"path": "prepared", "md5": B + ".dir", "size": 3, "nfiles": 2}],
            },
            "train": {
                "cmd": "python train.py",
                "outs": [
                    {"path": "model.pkl", "md5": C, "size": 10, "hash": "md5"},
                    {"path": "metrics.json", "md5": A, "size": 2, "hash": "md5"},
                ],
            },
            "noop": {"cmd": "true"},
        },
    }
    outs, problems = lock(doc, folder=(b"pipe",))
    assert problems == []
    assert _paths(outs) == [b"pipe/metrics.json", b"pipe/model.pkl", b"pipe/prepared"]
    by_path = {o.path: o for o in outs}
    assert by_path[(b"pipe", b"prepared")].hash == HashInfo(B, is_dir=True, legacy=True)
    assert by_path[(b"pipe", b"model.pkl")].hash == HashInfo(C, is_dir=False, legacy=False)
    assert all("dvc.lock: stage" in o.source for o in outs)


def test_lock_wdir_and_uncached_outs_come_from_dvc_yaml() -> None:
    dvcyaml = {
        "stages": {
            "train": {
                "cmd": "python train.py",
                "wdir": "../work",
                "outs": ["model.pkl", {"metrics.json": {"cache": False}}],
                "metrics": [{"scores.json": {"cache": False}}],
                "plots": [{"plot.csv": {"cache": True}}],
            }
        }
    }
    doc = {
        "schema": "2.0",
        "stages": {
            "train": {
                "cmd": "python train.py",
                "outs": [
                    {"path": "model.pkl", "md5": A, "hash": "md5"},
                    {"path": "metrics.json", "md5": B, "hash": "md5"},
                    {"path": "scores.json", "md5": B, "hash": "md5"},
                    {"path": "plot.csv", "md5": C, "hash": "md5"},
                ],
            }
        },
    }
    outs, problems = lock(doc, dvcyaml, folder=(b"pipe",))
    assert problems == []
    assert _paths(outs) == [b"work/model.pkl", b"work/plot.csv"]


def test_lock_foreach_stages() -> None:
    dvcyaml = {
        "stages": {
            "build": {
                "foreach": ["us", "eu"],
                "do": {
                    "cmd": "make ${item}",
                    "wdir": "regions",
                    "outs": ["${item}.bin", {"log.txt": {"cache": False}}],
                },
            }
        }
    }
    doc = {
        "schema": "2.0",
        "stages": {
            "build@us": {
                "cmd": "make us",
                "outs": [{"path": "us.bin", "md5": A}, {"path": "log.txt", "md5": C}],
            },
            "build@eu": {"cmd": "make eu", "outs": [{"path": "eu.bin", "md5": B}]},
        },
    }
    outs, problems = lock(doc, dvcyaml)
    assert problems == []
    assert _paths(outs) == [b"regions/eu.bin", b"regions/us.bin"]


def test_lock_foreach_templates_in_uncached_outs_and_wdir() -> None:
    dvcyaml = {
        "stages": {
            "lst": {
                "foreach": ["us", "eu"],
                "do": {"cmd": "x", "outs": ["${item}.bin", {"${item}.log": {"cache": False}}]},
            },
            "map": {
                "foreach": {"a": {"dir": "da", "n": 1}, "b": {"dir": "db", "n": 2}},
                "do": {
                    "cmd": "x",
                    "wdir": "${item.dir}",
                    "outs": [{"${key}-${item.n}.log": {"cache": False}}, "model"],
                },
            },
            "idx": {
                "foreach": [{"f": "x"}, {"f": "y"}],
                "do": {"cmd": "x", "outs": [{"${item.f}.log": {"cache": False}}]},
            },
            "params": {
                "foreach": "${regions}",
                "do": {"cmd": "x", "wdir": "${item}", "outs": [{"${item}": {"cache": False}}]},
            },
        }
    }
    stages = {
        "lst@us": ["us.bin", "us.log"],
        "lst@eu": ["eu.bin", "eu.log"],
        "map@a": ["a-1.log", "model"],
        "map@b": ["b-2.log", "model"],
        "idx@0": ["x.log"],
        "idx@1": ["y.log", "x.log"],
        "params@r": ["r"],
        "lst@missing": ["m.log"],
    }
    doc = {
        "schema": "2.0",
        "stages": {
            name: {"cmd": "x", "outs": [{"path": p, "md5": A} for p in paths]}
            for name, paths in stages.items()
        },
    }
    outs, problems = lock(doc, dvcyaml)
    assert problems == []
    assert _paths(outs) == [
        b"da/model",
        b"db/model",
        b"eu.bin",
        b"m.log",
        b"r",
        b"us.bin",
        b"x.log",
    ]


def _simple_lock() -> dict[str, Any]:
    return {
        "schema": "2.0",
        "stages": {"s": {"cmd": "x", "outs": [{"path": "out", "md5": A, "hash": "md5"}]}},
    }


def test_lock_without_dvc_yaml() -> None:
    outs, problems = lock(_simple_lock())
    assert problems == []
    assert _paths(outs) == [b"out"]


@pytest.mark.parametrize(
    "raw",
    [
        b"stages: [",
        b"[1, 2]",
        b"stages: [a, b]",
        b"stages:\n  s: 3\n",
        b"stages:\n  s:\n    wdir: 5\n    outs: {a: 1}\n",
        b"stages:\n  s:\n    outs: [{a: 1, b: 2}, {c: null}, 7, {8: {cache: false}}]\n",
        b"a: &x 1\nb: *x\n",
        b"[" * 100_000,
        b"",
    ],
)
def test_lock_with_a_bad_dvc_yaml_degrades(raw: bytes) -> None:
    outs, problems = lock(_simple_lock(), raw_yaml=raw)
    assert problems == []
    assert _paths(outs) == [b"out"]


def test_lock_with_a_dvc_yaml_wdir_escaping_the_repo() -> None:
    dvcyaml = {"stages": {"s": {"cmd": "x", "wdir": "../.."}}}
    outs, problems = lock(_simple_lock(), dvcyaml, folder=(b"sub",))
    assert outs == []
    assert len(problems) == 1 and "wdir" in problems[0]


def test_lock_templated_wdir_is_ignored() -> None:
    dvcyaml = {"stages": {"s": {"cmd": "x", "wdir": "${dir}"}}}
    assert _paths(lock(_simple_lock(), dvcyaml)[0]) == [b"out"]


def test_dvc1_lock_without_schema() -> None:
    doc = {
        "prepare": {"cmd": "x", "outs": [{"path": "p", "md5": A}]},
        "train": {"cmd": "y", "outs": [{"path": "m", "md5": B + ".dir"}]},
    }
    outs, problems = lock(doc)
    assert problems == []
    assert _paths(outs) == [b"m", b"p"]
    assert all(o.hash.legacy for o in outs)


def test_lock_stage_problems_are_per_stage() -> None:
    doc = {
        "schema": "2.0",
        "stages": {
            "bad": "not a mapping",
            "badouts": {"outs": "x"},
            "badout": {"outs": [{"path": "../../x", "md5": A}]},
            7: {"outs": [{"path": "seven", "md5": A}]},
            "good": {"outs": [{"path": "g", "md5": B}]},
        },
    }
    outs, problems = lock(doc)
    assert _paths(outs) == [b"g", b"seven"]
    assert len(problems) == 3


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b"schema: '2.0'\n", b"schema: '2.0'\nstages: [a]\n", b"stages: {", b"5"],
)
def test_bad_lock_files(data: bytes) -> None:
    with pytest.raises(MetafileError, match=r"^dvc\.lock: "):
        parse_lockfile(data, (), "dvc.lock", None)


def test_lock_bombs() -> None:
    _quick(parse_lockfile, _billion_laughs(), (), "dvc.lock", None)
    _quick(parse_lockfile, b"[" * 100_000, (), "dvc.lock", None)
    _quick(parse_lockfile, b"#" * (20 << 20), (), "dvc.lock", None)
    # a bomb in dvc.yaml only costs the stage context
    assert lock(_simple_lock(), raw_yaml=_billion_laughs())[1] == []


# -- .dir manifests --------------------------------------------------------------------------


def manifest(entries: Any) -> list[ManifestEntry]:
    return parse_manifest(json.dumps(entries).encode(), "m.dir")


def test_valid_manifest() -> None:
    entries = manifest(
        [
            {"md5": A, "relpath": "a.txt"},
            {"md5": B, "relpath": "sub/b.txt", "size": 1, "isexec": True},
            {"md5": C, "relpath": "sub/deeper/c"},
        ]
    )
    assert entries == [
        ManifestEntry((b"a.txt",), A),
        ManifestEntry((b"sub", b"b.txt"), B),
        ManifestEntry((b"sub", b"deeper", b"c"), C),
    ]
    assert manifest([]) == []


def test_manifest_with_non_ascii_names() -> None:
    assert manifest([{"md5": A, "relpath": "é/ü"}])[0].path == ("é".encode(), "ü".encode())


@pytest.mark.parametrize(
    "data",
    [b"", b"[", b"not json", b"\xff\xfe\xfd", b"[1,]", b"[" * 1_000_000, b"[" * 1_000_000 + b"]"],
)
def test_manifest_bad_json(data: bytes) -> None:
    error = _quick(parse_manifest, data, "m.dir")
    assert str(error).startswith("m.dir: ")


@pytest.mark.parametrize("doc", [{}, {"relpath": "a", "md5": A}, "x", 3, None])
def test_manifest_not_a_list(doc: Any) -> None:
    with pytest.raises(MetafileError, match="must be a JSON list"):
        manifest(doc)


@pytest.mark.parametrize(
    "entry",
    [
        [A, "a"],
        "a",
        None,
        {"md5": A},
        {"md5": A, "relpath": 1},
        {"md5": A, "relpath": None},
        {"md5": A, "relpath": ["a"]},
        {"relpath": "a"},
        {"md5": 1, "relpath": "a"},
        {"md5": "g" * 32, "relpath": "a"},
        {"md5": A.upper(), "relpath": "a"},
        {"md5": A + ".dir", "relpath": "a"},
        {"md5": A, "relpath": ".."},
        {"md5": A, "relpath": "../x"},
        {"md5": A, "relpath": "a/../../x"},
        {"md5": A, "relpath": "."},
        {"md5": A, "relpath": "./a"},
        {"md5": A, "relpath": ""},
        {"md5": A, "relpath": "a//b"},
        {"md5": A, "relpath": "/etc/passwd"},
        {"md5": A, "relpath": ".git/config"},
        {"md5": A, "relpath": "x/.GIT/hooks/post-checkout"},
        {"md5": A, "relpath": "a\u0000b"},
        {"md5": A, "relpath": "dir/"},
        {"md5": A, "relpath": "\ud800"},
    ],
)
def test_manifest_bad_entry(entry: Any) -> None:
    with pytest.raises(MetafileError, match=r"^m\.dir: entry 1"):
        manifest([{"md5": B, "relpath": "ok"}, entry])


@pytest.mark.parametrize(
    "relpaths",
    [["a", "a"], ["a", "a/b"], ["x/a/b", "x/a"], ["a/b/c", "a/b"], ["d/e", "d", "f"]],
)
def test_manifest_collisions(relpaths: list[str]) -> None:
    with pytest.raises(MetafileError, match=r"duplicate|both a file and a folder"):
        manifest([{"md5": A, "relpath": r} for r in relpaths])


def test_manifest_siblings_with_common_prefix_are_fine() -> None:
    assert len(manifest([{"md5": A, "relpath": r} for r in ["a", "a.b", "ab/c", "a-b/c"]])) == 4


def test_manifest_over_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fusefs.metafile.MAX_MANIFEST_BYTES", 10)
    with pytest.raises(MetafileError, match="over the limit"):
        manifest([{"md5": A, "relpath": "a"}])


# -- properties: parsers raise MetafileError and nothing else -----------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from([A, A + ".dir", "md5", "sha256", "..", "../x", ".git", "a/b", "/x", "a\0"]),
)
_KEYS = st.sampled_from(
    ["outs", "path", "md5", "hash", "size", "nfiles", "isexec", "remote", "cache", "wdir",
     "relpath", "schema", "stages", "foreach", "do", "s", "s@a", "x"]
)  # fmt: skip


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5))


_DOCS = st.recursive(_SCALARS, _containers, max_leaves=25)


def _only_metafile_errors(fn: Any, *args: Any) -> None:
    with contextlib.suppress(MetafileError):
        fn(*args)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCS, st.lists(st.sampled_from([b"a", b"b"]), max_size=2).map(tuple))
def test_dvcfile_structures(doc: Any, folder: tuple[bytes, ...]) -> None:
    data = yaml.safe_dump(doc).encode()
    _only_metafile_errors(parse_dvcfile, data, folder, "x.dvc")
    _only_metafile_errors(parse_dvcfile, yaml.safe_dump({"outs": [doc]}).encode(), folder, "x")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCS, st.one_of(st.none(), _DOCS))
def test_lockfile_structures(doc: Any, dvcyaml: Any) -> None:
    yaml_bytes = None if dvcyaml is None else yaml.safe_dump({"stages": dvcyaml}).encode()
    for lock_doc in (doc, {"schema": "2.0", "stages": doc}):
        data = yaml.safe_dump(lock_doc).encode()
        _only_metafile_errors(parse_lockfile, data, (b"d",), "dvc.lock", yaml_bytes)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_yaml_parsers_on_arbitrary_bytes(data: bytes) -> None:
    _only_metafile_errors(parse_dvcfile, data, (), "x.dvc")
    _only_metafile_errors(parse_lockfile, data, (), "dvc.lock", data)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="[]{}:,-?&*!|>'\"#%@` \n\tab1.", max_size=80))
def test_yaml_parsers_on_yaml_punctuation(text: str) -> None:
    data = text.encode()
    _only_metafile_errors(parse_dvcfile, data, (), "x.dvc")
    _only_metafile_errors(parse_lockfile, data, (), "dvc.lock", data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_manifest_on_arbitrary_bytes(data: bytes) -> None:
    _only_metafile_errors(parse_manifest, data, "m.dir")


_RELPATHS = st.one_of(
    st.text(max_size=10),
    st.lists(st.sampled_from(["a", "b", "", ".", "..", ".git", "\0", "é"]), max_size=4).map(
        "/".join
    ),
)
_ENTRIES = st.one_of(
    _DOCS,
    st.fixed_dictionaries({"relpath": _RELPATHS, "md5": st.sampled_from([A, B, A + ".dir", "x"])}),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_DOCS, st.lists(_ENTRIES, max_size=6)))
def test_manifest_on_arbitrary_json(doc: Any) -> None:
    try:
        entries = parse_manifest(json.dumps(doc).encode(), "m.dir")
    except MetafileError:
        return
    paths = [e.path for e in entries]
    assert len(set(paths)) == len(paths)
    for entry in entries:
        assert b".." not in entry.path and b"." not in entry.path and b"" not in entry.path
        assert all(p.lower() != b".git" and b"\0" not in p for p in entry.path)
        for i in range(1, len(entry.path)):
            assert entry.path[:i] not in paths
