"""DVC configuration as DVC reads it: system < global < repository < local.

The repository's `.dvc/config` comes from the mounted revision (what a checkout of it would
have); `.dvc/config.local` from the working tree, when there is one. Relative paths in a config
file (a folder remote's `url`, `cache.dir`) are relative to the folder holding that file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

_SECTION = re.compile(r"""^\[\s*'?\s*([^"'\]]+?)\s*(?:"([^"]*)")?\s*'?\s*\]$""")


@dataclass(frozen=True)
class RemoteConfig:
    name: str
    url: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class DvcConfig:
    sections: dict[str, dict[str, str]] = field(default_factory=dict)

    def merge(self, text: str, base: Path | None) -> None:
        """Overlay one config file; `base` resolves its relative paths (None: keep them)."""
        for section, values in parse_ini(text).items():
            target = self.sections.setdefault(section, {})
            for key, value in values.items():
                if base is not None and _is_path_key(section, key) and _is_relative(value):
                    value = str((base / value).resolve())
                target[key] = value

    def remote(self, name: str | None) -> RemoteConfig | None:
        """The named remote, or the default one (`core.remote`); None when there is none."""
        chosen = name or self.sections.get("core", {}).get("remote")
        if not chosen:
            return None
        values = self.sections.get(f'remote "{chosen}"')
        if values is None or "url" not in values:
            raise UserError(f"remote {chosen!r} is not configured in .dvc/config")
        options = {k: v for k, v in values.items() if k != "url"}
        return RemoteConfig(chosen, values["url"], options)

    def remote_names(self) -> list[str]:
        return [s.split('"')[1] for s in self.sections if s.startswith('remote "')]

    @property
    def cache_dir(self) -> str | None:
        return self.sections.get("cache", {}).get("dir")


def _is_path_key(section: str, key: str) -> bool:
    return (section.startswith('remote "') and key == "url") or (section, key) == ("cache", "dir")


def _is_relative(value: str) -> bool:
    return "://" not in value and not os.path.isabs(value) and not re.match(r"^[^/]+@[^/]+:", value)


def parse_ini(text: str) -> dict[str, dict[str, str]]:
    """configobj-style INI as DVC writes it (`['remote "name"']`, indented keys, # comments)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            match = _SECTION.match(line)
            if not match:
                raise UserError(f"DVC config line {lineno}: bad section header {line!r}")
            name = match.group(1).strip()
            if match.group(2) is not None:
                name = f'{name} "{match.group(2)}"'
            current = sections.setdefault(name, {})
            continue
        if "=" not in line or current is None:
            raise UserError(f"DVC config line {lineno}: expected 'key = value', got {line!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        current[key] = _unquote(value)
    return sections


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def user_config_files() -> list[Path]:
    """System then global config files, as DVC looks for them."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    return [Path(d) / "dvc" / "config" for d in reversed(dirs)] + [Path(xdg) / "dvc" / "config"]
