"""Target-side commands: apply, revert, restore (and status, re-exported).

Each function does the I/O for one command and returns plain data (dicts or text);
the click layer only prints.  Everything that came from another qube is sanitised
before it is returned for display (rule 11).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgitconf.agent.apply import execute, plan_apply, plan_restore, revert_target, staged_commit
from qgitconf.agent.config import TargetConfig, load_target_config
from qgitconf.agent.fault import Fault
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.journal import recover
from qgitconf.agent.plan import Plan, kept_name
from qgitconf.agent.progress import ApplyProgress, Emit, apply_totals, note
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.agent.status import home_status as home_status  # re-exported
from qgitconf.agent.status import status as status  # re-exported
from qgitconf.errors import LocalStateError, StagedChangedError, UsageError
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import (
        Applied,
        ApplyResult,
        Kept,
        RestoreResult,
        StagedUpdate,
    )


def home_relative(home: Path, path: str) -> str:
    """A --keep/--only PATH as a $HOME-relative path ("~/x", "$HOME/x" or "x")."""
    if path.startswith("~/"):
        path = path[2:]
    elif path.startswith("/"):
        try:
            path = str(Path(path).relative_to(home))
        except ValueError:
            raise UsageError(f"{sanitize(path)} is not inside $HOME") from None
    while path.startswith("./"):
        path = path[2:]
    path = path.rstrip("/")
    if not path or path == "." or any(c in ("", ".", "..") for c in path.split("/")):
        raise UsageError(f"{sanitize(path)!r} is not a path below $HOME")
    return path


def busy_error() -> LocalStateError:
    return LocalStateError(
        "another qgitconf apply, revert, restore or recovery is running in this qube",
        code="busy",
    )


_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def check_commit_id(commit: str) -> str:
    """``commit`` as a full commit id in lower case (what ``apply --commit`` takes).

    A prefix is not enough: the check binds what was reviewed to what is applied, and
    a prefix of a few bytes can be matched by a crafted commit.

    Raises:
        UsageError: not 40 (or 64) hex digits.
    """
    low = commit.strip().lower()
    if not _COMMIT_ID.fullmatch(low):
        raise UsageError(
            f"--commit takes the full commit id (40 hex digits) that review printed, "
            f"not {sanitize(commit)!r}"
        )
    return low


def ensure_staged(state: AgentState, commit: str | None) -> str:
    """The staged commit; it must be ``commit`` when one is given.

    Raises:
        NothingStagedError: nothing is staged.
        StagedChangedError: the staged commit is another one (nothing is applied).
    """
    staged = staged_commit(state)
    if commit is not None and staged != commit:
        raise StagedChangedError(
            f"the staged update is now {staged}, not the reviewed {commit}; "
            "nothing was applied: review it (qgitconf review) and apply what you saw"
        )
    return staged


def staged_update(home: Path) -> StagedUpdate:
    """The staged update as apply's confirmation names it: ``commit``, ``sequence``
    and the ``applied`` commit.

    Raises:
        NothingStagedError: nothing is staged.
    """
    state = AgentState(state_dir(home))
    commit = staged_commit(state)
    staged = state.load().get("staged") or {}
    return {"commit": commit, "sequence": staged.get("sequence"), "applied": state.applied_commit}


def plan_choices(
    state: AgentState,
    home: Path,
    cfg: TargetConfig,
    commit: str,
    keep: Sequence[str],
    only: Sequence[str] | None,
) -> tuple[Plan, HomeFS]:
    """``plan_apply`` for ``commit`` with the user's ``--keep``/``--only`` choices
    ($HOME-relative): the one plan apply and ``apply --dry-run`` both show."""
    return plan_apply(
        state,
        home,
        cfg.rules,
        cfg.limits,
        commit,
        keep=[home_relative(home, k) for k in keep],
        only=None if only is None else [home_relative(home, o) for o in only],
    )


def apply(
    home: Path,
    env: Mapping[str, str],
    *,
    overwrite: bool,
    keep: Sequence[str] = (),
    only: Sequence[str] | None = None,
    commit: str | None = None,
    progress: Emit | None = None,
) -> ApplyResult:
    """Apply the staged update into ``home``; returns the new generation's record.

    ``progress`` (see :mod:`qgitconf.agent.progress`) gets lines per phase of a big apply.

    With ``commit`` (a full id), only that commit: if another one is staged, nothing
    is applied.  The staged commit is read, checked and planned under the state lock,
    so the commit applied is the one checked.  The record's ``commit`` names it.  An
    interrupted earlier apply is recovered first (``recovered`` says how).

    Raises:
        StagedChangedError: the staged commit is not ``commit`` (nothing written).
        DriftError: conflicts without a choice (nothing written).
        ApplyError: a write failed; rolled back.
    """
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    expected = None if commit is None else check_commit_id(commit)
    ensure_staged(state, expected)  # fail early, before taking the lock
    fault = Fault.from_env(env)
    with state.lock() as held:
        if not held:
            raise busy_error()
        recovered = recover(state, HomeFS(home), fault)
        commit = ensure_staged(state, expected)
        plan, fs = plan_choices(state, home, cfg, commit, keep, only)
        if not plan.touches_disk and not plan.blockers and state.applied_commit == commit:
            return {
                "number": None,
                "commit": commit,
                "written": [],
                "removed": [],
                "skipped": [sanitize(p) for p in plan.skipped],
                "left": plan.left,
                "note": "up to date",
                "recovered": recovered,
            }
        fault = _with_progress(fault, progress, "apply", plan)
        rec = execute(plan, fs, state, overwrite=overwrite, kind="apply", fault=fault)
        if isinstance(fault, ApplyProgress):
            fault.finish()
    return {**rec, "recovered": recovered, "kept": kept_copies(state, rec)}


def _with_progress(fault: Fault, progress: Emit | None, kind: str, plan: Any) -> Fault:
    """``fault`` wrapped to report progress on a big plan (unchanged otherwise)."""
    if progress is None:
        return fault
    acts = plan.touches_disk
    note(progress, len(acts), f"{kind}: {len(acts)} changes planned")
    return ApplyProgress(fault, progress, kind, apply_totals(acts))


def kept_copies(state: AgentState, rec: Applied) -> list[Kept]:
    """Where the generation ``rec`` kept what it overwrote: ``path`` (sanitised) and
    ``at`` (the copy in the state directory), for the files written over (not the
    adopted ones, which were not changed)."""
    adopted = set(rec.get("adopted") or [])
    out: list[Kept] = [
        {"path": sanitize(p), "at": sanitize(str(state.root / "originals" / kept_name(p)))}
        for p in rec.get("originals") or []
        if p not in adopted
    ]
    out += [
        {"path": sanitize(p), "at": sanitize(str(state.root / "backups" / str(rec["number"]) / p))}
        for p in rec.get("backed_up") or []
    ]
    return out


def revert(
    home: Path,
    env: Mapping[str, str],
    *,
    to: int | None,
    overwrite: bool,
    progress: Emit | None = None,
) -> ApplyResult:
    """Go back to generation ``to`` (default: the one before the current)."""
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    fault = Fault.from_env(env)
    with state.lock() as held:
        if not held:
            raise busy_error()
        recovered = recover(state, HomeFS(home), fault)
        number, commit = revert_target(state, state.generations(), to)
        plan, fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
        fault = _with_progress(fault, progress, "revert", plan)
        rec = execute(
            plan,
            fs,
            state,
            overwrite=overwrite,
            kind="revert",
            note=f"revert to generation {number}",
            fault=fault,
        )
        if isinstance(fault, ApplyProgress):
            fault.finish()
    return {**rec, "recovered": recovered, "kept": kept_copies(state, rec)}


def restore(home: Path, env: Mapping[str, str]) -> RestoreResult:
    """Re-create applied files that are missing (a non-persistent home lost them).

    Never writes over anything that exists: a file changed locally is listed in
    ``left`` and left as it is.  Not a new generation.
    """
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    fault = Fault.from_env(env)
    with state.lock() as held:
        if not held:
            raise busy_error()
        recovered = recover(state, HomeFS(home), fault)
        plan, fs = plan_restore(state, home, cfg.rules, cfg.limits)
        plan.left.extend(plan.blockers)  # at boot: do what can be done, report the rest
        plan.blockers = []
        rec: Applied | dict[str, list[str]] = {"written": [], "left": plan.left}
        if plan.touches_disk:
            rec = execute(plan, fs, state, overwrite=False, kind="restore", fault=fault)
    return {"restored": rec["written"], "left": rec["left"], "recovered": recovered}


# -- qgitconf diff: local changes against what was applied ---------------------------------


# -- apply --dry-run / revert --dry-run, and apply's confirmation -------------------------


# -- target remove ----------------------------------------------------------------------------
