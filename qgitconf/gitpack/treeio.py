"""Trees written and looked up with dulwich: a throwaway repository of two sides' trees
and a path's entry under a tree, for local diffs.

Apart from store.py, which the no-op receive, status and publish rows of ``make bench``
import and which loads no dulwich.
"""

from __future__ import annotations

from typing import Any

from dulwich.index import commit_tree
from dulwich.object_store import tree_lookup_path
from dulwich.objects import Blob
from dulwich.repo import Repo


def build_trees(git_dir: str, sides: list[list[tuple[bytes, bytes, int]]]) -> list[str]:
    """A new bare repository at ``git_dir`` holding one tree per side, each given as
    ``(path, content, mode)`` entries; returns the trees' ids (hex)."""
    repo = Repo.init_bare(git_dir)
    try:
        store = repo.object_store
        out: list[str] = []
        for entries in sides:
            items = []
            for path, data, mode in entries:
                blob = Blob.from_string(data)
                store.add_object(blob)
                items.append((path, blob.id, mode))
            out.append(commit_tree(store, items).decode("ascii"))
        return out
    finally:
        repo.close()


def lookup_path(store: Any, tree: Any, path: bytes) -> tuple[int, str]:
    """The mode and id (hex) of ``path`` under ``tree``; KeyError if there is none."""
    mode, sha = tree_lookup_path(store.__getitem__, tree, path)
    return mode, sha.decode("ascii")
