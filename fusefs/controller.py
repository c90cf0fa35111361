"""What a writable mount's daemon does for `fusefs status`, `commit` and `discard`.

Each request holds mutations (`WritableFileSystem.freeze`) while it reads the staged view, so
what is listed or committed is one consistent state. A commit clears the staging area only
after the branch moved (`Journal.start_generation`); after any failure everything stays staged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pyfuse3
import trio

from . import planner
from . import tree as treemod
from .commit import CommitRequest, CommitResult, Progress, checked_out_in, make_commit
from .errors import UserError
from .filesystem import FileSystem
from .records import Reset
from .writable import WritableFileSystem

log = logging.getLogger(__name__)

Reply = dict[str, Any]


class Controller:
    def __init__(self, fs: WritableFileSystem, branch: str, push_url: str | None) -> None:
        self.fs = fs
        self.branch = branch
        self.push_url = push_url

    async def handle(self, req: dict[str, Any], progress: Callable[[Reply], None]) -> Reply:
        op = req.get("op")
        if op == "status":
            return await self._status()
        if op == "commit":
            return await self._commit(req, progress)
        if op == "discard":
            return await self._discard(req)
        raise UserError(f"unknown request {op!r}")

    async def _frozen(self, fn: Callable[[], Any]) -> Any:
        self.fs.freeze()
        try:
            return await trio.to_thread.run_sync(fn)
        finally:
            self.fs.thaw()

    async def _status(self) -> Reply:
        lines = await self._frozen(lambda: planner.status(self.fs))
        return {
            "ok": True,
            "branch": self.branch,
            "base": self.fs.base.tree.commit,
            "changes": [line.as_json() for line in lines],
        }

    async def _commit(self, req: dict[str, Any], progress: Callable[[Reply], None]) -> Reply:
        message = req.get("message")
        if not isinstance(message, str) or not message.strip():
            raise UserError("a commit message is required (-m)")
        author = req.get("author")
        push = bool(req.get("push"))

        def work() -> tuple[CommitResult, treemod.RevisionTree, list[bytes]]:
            changed = [line.path for line in planner.status(self.fs)]
            outputs, removed = planner.plan(self.fs)
            if not outputs and not removed:
                raise UserError("nothing to commit")
            request = CommitRequest(
                base=self.fs.base.tree.commit,
                branch=self.branch,
                message=message,
                author=author if isinstance(author, str) else None,
                outputs=outputs,
                removed=removed,
                push=push,
            )
            base = self.fs.base
            result = make_commit(
                base.repo,
                base.cache,
                base.remotes.default,
                request,
                progress=lambda p: progress(_progress(p)),
                push_url=self.push_url,
                allow_checked_out=True,
            )
            new_tree = treemod.build(base.repo, result.commit, base.repo.ls_tree(result.commit))
            paths = [p.encode("utf-8", "surrogateescape") for p in changed + result.metafiles]
            return result, new_tree, paths

        self.fs.freeze()
        base_commit = self.fs.base.tree.commit
        try:
            result, new_tree, paths = await trio.to_thread.run_sync(work)
            self._switch(new_tree)
            self.fs.journal.start_generation(result.commit.encode())
        finally:
            self.fs.thaw()
        await self._invalidate(paths)
        worktrees = [str(p) for p in checked_out_in(self.fs.base.repo, self.branch)]
        return {"ok": True, **asdict(result), "base": base_commit, "checked_out": worktrees}

    def _switch(self, new_tree: treemod.RevisionTree) -> None:
        """Serve the new commit: same content, so only its metafiles look different."""
        old = self.fs.base
        new = FileSystem(new_tree, old.repo, old.cache, old.remotes, old.settings, old.nursery)
        new.adopt_pins(old)  # handles opened before the commit unpin through the new one
        self.fs.base = new

    async def _discard(self, req: dict[str, Any]) -> Reply:
        raw = req.get("paths") or []
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise UserError("paths must be a list of strings")
        paths = tuple(p.strip("/").encode("utf-8", "surrogateescape") for p in raw)

        def work() -> list[bytes]:
            lines = planner.status(self.fs)
            hit = [
                line
                for line in lines
                if not paths or any(_under(line.path, p) or _under(line.old_path, p) for p in paths)
            ]
            if not hit:
                raise UserError("nothing staged there" if paths else "nothing staged")
            return [
                p.encode("utf-8", "surrogateescape")
                for line in hit
                for p in (line.path, line.old_path)
                if p is not None
            ]

        self.fs.freeze()
        try:
            changed = await trio.to_thread.run_sync(work)
            self.fs.journal.append(Reset(paths))
            self.fs.journal.sync()
        finally:
            self.fs.thaw()
        await self._invalidate(changed)
        for path in changed:
            self.fs.ids.drop(path)
        return {"ok": True, "discarded": len(changed)}

    async def _invalidate(self, paths: list[bytes]) -> None:
        """Make the kernel forget what it cached for these paths (outside any FUSE request)."""
        ids = self.fs.ids
        inodes = [ids.inodes[p] for p in paths if p in ids.inodes]
        entries = []
        for path in paths:
            parent, _, name = path.rpartition(b"/")
            if parent in ids.inodes:
                entries.append((ids.inodes[parent], name))

        def work() -> None:
            for inode in inodes:
                with contextlib.suppress(OSError):  # the kernel had nothing cached
                    pyfuse3.invalidate_inode(inode)
            for parent_inode, name in entries:
                pyfuse3.invalidate_entry_async(parent_inode, name, ignore_enoent=True)

        await trio.to_thread.run_sync(work)


def _under(path: str | None, prefix: bytes) -> bool:
    if path is None:
        return False
    raw = path.encode("utf-8", "surrogateescape")
    return raw == prefix or raw.startswith(prefix + b"/") or not prefix


def _progress(p: Progress) -> Reply:
    return asdict(p)
