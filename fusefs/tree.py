"""A Git revision of a DVC repository as an immutable tree of nodes.

The tree is what `git checkout REV && dvc pull` leaves in a working tree: git blobs, symlinks
and exec bits as Git records them, plus every cached output named by a `*.dvc` file or a
`dvc.lock`. Directory outputs stay unexpanded until someone looks inside; their `.dir` manifest
is then parsed (by the caller, off the event loop) and grafted in with `expand`.

Invariants: inode numbers are assigned once and never reused within a tree; nodes are never
removed; a git-tracked path always wins over an output that names the same path. Methods here
are pure in-memory work: blocking I/O happens before `build` returns or in the caller.
"""

from __future__ import annotations

import enum
import errno
import logging
import posixpath
from dataclasses import dataclass, field

from .errors import FsError
from .git import Repo, TreeEntry
from .metafile import ManifestEntry, MetafileError, Out, parse_dvcfile, parse_lockfile
from .objects import HashInfo

log = logging.getLogger(__name__)

ROOT_INODE = 1


class Kind(enum.Enum):
    DIR = "dir"
    FILE = "file"
    LINK = "link"


@dataclass(slots=True, eq=False)
class Node:
    inode: int
    parent: int
    name: bytes
    kind: Kind
    exec: bool = False
    size: int | None = None  # None: an object whose size is not known yet
    blob: str | None = None  # git object for git-tracked files and symlinks
    obj: HashInfo | None = None  # DVC object: a file's content, or a directory output's .dir
    out: Out | None = None  # the output this node is, or belongs to
    children: dict[bytes, int] | None = field(default_factory=dict)  # None: not expanded yet
    error: str | None = None  # set when the node cannot be served; operations answer EIO
    _listing: list[Node] | None = None
    sized: bool = False  # every file directly in this folder has a known size

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR


class RevisionTree:
    def __init__(self, commit: str, mtime_ns: int) -> None:
        self.commit = commit
        self.mtime_ns = mtime_ns
        self.nodes: dict[int, Node] = {}
        self.outs: list[Out] = []
        # output path -> (metafile path, True if a dvc.lock names it): writable mounts need both
        self.metafiles: dict[tuple[bytes, ...], tuple[bytes, bool]] = {}
        self.problems: list[str] = []
        self._new(ROOT_INODE, b"", Kind.DIR)

    def _new(self, parent: int, name: bytes, kind: Kind, **attrs: object) -> Node:
        node = Node(len(self.nodes) + 1, parent, name, kind, **attrs)  # type: ignore[arg-type]
        self.nodes[node.inode] = node
        if node.inode != ROOT_INODE:
            children = self.nodes[parent].children
            assert children is not None
            children[name] = node.inode
        return node

    # -- queries ---------------------------------------------------------------------------

    def node(self, inode: int) -> Node:
        try:
            return self.nodes[inode]
        except KeyError:
            raise FsError(errno.ENOENT, f"no inode {inode}") from None

    def lookup(self, parent: Node, name: bytes) -> Node | None:
        assert parent.children is not None, "expand before lookup"
        inode = parent.children.get(name)
        return None if inode is None else self.nodes[inode]

    def listing(self, directory: Node) -> list[Node]:
        """Children sorted by name: a stable order, so readdir offsets are indexes."""
        if directory._listing is None:
            assert directory.children is not None, "expand before listing"
            names = sorted(directory.children)
            directory._listing = [self.nodes[directory.children[n]] for n in names]
        return directory._listing

    def find(self, parts: tuple[bytes, ...]) -> Node | None:
        """The node at a path, following only expanded directories."""
        node = self.nodes[ROOT_INODE]
        for part in parts:
            if node.children is None:
                return None
            found = self.lookup(node, part)
            if found is None:
                return None
            node = found
        return node

    def path_of(self, node: Node) -> bytes:
        parts = []
        while node.inode != ROOT_INODE:
            parts.append(node.name)
            node = self.nodes[node.parent]
        return b"/".join(reversed(parts))

    # -- building ------------------------------------------------------------------------------

    def add_git(self, entries: list[TreeEntry]) -> None:
        """Graft `git ls-tree -r -t` entries (parents listed before children)."""
        dirs: dict[bytes, Node] = {b"": self.nodes[ROOT_INODE]}
        for entry in entries:
            head, _, name = entry.path.rpartition(b"/")
            parent = dirs[head]
            if entry.kind in ("tree", "commit"):  # a submodule checks out as an empty folder
                dirs[entry.path] = self._new(parent.inode, name, Kind.DIR)
            elif entry.mode == 0o120000:
                self._new(parent.inode, name, Kind.LINK, blob=entry.sha, size=entry.size)
            else:
                self._new(
                    parent.inode,
                    name,
                    Kind.FILE,
                    blob=entry.sha,
                    size=entry.size,
                    exec=bool(entry.mode & 0o111),
                )

    def add_out(self, out: Out, metafile: bytes = b"", pipeline: bool = False) -> None:
        """Graft one output, creating missing parent folders; conflicts are logged and skipped."""
        node = self.nodes[ROOT_INODE]
        for part in out.path[:-1]:
            assert node.children is not None
            child = self.lookup(node, part)
            if child is None:
                child = self._new(node.inode, part, Kind.DIR)
            elif not child.is_dir or child.out is not None:
                self._skip(
                    out, f"{self._show(out)} lies inside {child.kind.value} {self.path_of(child)!r}"
                )
                return
            node = child
        existing = self.lookup(node, out.path[-1])
        if existing is not None:
            what = "git-tracked" if existing.out is None else f"named by {existing.out.source}"
            self._skip(out, f"{self._show(out)} is already {what}")
            return
        if out.hash.is_dir:
            self._new(node.inode, out.path[-1], Kind.DIR, obj=out.hash, out=out, children=None)
        else:
            self._new(
                node.inode,
                out.path[-1],
                Kind.FILE,
                obj=out.hash,
                out=out,
                size=out.size,
                exec=out.isexec,
            )
        self.outs.append(out)
        self.metafiles[out.path] = (metafile, pipeline)

    @staticmethod
    def _show(out: Out) -> str:
        return f"output {b'/'.join(out.path).decode('utf-8', 'replace')!r} ({out.source})"

    def _skip(self, out: Out, why: str) -> None:
        log.warning("%s; left out", why)
        self.problems.append(why)

    def expand(self, directory: Node, entries: list[ManifestEntry]) -> None:
        """Graft a directory output's manifest entries below it."""
        assert directory.children is None and directory.obj is not None
        directory.children = {}
        dirs: dict[tuple[bytes, ...], Node] = {(): directory}
        for entry in entries:
            parent = self._ensure_dirs(dirs, entry.path[:-1], directory.out)
            self._new(
                parent.inode,
                entry.path[-1],
                Kind.FILE,
                obj=directory.obj.file_entry(entry.md5),
                out=directory.out,
            )

    def _ensure_dirs(
        self, dirs: dict[tuple[bytes, ...], Node], parts: tuple[bytes, ...], out: Out | None
    ) -> Node:
        node = dirs.get(parts)
        if node is None:
            parent = self._ensure_dirs(dirs, parts[:-1], out)
            node = self._new(parent.inode, parts[-1], Kind.DIR, out=out)
            dirs[parts] = node
        return node

    def fail(self, directory: Node, why: str) -> None:
        """Mark an output that cannot be served: it stays visible, operations on it fail."""
        directory.error = why
        directory.children = {}


def build(repo: Repo, commit: str, entries: list[TreeEntry]) -> RevisionTree:
    """The tree of one commit: git entries plus every output its metafiles name (blocking)."""
    tree = RevisionTree(commit, repo.commit_time(commit) * 1_000_000_000)
    tree.add_git(entries)
    blobs = {e.path: e.sha for e in entries if e.kind == "blob"}
    for out, metafile in _outs(repo, entries, blobs, tree.problems):
        tree.add_out(out, metafile, pipeline=metafile.rpartition(b"/")[2] == b"dvc.lock")
    return tree


def is_dvc_repo(entries: list[TreeEntry]) -> bool:
    return any(e.path == b".dvc" and e.kind == "tree" for e in entries)


def _outs(
    repo: Repo, entries: list[TreeEntry], blobs: dict[bytes, str], problems: list[str]
) -> list[tuple[Out, bytes]]:
    outs: list[tuple[Out, bytes]] = []
    for entry in entries:
        if entry.kind != "blob" or entry.mode == 0o120000:
            continue
        head, _, name = entry.path.rpartition(b"/")
        if not (name == b"dvc.lock" or (name.endswith(b".dvc") and name != b".dvc")):
            continue
        if head == b".dvc" or head.startswith(b".dvc/"):
            continue
        label = entry.path.decode("utf-8", "replace")
        folder = tuple(head.split(b"/")) if head else ()
        try:
            data = repo.read_blob(entry.sha)
            if name == b"dvc.lock":
                yaml_sha = blobs.get(posixpath.join(head, b"dvc.yaml"))
                dvcyaml = repo.read_blob(yaml_sha) if yaml_sha else None
                got, bad = parse_lockfile(data, folder, label, dvcyaml)
            else:
                got, bad = parse_dvcfile(data, folder, label)
        except MetafileError as exc:
            log.warning("%s; its outputs are left out", exc)
            problems.append(str(exc))
            continue
        for problem in bad:
            log.warning("%s; left out", problem)
        problems.extend(bad)
        outs.extend((out, entry.path) for out in got)
    return outs
