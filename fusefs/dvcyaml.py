"""The YAML that DVC's ruamel.yaml dumper writes, reproduced byte for byte for ``.dvc`` files.

`_dump` emits a document the way DVC dumps one: block style, sequences not indented under
their key, YAML 1.2 implicit typing, unicode left unescaped, lines folded at 80 columns, empty
collections as ``{}``/``[]``. Scalars that would resolve to something other than a string
(``null``, ``'123'``, ``'1e5'``, ``'true'``, ``'2001-01-01'``…) are single-quoted; this can hit
an md5 made only of digits (optionally with one ``e``).  Strings containing ``'`` or a newline
that cannot be plain are double-quoted; control characters, tabs and BOM force double quotes
with escapes.

Values are `_Value`: strings, ints, bools, None, lists, string-keyed dicts, and `_Raw` for a
non-string scalar read from an existing file, emitted with its original spelling. Only what
``.dvc`` files need is covered: no flow collections, block scalars, anchors, tags or comments.
Pure functions; `fusefs.dvcwrite` builds the documents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

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
