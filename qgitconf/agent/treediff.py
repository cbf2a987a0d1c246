"""Diffs made through git trees (dulwich): any two sides written to a throwaway
repository and diffed by review's isolated git, and what qgitconf applied at a path read
from the agent repository (``qgitconf diff``, ``apply --interactive``).

Apart from diff.py, which review imports on the first-update receive rows of
``make bench``: those load no dulwich repository code.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgitconf.agent.diff import builtin_diff, git_available, git_diff_in, git_mode
from qgitconf.agent.state import AgentState
from qgitconf.core.risks import FileChange
from qgitconf.gitpack.store import MODE_LINK, blob_bytes, read_commit
from qgitconf.gitpack.treeio import build_trees, lookup_path
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Entry


def diff_changes(home: Path, files: Sequence[FileChange]) -> tuple[str, str]:
    """A unified diff of ``files`` (any old and new contents: what was applied against
    what is on disk, or the disk against the update), sanitised, and who made it
    (``"git"`` or ``"builtin"``).

    The same isolated git as review's (:func:`git_diff`: the system's git, no user or
    system config, no attributes, every option pinned, ``--text``, no external diff,
    no textconv): both sides are written as blobs and trees into a throwaway bare
    repository (made by dulwich: no template, no hooks), then ``git diff OLD NEW``
    runs there.  Without git, :func:`builtin_diff`.  Rule 11: the text is sanitised.
    """
    if not files:
        return "", "git" if git_available() else "builtin"
    raw: bytes | str | None = None
    if git_available():
        with tempfile.TemporaryDirectory(prefix="qgitconf-diff-") as tmp:
            old, new = _write_trees(Path(tmp), files)
            raw = git_diff_in(Path(tmp), home, old, new, (), stat=False)
    tool = "git" if raw is not None else "builtin"
    if raw is None:
        raw = builtin_diff(files)
    return sanitize(raw, keep_newlines=True), tool


def _write_trees(git_dir: Path, files: Sequence[FileChange]) -> tuple[str, str]:
    """Blobs and trees of both sides of ``files`` in a new bare repository at ``git_dir``."""
    sides: list[list[tuple[bytes, bytes, int]]] = [[], []]
    for f in files:
        for side, mode, data in ((0, f.old_mode, f.old), (1, f.new_mode, f.new)):
            if mode is not None:
                sides[side].append((f.path.encode("utf-8", "surrogateescape"), data, mode))
    old, new = build_trees(str(git_dir), sides)
    return old, new


def applied_contents(
    state: AgentState, records: Mapping[str, Entry]
) -> dict[str, tuple[int, bytes]]:
    """What qgitconf wrote at each path of ``records`` (manifest records): ``(git mode,
    bytes)``.  A file's content is looked up in the applied commit, then in the commits
    of earlier generations (a path left out by ``--keep`` keeps an older content), and
    taken only if its SHA-256 is the recorded one; a path whose content is in none of
    them is left out of the result."""
    out: dict[str, tuple[int, bytes]] = {}
    files: dict[str, Entry] = {}
    for path, rec in records.items():
        mode = git_mode(rec)
        if mode == MODE_LINK:
            out[path] = (mode, str(rec.get("target", "")).encode("utf-8", "surrogateescape"))
        elif mode is not None:
            files[path] = rec
    if not files:
        return out
    commits: list[str] = []
    for c in [state.applied_commit, *(g.get("commit") for g in reversed(state.generations()))]:
        if isinstance(c, str) and c not in commits:
            commits.append(c)
    repo = state.repo()
    try:
        store = repo.object_store
        trees: list[Any] = []
        for c in commits:
            try:
                trees.append(read_commit(store, c).tree)
            except Exception:  # noqa: S112 - a commit gone from the repo: look elsewhere
                continue
        for path, rec in files.items():
            name = path.encode("utf-8", "surrogateescape")
            for tree in trees:
                try:
                    _mode, sha = lookup_path(store, tree, name)
                    data = blob_bytes(store, sha)
                except Exception:  # noqa: S112 - not in this commit (or not a blob)
                    continue
                if hashlib.sha256(data).hexdigest() == rec.get("sha256"):
                    out[path] = (git_mode(rec) or 0o100644, data)
                    break
    finally:
        repo.close()
    return out
