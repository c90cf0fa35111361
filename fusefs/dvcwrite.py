"""Byte-exact reproduction of the files ``dvc add`` (DVC 3.x, checked against 3.67.1) writes.

Everything here is a pure function from bytes/values to bytes, except :func:`md5_file`,
which reads the file it is given.

What is reproduced
------------------
* ``.dir`` objects (``.dvc/cache/files/md5/XX/YYYY.dir``): a JSON list, one object per file,
  sorted by ``relpath`` (plain code-point order of the ``/``-joined path, so ``a.txt``
  sorts before ``a/b``), each object with exactly the keys ``md5`` and ``relpath`` in that
  order, ``", "``/``": "`` separators, non-ASCII escaped as ``\\uXXXX`` (surrogate pairs for
  astral characters such as emoji), and **no** trailing newline.  Sizes, ``isexec`` and other
  metadata are not part of it.  Empty directories do not appear.  The object's name is the
  md5 of those bytes plus ``.dir``.
* ``.dvc`` files for a freshly added output::

      outs:
      - md5: <md5>[.dir]
        size: <bytes>
        nfiles: <n>          # directories only
        isexec: true         # executable single files only
        hash: md5
        path: <path relative to the .dvc file's directory>

  YAML is emitted the way DVC's ruamel.yaml dumper does it (`fusefs.dvcyaml`).
* Re-adding an output whose ``.dvc`` file exists (:func:`update_dvc_file`): DVC re-parses the
  old file, applies the new values to it, and dumps it again.  Hence: keys keep their order;
  changed values are replaced in place; keys new to the file (``hash`` on a 2.x-era file,
  ``nfiles``, ``isexec``) are appended at the *end* of the output's mapping; ``isexec`` /
  ``nfiles`` disappear when no longer applicable; falsy annotations (``desc: ''``,
  ``persist: false``, top-level ``frozen: false``...) are dropped; quotes the user wrote are
  normalised away; ``True`` becomes ``true``; ``~``/``null`` become an empty value; numbers
  other than the ones DVC rewrites keep their spelling (``0x1F``, ``1.50``); a top-level
  stage ``md5`` is kept as is.
* ``.gitignore`` maintenance (:func:`gitignore_add`, :func:`gitignore_remove`): the entry is
  ``/<basename>`` in ``<dirname of the output>/.gitignore``; gitignore metacharacters
  ``\\ [ ] ! * # ?`` are backslash-escaped when adding; a missing final newline is supplied
  before appending; removal compares stripped lines against the *unescaped* entry (as DVC
  does, so escaped entries are never removed), rewrites line endings to ``\\n`` and deletes
  the file (``None``) when nothing is left.

Limits
------
* :func:`update_dvc_file` raises :class:`UnsupportedDvcFile` instead of guessing when the
  existing file uses something whose round trip through ruamel.yaml is not reproduced here:
  comments, non-empty flow collections (``[a, b]``, ``{a: 1}``), block scalars (``|``,
  ``>``), anchors/aliases/tags, document markers, timestamps, non-string or complex keys,
  ``wdir``, ``cmd``/``deps`` (pipeline stages), numbers written with a leading ``+`` or as
  ``-0``, and more than one output.  Other numbers keep their spelling, which is what
  ruamel.yaml does for the spellings checked (``1.50``, ``1.5e3``, ``0x1F``, ``0o17``,
  ``007``, ``1_000``).
* :func:`gitignore_add` only detects an entry already present as an exact line.  DVC skips
  the write whenever git already ignores the path through *any* rule (a ``*.pt`` pattern, a
  parent directory's rule, ``.git/info/exclude``...); callers needing that must ask git
  (``git check-ignore``) and not call this function when the path is ignored.
* Only ``md5`` hashing of local outputs is covered: no ``cache: false`` semantics, no
  cloud/versioned metadata, no ``files:`` lists, no ``--to-remote``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import yaml

from .dvcyaml import _BREAKS, _dump, _Raw, _resolve_plain, _Value

__all__ = [
    "OutSpec",
    "UnsupportedDvcFile",
    "dir_manifest",
    "dir_md5",
    "dvc_file",
    "dvc_file_path",
    "gitignore_add",
    "gitignore_location",
    "gitignore_remove",
    "md5_bytes",
    "md5_file",
    "update_dvc_file",
]

CHUNK_SIZE = 1024 * 1024


# --------------------------------------------------------------------------- hashing


def md5_bytes(b: bytes) -> str:
    """Hex md5 of ``b``."""
    return hashlib.md5(b).hexdigest()


def md5_file(path: str | os.PathLike[str]) -> str:
    """Hex md5 of the file's content, read in 1 MiB chunks (DVC 3 hashes raw bytes)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- .dir objects


def dir_manifest(entries: Iterable[tuple[str, str]]) -> bytes:
    """Bytes of the ``.dir`` cache object for a directory holding ``entries``.

    ``entries`` are ``(relpath, md5)`` pairs, relpath ``/``-separated and relative to the
    directory.  Raises ``ValueError`` on a duplicate or malformed relpath.
    """
    items: dict[str, str] = {}
    for relpath, md5 in entries:
        if not relpath or relpath.startswith("/") or relpath.endswith("/") or "\\" in relpath:
            raise ValueError(f"bad relpath {relpath!r}")
        if any(part in ("", ".", "..") for part in relpath.split("/")):
            raise ValueError(f"bad relpath {relpath!r}")
        if relpath in items:
            raise ValueError(f"duplicate relpath {relpath!r}")
        items[relpath] = md5
    listing = [{"md5": items[rel], "relpath": rel} for rel in sorted(items)]
    return json.dumps(listing, ensure_ascii=True, separators=(", ", ": ")).encode("ascii")


def dir_md5(manifest: bytes) -> str:
    """The hash DVC records for a directory: md5 of its manifest plus ``.dir``."""
    return md5_bytes(manifest) + ".dir"


# --------------------------------------------------------------------------- .dvc files


@dataclass(frozen=True)
class OutSpec:
    """One ``dvc add`` output.

    ``path`` is relative to the directory of the ``.dvc`` file (i.e. the output's basename
    for a plain ``dvc add``), ``/``-separated.  ``md5`` carries the ``.dir`` suffix for
    directories; ``size`` is the byte size (sum of file sizes for a directory); ``nfiles``
    is set for directories only; ``isexec`` is honoured for single files only.
    """

    path: str
    md5: str
    size: int
    nfiles: int | None = None
    isexec: bool = False

    @property
    def isdir(self) -> bool:
        return self.md5.endswith(".dir")

    def fields(self) -> dict[str, _Value]:
        """The output's mapping in DVC's key order."""
        d: dict[str, _Value] = {"md5": self.md5, "size": self.size}
        if self.nfiles is not None:
            d["nfiles"] = self.nfiles
        if self.isexec and not self.isdir:
            d["isexec"] = True
        d["hash"] = "md5"
        d["path"] = self.path
        return d


class UnsupportedDvcFile(ValueError):
    """The existing ``.dvc`` file uses YAML/DVC features whose rewrite is not reproduced."""


def dvc_file_path(output: str) -> str:
    """Repo-relative path of the ``.dvc`` file ``dvc add <output>`` creates."""
    return output.rstrip("/") + ".dvc"


def dvc_file(out: OutSpec) -> bytes:
    """Bytes of a new ``.dvc`` file for ``out``."""
    return _dump({"outs": [out.fields()]})


# Keys DVC drops from an output / the stage on rewrite when their value is falsy, and
# output keys dropped when equal to their default.
_OUT_DROP_FALSY = ("desc", "type", "labels", "meta", "metric", "plot", "persist", "remote")
_OUT_DROP_DEFAULT: dict[str, object] = {"cache": True, "push": True}
_STAGE_DROP_FALSY = ("desc", "frozen", "always_changed", "meta", "deps")
_OUT_KEYS = frozenset(
    (
        *("md5", "size", "nfiles", "isexec", "hash", "path", "cache", "persist", "remote"),
        *("push", "desc", "type", "labels", "meta", "metric", "plot", "etag", "checksum"),
    )
)
_STAGE_KEYS = frozenset(("md5", "outs", "deps", "desc", "frozen", "always_changed", "meta"))


def _value_of(v: _Value) -> object:
    return v.value if isinstance(v, _Raw) else v


def _same(a: _Value, b: _Value) -> bool:
    va, vb = _value_of(a), _value_of(b)
    return type(va) is type(vb) and va == vb


_REJECTED_TOKENS = (
    yaml.AnchorToken,
    yaml.AliasToken,
    yaml.TagToken,
    yaml.DirectiveToken,
    yaml.DocumentStartToken,
    yaml.DocumentEndToken,
)


def _check_tokens(text: str) -> None:
    spans: list[tuple[int, int]] = []
    try:
        for tok in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(tok, _REJECTED_TOKENS):
                raise UnsupportedDvcFile(f"unsupported YAML construct: {type(tok).__name__}")
            if isinstance(tok, yaml.ScalarToken):
                if tok.style in ("|", ">"):
                    raise UnsupportedDvcFile("block scalars are not supported")
                spans.append((tok.start_mark.index, tok.end_mark.index))
    except yaml.YAMLError as e:
        raise UnsupportedDvcFile(f"invalid YAML: {e}") from e
    pos = 0
    for start, end in sorted(spans):
        if "#" in text[pos:start]:
            raise UnsupportedDvcFile("comments are not supported")
        pos = max(pos, end)
    if "#" in text[pos:]:
        raise UnsupportedDvcFile("comments are not supported")


def _int_value(text: str) -> int:
    t = text.replace("_", "")
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    if t.startswith(("0x", "0b", "0o")):
        return sign * int(t, 0)
    if len(t) > 1 and t.startswith("0"):
        return sign * int(t, 8)
    return sign * int(t)


def _float_value(text: str) -> float:
    t = text.replace("_", "").lower()
    if t.lstrip("+-") == ".inf":
        return float(t.replace(".inf", "inf"))
    if t == ".nan":
        return float("nan")
    return float(t)


def _convert(node: yaml.Node) -> _Value:
    if isinstance(node, yaml.ScalarNode):
        value: str = node.value
        if node.style:  # quoted: always a string, re-emitted in automatic style
            return value
        kind = _resolve_plain(value)
        if kind == "str":
            return value
        if kind == "null":
            return None
        if kind == "bool":
            return value.lower() == "true"
        if value.startswith("+") or (
            kind == "int" and value.startswith("-") and not value.strip("-0_")
        ):
            raise UnsupportedDvcFile(f"unsupported number spelling {value!r}")
        if kind == "int":
            return _Raw(value, _int_value(value))
        if kind == "float":
            text = ".nan" if value.lower() == ".nan" else value
            return _Raw(text, _float_value(value))
        raise UnsupportedDvcFile(f"unsupported plain scalar {value!r} ({kind})")
    if isinstance(node, yaml.SequenceNode):
        if node.flow_style and node.value:
            raise UnsupportedDvcFile("flow sequences are not supported")
        return [_convert(n) for n in node.value]
    if isinstance(node, yaml.MappingNode):
        if node.flow_style and node.value:
            raise UnsupportedDvcFile("flow mappings are not supported")
        out: dict[str, _Value] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise UnsupportedDvcFile("complex mapping keys are not supported")
            if not knode.style and _resolve_plain(knode.value) != "str":
                raise UnsupportedDvcFile(f"non-string key {knode.value!r}")
            key: str = knode.value
            if len(key) >= 128 or any(c in key for c in _BREAKS):
                raise UnsupportedDvcFile(f"key {key!r} would not be a simple key")
            if key in out:
                raise UnsupportedDvcFile(f"duplicate key {key!r}")
            out[key] = _convert(vnode)
        return out
    raise UnsupportedDvcFile(f"unsupported node {node!r}")  # pragma: no cover


def _truthy(v: _Value) -> bool:
    return bool(_value_of(v))


def _parse_dvc_file(existing: bytes) -> dict[str, _Value]:
    try:
        text = existing.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnsupportedDvcFile("not UTF-8") from e
    _check_tokens(text)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise UnsupportedDvcFile(f"invalid YAML: {e}") from e
    if node is None:
        raise UnsupportedDvcFile("empty .dvc file")
    doc = _convert(node)
    if not isinstance(doc, dict):
        raise UnsupportedDvcFile("top level is not a mapping")
    return doc


def _apply(dest: dict[str, _Value], src: dict[str, _Value]) -> None:
    """Apply ``src`` onto ``dest`` keeping ``dest``'s key order (new keys go last)."""
    for key, value in src.items():
        if key not in dest or not _same(dest[key], value):
            dest[key] = value
    for key in [k for k in dest if k not in src]:
        del dest[key]


def update_dvc_file(existing: bytes, out: OutSpec) -> bytes:
    """Bytes ``dvc add`` writes when re-adding ``out`` whose ``.dvc`` file is ``existing``.

    Raises :class:`UnsupportedDvcFile` when ``existing`` uses features listed in the module
    docstring, rather than returning bytes that might differ from DVC's.
    """
    doc = _parse_dvc_file(existing)
    unknown = set(doc) - _STAGE_KEYS
    if unknown:
        raise UnsupportedDvcFile(f"unsupported stage keys: {sorted(unknown)}")
    deps = doc.get("deps")
    if deps:
        raise UnsupportedDvcFile("stage has dependencies")
    outs = doc.get("outs")
    if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], dict):
        raise UnsupportedDvcFile("expected exactly one output")
    old = outs[0]
    unknown = set(old) - _OUT_KEYS
    if unknown:
        raise UnsupportedDvcFile(f"unsupported output keys: {sorted(unknown)}")
    if "cache" in old and _value_of(old["cache"]) is not True:
        raise UnsupportedDvcFile("outputs with cache: false are not supported")
    if "etag" in old or "checksum" in old:
        raise UnsupportedDvcFile("cloud metadata is not supported")

    src_out = out.fields()
    for key, value in old.items():
        if key in ("md5", "size", "nfiles", "isexec", "hash", "path"):
            continue
        if key in _OUT_DROP_FALSY and not _truthy(value):
            continue
        if key in _OUT_DROP_DEFAULT and _value_of(value) == _OUT_DROP_DEFAULT[key]:
            continue
        src_out[key] = value
    _apply(old, src_out)

    src_doc: dict[str, _Value] = {}
    for key, value in doc.items():
        if key in _STAGE_DROP_FALSY and not _truthy(value):
            continue
        src_doc[key] = value
    _apply(doc, src_doc)
    return _dump(doc)


# --------------------------------------------------------------------------- .gitignore

_GITIGNORE_SPECIAL = "\\[]!*#?"


def gitignore_location(output: str) -> tuple[str, str]:
    """``(gitignore path, entry)`` for a repo-relative output path.

    ``data/images`` -> ``("data/.gitignore", "/images")``; ``model.pt`` ->
    ``(".gitignore", "/model.pt")``.
    """
    output = output.rstrip("/")
    head, _, base = output.rpartition("/")
    return (f"{head}/.gitignore" if head else ".gitignore", "/" + base)


def _escape(entry: str) -> str:
    return "".join("\\" + c if c in _GITIGNORE_SPECIAL else c for c in entry)


def _universal_lines(text: str) -> list[str]:
    """Lines with ends kept, ``\\r\\n`` and lone ``\\r`` turned into ``\\n`` (text-mode read)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines: list[str] = []
    start = 0
    while start < len(text):
        nl = text.find("\n", start)
        if nl < 0:
            lines.append(text[start:])
            break
        lines.append(text[start : nl + 1])
        start = nl + 1
    return lines


def _iter_lines(existing: bytes) -> Iterator[str]:
    yield from _universal_lines(existing.decode("utf-8"))


def gitignore_add(existing: bytes | None, entry: str) -> bytes:
    """New ``.gitignore`` content after ``dvc add`` ignores ``entry`` (``/name`` form).

    ``existing`` is the current content (None when the file does not exist).  The entry is
    escaped, appended on its own line (after adding a newline if the file lacks a final
    one), and not appended when the exact line is already there.
    """
    escaped = _escape(entry)
    data = existing or b""
    if any(line.rstrip("\n") == escaped for line in _iter_lines(data)):
        return data
    prefix = b"" if not data or data.endswith((b"\n", b"\r")) else b"\n"
    return data + prefix + escaped.encode("utf-8") + b"\n"


def gitignore_remove(existing: bytes | None, entry: str) -> bytes | None:
    """``.gitignore`` content after DVC stops ignoring ``entry``; None: delete the file.

    As in DVC, lines are compared stripped against the entry *unescaped*, and line endings
    of the remaining lines come out as ``\\n``.  A missing file stays missing (None).
    """
    if existing is None:
        return None
    kept = [line for line in _iter_lines(existing) if line.strip() != entry.strip()]
    if not kept:
        return None
    return "".join(kept).encode("utf-8")
