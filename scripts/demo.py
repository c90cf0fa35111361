"""`make demo`: build a small DVC repository with a folder remote, then use it through fusefs.

Everything lives under ./demo (deleted and rebuilt on each run): a Git + DVC repository with two
tagged versions of a dataset, a folder remote holding the objects, and an empty cache, so every
byte read through the mount is fetched lazily from the remote. The demo mounts both tags, lists
and reads them, then mounts the branch writable, adds a file and commits it with `--push`, and
finally checks with the real `dvc pull` that the commit reads back clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
FUSEFS = [sys.executable, "-m", "fusefs"]


def dvc() -> str:
    return os.environ.get("FUSEFS_DVC") or str(ROOT / ".venv-dvc" / "bin" / "dvc")


def env() -> dict[str, str]:
    home = DEMO / "home"
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
        "FUSEFS_STATE_DIR": str(DEMO / "state"),
        "GIT_AUTHOR_NAME": "Demo",
        "GIT_AUTHOR_EMAIL": "demo@example.com",
        "GIT_COMMITTER_NAME": "Demo",
        "GIT_COMMITTER_EMAIL": "demo@example.com",
    }


def sh(*cmd: str, cwd: Path = DEMO, show: bool = True) -> str:
    if show:
        print(f"$ {' '.join(cmd)}", flush=True)
    out = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"demo: {' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
    if show and out.stdout.strip():
        print(out.stdout.rstrip())
    return out.stdout


def build_repo() -> Path:
    repo, remote = DEMO / "repo", DEMO / "remote"
    repo.mkdir(parents=True)
    sh("git", "init", "-q", "-b", "main", cwd=repo, show=False)
    sh(dvc(), "init", "-q", cwd=repo, show=False)
    sh(dvc(), "remote", "add", "-d", "storage", str(remote), cwd=repo, show=False)
    images = repo / "data" / "images"
    for version in (1, 2):
        for i in range(3 * version):
            (images / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
            (images / f"class{i % 2}" / f"img{i:03d}.bin").write_bytes(os.urandom(4096 * (i + 1)))
        (repo / "model.pt").write_bytes(f"weights v{version}\n".encode())
        (repo / "README.md").write_text(f"# demo dataset v{version}\n")
        sh(dvc(), "add", "-q", "data/images", "model.pt", cwd=repo, show=False)
        sh("git", "add", "-A", cwd=repo, show=False)
        sh("git", "commit", "-q", "-m", f"dataset v{version}", cwd=repo, show=False)
        sh("git", "tag", f"v{version}", cwd=repo, show=False)
        sh(dvc(), "push", "-q", cwd=repo, show=False)
    shutil.rmtree(repo / ".dvc" / "cache")  # objects now live only on the remote
    print(f"built {repo} (tags v1, v2) with folder remote {remote}")
    return repo


def read_only(repo: Path) -> None:
    for tag in ("v1", "v2"):
        mnt = DEMO / f"mnt-{tag}"
        mnt.mkdir()
        sh(
            *FUSEFS,
            "mount",
            "--repo",
            str(repo),
            "--rev",
            tag,
            "--cache-dir",
            str(DEMO / "cache"),
            str(mnt),
        )
        try:
            sh("ls", "-lR", str(mnt / "data"))
            sh("cat", str(mnt / "model.pt"))
            sh("sha256sum", str(mnt / "data/images/class0/img000.bin"))
        finally:
            sh(*FUSEFS, "umount", str(mnt))


def writable(repo: Path) -> None:
    mnt = DEMO / "mnt-rw"
    mnt.mkdir()
    sh("git", "checkout", "-q", "--detach", cwd=repo, show=False)  # leave main free to move
    sh(
        *FUSEFS,
        "mount",
        "--repo",
        str(repo),
        "--rev",
        "main",
        "--rw",
        "--cache-dir",
        str(DEMO / "cache"),
        str(mnt),
    )
    try:
        (mnt / "data/images/class1/new_sample.bin").write_bytes(b"a new training sample\n")
        print(f"$ echo 'a new training sample' > {mnt}/data/images/class1/new_sample.bin")
        sh(*FUSEFS, "status", str(mnt))
        sh(*FUSEFS, "commit", str(mnt), "-m", "add a sample", "--push")
        sh("git", "log", "--oneline", "-3", "main", cwd=repo)
    finally:
        sh(*FUSEFS, "umount", str(mnt))
    clone = DEMO / "clone"
    sh("git", "clone", "-q", "-b", "main", str(repo), str(clone), show=False)
    sh(dvc(), "pull", "-q", cwd=clone, show=False)
    sh(dvc(), "status", cwd=clone)
    data = (clone / "data/images/class1/new_sample.bin").read_bytes()
    assert data == b"a new training sample\n", data
    print("a fresh git clone + dvc pull reads the commit back")


def main() -> None:
    if DEMO.exists():
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if f" {DEMO}/" in line:
                subprocess.run(["fusermount3", "-u", "-z", line.split()[4]], check=False)
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    repo = build_repo()
    read_only(repo)
    writable(repo)
    print("demo finished: everything above ran against real mounts")


if __name__ == "__main__":
    main()
