"""Apply a verified tree into $HOME, revert to an earlier generation, restore (rules 9, 10).

``make_plan`` is side-effect free: it compares the wanted tree, what qgitconf wrote
last time (the manifest) and what is on disk now, and lists every action and every
conflict before anything is written.  Conflicts - a managed file changed locally
(drift) or a file qgitconf never wrote - stop the apply unless the user chose
``overwrite`` (or ``keep``/``only`` to leave that file alone); whatever is overwritten is
kept (``originals/`` the first time, ``backups/<N>/`` after that) so ``revert`` can bring
it back.  Deletions touch only files qgitconf wrote that are unchanged since.

``execute`` carries a plan out through the journal (``qgitconf.agent.journal``): plan
first, then an undo copy of everything it will replace, then the changes, then the
commit; a failure or a crash at any point is rolled back (or, past the commit point,
finished).

Kept originals are named by the SHA-256 of their path (``originals/<sha256>``;
``originals.json`` maps each path to its copy): they stay for many generations, and a
flat, fixed-length name is never a directory on the way to another kept original (the
user's symlink ``~/.config/nvim -> ../dotfiles/nvim`` kept as an original, and later a
file ``.config/nvim/init.lua`` kept too).  Backups keep the path
(``backups/<N>/<path>``): one generation never holds both a path and one below it.
Every kept copy is written, read and removed through a :class:`HomeFS` of the state
directory, which never follows a link, so nothing is ever written or deleted through a
kept symlink (issue 14).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from qgitconf.agent.homefs import DiskState, HomeFS, content, stat_entry, stat_key
from qgitconf.agent.journal import Fault, Journal, is_kept_path, record_commit
from qgitconf.agent.signals import SignalGuard, Signalled, error_for, signal_name
from qgitconf.agent.state import AgentState
from qgitconf.core.paths import PathRules
from qgitconf.core.pathtree import check_tree, rules_digest
from qgitconf.core.systemrules import SYSTEM_TOP
from qgitconf.errors import (
    ApplyError,
    DriftError,
    LocalStateError,
    NothingStagedError,
    UsageError,
)
from qgitconf.gitpack.packread import PackReader
from qgitconf.gitpack.store import blob_bytes, read_commit, walk_tree
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

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

    def record(self) -> dict[str, Any]:
        if self.kind == "link":
            return {"type": "link", "target": self.data.decode("utf-8")}
        digest = self.digest if len(self.digest) == 32 else hashlib.sha256(self.data).digest()
        return {"type": "file", "mode": self.mode, "sha256": digest.hex()}


class Action:
    """One step of a plan.

    ``op`` is "write" (create or modify), "restore" (put a kept original back),
    "delete", "mkdir", "rmdir", "keep" (already right on disk: only recorded) or
    "adopt" (a file qgitconf did not write is already what the update wants: it
    stays as it is, and a copy is kept as its original so that ``revert --to 0``
    puts it back instead of removing it).
    """

    __slots__ = ("_data", "blob", "conflict", "keep", "new", "old", "op", "path", "src")

    def __init__(
        self,
        op: str,
        path: str,
        new: dict[str, Any] | None = None,  # the record written (write, restore)
        data: bytes = b"",  # file content, or the symlink target
        old: DiskState | None = None,
        keep: str | None = None,  # "original" | "backup": copy the current content first
        conflict: bool = False,
        blob: str = "",  # a write's git id of ``data`` (Wanted.blob), "" if unknown
        src: Wanted | None = None,  # a write's entry: ``data`` is its (read when used)
    ) -> None:
        self.op = op
        self.path = path
        self.new = new
        self._data = data
        self.old = DiskState("missing") if old is None else old
        self.keep = keep
        self.conflict = conflict
        self.blob = blob
        self.src = src

    @property
    def data(self) -> bytes:
        return self.src.data if self.src is not None else self._data

    def __repr__(self) -> str:
        return f"Action({self.op!r}, {self.path!r}, keep={self.keep!r})"


class Plan:
    __slots__ = (
        "actions",
        "blockers",
        "commit",
        "conflicts",
        "left",
        "manifest",
        "originals",
        "skipped",
    )

    def __init__(self, commit: str | None) -> None:
        self.commit = commit
        self.actions: list[Action] = []  # in execution order
        self.conflicts: list[str] = []  # one line each, sanitised
        self.blockers: list[str] = []  # conflicts --overwrite cannot settle
        self.left: list[str] = []  # deletions not done (changed locally)
        self.skipped: list[str] = []  # left alone by --keep / --only
        self.manifest: dict[str, dict[str, Any]] = {}
        self.originals: dict[str, dict[str, Any]] = {}

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.op != "keep"]

    @property
    def touches_disk(self) -> list[Action]:
        """The actions that change $HOME (a delete of a missing file only forgets it)."""
        return [a for a in self.changes if not (a.op == "delete" and a.old.kind == "missing")]


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
        import threading

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
    from qgitconf.gitpack.objcache import KNOWN_DIR, load_known

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


def matches(path: str, patterns: Iterable[str]) -> bool:
    """``path`` is one of ``patterns`` or lies below one of them (a directory)."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in patterns)


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _blocks(a: str, b: str) -> bool:
    """A file at ``a`` and a file at ``b`` cannot both exist (one is below the other)."""
    return a.startswith(b + "/") or b.startswith(a + "/")


def _cache(disk: DiskState) -> list[int] | None:
    if disk.st is None:
        return None
    return [*disk.st, time.time_ns()]


def make_plan(
    fs: HomeFS,
    wanted: Mapping[str, Wanted],
    manifest: Mapping[str, Mapping[str, Any]],
    originals: Mapping[str, Any],
    commit: str | None,
    *,
    root: Path | None = None,
    keep: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> Plan:
    """Compute every action and conflict; writes nothing.

    Args:
        fs: the home to plan against.
        wanted: the tree to apply (path -> entry).
        manifest: what qgitconf wrote last (path -> record with stat cache).
        originals: files that existed before qgitconf first overwrote them.
        commit: the commit being applied (None = the state before qgitconf).
        root: the agent state directory (to read kept originals back).
        keep: paths (or directories) to leave alone this time.
        only: if given, the only paths (or directories) to act on.
    """
    if only is not None:
        _check_only(only, wanted, manifest)
    plan = Plan(commit)
    plan.manifest = {p: dict(r) for p, r in manifest.items()}
    plan.originals = {p: dict(r) for p, r in originals.items()}

    def skipped(path: str) -> bool:
        if matches(path, keep) or (only is not None and not matches(path, only)):
            plan.skipped.append(path)
            return True
        return False

    kept = HomeFS(root) if root is not None else None
    try:
        _plan_into(plan, fs, wanted, manifest, originals, kept, skipped)
    finally:
        if kept is not None:
            kept.close()
    return plan


def _check_only(
    only: Sequence[str], wanted: Mapping[str, Wanted], manifest: Mapping[str, Any]
) -> None:
    """Every ``--only`` PATH names a file (or a directory of files) of the update or
    of what qgitconf manages; a typo is a usage error, never "already applied".

    Raises:
        UsageError: a PATH matches nothing (named; nothing was written).
    """
    known = set(wanted) | set(manifest)
    dirs = {prefix for path in known for prefix in _prefixes(path)}
    unmatched = [p for p in only if p.rstrip("/") not in known and p.rstrip("/") not in dirs]
    if unmatched:
        raise UsageError(
            "--only "
            + ", ".join(f"'{sanitize(p)}'" for p in unmatched)
            + (": matches" if len(unmatched) == 1 else ": match")
            + " no file of the staged update or of what qgitconf manages; nothing was "
            "applied (`qgitconf review` lists the update's files)"
        )


def _plan_into(
    plan: Plan,
    fs: HomeFS,
    wanted: Mapping[str, Wanted],
    manifest: Mapping[str, Mapping[str, Any]],
    originals: Mapping[str, Any],
    kept: HomeFS | None,
    skipped: Callable[[str], bool],
) -> None:
    """The body of :func:`make_plan`; ``kept`` reads the agent's kept originals."""
    # 1. What leaves the managed set: delete (or restore the original) if unchanged.
    deletes: list[Action] = []
    restores: list[Action] = []
    gone: set[str] = set()  # managed files/links that will not be on disk any more
    for path in sorted(set(manifest) - set(wanted)):
        if skipped(path):
            continue
        disk = fs.probe(path, manifest[path])
        if disk.kind not in ("missing", "blocked") and disk.record() != content(manifest[path]):
            plan.left.append(f"no longer managed, changed locally, left in place: {sanitize(path)}")
            continue
        if disk.kind == "blocked":
            plan.left.append(
                f"no longer managed; '{sanitize(disk.target)}' on its way is a symlink "
                f"or a file, left alone: {sanitize(path)}"
            )
            continue
        orig = originals.get(path)
        if orig is not None and not any(_blocks(path, w) for w in wanted):
            restores.append(_restore_action(path, orig, kept, plan, disk))
            continue
        deletes.append(Action("delete", path, old=disk))
        gone.add(path)

    # 2. The wanted tree.
    writes: list[Action] = []
    rmdirs: list[str] = []
    for path in sorted(wanted):
        want = wanted[path]
        rec = want.record()
        disk = fs.probe(path, manifest.get(path))
        if disk.kind in ("file", "link") and disk.record() == rec:
            if path in manifest or path in originals:
                plan.actions.append(Action("keep", path, rec, old=disk))
            else:  # the user's own file: qgitconf takes it over, keeping it
                plan.actions.append(Action("adopt", path, rec, old=disk, keep="original"))
            continue
        if skipped(path):
            continue
        old = disk
        if disk.kind == "blocked":
            if disk.target not in gone:
                plan.blockers.append(
                    f"'{sanitize(disk.target)}' is a symlink or a file, not a directory; "
                    f"qgitconf never follows it: {sanitize(path)}"
                )
                continue
            old = DiskState("missing")  # a managed file/link there goes first
        elif disk.kind == "dir":
            below = fs.list_under(path)
            if below is None or not all(f in gone for f in below[0]):
                plan.blockers.append(
                    f"is a directory holding files qgitconf did not write; "
                    f"move it away: {sanitize(path)}"
                )
                continue
            rmdirs.extend(below[1])  # deepest first
            old = DiskState("missing")
        elif disk.kind == "other":
            plan.blockers.append(
                f"is not a regular file or symlink; move it away: {sanitize(path)}"
            )
            continue
        act = Action("write", path, rec, old=old, blob=want.blob, src=want)
        if old.kind != "missing":
            if path in manifest:
                if old.record() != content(manifest[path]):
                    act.conflict, act.keep = True, "backup"
                    plan.conflicts.append(f"changed locally since the last apply: {sanitize(path)}")
            elif not _is_original(old, originals.get(path)):
                act.conflict = True
                act.keep = "backup" if path in originals else "original"
                plan.conflicts.append(f"exists and was not written by qgitconf: {sanitize(path)}")
        writes.append(act)

    # 3. Directories the writes need (created in order, removed again on rollback).
    # Below a directory that is missing, or that takes the place of a managed file or
    # symlink going away (a file ``c/foo`` becoming ``c/foo/baz/deep``), every level
    # is missing too: probing there would walk into the file that is still on disk.
    mkdirs: list[str] = []
    known: dict[str, str] = {}
    for act in [*writes, *restores]:
        for prefix in _prefixes(act.path):
            if prefix not in known:
                above = prefix.rpartition("/")[0]
                if prefix in gone or prefix in rmdirs or known.get(above) == "missing":
                    kind = "missing"
                else:
                    kind = fs.probe(prefix).kind
                known[prefix] = kind
                if kind == "missing":
                    mkdirs.append(prefix)
    plan.actions.extend(deletes)
    plan.actions.extend(Action("rmdir", d, old=DiskState("dir", mode=0o755)) for d in rmdirs)
    plan.actions.extend(Action("mkdir", d) for d in mkdirs)
    plan.actions.extend(sorted([*writes, *restores], key=lambda a: a.path))


def _restore_action(
    path: str, orig: Mapping[str, Any], kept: HomeFS | None, plan: Plan, disk: DiskState
) -> Action:
    if orig.get("type") == "link":
        target = str(orig["target"])
        return Action("restore", path, {"type": "link", "target": target}, target.encode(), disk)
    data = b""
    if kept is not None:
        data = _read_kept(kept, orig.get("backup"))
        if hashlib.sha256(data).hexdigest() != orig.get("sha256"):
            plan.blockers.append(f"the kept original is missing or damaged: {sanitize(path)}")
    rec = {"type": "file", "mode": int(orig["mode"]) & 0o7777, "sha256": orig.get("sha256")}
    return Action("restore", path, rec, data, disk)


def _read_kept(kept: HomeFS, rel: object) -> bytes:
    """The kept copy at ``rel`` in the state directory, read without following any
    link (a regular file only); empty if it is missing or anything else."""
    if not is_kept_path(rel):
        return b""
    try:
        return kept.read(str(rel))
    except (OSError, ApplyError):
        return b""


def kept_name(path: str) -> str:
    """The file name of the kept original of ``path``: the SHA-256 (hex) of the path."""
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()


def _is_original(disk: DiskState, original: Mapping[str, Any] | None) -> bool:
    """The file on disk is exactly the kept original (qgitconf put it back earlier)."""
    if original is None:
        return False
    rec = disk.record()
    return all(original.get(k) == v for k, v in rec.items())


# -- execution ---------------------------------------------------------------------------


def check_choices(plan: Plan, *, overwrite: bool) -> None:
    """Raise ``DriftError`` (writing nothing) unless every conflict has a choice."""
    if plan.blockers:
        raise DriftError(
            "apply stopped; nothing was written:\n  "
            + "\n  ".join(plan.blockers)
            + "\nmove these away, or leave them out with --keep PATH"
        )
    if plan.conflicts and not overwrite:
        raise DriftError(
            "apply stopped; nothing was written:\n  "
            + "\n  ".join(plan.conflicts)
            + "\nreview, then run again with --overwrite (whatever is overwritten is kept),"
            " or leave files out with --keep PATH"
        )


def _steps(plan: Plan, number: int | None) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    made = {a.path for a in plan.actions if a.op == "mkdir"}
    for act in plan.touches_disk:
        old: dict[str, Any] = act.old.record()
        if act.old.st is not None:
            old["st"] = list(act.old.st)
        if act.op == "rmdir":
            old["mode"] = act.old.mode
        step = {
            "i": len(steps),
            "op": act.op,
            "path": act.path,
            "old": old,
            "new": act.new,
            "keep": act.keep,
            "keep_at": _keep_at(act, number),
        }
        if is_direct(act, made):
            step["direct"] = act.blob
        steps.append(step)
    return steps


def is_direct(act: Action, made: set[str]) -> bool:
    """``act`` creates its file in place (``HomeFS.create``: no temp name, no
    rename): a write of content read from the agent repo (its blob id known, so that
    a rollback can tell a partial file of it) to a path that was absent, in a
    directory this apply creates (nothing of anyone else's can be there)."""
    return (
        act.op == "write"
        and bool(act.blob)
        and act.old.kind == "missing"
        and act.keep is None
        and act.path.rpartition("/")[0] in made
    )


def _keep_at(act: Action, number: int | None) -> str | None:
    if act.keep == "original":
        return f"originals/{kept_name(act.path)}"
    if act.keep == "backup":
        return f"backups/{number if number is not None else 'restore'}/{act.path}"
    return None


def execute(
    plan: Plan,
    fs: HomeFS,
    state: AgentState,
    *,
    overwrite: bool,
    kind: str,
    note: str = "",
    fault: Fault | None = None,
) -> dict[str, Any]:
    """Carry out ``plan`` through the journal; returns the generation's record.

    The caller holds the state lock.  A ``restore`` is not a generation: it only puts
    back files of the current one.

    Raises:
        DriftError: a conflict has no choice, or a file changed while applying
            (rolled back, nothing changed).
        ApplyError: a write failed (disk full, permissions); rolled back.
    """
    check_choices(plan, overwrite=overwrite)
    fault = fault or Fault()
    gens = state.generations()
    number = None if kind == "restore" else ((gens[-1]["number"] + 1) if gens else 1)
    manifest = dict(plan.manifest)
    originals = dict(plan.originals)
    record: dict[str, Any] = {
        "number": number,
        "kind": kind,
        "commit": plan.commit,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "written": [],
        "removed": [],
        "restored": [],
        "backed_up": [],
        "originals": [],
        "adopted": [],
        "left": plan.left,
        "skipped": [sanitize(p) for p in plan.skipped],
        "note": note,
    }
    for act in plan.actions:
        if act.op in ("keep", "adopt"):
            entry = dict(act.new or {})
            cache = _cache(act.old)
            if cache is not None:
                entry["stat"] = cache
            manifest[act.path] = entry
            if act.op == "adopt":
                originals[act.path] = _original_record(act, f"originals/{kept_name(act.path)}")
                record["originals"].append(act.path)
                record["adopted"].append(act.path)
        elif act.op == "write" and act.new is not None:
            manifest[act.path] = dict(act.new)
            record["written"].append(act.path)
            if act.keep == "original":
                originals[act.path] = _original_record(act, f"originals/{kept_name(act.path)}")
                record["originals"].append(act.path)
            elif act.keep == "backup":
                record["backed_up"].append(act.path)
        elif act.op == "restore":
            manifest.pop(act.path, None)
            record["restored"].append(act.path)
        elif act.op == "delete":
            manifest.pop(act.path, None)
            record["removed"].append(act.path)
    after = {
        "kind": kind,
        "number": number,
        "manifest": manifest,
        "originals": originals,
        "generation": None if number is None else record,
    }
    steps = _steps(plan, number)
    with SignalGuard() as guard:
        _journaled(plan, fs, state, steps, after, fault, guard, kind)
    if guard.pending is not None:
        what = f"generation {number}" if number is not None else "the restore"
        raise error_for(
            guard.pending,
            f"{kind} interrupted by {signal_name(guard.pending)} after its commit point: "
            f"it was finished ({what}, {len(record['written'])} written); "
            "`qgitconf revert` goes back",
        )
    return record


def _journaled(
    plan: Plan,
    fs: HomeFS,
    state: AgentState,
    steps: list[dict[str, Any]],
    after: dict[str, Any],
    fault: Fault,
    guard: SignalGuard,
    kind: str,
) -> None:
    """The journaled part of :func:`execute`, under ``guard``: a SIGINT or SIGTERM
    before the commit point rolls back (as any failure does); after it, the change is
    finished and the signal reported by the caller."""
    old_hook = fs.hook
    fs.hook = fault
    journal: Journal | None = None
    try:
        journal = Journal.begin(state, steps, after, fault)
        stats = _run(journal, plan, fs, state)
        journal.mark_committing()
        guard.defer()
    except BaseException as e:
        guard.defer()  # the rollback is not cut short by a second signal
        fs.hook = old_hook
        fs.unsynced = None
        if journal is not None:
            journal.release()
        fs.forget()
        _fail(state, fs, e, kind)
    try:
        record_commit(state, after, stats, fault)
        journal.close()
    except OSError as e:
        raise ApplyError(
            f"every change is on disk, but recording it failed: {e}; "
            "the next qgitconf apply, revert or status finishes it"
        ) from e
    finally:
        fs.hook = old_hook


def _original_record(act: Action, backup: str) -> dict[str, Any]:
    if act.old.kind == "link":
        return {"type": "link", "target": act.old.target}
    return {"type": "file", "mode": act.old.mode, "sha256": act.old.sha256, "backup": backup}


def _run(journal: Journal, plan: Plan, fs: HomeFS, state: AgentState) -> dict[str, list[int]]:
    """The changes, in phases; returns the stat cache of what was written."""
    fault = journal.fault
    steps = journal.steps
    acts = plan.touches_disk
    # Phase 1: copies of conflicting files (originals/, backups/N/), for revert.
    journal.progress("phase keep")
    kept = HomeFS(state.root)
    try:
        for step, act in zip(steps, acts, strict=True):
            if step["keep_at"] is not None:
                _keep_copy(fs, kept, step["keep_at"], step["tmp"], act)
                fault("kept")
    finally:
        kept.close()
    # Phase 2: an undo link of everything that will be replaced or deleted, checking
    # first that it is still what the plan saw (it may have changed since).
    journal.progress("phase undo")
    removed_dirs = {a.path for a in acts if a.op == "rmdir"}
    fs.forget()  # walk afresh from $HOME: the disk may have changed since the plan
    undo_fd = journal.open_undo()
    linked = False
    try:
        for step, act in zip(steps, acts, strict=True):
            if act.op in ("mkdir", "rmdir", "adopt") or "direct" in step:
                # an adopted file stays (only its copy was kept); a direct step's
                # file is created O_EXCL below its new directory (nothing to keep)
                continue
            now = fs.lstat(act.path)
            if act.old.kind == "missing":
                if now is not None and act.path not in removed_dirs:
                    raise DriftError(f"appeared while applying: {sanitize(act.path)}")
                continue
            if now is None or act.old.st is None or stat_key(now) != act.old.st:
                raise DriftError(f"changed while applying: {sanitize(act.path)}")
            journal.keep_undo(fs, step, undo_fd)
            linked = True
            fault("undo-linked")
        if linked:  # nothing to flush in an undo/ left empty
            os.fsync(undo_fd)
    finally:
        os.close(undo_fd)
    fault("undo-synced")
    # Phase 3: the changes.  Deletions and directories first, then every write in
    # three passes: all temp files (no fsync each), one sync of the home's filesystem,
    # then all renames; one more sync makes the renames and directories durable before
    # the commit point.  A crash before the renames leaves only temp files (the journal
    # knows their names); one after a rename leaves new content that is already on disk
    # (the sync came first), and the undo link to put the old one back.  A file whose
    # path was absent, in a directory this apply creates ("direct" steps), is created
    # in place in the first pass instead (``HomeFS.create``): a crash before the commit
    # point leaves it whole or cut short, and the rollback removes it either way.
    journal.progress("phase change")
    fs.unsynced = set()  # the directories are synced with the filesystem, below
    writes: list[tuple[dict[str, Any], Action]] = []
    for step, act in zip(steps, acts, strict=True):
        if act.op == "delete":
            fs.remove(act.path)
        elif act.op == "rmdir":
            if not fs.rmdir(act.path):
                raise ApplyError(f"directory not empty any more: {sanitize(act.path)}")
        elif act.op == "mkdir":
            fs.mkdir(act.path, 0o755)
        elif act.op == "adopt":
            continue
        else:
            writes.append((step, act))
            continue
        fault(f"done-{act.op}")
    stats: dict[str, list[int]] = {}
    renames: list[tuple[dict[str, Any], Action]] = []
    for step, act in writes:
        if "direct" in step and act.new is not None:
            if act.new["type"] == "link":
                st = fs.create_link(act.path, act.data.decode())
            else:
                st = fs.create(act.path, act.data, int(act.new["mode"]))
            stats[act.path] = stat_entry(st)
            continue
        renames.append((step, act))
        if act.new is not None and act.new["type"] == "link":
            fs.link_temp(act.path, act.data.decode(), step["tmp"])
        elif act.new is not None:
            fs.write_temp(act.path, act.data, int(act.new["mode"]), step["tmp"], sync=False)
    # every temp's and created file's data, the deletions and the directories are on
    # disk before any rename
    fs.syncfs()
    fault("temps-synced")
    journal.progress("phase rename")
    for step, act in renames:
        stats[act.path] = stat_entry(fs.replace(act.path, step["tmp"]))
        fault(f"done-{act.op}")
    if renames:
        fs.syncfs()  # the renames
    fs.unsynced = None
    fault("dirs-synced")
    journal.progress("phase commit")
    return stats


def _keep_copy(fs: HomeFS, kept: HomeFS, keep_at: str, tmp: str, act: Action) -> None:
    """Copy what ``act`` replaces to ``keep_at`` (in the state directory ``kept``):
    atomically under the short temp name ``tmp``, fsynced, never through a link on
    either side; whatever was at ``keep_at`` is replaced, not written through."""
    parts = keep_at.split("/")
    for depth in range(1, len(parts)):
        kept.mkdir("/".join(parts[:depth]), 0o700)
    kept.remove_temp(keep_at, tmp)
    if act.old.kind == "link":
        kept.write_link(keep_at, act.old.target, tmp)
        return
    data = fs.read(act.path)
    if hashlib.sha256(data).hexdigest() != act.old.sha256:
        raise DriftError(f"changed while applying: {sanitize(act.path)}")
    kept.write_file(keep_at, data, 0o600, tmp)


def _fail(state: AgentState, fs: HomeFS, e: BaseException, kind: str = "apply") -> NoReturn:
    """Roll back after an error (or a SIGINT/SIGTERM) part-way, then raise what the
    user should see."""
    journal = Journal.load(state)
    undone = ""
    if journal is None:
        shutil.rmtree(state.journal_dir, ignore_errors=True)  # it never got a plan
    else:
        try:
            problems = journal.rollback(fs)
        except (OSError, ApplyError) as r:
            problems = [str(r)]
        if problems:
            undone = (
                "; the rollback is incomplete (the journal keeps everything; the next "
                "qgitconf apply, revert or status tries again):\n  " + "\n  ".join(problems)
            )
        else:
            undone = "; rolled back: $HOME is as it was before"
    if isinstance(e, Signalled):
        if journal is None:
            undone = "; nothing was changed"
        raise error_for(
            e.signum, f"{kind} interrupted by {signal_name(e.signum)}{undone}"
        ) from None
    if isinstance(e, DriftError):
        raise DriftError(f"apply stopped: {e.detail}{undone}") from e
    if isinstance(e, ApplyError):
        raise ApplyError(f"apply failed: {e.detail}{undone}", code=e.code) from e
    if isinstance(e, OSError):
        reason = e.strerror or str(e)
        where = f" ({sanitize(str(e.filename))})" if e.filename else ""
        raise ApplyError(f"apply failed: {reason}{where}{undone}") from e
    raise e


# -- commands' helpers ---------------------------------------------------------------------


def staged_commit(state: AgentState) -> str:
    staged = state.load().get("staged")
    if not isinstance(staged, dict) or not isinstance(staged.get("commit"), str):
        raise NothingStagedError("no update is staged; nothing to apply")
    return str(staged["commit"])


def plan_apply(
    state: AgentState,
    home: Path,
    rules: PathRules,
    limits: Limits,
    commit: str | None,
    *,
    keep: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> tuple[Plan, HomeFS]:
    fs = HomeFS(home)
    wanted = wanted_tree(state, commit, rules, limits)
    plan = make_plan(
        fs,
        wanted,
        state.manifest(),
        state.originals(),
        commit,
        root=state.root,
        keep=keep,
        only=only,
    )
    return plan, fs


def plan_restore(
    state: AgentState, home: Path, rules: PathRules, limits: Limits, *, system: bool = False
) -> tuple[Plan, HomeFS]:
    """Re-create applied files that are missing; never touch one that exists (drift).

    ``system``: the root step's files (``home`` is then ``/``)."""
    fs = HomeFS(home)
    commit = state.applied_commit
    manifest = state.manifest()
    wanted = wanted_tree(state, commit, rules, limits, system=system)
    missing: list[str] = []
    drift: list[str] = []
    for path, rec in sorted(manifest.items()):
        want = wanted.get(path)
        if want is None or want.record() != content(rec):
            continue  # not what this generation wrote (kept back by --keep/--only)
        disk = fs.probe(path, rec)
        if disk.kind == "missing":
            missing.append(path)
        elif disk.record() != content(rec):
            drift.append(path)
    plan = make_plan(
        fs,
        {p: wanted[p] for p in missing},
        {p: manifest[p] for p in missing},
        {},
        commit,
        root=state.root,
    )
    plan.manifest = {p: dict(r) for p, r in manifest.items()}
    plan.originals = state.originals()
    plan.left = [f"changed locally, left as it is: {sanitize(p)}" for p in drift]
    return plan, fs


def revert_target(
    state: AgentState, gens: list[dict[str, Any]], to: int | None
) -> tuple[int, str | None]:
    """The generation `revert [--to N]` goes to, and its commit (None = before qgitconf)."""
    if not gens:
        raise LocalStateError("nothing has been applied yet; nothing to revert")
    current = int(gens[-1]["number"])
    target = current - 1 if to is None else to
    if target < 0 or target >= current:
        raise ApplyError(
            f"generation {target} does not exist before the current {current}",
            code="no-such-generation",
        )
    if target == 0:
        return 0, None
    for g in gens:
        if int(g["number"]) == target:
            return target, g["commit"]
    raise ApplyError(f"generation {target} not found", code="no-such-generation")
