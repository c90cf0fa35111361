"""DVC config files as `dvc remote add` / `dvc config` write them, and as people edit them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusefs.config import DvcConfig, RemoteConfig, parse_ini
from fusefs.errors import UserError

WRITTEN_BY_DVC = """\
[core]
    remote = storage
    autostage = true
['remote "storage"']
    url = s3://bucket/path
    region = eu-west-1
['remote "local"']
    url = ../../dvcstore
[cache]
    dir = ../cache
    type = "reflink,copy"
"""


def test_sections_as_dvc_writes_them() -> None:
    assert parse_ini(WRITTEN_BY_DVC) == {
        "core": {"remote": "storage", "autostage": "true"},
        'remote "storage"': {"url": "s3://bucket/path", "region": "eu-west-1"},
        'remote "local"': {"url": "../../dvcstore"},
        "cache": {"dir": "../cache", "type": "reflink,copy"},
    }


@pytest.mark.parametrize(
    "header",
    ['[remote "s"]', "['remote \"s\"']", "[ 'remote \"s\"' ]", "['remote \"s\"']  # comment"],
)
def test_section_header_spellings(header: str) -> None:
    assert parse_ini(f"{header}\nurl = /x\n") == {'remote "s"': {"url": "/x"}}


def test_comments_and_blank_lines() -> None:
    text = "# top\n; also\n\n[core]\n  # indented comment\n  remote = a   # trailing\n"
    assert parse_ini(text) == {"core": {"remote": "a"}}


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("k = plain", "plain"),
        ("k=tight", "tight"),
        ("k = 'single'", "single"),
        ('k = "double"', "double"),
        ('k = "has # hash" # comment', "has # hash"),
        ("k = 'a = b'", "a = b"),
        ("k = s3://b/p # note", "s3://b/p"),
        ("k =", ""),
        ('k = ""', ""),
        ("'k' = v", "v"),
    ],
)
def test_values(line: str, value: str) -> None:
    assert parse_ini(f"[s]\n{line}\n")["s"]["k"] == value


@pytest.mark.parametrize(
    "text",
    [
        "key = value\n",  # before any section
        "[core]\nno equals sign\n",
        "[core\nremote = a\n",
        "[]\n",
        "[[nested]]\n",
        "['remote \"a\"'] junk\n",
        "[core]\n= value\n",
        '[core]\nk = "unterminated\n',
        "[core]\nk = 'a' trailing\n",
    ],
)
def test_malformed_lines(text: str) -> None:
    with pytest.raises(UserError, match="DVC config line"):
        parse_ini(text)


def test_default_remote_and_named_remote(tmp_path: Path) -> None:
    config = DvcConfig()
    config.merge(WRITTEN_BY_DVC, tmp_path / "repo" / ".dvc")
    assert config.remote(None) == RemoteConfig(
        "storage", "s3://bucket/path", {"region": "eu-west-1"}
    )
    assert config.remote("local") == RemoteConfig("local", str(tmp_path / "dvcstore"), {})
    assert sorted(config.remote_names()) == ["local", "storage"]
    assert config.cache_dir == str(tmp_path / "repo" / "cache")


def test_no_default_remote() -> None:
    config = DvcConfig()
    config.merge("['remote \"a\"']\nurl = /a\n", None)
    assert config.remote(None) is None
    assert config.remote("a") == RemoteConfig("a", "/a", {})


def test_unknown_or_urlless_remote() -> None:
    config = DvcConfig()
    config.merge("[core]\nremote = gone\n['remote \"nourl\"']\nregion = x\n", None)
    with pytest.raises(UserError, match="gone"):
        config.remote(None)
    with pytest.raises(UserError, match="nourl"):
        config.remote("nourl")


def test_later_files_override_earlier_ones(tmp_path: Path) -> None:
    config = DvcConfig()
    config.merge("[core]\nremote = a\n['remote \"a\"']\nurl = s3://a\nregion = r1\n", None)
    config.merge("['remote \"a\"']\nurl = local-store\n", tmp_path)
    remote = config.remote(None)
    assert remote == RemoteConfig("a", str(tmp_path / "local-store"), {"region": "r1"})


@pytest.mark.parametrize(
    "url",
    [
        "s3://b/p",
        "gs://b",
        "ssh://host/p",
        "azure://c/p",
        "/abs/store",
        "user@host:store",
        "",
        "~/store",
    ],
)
def test_urls_that_are_not_resolved(tmp_path: Path, url: str) -> None:
    config = DvcConfig()
    config.merge(f"['remote \"r\"']\nurl = {url}\n", tmp_path)
    assert config.sections['remote "r"']["url"] == url


def test_relative_paths_resolve_against_the_config_folder_without_following_links(
    tmp_path: Path,
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    config = DvcConfig()
    config.merge(
        "['remote \"r\"']\nurl = ../store\nkeyfile = keys/id\nregion = ../not-a-path\n"
        "credentialpath = ~/.aws/creds\n"
        "[cache]\ndir = ./c\n",
        tmp_path / "link" / ".dvc",
    )
    remote = config.sections['remote "r"']
    assert remote["url"] == str(tmp_path / "link" / "store")
    assert remote["keyfile"] == str(tmp_path / "link" / ".dvc" / "keys" / "id")
    assert remote["region"] == "../not-a-path"
    assert remote["credentialpath"] == "~/.aws/creds"
    assert config.cache_dir == str(tmp_path / "link" / ".dvc" / "c")


def test_relative_paths_kept_without_a_base() -> None:
    config = DvcConfig()
    config.merge("['remote \"r\"']\nurl = ../store\n", None)
    assert config.sections['remote "r"']["url"] == "../store"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="[]'\"=#; \nabremot\t\r", max_size=80))
def test_parse_ini_raises_only_user_error(text: str) -> None:
    try:
        sections = parse_ini(text)
    except UserError:
        return
    for values in sections.values():
        assert all(isinstance(k, str) and k for k in values)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_merge_raises_only_user_error(text: str) -> None:
    config = DvcConfig()
    try:
        config.merge("[core]\nremote = r\n['remote \"r\"']\n" + text, Path("/base/.dvc"))
        config.remote(None)
    except UserError:
        pass
