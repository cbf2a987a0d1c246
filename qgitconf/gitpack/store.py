"""Small helpers over dulwich object stores: tree walks, the tree digest, ancestry.

The tree digest (DESIGN "Formats", ``tree-sha256``) is computed here for both sides,
so publish and the agent cannot disagree on it.  Walks are bounded by ``Limits``
because the agent runs them over objects from an untrusted bundle (rule 5).
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from qgitconf.errors import BundleError, RollbackError, TooLargeError
from qgitconf.limits import Limits

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
MODE_TREE = 0o040000
MODE_LINK = 0o120000
MODE_GITLINK = 0o160000


class TreeEntry(NamedTuple):
    """One entry of a flattened tree: full path, mode, object id (hex).

    A named tuple: walks make one per entry, tens of thousands on large trees.
    """

    path: bytes
    mode: int
    sha: str

    @property
    def is_tree(self) -> bool:
        return self.mode == MODE_TREE

    @property
    def is_link(self) -> bool:
        return self.mode == MODE_LINK


def _get(store: Any, sha: str, kind: bytes, what: str) -> Any:
    try:
        obj = store[sha.encode("ascii")]
    except KeyError as e:
        raise BundleError(f"{what} {sha} is missing") from e
    if obj.type_name != kind:
        raise BundleError(f"{what} {sha} is a {obj.type_name.decode()}, not a {kind.decode()}")
    return obj


def read_commit(store: Any, sha: str) -> Any:
    """Return the dulwich ``Commit`` ``sha`` from ``store``, or raise BundleError."""
    return _get(store, sha, b"commit", "commit")


def walk_tree(
    store: Any, tree_sha: str, limits: Limits, *, system_only: bool = False
) -> list[TreeEntry]:
    """Flatten a tree into entries (trees included), bounded by ``limits``.

    With ``system_only``, only the top-level ``system`` tree and what is below it
    (issue 15's root step: its store holds nothing else of the tree).

    Raises:
        TooLargeError: too many entries or too deep.
        BundleError: a referenced tree is missing or not a tree.
    """
    out: list[TreeEntry] = []
    stack: list[tuple[bytes, str, int]] = [(b"", tree_sha, 0)]
    while stack:
        prefix, sha, depth = stack.pop()
        if depth > limits.max_tree_depth:
            raise TooLargeError(f"tree deeper than {limits.max_tree_depth} levels")
        for name, mode, item_sha in _tree_items(store, sha):
            if system_only and depth == 0 and (name != b"system" or mode != MODE_TREE):
                continue
            path = prefix + name
            entry = TreeEntry(path, mode, item_sha.decode("ascii"))
            out.append(entry)
            if len(out) > limits.max_tree_entries:
                raise TooLargeError(f"tree has more than {limits.max_tree_entries} entries")
            if stat.S_ISDIR(mode) and mode == MODE_TREE:
                stack.append((path + b"/", entry.sha, depth + 1))
    out.sort(key=lambda e: e.path)
    return out


def _tree_items(store: Any, sha: str) -> list[tuple[bytes, int, bytes]]:
    """``(name, mode, hex id)`` of each entry of tree ``sha``.

    A store that keeps trees raw (the quarantine: checked when they came in, or
    read from the agent's cache of checked trees) offers ``raw_tree``; its content is
    parsed by qgitconf's strict parser without building a ``Tree``.  Other stores
    give dulwich objects.
    """
    raw_tree = getattr(store, "raw_tree", None)
    data = raw_tree(sha.encode("ascii")) if raw_tree is not None else None
    if data is None:
        tree = _get(store, sha, b"tree", "tree")
        return [(item.path, item.mode, item.sha) for item in tree.iteritems()]
    # Lazy: the no-op receive, status and publish rows of ``make bench`` import this
    # module and not compat (with dulwich's errors).
    from qgitconf.gitpack.compat import parse_tree_entries

    return parse_tree_entries(data)


def blob_bytes(store: Any, sha: str) -> bytes:
    """Return the content of blob ``sha``."""
    return bytes(_get(store, sha, b"blob", "blob").as_raw_string())


def tree_sha256(
    store: Any, entries: list[TreeEntry], known: Mapping[str, bytes] | None = None
) -> str:
    """The ``tree-sha256`` of DESIGN "Formats" over the non-tree ``entries``.

    SHA-256 of, for each non-tree entry sorted by full path bytes,
    ``<mode as git writes it> <path>\\0<SHA-256 of the blob content>``.
    Gitlinks have no blob here and are refused by the path rules before this runs.
    ``known`` maps blob ids to content SHA-256s already computed (e.g. while the
    agent checked the new objects), so those blobs are not read again.
    """
    h = hashlib.sha256()
    cache: dict[str, bytes] = dict(known or {})
    for e in sorted((e for e in entries if not e.is_tree), key=lambda e: e.path):
        digest = cache.get(e.sha)
        if digest is None:
            digest = hashlib.sha256(blob_bytes(store, e.sha)).digest()
            cache[e.sha] = digest
        h.update(b"%o " % e.mode + e.path + b"\0" + digest)
    return h.hexdigest()


def iter_ancestors(store: Any, sha: str, limit: int) -> Iterator[str]:
    """Yield ``sha`` and its ancestors (breadth first), at most ``limit`` commits."""
    seen: set[str] = set()
    queue = [sha]
    while queue:
        cur = queue.pop(0)
        if cur in seen:
            continue
        seen.add(cur)
        if len(seen) > limit:
            raise TooLargeError(f"history walk passed {limit} commits")
        yield cur
        try:
            commit = store[cur.encode("ascii")]
        except KeyError:
            continue  # a shallow edge: the prerequisite's own parents are not needed
        queue.extend(p.decode("ascii") for p in commit.parents)


def check_descends(store: Any, tip: str, ancestor: str | None, limit: int) -> None:
    """Require that ``tip`` equals or descends from ``ancestor`` (rule 6).

    Raises:
        RollbackError: it does not.
    """
    if ancestor is None or tip == ancestor:
        return
    for sha in iter_ancestors(store, tip, limit):
        if sha == ancestor:
            return
    raise RollbackError(f"commit {tip} does not descend from the last accepted {ancestor}")


# -- repositories and refs: the agent's and root's own bare repositories ----------------------
# dulwich is imported in each helper, not at the top: ``qgitconf status`` imports this
# module and needs none of them (the status rows of ``make bench``).


def open_repo(path: str) -> Any:
    """dulwich's ``Repo`` for the bare repository at ``path`` (the caller closes it)."""
    from dulwich.repo import Repo

    return Repo(path)


def open_refs(path: str, logger: Any = None) -> Any:
    """dulwich's loose-ref container of the repository at ``path`` (cheaper than the
    whole ``Repo``); ``logger`` is called as dulwich calls a reflog writer."""
    from dulwich.refs import DiskRefsContainer

    if logger is None:
        return DiskRefsContainer(path)
    return DiskRefsContainer(path, logger=logger)


def ref_locked_error() -> Any:
    """The exception class dulwich raises when a ref's lock file is already there (its
    ``lockfilename`` names the file)."""
    from dulwich.file import FileLocked

    return FileLocked
