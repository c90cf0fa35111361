"""Parsing of DVC metafiles (`*.dvc`, `dvc.lock`, `dvc.yaml`) and `.dir` manifests.

Pure: bytes in, values out. Every function either returns validated values or raises
`MetafileError` with a message naming what is wrong; parsers' own exceptions (including
`RecursionError` from deep nesting) never escape. YAML aliases are refused outright, which
defuses "billion laughs" documents; inputs are capped in size before parsing.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from .objects import HashInfo
from .paths import BadPath, find_collisions, join_parts, split_relpath

log = logging.getLogger(__name__)

MAX_METAFILE_BYTES = 16 << 20
MAX_MANIFEST_BYTES = 512 << 20
MAX_YAML_DEPTH = 100
MAX_INT = (1 << 63) - 1  # st_size is a signed 64-bit value


class MetafileError(ValueError):
    """A metafile or manifest that cannot be used."""


@dataclass(frozen=True, slots=True)
class Out:
    """One DVC output: where it goes in the tree and which object holds it."""

    path: tuple[bytes, ...]
    hash: HashInfo
    size: int | None
    nfiles: int | None
    isexec: bool
    remote: str | None
    source: str  # the metafile that named it, for log lines


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    path: tuple[bytes, ...]
    md5: str


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (metafiles never need them, attackers do) and nesting
    deeper than `MAX_YAML_DEPTH` (refused before the recursive composer runs out of stack)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise MetafileError(f"YAML alias at {event.start_mark} is not allowed in a metafile")
        if self._depth >= MAX_YAML_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise MetafileError(f"YAML nested deeper than {MAX_YAML_DEPTH} at {event.start_mark}")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(data: bytes, what: str) -> Any:
    if len(data) > MAX_METAFILE_BYTES:
        raise MetafileError(f"{what}: {len(data)} bytes is over the {MAX_METAFILE_BYTES} limit")
    try:
        return yaml.load(data, Loader=_NoAliasLoader)
    except MetafileError as exc:
        raise MetafileError(f"{what}: {_one_line(exc)}") from None
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise MetafileError(f"{what}: invalid YAML: {_one_line(exc)}") from None
    except (LookupError, AttributeError, AssertionError) as exc:  # parser bugs on odd input
        raise MetafileError(f"{what}: unreadable YAML: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def parse_dvcfile(data: bytes, folder: tuple[bytes, ...], name: str) -> tuple[list[Out], list[str]]:
    """Outputs of a `.dvc` file in `folder`; second value lists per-output problems."""
    doc = load_yaml(data, name)
    if not isinstance(doc, dict):
        raise MetafileError(f"{name}: top level must be a mapping")
    base = folder
    wdir = doc.get("wdir")
    if wdir is not None:
        if not isinstance(wdir, str):
            raise MetafileError(f"{name}: wdir must be a string")
        base = _resolve_dir(folder, wdir, name)
    outs = doc.get("outs", [])
    if not isinstance(outs, list):
        raise MetafileError(f"{name}: outs must be a list")
    return _parse_outs(outs, base, name, skip=frozenset())


def _resolve_dir(folder: tuple[bytes, ...], rel: str, name: str) -> tuple[bytes, ...]:
    if rel in ("", "."):
        return folder
    try:
        return join_parts(folder, rel)
    except BadPath as exc:
        raise MetafileError(f"{name}: wdir: {exc}") from None


def _parse_outs(
    outs: list[Any], base: tuple[bytes, ...], name: str, skip: frozenset[tuple[bytes, ...]]
) -> tuple[list[Out], list[str]]:
    result: list[Out] = []
    problems: list[str] = []
    for i, raw in enumerate(outs):
        try:
            out = _parse_out(raw, base, f"{name}: outs[{i}]")
        except MetafileError as exc:
            problems.append(str(exc))
            continue
        if out is not None and out.path not in skip:
            result.append(out)
    return result, problems


def _parse_out(raw: Any, base: tuple[bytes, ...], where: str) -> Out | None:
    if not isinstance(raw, dict):
        raise MetafileError(f"{where}: must be a mapping")
    path = raw.get("path")
    if not isinstance(path, str):
        raise MetafileError(f"{where}: path must be a string")
    if raw.get("cache", True) is False:
        return None  # not in any cache: `dvc pull` does not produce it
    try:
        parts = join_parts(base, path)
    except BadPath as exc:
        raise MetafileError(f"{where}: {exc}") from None
    if "md5" not in raw:
        log.info("%s: %r has no md5 (not yet added or pulled); skipped", where, path)
        return None
    hashname = raw.get("hash")
    if hashname not in (None, "md5"):
        raise MetafileError(f"{where}: unsupported hash {hashname!r}")
    try:
        hinfo = HashInfo.parse(raw["md5"], legacy=hashname is None)
    except ValueError as exc:
        raise MetafileError(f"{where}: {exc}") from None
    return Out(
        path=parts,
        hash=hinfo,
        size=_opt_int(raw, "size", where),
        nfiles=_opt_int(raw, "nfiles", where),
        isexec=raw.get("isexec") is True,
        remote=_opt_str(raw, "remote", where),
        source=where,
    )


def _opt_int(raw: dict[str, Any], key: str, where: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
        raise MetafileError(f"{where}: {key} must be an integer from 0 to {MAX_INT}")
    return value


def _opt_str(raw: dict[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise MetafileError(f"{where}: {key} must be a string")
    return value


def parse_lockfile(
    data: bytes, folder: tuple[bytes, ...], name: str, dvcyaml: bytes | None
) -> tuple[list[Out], list[str]]:
    """Cached outputs of every stage of a `dvc.lock` in `folder`.

    Paths in a lock file are relative to the stage's `wdir`, which only `dvc.yaml` records; outputs
    declared `cache: false` there are not produced by `dvc pull` and are left out.
    """
    doc = load_yaml(data, name)
    if not isinstance(doc, dict):
        raise MetafileError(f"{name}: top level must be a mapping")
    stages = doc.get("stages") if "schema" in doc else doc
    if not isinstance(stages, dict):
        raise MetafileError(f"{name}: stages must be a mapping")
    defs = _stage_defs(dvcyaml, name)
    result: list[Out] = []
    problems: list[str] = []
    for stage_name, stage in stages.items():
        where = f"{name}: stage {stage_name!r}"
        if not isinstance(stage, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        try:
            base, uncached = _stage_context(defs, str(stage_name), folder, where)
        except MetafileError as exc:
            problems.append(str(exc))
            continue
        outs = stage.get("outs", [])
        if not isinstance(outs, list):
            problems.append(f"{where}: outs must be a list")
            continue
        got, bad = _parse_outs(outs, base, where, skip=uncached)
        result.extend(got)
        problems.extend(bad)
    return result, problems


def _stage_defs(dvcyaml: bytes | None, lockname: str) -> dict[str, Any]:
    if dvcyaml is None:
        return {}
    try:
        doc = load_yaml(dvcyaml, lockname.replace("dvc.lock", "dvc.yaml"))
    except MetafileError as exc:
        log.warning("%s; stage wdir and cache flags unknown", exc)
        return {}
    stages = doc.get("stages") if isinstance(doc, dict) else None
    return stages if isinstance(stages, dict) else {}


def _stage_context(
    defs: dict[str, Any], stage_name: str, folder: tuple[bytes, ...], where: str
) -> tuple[tuple[bytes, ...], frozenset[tuple[bytes, ...]]]:
    """The folder a stage's paths are relative to, and its outputs marked `cache: false`."""
    name, _, key = stage_name.partition("@")
    spec = defs.get(name)
    context: dict[str, Any] = {}
    if isinstance(spec, dict) and isinstance(spec.get("do"), dict):
        context = _foreach_context(spec.get("foreach"), key)  # foreach stage `name@key`
        spec = spec["do"]
    if not isinstance(spec, dict):
        return folder, frozenset()
    wdir = spec.get("wdir")
    base = folder
    if isinstance(wdir, str):
        resolved = _interpolate(wdir, context)
        if resolved is not None:
            base = _resolve_dir(folder, resolved, where)
    return base, frozenset(_uncached_outs(spec, base, context))


def _foreach_context(iterable: Any, key: str) -> dict[str, Any]:
    """`${key}` and `${item}` of one foreach iteration, keyed as DVC keys them (empty: unknown)."""
    if isinstance(iterable, dict):
        items = {_to_str(k): v for k, v in iterable.items()}
    elif isinstance(iterable, list):
        if any(isinstance(v, (dict, list)) for v in iterable):
            items = {str(i): v for i, v in enumerate(iterable)}
        else:
            items = {_to_str(v): v for v in iterable}
    else:
        return {}  # `foreach: ${from_params}`: not resolvable from dvc.yaml alone
    if key not in items:
        return {}
    return {"key": key, "item": items[key]}


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_TEMPLATE = re.compile(r"\$\{\s*([A-Za-z_][\w.-]*)\s*\}")


def _interpolate(text: str, context: dict[str, Any]) -> str | None:
    """`text` with `${key}`, `${item}`, `${item.field}` substituted; None if any is unknown."""
    unknown = False

    def lookup(match: re.Match[str]) -> str:
        nonlocal unknown
        value: Any = context
        for part in match.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                unknown = True
                return ""
            value = value[part]
        if isinstance(value, (dict, list)) or value is None:
            unknown = True
            return ""
        return _to_str(value)

    result = _TEMPLATE.sub(lookup, text)
    return None if unknown or "${" in result else result


def _uncached_outs(
    spec: dict[str, Any], base: tuple[bytes, ...], context: dict[str, Any]
) -> Iterator[tuple[bytes, ...]]:
    for key in ("outs", "metrics", "plots"):
        entries = spec.get(key)
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict) or len(entry) != 1:
                continue
            ((path, flags),) = entry.items()
            if not isinstance(path, str) or not isinstance(flags, dict):
                continue
            if flags.get("cache") is not False:
                continue
            resolved = _interpolate(path, context)
            if resolved is None:
                continue
            try:
                yield join_parts(base, resolved)
            except BadPath:
                continue


def parse_manifest(data: bytes, name: str) -> list[ManifestEntry]:
    """Entries of a `.dir` object, validated like `git fsck` validates a tree."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise MetafileError(f"{name}: manifest of {len(data)} bytes is over the limit")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError, TypeError) as exc:
        raise MetafileError(f"{name}: invalid JSON: {_one_line(exc)}") from None
    if not isinstance(doc, list):
        raise MetafileError(f"{name}: manifest must be a JSON list")
    entries = [_manifest_entry(item, name, i) for i, item in enumerate(doc)]
    problems = find_collisions(e.path for e in entries)
    if problems:
        raise MetafileError(f"{name}: {problems[0]}")
    return entries


def _manifest_entry(item: Any, name: str, index: int) -> ManifestEntry:
    if not isinstance(item, dict):
        raise MetafileError(f"{name}: entry {index} is not an object")
    relpath, md5 = item.get("relpath"), item.get("md5")
    if not isinstance(relpath, str):
        raise MetafileError(f"{name}: entry {index} has no string relpath")
    try:
        parts = split_relpath(relpath)
        hinfo = HashInfo.parse(md5, legacy=False)
    except (BadPath, ValueError) as exc:
        raise MetafileError(f"{name}: entry {index}: {exc}") from None
    if hinfo.is_dir:
        raise MetafileError(f"{name}: entry {index}: nested .dir entries are not allowed")
    return ManifestEntry(parts, hinfo.md5)
