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

_SECTION = re.compile(r"""^\[\s*'?\s*([^"'\]]+?)\s*(?:"([^"]*)")?\s*'?\s*\]\s*(?:\#.*)?$""")
_QUOTED = re.compile(r"""^(?:"([^"]*)"|'([^']*)')\s*(?:\#.*)?$""")
# Keys DVC resolves against the folder of the config file that sets them (`Config._map_dirs`).
_REMOTE_PATH_KEYS = frozenset(
    {
        "url",
        "keyfile",
        "credentialpath",
        "cert_path",
        "key_path",
        "gdrive_user_credentials_file",
        "gdrive_service_account_json_file_path",
    }
)


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
                    value = os.path.abspath(os.path.join(base, value))
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
    if section.startswith('remote "'):
        return key in _REMOTE_PATH_KEYS
    return (section, key) == ("cache", "dir")


def _is_relative(value: str) -> bool:
    if not value or os.path.isabs(value) or re.match(r"^\w+://", value):
        return False
    if os.path.isabs(os.path.expanduser(value)):
        return False  # `~/...`: DVC expands it, relative to no config folder
    return not re.match(r"^[^/]+@[^/]+:", value)  # scp-style user@host:path


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
        if len(key) >= 2 and key[0] == key[-1] and key[0] in "'\"":
            key = key[1:-1]
        if not key:
            raise UserError(f"DVC config line {lineno}: empty key in {line!r}")
        current[key] = _value(value, lineno, "value")
    return sections


def _value(text: str, lineno: int, what: str) -> str:
    """A configobj scalar: quoted (then only a comment may follow) or up to the first `#`."""
    if text[:1] in ("'", '"'):
        match = _QUOTED.match(text)
        if not match:
            raise UserError(f"DVC config line {lineno}: badly quoted {what} {text!r}")
        return match.group(1) if match.group(1) is not None else match.group(2)
    return text.split("#", 1)[0].rstrip()


def user_config_files() -> list[Path]:
    """System then global config files, as DVC looks for them."""
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    return [Path(d) / "dvc" / "config" for d in reversed(dirs)] + [Path(xdg) / "dvc" / "config"]
