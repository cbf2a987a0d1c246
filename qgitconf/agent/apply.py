"""Apply a verified tree into $HOME, and revert to an earlier generation (rules 9, 10).

``make_plan`` is side-effect free: it compares the wanted tree, what qgitconf wrote
last time (the manifest) and what is on disk now, and lists every action and every
conflict before anything is written.  Conflicts - a managed file changed locally
(drift) or a file qgitconf never wrote - stop the apply unless the user chose
``overwrite``; whatever is overwritten is kept (``originals/`` the first time,
``backups/<N>/`` after that) so ``revert`` can bring it back.  Deletions touch only
files qgitconf wrote that are unchanged since.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qgitconf.agent.homefs import DiskState, HomeFS
from qgitconf.agent.state import APPLIED_REF, GENERATION_REF, AgentState
from qgitconf.errors import ApplyError, DriftError, LocalStateError, NothingStagedError
from qgitconf.fsutil import atomic_write
from qgitconf.gitstore import blob_bytes, read_commit, walk_tree
from qgitconf.limits import Limits
from qgitconf.paths import PathRules, check_tree
from qgitconf.sanitize import sanitize


@dataclass(frozen=True)
class Wanted:
    """One non-tree entry of the tree to apply."""

    path: str
    kind: str  # "file" | "link"
    mode: int
    data: bytes

    def record(self) -> dict[str, Any]:
        if self.kind == "link":
            return {"type": "link", "target": self.data.decode("utf-8")}
        return {"type": "file", "mode": self.mode, "sha256": hashlib.sha256(self.data).hexdigest()}


@dataclass(frozen=True)
class Action:
    """One step of a plan: "write" (create or modify), "delete", "restore" or "keep"."""

    op: str
    path: str
    wanted: Wanted | None = None
    backup: bool = False  # the current content must be kept before the write


@dataclass
class Plan:
    commit: str | None
    actions: list[Action] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # one line each, sanitised
    blockers: list[str] = field(default_factory=list)  # conflicts --overwrite cannot settle
    left: list[str] = field(default_factory=list)  # deletions not done (changed locally)

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.op != "keep"]


def wanted_tree(
    state: AgentState, commit: str | None, rules: PathRules, limits: Limits
) -> dict[str, Wanted]:
    """Read the tree of ``commit`` from the agent repo (rule 7 re-checked at apply)."""
    if commit is None:
        return {}
    repo = state.repo()
    try:
        store = repo.object_store
        tree = read_commit(store, commit).tree.decode("ascii")
        entries = walk_tree(store, tree, limits)
        check_tree(
            ((e.path, e.mode, blob_bytes(store, e.sha) if e.is_link else None) for e in entries),
            rules,
        )
        out: dict[str, Wanted] = {}
        for e in entries:
            if e.is_tree:
                continue
            path = e.path.decode("utf-8")
            kind = "link" if e.is_link else "file"
            mode = 0o755 if e.mode == 0o100755 else 0o644
            out[path] = Wanted(path, kind, mode, blob_bytes(store, e.sha))
        return out
    finally:
        repo.close()


def _same(disk: DiskState, record: Mapping[str, Any]) -> bool:
    return disk.record() == dict(record)


def _is_original(disk: DiskState, original: Mapping[str, Any] | None) -> bool:
    if original is None:
        return False
    rec = disk.record()
    return all(original.get(k) == v for k, v in rec.items())


def make_plan(
    fs: HomeFS,
    wanted: Mapping[str, Wanted],
    manifest: Mapping[str, Mapping[str, Any]],
    originals: Mapping[str, Any],
    commit: str | None,
) -> Plan:
    """Compute every action and conflict; writes nothing."""
    plan = Plan(commit)
    for path in sorted(wanted):
        want = wanted[path]
        disk = fs.probe(path)
        if _same(disk, want.record()):
            plan.actions.append(Action("keep", path, want))
            continue
        if disk.kind not in ("missing", "file", "link"):
            plan.blockers.append(f"is a {disk.kind}, not a file; move it away: {sanitize(path)}")
            continue
        if path in manifest:
            if disk.kind != "missing" and not _same(disk, manifest[path]):
                plan.conflicts.append(f"changed locally since the last apply: {sanitize(path)}")
                plan.actions.append(Action("write", path, want, backup=True))
                continue
            plan.actions.append(Action("write", path, want))
            continue
        if disk.kind == "missing" or _is_original(disk, originals.get(path)):
            # The original is already kept (qgitconf restored it earlier): no conflict.
            plan.actions.append(Action("write", path, want))
        else:
            plan.conflicts.append(f"exists and was not written by qgitconf: {sanitize(path)}")
            plan.actions.append(Action("write", path, want, backup=True))
    for path in sorted(set(manifest) - set(wanted)):
        disk = fs.probe(path)
        if disk.kind == "missing" or _same(disk, manifest[path]):
            op = "restore" if path in originals else "delete"
            plan.actions.append(Action(op, path))
        else:
            plan.left.append(f"no longer managed, changed locally, left in place: {sanitize(path)}")
    return plan


def _keep_copy(fs: HomeFS, state: AgentState, path: str, dest_root: Path) -> dict[str, Any]:
    disk = fs.probe(path)
    if disk.kind == "link":
        return {"type": "link", "target": disk.target}
    data = fs.read(path)
    atomic_write(dest_root / path, data, 0o600)
    return {
        "type": "file",
        "mode": disk.mode,
        "sha256": hashlib.sha256(data).hexdigest(),
        "backup": str((dest_root / path).relative_to(state.root)),
    }


def execute(
    plan: Plan, fs: HomeFS, state: AgentState, *, overwrite: bool, kind: str, note: str = ""
) -> dict[str, Any]:
    """Carry out ``plan`` (journaled) and record a new generation; returns its record.

    Raises:
        DriftError: the plan has conflicts and ``overwrite`` is false.
        ApplyError: a write failed (the journal says how far it got).
    """
    if plan.blockers:
        raise DriftError("apply stopped; nothing was written:\n  " + "\n  ".join(plan.blockers))
    if plan.conflicts and not overwrite:
        raise DriftError(
            "apply stopped; nothing was written:\n  "
            + "\n  ".join(plan.conflicts)
            + "\nreview, then run again with --overwrite (whatever is overwritten is kept)"
        )
    journal = state.root / "journal.json"
    if journal.exists():
        raise LocalStateError(
            f"an earlier apply was interrupted ({journal}); "
            "check the files it lists, then remove it"
        )
    gens = state.generations()
    number = (gens[-1]["number"] + 1) if gens else 1
    manifest = state.manifest()
    originals = state.originals()
    atomic_write(journal, repr([(a.op, a.path) for a in plan.changes]).encode(), 0o600)
    written: list[str] = []
    removed: list[str] = []
    restored: list[str] = []
    kept: list[str] = []
    try:
        for action in plan.changes:
            if action.op == "write" and action.wanted is not None:
                if action.backup:
                    if action.path in manifest:
                        _keep_copy(fs, state, action.path, state.root / "backups" / str(number))
                        kept.append(action.path)
                    elif action.path not in originals:
                        originals[action.path] = _keep_copy(
                            fs, state, action.path, state.root / "originals"
                        )
                        state.save_originals(originals)
                want = action.wanted
                if want.kind == "link":
                    fs.write_link(action.path, want.data.decode("utf-8"))
                else:
                    fs.write_file(action.path, want.data, want.mode)
                manifest[action.path] = want.record()
                written.append(action.path)
            elif action.op == "restore":
                orig = originals[action.path]  # kept: the original stays recoverable
                if orig["type"] == "link":
                    fs.write_link(action.path, orig["target"])
                else:
                    content = (state.root / orig["backup"]).read_bytes()
                    fs.write_file(action.path, content, int(orig["mode"]) & 0o7777)
                manifest.pop(action.path, None)
                restored.append(action.path)
            elif action.op == "delete":
                fs.remove(action.path)
                manifest.pop(action.path, None)
                removed.append(action.path)
            state.save_manifest(manifest)
    except OSError as e:
        state.save_manifest(manifest)
        done = len(written) + len(removed) + len(restored)
        raise ApplyError(f"apply failed at {done} of {len(plan.changes)} changes: {e}") from e
    for action in plan.actions:  # files already right on disk are managed from now on
        if action.op == "keep" and action.wanted is not None:
            manifest[action.path] = action.wanted.record()
    state.save_manifest(manifest)
    record = {
        "number": number,
        "kind": kind,
        "commit": plan.commit,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "written": written,
        "removed": removed,
        "restored": restored,
        "backed_up": kept,
        "left": plan.left,
        "note": note,
    }
    gens.append(record)
    state.save_generations(gens)
    saved = state.load()
    saved["applied"] = plan.commit
    state.save(saved)
    repo = state.repo()
    try:
        if plan.commit is not None:
            repo.refs[APPLIED_REF] = plan.commit.encode("ascii")
            repo.refs[GENERATION_REF.format(n=number).encode("ascii")] = plan.commit.encode("ascii")
        else:
            repo.refs.remove_if_equals(APPLIED_REF, None)
    finally:
        repo.close()
    state.point_head(plan.commit)
    journal.unlink()
    return record


def staged_commit(state: AgentState) -> str:
    staged = state.load().get("staged")
    if not isinstance(staged, dict) or not isinstance(staged.get("commit"), str):
        raise NothingStagedError("no update is staged; nothing to apply")
    return str(staged["commit"])


def plan_apply(
    state: AgentState, home: Path, rules: PathRules, limits: Limits, commit: str | None
) -> tuple[Plan, HomeFS]:
    fs = HomeFS(home)
    wanted = wanted_tree(state, commit, rules, limits)
    return make_plan(fs, wanted, state.manifest(), state.originals(), commit), fs


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
