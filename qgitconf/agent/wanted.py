"""The wanted tree of a commit: its entries read from the agent's packs, each blob
inflated (beside the plan, in a second thread) and hashed, or its SHA-256 taken from
Receive's known-object sidecars; and whether Receive already checked this very tree
under the same path rules (the apply rows of ``make bench``)."""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any

from qgitconf.agent.state import AgentState
from qgitconf.core.paths import PathRules
from qgitconf.core.pathtree import check_tree, rules_digest
from qgitconf.core.systemrules import SYSTEM_TOP
from qgitconf.errors import (
    ApplyError,
)
from qgitconf.gitpack.objcache import KNOWN_DIR, load_known
from qgitconf.gitpack.packread import PackReader
from qgitconf.gitpack.store import blob_bytes, read_commit, walk_tree
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Entry

SYSTEM_TOP_B = SYSTEM_TOP.encode("ascii")


class Wanted:
    """One non-tree entry of the tree to apply.

    Plain classes here, not dataclasses: ``dataclasses`` imports ``inspect``, some
    5 ms of every ``qgitconf apply``."""

    __slots__ = ("_data", "blob", "digest", "kind", "mode", "path", "source", "state")

    def __init__(
        self,
        path: str,
        kind: str,
        mode: int,
        data: bytes | None,
        blob: str = "",
        digest: bytes = b"",
    ) -> None:
        self.path = path
        self.kind = kind  # "file" | "link"
        self.mode = mode
        self._data = data  # None: still being inflated by ``source``
        self.blob = blob  # the git id of the content, when read from the agent repo
        # the SHA-256 of ``data`` that Receive took of the blob (objcache), if known
        self.digest = digest
        self.source: _Inflating | None = None
        self.state: AgentState | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            if self.source is None or self.state is None:
                raise ApplyError(f"the content of '{sanitize(self.path)}' was not read")
            self._data = self.source.get(self.state, self.blob)
        return self._data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wanted) and all(
            getattr(self, k) == getattr(other, k) for k in ("path", "kind", "mode", "data")
        )

    def __repr__(self) -> str:
        return f"Wanted({self.path!r}, {self.kind!r}, {self.mode:#o}, {len(self.data)} bytes)"

    def record(self) -> Entry:
        if self.kind == "link":
            return {"type": "link", "target": self.data.decode("utf-8")}
        digest = self.digest if len(self.digest) == 32 else hashlib.sha256(self.data).digest()
        return {"type": "file", "mode": self.mode, "sha256": digest.hex()}


def wanted_tree(
    state: AgentState,
    commit: str | None,
    rules: PathRules,
    limits: Limits,
    *,
    system: bool = False,
) -> dict[str, Wanted]:
    """Read the tree of ``commit`` from the agent repo (rule 7 re-checked at apply,
    unless Receive checked this very tree with the same rules: :func:`checked_at_receive`).

    The home part leaves out the reserved ``system/`` directory; with ``system`` only
    the files below it are read, named relative to ``/`` (issue 15's root step, whose
    own repo holds only that part of the tree).

    Trees and blobs come from the agent's packs in bulk (:mod:`qgitconf.gitpack.packread`:
    each pack's index read once, the blobs inflated in pack order); an object in no
    pack, and the commit's own parse, from dulwich.
    """
    if commit is None:
        return {}
    packs = PackReader(state.objects)
    inflating: _Inflating | None = None
    store = _AgentObjects(state, packs)
    try:
        tree = store.commit_tree(commit)
        entries = walk_tree(store, tree, limits, system_only=system)
        if system or not checked_at_receive(state, tree, rules):
            check_tree(
                ((e.path, e.mode, _blob(store, e.sha) if e.is_link else None) for e in entries),
                rules,
            )
        files = [
            e
            for e in entries
            if not e.is_tree and (e.path.split(b"/", 1)[0] == SYSTEM_TOP_B) == system
        ]
        links = {e.sha: _blob(store, e.sha) for e in files if e.is_link}
        blobs = [e.sha for e in files if not e.is_link]
        if system:  # root reads everything now and hashes it itself
            raw = packs.bulk(blobs)
            digests: dict[str, bytes] = {}
        else:  # inflated by a thread while the plan is made (it owns ``packs`` now)
            inflating = _Inflating(packs, blobs)
            raw = {}
            digests = _known_digests(state)
        out: dict[str, Wanted] = {}
        for e in files:
            path = e.path.decode("utf-8")
            if system:
                path = path.split("/", 1)[1]
            mode = 0o755 if e.mode == 0o100755 else 0o644
            if e.is_link:
                out[path] = Wanted(path, "link", mode, links[e.sha], e.sha)
            elif inflating is not None:
                want = Wanted(path, "file", mode, None, e.sha, digests.get(e.sha, b""))
                want.source, want.state = inflating, state
                out[path] = want
            else:
                got = raw.get(e.sha)
                data = got[1] if got is not None and got[0] == _BLOB else _blob(store, e.sha)
                out[path] = Wanted(path, "file", mode, data, e.sha)
        return out
    finally:
        store.close()
        if inflating is None:
            packs.close()


class _Inflating:
    """The blobs of the tree to apply, inflated from the agent's packs by one thread
    while the main thread makes the plan and begins the journal (``zlib`` and the
    file system calls release the GIL: on two cores the inflating costs the apply
    little more than the longer of the two).  The thread owns the ``PackReader`` and
    closes it when done; :meth:`get` waits for it, and raises what it raised (a
    damaged pack: before anything is written, or rolled back)."""

    def __init__(self, packs: PackReader, shas: list[str]) -> None:
        self._packs = packs
        self._got: dict[str, tuple[int, bytes]] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(shas,), daemon=True)
        self._thread.start()

    def _run(self, shas: list[str]) -> None:
        try:
            self._got = self._packs.bulk(shas)
        except BaseException as e:  # handed to the main thread by get()
            self._error = e
        finally:
            self._packs.close()

    def get(self, state: AgentState, sha: str) -> bytes:
        """The content of blob ``sha`` (from dulwich if it is in no pack)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        got = self._got.get(sha)
        if got is not None and got[0] == _BLOB:
            return got[1]
        repo = state.repo()
        try:
            return _blob(repo.object_store, sha)
        finally:
            repo.close()


def _known_digests(state: AgentState) -> dict[str, bytes]:
    """The SHA-256 of each blob Receive checked (blob id -> digest), from the agent
    repo's sidecars (:mod:`qgitconf.gitpack.objcache`: written by Receive from the bytes it
    checked, in the agent state that no update can write; each read capped, a
    malformed one skipped, and a blob it does not name is hashed here)."""
    return load_known(state.objects.parent / KNOWN_DIR).blob_sha256


def checked_at_receive(state: AgentState, tree: str, rules: PathRules) -> bool:
    """Receive staged an update whose tip has ``tree`` after every path of it passed
    :func:`~qgitconf.core.pathtree.check_tree` with rules of the same digest (code and
    settings): checking it again would give the same verdict.

    The record is in the agent state, which no update can write (rule 7) and which
    only the user (who owns $HOME as well) can change.  Never used by the root step
    (``wanted_tree(system=True)``): root does not take the user's word for a check.
    Any other tree (a revert to an older generation, another commit) is checked again.
    """
    staged = state.load().get("staged")
    checked = staged.get("checked") if isinstance(staged, dict) else None
    if not isinstance(checked, dict) or not tree or checked.get("tree") != tree:
        return False
    digest = checked.get("rules")
    return isinstance(digest, str) and digest == rules_digest(rules)


class _AgentObjects:
    """The agent repo's objects for :func:`wanted_tree`: the packs first
    (``raw_tree``, ``get_raw``), dulwich's store for anything else (opened only then).
    """

    def __init__(self, state: AgentState, packs: PackReader) -> None:
        self._state = state
        self._packs = packs
        self._repo: Any = None

    def _store(self) -> Any:
        if self._repo is None:
            self._repo = self._state.repo()
        return self._repo.object_store

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()

    def commit_tree(self, commit: str) -> str:
        """The tree id of ``commit`` (raises BundleError if it is missing or no commit).

        A commit begins with its ``tree`` line (git writes it so, and Receive checked
        the commit with dulwich's ``Commit.check``); anything else is left to dulwich.
        """
        try:
            kind, raw = self._packs.get_raw(commit)
        except KeyError:
            kind, raw = 0, b""
        if kind == 1 and len(raw) > 46 and raw[:5] == b"tree " and raw[45:46] == b"\n":
            tree = raw[5:45].decode("ascii", "replace")
            if all(c in "0123456789abcdef" for c in tree):
                return tree
        return str(read_commit(self._store(), commit).tree.decode("ascii"))

    def raw_tree(self, sha: bytes) -> bytes | None:
        return self._packs.raw_tree(sha)

    def __getitem__(self, sha: bytes) -> Any:
        return self._store()[sha]

    def get_raw(self, sha: bytes) -> tuple[int, bytes]:
        try:
            return self._packs.get_raw(sha.decode("ascii"))
        except KeyError:
            return self._store().get_raw(sha)  # type: ignore[no-any-return]


def _blob(store: Any, sha: str) -> bytes:
    """The content of blob ``sha``: its raw bytes, without building a dulwich object
    (``blob_bytes`` does, which costs as much again on 10,000 small files)."""
    try:
        type_num, raw = store.get_raw(sha.encode("ascii"))
    except KeyError:
        return blob_bytes(store, sha)  # raises the BundleError for a missing blob
    if type_num != _BLOB:
        return blob_bytes(store, sha)  # raises the BundleError for a non-blob
    return bytes(raw)


_BLOB = 3  # git's object type number of a blob
