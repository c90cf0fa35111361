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

  YAML is emitted the way DVC's ruamel.yaml dumper does it (block style, sequences not
  indented under their key, YAML 1.2 implicit typing, unicode left unescaped, lines folded
  at 80 columns).  Scalars that would resolve to something other than a string (``null``,
  ``'123'``, ``'1e5'``, ``'true'``, ``'2001-01-01'``…) are single-quoted; this can hit an md5
  made only of digits (optionally with one ``e``).  Strings containing ``'`` or a newline
  that cannot be plain are double-quoted; control characters, tabs and BOM force double quotes
  with escapes.
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
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Union

import yaml

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


# --------------------------------------------------------------------------- YAML emitter

_BEST_WIDTH = 80
_BREAKS = "\n\x85\u2028\u2029"
_WS_AFTER = "\0 \t\r\n\x85\u2028\u2029"

_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
    r"|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)"
    r"|\.(?:nan|NaN|NAN))$"
)
_INT_RE = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$")
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_TIMESTAMP_RE = re.compile(
    r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
    r"|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?"
    r"(?:[Tt]|[ \t]+)[0-9][0-9]?"
    r":[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?"
    r"(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$"
)
# (first characters that may start a match, pattern, resolved kind); mirrors the YAML 1.2
# implicit typing of ruamel.yaml, which dvc uses, including its quirks (``=`` and ``<<``).
_RESOLVERS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("tTfF", _BOOL_RE, "bool"),
    ("-+0123456789.", _FLOAT_RE, "float"),
    ("-+0123456789", _INT_RE, "int"),
    ("<", re.compile(r"^(?:<<)$"), "merge"),
    ("~nN", _NULL_RE, "null"),
    ("0123456789", _TIMESTAMP_RE, "timestamp"),
    ("=", re.compile(r"^(?:=)$"), "value"),
)


def _resolve_plain(value: str) -> str:
    """Type a plain scalar would be read as ("str" when it stays a string)."""
    if value == "":
        return "null"
    first = value[0]
    for chars, regex, kind in _RESOLVERS:
        if first in chars and regex.match(value):
            return kind
    return "str"


@dataclass(frozen=True)
class _Raw:
    """A non-string scalar kept with its original spelling (``text``) and value."""

    text: str
    value: object


_Value = Union[str, int, bool, None, _Raw, "list[_Value]", "dict[str, _Value]"]


@dataclass
class _Analysis:
    multiline: bool
    allow_block_plain: bool
    allow_single_quoted: bool


def _is_printable(ch: str) -> bool:
    return (
        ch == "\x85"
        or "\xa0" <= ch <= "\ud7ff"
        or "\ue000" <= ch <= "\ufffd"
        or "\U00010000" <= ch <= "\U0010ffff"
    ) and ch != "\ufeff"


def _analyze(s: str) -> _Analysis:
    """Which scalar styles are possible for ``s`` in block context."""
    if not s:
        return _Analysis(multiline=False, allow_block_plain=True, allow_single_quoted=True)
    block_ind = s.startswith(("---", "..."))
    line_breaks = special = False
    leading_space = leading_break = trailing_space = trailing_break = False
    break_space = space_break = False
    prev_ws = True
    next_ws = len(s) == 1 or s[1] in _WS_AFTER
    prev_space = prev_break = False
    n = len(s)
    for i, ch in enumerate(s):
        if i == 0:
            if ch in "#,[]{}&*!|>'\"%@`":
                block_ind = True
            if ch in "?:" and next_ws:
                block_ind = True
            if ch == "-" and next_ws:
                block_ind = True
        else:
            if ch == ":" and next_ws:
                block_ind = True
            if ch == "#" and prev_ws:
                block_ind = True
        if ch in _BREAKS:
            line_breaks = True
        if not (ch == "\n" or " " <= ch <= "~") and not _is_printable(ch):
            special = True
        if ch == " ":
            leading_space = leading_space or i == 0
            trailing_space = trailing_space or i == n - 1
            break_space = break_space or prev_break
            prev_space, prev_break = True, False
        elif ch in _BREAKS:
            leading_break = leading_break or i == 0
            trailing_break = trailing_break or i == n - 1
            space_break = space_break or prev_space
            prev_space, prev_break = False, True
        else:
            prev_space = prev_break = False
        prev_ws = ch in _WS_AFTER
        next_ws = i + 2 >= n or s[i + 2] in _WS_AFTER
    plain = not (leading_space or leading_break or trailing_space or trailing_break)
    single = True
    if break_space:
        plain = single = False
    if special or space_break:
        plain = single = False
    if line_breaks or block_ind:
        plain = False
    return _Analysis(multiline=line_breaks, allow_block_plain=plain, allow_single_quoted=single)


def _scalar_style(s: str, simple_key: bool) -> str:
    """'' (plain), "'" or '"' -- the style ruamel.yaml picks for a string."""
    a = _analyze(s)
    plain_ok = not (simple_key and (not s or a.multiline)) and a.allow_block_plain
    if plain_ok and _resolve_plain(s) == "str":
        return ""
    if "'" in s or "\n" in s:
        return '"'
    if a.allow_single_quoted and not (simple_key and a.multiline):
        return "'"
    return '"'


_ESCAPES = {
    "\0": "0",
    "\x07": "a",
    "\x08": "b",
    "\t": "t",
    "\n": "n",
    "\x0b": "v",
    "\x0c": "f",
    "\r": "r",
    "\x1b": "e",
    '"': '"',
    "\\": "\\",
    "\x85": "N",
    "\xa0": "_",
    "\u2028": "L",
    "\u2029": "P",
}


class _Writer:
    """Column-tracking output with the line-folding rules of ruamel.yaml's emitter."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.column = 0
        self.whitespace = True
        self.indention = True
        self.indent = 0

    def text(self, data: str) -> None:
        self.column += len(data)
        self.parts.append(data)

    def newline(self, br: str = "\n") -> None:
        self.parts.append(br)
        self.column = 0
        self.whitespace = self.indention = True

    def write_indent(self) -> None:
        ind = self.indent
        if not self.indention or self.column > ind or (self.column == ind and not self.whitespace):
            self.newline()
        if self.column < ind:
            self.whitespace = True
            self.text(" " * (ind - self.column))

    def indicator(self, ind: str, need_ws: bool, ws: bool = False, indention: bool = False) -> None:
        self.text(ind if self.whitespace or not need_ws else " " + ind)
        self.whitespace = ws
        self.indention = self.indention and indention

    def plain(self, s: str, split: bool) -> None:
        if not s:
            return
        if not self.whitespace:
            self.text(" ")
        self.whitespace = self.indention = False
        spaces = breaks = False
        start = end = 0
        while end <= len(s):
            ch = s[end] if end < len(s) else None
            if spaces:
                if ch != " ":
                    if start + 1 == end and self.column >= _BEST_WIDTH and split:
                        self.write_indent()
                        self.whitespace = self.indention = False
                    else:
                        self.text(s[start:end])
                    start = end
            elif breaks:  # pragma: no cover - plain scalars are never multi-line
                raise AssertionError("multi-line plain scalar")
            elif ch is None or ch in " " + _BREAKS:
                data = s[start:end]
                if len(data) + self.column > _BEST_WIDTH and self.column > self.indent:
                    self.write_indent()
                self.text(data)
                start = end
            if ch is not None:
                spaces = ch == " "
                breaks = ch in _BREAKS
            end += 1

    def _breaks(self, s: str, start: int, end: int) -> None:
        if s[start] == "\n":
            self.newline()
        for br in s[start:end]:
            self.newline("\n" if br == "\n" else br)
        self.write_indent()

    def single_quoted(self, s: str, split: bool) -> None:
        self.indicator("'", True)
        spaces = breaks = False
        start = end = 0
        while end <= len(s):
            ch = s[end] if end < len(s) else None
            if spaces:
                if ch is None or ch != " ":
                    if (
                        start + 1 == end
                        and self.column > _BEST_WIDTH
                        and split
                        and start != 0
                        and end != len(s)
                    ):
                        self.write_indent()
                    else:
                        self.text(s[start:end])
                    start = end
            elif breaks:
                if ch is None or ch not in _BREAKS:
                    self._breaks(s, start, end)
                    start = end
            elif (ch is None or ch in " " + _BREAKS or ch == "'") and start < end:
                self.text(s[start:end])
                start = end
            if ch == "'":
                self.text("''")
                start = end + 1
            if ch is not None:
                spaces = ch == " "
                breaks = ch in _BREAKS
            end += 1
        self.indicator("'", False)

    def double_quoted(self, s: str, split: bool) -> None:
        self.indicator('"', True)
        start = end = 0
        while end <= len(s):
            ch = s[end] if end < len(s) else None
            if (
                ch is None
                or ch in '"\\\x85\u2028\u2029\ufeff'
                or not (" " <= ch <= "~" or _is_printable(ch))
            ):
                if start < end:
                    self.text(s[start:end])
                    start = end
                if ch is not None:
                    if ch in _ESCAPES:
                        data = "\\" + _ESCAPES[ch]
                    elif ch <= "\xff":
                        data = f"\\x{ord(ch):02X}"
                    elif ch <= "\uffff":
                        data = f"\\u{ord(ch):04X}"
                    else:
                        data = f"\\U{ord(ch):08X}"
                    self.text(data)
                    start = end + 1
            if (
                0 < end < len(s) - 1
                and (ch == " " or start >= end)
                and self.column + (end - start) > _BEST_WIDTH
                and split
            ):
                need_backslash = self._fold_needs_backslash(s, start, end)
                self.text(s[start:end] + ("\\" if need_backslash else ""))
                if start < end:
                    start = end
                self.write_indent()
                self.whitespace = self.indention = False
                if s[start] == " ":
                    if not need_backslash:
                        start += 1
                    self.text("\\" if need_backslash else "")
            end += 1
        self.indicator('"', False)

    @staticmethod
    def _fold_needs_backslash(s: str, start: int, end: int) -> bool:
        space_pos = s.find(" ", end)
        if space_pos < 0:
            return True
        nl = s.find("\n", end, space_pos)
        if nl >= 0:
            space_pos = nl
        if space_pos + 1 >= len(s):
            return True
        if s[space_pos] == "\n" and s[space_pos + 1] != " ":
            return True
        return not (
            '"' not in s[end:space_pos]
            and "'" not in s[end:space_pos]
            and s[space_pos + 1] not in " \n"
            and s[end - 1 : end + 1] != "  "
            and start != end
        )

    def scalar(self, s: str, simple_key: bool) -> None:
        style = _scalar_style(s, simple_key)
        split = not simple_key
        if style == "":
            self.plain(s, split)
        elif style == "'":
            self.single_quoted(s, split)
        else:
            self.double_quoted(s, split)


def _scalar_text(v: _Value) -> str | None:
    """Plain spelling of a non-string scalar, None for strings and collections."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, _Raw):
        return v.text
    if v is None:
        return ""
    return None


def _emit_value(w: _Writer, v: _Value, indent: int, in_seq: bool = False) -> None:
    """Emit a scalar value (after ``key:`` or ``-``) or a collection starting there."""
    if isinstance(v, dict):
        if not v:
            w.text("{}" if w.whitespace else " {}")
            w.whitespace = False
            return
        if in_seq:
            _emit_mapping(w, v, indent + 2, first_inline=True)
        else:
            _emit_mapping(w, v, indent + 2)
        return
    if isinstance(v, list):
        if not v:
            w.text("[]" if w.whitespace else " []")
            w.whitespace = False
            return
        _emit_sequence(w, v, indent + 2 if in_seq else indent, first_inline=in_seq)
        return
    w.indent = indent + 2
    text = _scalar_text(v)
    if text is None:
        assert isinstance(v, str)
        w.scalar(v, simple_key=False)
    else:
        w.plain(text, split=True)


def _emit_mapping(w: _Writer, m: dict[str, _Value], col: int, first_inline: bool = False) -> None:
    for i, (k, v) in enumerate(m.items()):
        if not (first_inline and i == 0):
            if w.column:
                w.newline()
            w.text(" " * col)
            w.whitespace = True
        w.indent = col
        w.scalar(k, simple_key=True)
        w.indicator(":", False)
        _emit_value(w, v, col)


def _emit_sequence(w: _Writer, items: list[_Value], col: int, first_inline: bool = False) -> None:
    for i, item in enumerate(items):
        if not (first_inline and i == 0):
            if w.column:
                w.newline()
            w.text(" " * col)
            w.whitespace = True
        w.indent = col
        w.indicator("-", True, ws=False, indention=True)
        w.text(" ")
        w.whitespace = True
        if item is None:
            continue
        _emit_value(w, item, col, in_seq=True)


def _dump(doc: dict[str, _Value]) -> bytes:
    w = _Writer()
    _emit_mapping(w, doc, 0)
    w.newline()
    return "".join(w.parts).encode("utf-8")


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
