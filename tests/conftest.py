"""Shared fixtures: real Git+DVC repositories built once per test session."""

from __future__ import annotations

import sys

import pytest

from tests import dvcrepo
from tests.dvcrepo import DvcNotFoundError, SampleRepo, build_dvc2_repo, build_sample_repo

# Let test modules write `from dvcrepo import ...` too, without a second module
# object (which would give two distinct SampleRepo classes).
sys.modules.setdefault("dvcrepo", dvcrepo)


@pytest.fixture(scope="session")
def dvc() -> str:
    """Path of the dvc CLI; skips the test if there is none."""
    try:
        return dvcrepo.dvc_bin()
    except DvcNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def sample_repo(tmp_path_factory: pytest.TempPathFactory, dvc: str) -> SampleRepo:
    """The DVC 3 sample repository (tags v1, v2, v3; main one commit past v3)."""
    return build_sample_repo(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="session")
def dvc2_repo(tmp_path_factory: pytest.TempPathFactory) -> SampleRepo:
    """A DVC 2-style repository (hand-written metafiles, legacy object layout).

    Building it needs only git; pulling it needs the `dvc` fixture.
    """
    return build_dvc2_repo(tmp_path_factory.mktemp("dvc2"))
