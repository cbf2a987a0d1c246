"""Apply a verified tree into $HOME, revert to an earlier generation, restore (rules 9, 10).

The plan comes from :mod:`qgitconf.agent.plan` (side-effect free) over the tree of
:mod:`qgitconf.agent.wanted`; whatever it overwrites is kept (``originals/`` the first
time, ``backups/<N>/`` after that) so ``revert`` can bring it back.

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
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, cast

from qgitconf.agent.commitrecords import record_commit
from qgitconf.agent.fault import Fault
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.journal import Journal
from qgitconf.agent.plan import (
    Action,
    Plan,
    check_choices,
    journal_steps,
    kept_name,
    make_plan,
    stat_cache_of,
)
from qgitconf.agent.signals import SignalGuard, Signalled, error_for, signal_name
from qgitconf.agent.statcache import content, stat_entry, stat_key
from qgitconf.agent.state import AgentState
from qgitconf.agent.wanted import wanted_tree
from qgitconf.core.paths import PathRules
from qgitconf.errors import (
    ApplyError,
    DriftError,
    LocalStateError,
    NothingStagedError,
)
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import After, Applied, Entry, Generation, Original, Step

# -- execution ---------------------------------------------------------------------------


def execute(
    plan: Plan,
    fs: HomeFS,
    state: AgentState,
    *,
    overwrite: bool,
    kind: str,
    note: str = "",
    fault: Fault | None = None,
) -> Applied:
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
    record, after = _outcome(plan, kind, number, note)
    steps = journal_steps(plan, number)
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


def _outcome(plan: Plan, kind: str, number: int | None, note: str) -> tuple[Applied, After]:
    """What carrying out ``plan`` makes of the records: the generation's record, and
    ``after`` (what the commit writes: manifest, originals, generation)."""
    manifest = dict(plan.manifest)
    originals = dict(plan.originals)
    record: Applied = {
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
            entry = (act.new or cast("Entry", {})).copy()
            cache = stat_cache_of(act.old)
            if cache is not None:
                entry["stat"] = cache
            manifest[act.path] = entry
            if act.op == "adopt":
                originals[act.path] = _original_record(act, f"originals/{kept_name(act.path)}")
                record["originals"].append(act.path)
                record["adopted"].append(act.path)
        elif act.op == "write" and act.new is not None:
            manifest[act.path] = act.new.copy()
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
    after: After = {
        "kind": kind,
        "number": number,
        "manifest": manifest,
        "originals": originals,
        "generation": None if number is None else cast("Generation", record),
    }
    return record, after


def _journaled(
    plan: Plan,
    fs: HomeFS,
    state: AgentState,
    steps: list[Step],
    after: After,
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


def _original_record(act: Action, backup: str) -> Original:
    if act.old.kind == "link":
        return {"type": "link", "target": act.old.target}
    return {"type": "file", "mode": act.old.mode, "sha256": act.old.sha256, "backup": backup}


def _run(journal: Journal, plan: Plan, fs: HomeFS, state: AgentState) -> dict[str, list[int]]:
    """The changes, in phases; returns the stat cache of what was written."""
    steps = journal.steps
    acts = plan.touches_disk
    _keep_phase(journal, steps, acts, fs, state)
    _undo_phase(journal, steps, acts, fs)
    return _change_phase(journal, steps, acts, fs)


def _keep_phase(
    journal: Journal, steps: list[Step], acts: list[Action], fs: HomeFS, state: AgentState
) -> None:
    """Phase 1 of :func:`_run`: copies of conflicting files (originals/, backups/N/),
    for revert."""
    fault = journal.fault
    journal.progress("phase keep")
    kept = HomeFS(state.root)
    try:
        for step, act in zip(steps, acts, strict=True):
            if step["keep_at"] is not None:
                _keep_copy(fs, kept, step["keep_at"], step["tmp"], act)
                fault("kept")
    finally:
        kept.close()


def _undo_phase(journal: Journal, steps: list[Step], acts: list[Action], fs: HomeFS) -> None:
    """Phase 2 of :func:`_run`: an undo link of everything that will be replaced or
    deleted, checking first that it is still what the plan saw (it may have changed
    since)."""
    fault = journal.fault
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


def _change_phase(
    journal: Journal, steps: list[Step], acts: list[Action], fs: HomeFS
) -> dict[str, list[int]]:
    """Phase 3 of :func:`_run`, the changes; returns the stat cache of what was written.

    Deletions and directories first, then every write in three passes: all temp files
    (no fsync each), one sync of the home's filesystem, then all renames; one more sync
    makes the renames and directories durable before the commit point.  A crash before
    the renames leaves only temp files (the journal knows their names); one after a
    rename leaves new content that is already on disk (the sync came first), and the
    undo link to put the old one back.  A file whose path was absent, in a directory
    this apply creates ("direct" steps), is created in place in the first pass instead
    (``HomeFS.create``): a crash before the commit point leaves it whole or cut short,
    and the rollback removes it either way.
    """
    fault = journal.fault
    journal.progress("phase change")
    fs.unsynced = set()  # the directories are synced with the filesystem, below
    writes: list[tuple[Step, Action]] = []
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
    renames: list[tuple[Step, Action]] = []
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
    plan.manifest = {p: r.copy() for p, r in manifest.items()}
    plan.originals = state.originals()
    plan.left = [f"changed locally, left as it is: {sanitize(p)}" for p in drift]
    return plan, fs


def revert_target(
    state: AgentState, gens: list[Generation], to: int | None
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
