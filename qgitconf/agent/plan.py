"""``make_plan`` and its records: what an apply, a revert or a restore would do, decided
before anything is written (rules 9, 10).  Side-effect free: it compares the wanted
tree, what qgitconf wrote last time (the manifest) and what is on disk now, and lists
every action and every conflict.  Conflicts - a managed file changed locally (drift) or
a file qgitconf never wrote - stop the apply unless the user chose ``overwrite`` (or
``keep``/``only``); deletions touch only files qgitconf wrote that are unchanged since."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from qgitconf.agent.homefs import DiskState, HomeFS
from qgitconf.agent.journal import is_kept_path
from qgitconf.agent.statcache import content
from qgitconf.agent.wanted import Wanted
from qgitconf.errors import (
    ApplyError,
    DriftError,
    UsageError,
)
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Entry, Original, Probed, Step


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
        new: Entry | None = None,  # the record written (write, restore)
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
        self.manifest: dict[str, Entry] = {}
        self.originals: dict[str, Original] = {}

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.op != "keep"]

    @property
    def touches_disk(self) -> list[Action]:
        """The actions that change $HOME (a delete of a missing file only forgets it)."""
        return [a for a in self.changes if not (a.op == "delete" and a.old.kind == "missing")]


def matches(path: str, patterns: Iterable[str]) -> bool:
    """``path`` is one of ``patterns`` or lies below one of them (a directory)."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in patterns)


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _blocks(a: str, b: str) -> bool:
    """A file at ``a`` and a file at ``b`` cannot both exist (one is below the other)."""
    return a.startswith(b + "/") or b.startswith(a + "/")


def stat_cache_of(disk: DiskState) -> list[int] | None:
    if disk.st is None:
        return None
    return [*disk.st, time.time_ns()]


def make_plan(
    fs: HomeFS,
    wanted: Mapping[str, Wanted],
    manifest: Mapping[str, Entry],
    originals: Mapping[str, Original],
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
    plan.manifest = {p: r.copy() for p, r in manifest.items()}
    plan.originals = {p: r.copy() for p, r in originals.items()}

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
    only: Sequence[str], wanted: Mapping[str, Wanted], manifest: Mapping[str, Entry]
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
    manifest: Mapping[str, Entry],
    originals: Mapping[str, Original],
    kept: HomeFS | None,
    skipped: Callable[[str], bool],
) -> None:
    """The body of :func:`make_plan`; ``kept`` reads the agent's kept originals."""
    # 1. What leaves the managed set: delete (or restore the original) if unchanged.
    deletes, restores, gone = _leaving(plan, fs, wanted, manifest, originals, kept, skipped)
    # 2. The wanted tree.
    writes, rmdirs = _writes(plan, fs, wanted, manifest, originals, skipped, gone)
    # 3. Directories the writes need (created in order, removed again on rollback).
    mkdirs = _mkdirs(fs, [*writes, *restores], gone, rmdirs)
    plan.actions.extend(deletes)
    plan.actions.extend(Action("rmdir", d, old=DiskState("dir", mode=0o755)) for d in rmdirs)
    plan.actions.extend(Action("mkdir", d) for d in mkdirs)
    plan.actions.extend(sorted([*writes, *restores], key=lambda a: a.path))


def _leaving(
    plan: Plan,
    fs: HomeFS,
    wanted: Mapping[str, Wanted],
    manifest: Mapping[str, Entry],
    originals: Mapping[str, Original],
    kept: HomeFS | None,
    skipped: Callable[[str], bool],
) -> tuple[list[Action], list[Action], set[str]]:
    """What leaves the managed set: ``(deletes, restores, gone)``, ``gone`` the managed
    files and links that will not be on disk any more; changed or blocked ones are
    left in place (``plan.left``)."""
    deletes: list[Action] = []
    restores: list[Action] = []
    gone: set[str] = set()
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
    return deletes, restores, gone


def _writes(
    plan: Plan,
    fs: HomeFS,
    wanted: Mapping[str, Wanted],
    manifest: Mapping[str, Entry],
    originals: Mapping[str, Original],
    skipped: Callable[[str], bool],
    gone: set[str],
) -> tuple[list[Action], list[str]]:
    """The wanted tree: keeps and adoptions go to ``plan`` at once; returns the writes
    and the directories (deepest first) that must go for them.  What stands in the way
    is a blocker (``plan.blockers``), a local change a conflict (``plan.conflicts``)."""
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
            _mark_conflict(plan, act, manifest, originals)
        writes.append(act)
    return writes, rmdirs


def _mark_conflict(
    plan: Plan,
    act: Action,
    manifest: Mapping[str, Entry],
    originals: Mapping[str, Original],
) -> None:
    """A write over something on disk: a conflict unless it is what qgitconf wrote
    (or the kept original), and what is there is kept as a backup or the original."""
    path, old = act.path, act.old
    if path in manifest:
        if old.record() != content(manifest[path]):
            act.conflict, act.keep = True, "backup"
            plan.conflicts.append(f"changed locally since the last apply: {sanitize(path)}")
    elif not _is_original(old, originals.get(path)):
        act.conflict = True
        act.keep = "backup" if path in originals else "original"
        plan.conflicts.append(f"exists and was not written by qgitconf: {sanitize(path)}")


def _mkdirs(fs: HomeFS, acts: list[Action], gone: set[str], rmdirs: list[str]) -> list[str]:
    """The missing directories ``acts`` need, parents first.

    Below a directory that is missing, or that takes the place of a managed file or
    symlink going away (a file ``c/foo`` becoming ``c/foo/baz/deep``), every level is
    missing too: probing there would walk into the file that is still on disk.
    """
    mkdirs: list[str] = []
    known: dict[str, str] = {}
    for act in acts:
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
    return mkdirs


def _restore_action(
    path: str, orig: Original, kept: HomeFS | None, plan: Plan, disk: DiskState
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
    return Action("restore", path, cast("Entry", rec), data, disk)


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


def _is_original(disk: DiskState, original: Original | None) -> bool:
    """The file on disk is exactly the kept original (qgitconf put it back earlier)."""
    if original is None:
        return False
    rec = disk.record()
    return all(original.get(k) == v for k, v in rec.items())


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


def journal_steps(plan: Plan, number: int | None) -> list[Step]:
    """The journal's step of each action of ``plan`` that touches the disk, in order
    (``number``: the generation the backups go to; None for a restore)."""
    steps: list[Step] = []
    made = {a.path for a in plan.actions if a.op == "mkdir"}
    for act in plan.touches_disk:
        old: Probed = act.old.record()
        if act.old.st is not None:
            old["st"] = list(act.old.st)
        if act.op == "rmdir":
            old["mode"] = act.old.mode
        step: Step = {
            "i": len(steps),
            "op": act.op,
            "path": act.path,
            "old": old,
            "new": act.new,
            "keep": act.keep,
            "keep_at": keep_at(act, number),
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


def keep_at(act: Action, number: int | None) -> str | None:
    """Where the copy ``act`` keeps goes, in the state directory (None: no copy)."""
    if act.keep == "original":
        return f"originals/{kept_name(act.path)}"
    if act.keep == "backup":
        return f"backups/{number if number is not None else 'restore'}/{act.path}"
    return None
