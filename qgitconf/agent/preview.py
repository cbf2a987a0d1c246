"""``apply --dry-run``, ``revert --dry-run`` and apply's confirmation: what a plan would
do, and the check that the plan confirmed is still the one applied."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgitconf.agent.apply import plan_apply, revert_target
from qgitconf.agent.commands import busy_error, check_commit_id, ensure_staged, plan_choices
from qgitconf.agent.config import load_target_config
from qgitconf.agent.journal import describe
from qgitconf.agent.plan import kept_name
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.agent.status import home_status as home_status  # re-exported
from qgitconf.agent.status import status as status  # re-exported
from qgitconf.errors import DriftError
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Kept, Preview, PreviewOf


def _preview(
    state: AgentState, plan: Any, *, kind: str, overwrite: bool, number: int | None
) -> Preview:
    """What ``plan`` would do, as plain (sanitised) data; see :func:`plan_preview`."""
    ops: dict[str, list[str]] = {"write": [], "delete": [], "restore": [], "adopt": []}
    kept: list[Kept] = []
    dirs: dict[str, list[str]] = {"mkdir": [], "rmdir": []}
    for act in plan.touches_disk:
        shown = sanitize(act.path)
        if act.op in ops:
            ops[act.op].append(shown)
        elif act.op in dirs:
            dirs[act.op].append(shown)
        if act.op == "write" and act.keep is not None:
            at = (
                f"originals/{kept_name(act.path)}"
                if act.keep == "original"
                else f"backups/{number}/{act.path}"
            )
            kept.append({"path": shown, "at": sanitize(str(state.root / at))})
    stops = bool(plan.blockers) or (bool(plan.conflicts) and not overwrite)
    return {
        "dry_run": True,
        "kind": kind,
        "commit": plan.commit,
        "generation": number,
        "write": ops["write"],
        "remove": ops["delete"],
        "restore": ops["restore"],
        "adopt": ops["adopt"],
        "mkdir": dirs["mkdir"],
        "rmdir": dirs["rmdir"],
        "kept": kept,
        "conflicts": list(plan.conflicts),
        "blockers": list(plan.blockers),
        "left": list(plan.left),
        "skipped": [sanitize(p) for p in plan.skipped],
        "would_stop": stops,
        "up_to_date": not plan.touches_disk and not plan.blockers,
    }


def plan_preview(
    home: Path,
    env: Mapping[str, str],
    *,
    kind: str = "apply",
    overwrite: bool = False,
    keep: Sequence[str] = (),
    only: Sequence[str] | None = None,
    commit: str | None = None,
    to: int | None = None,
) -> Preview:
    """What ``apply`` (``kind="apply"``) or ``revert`` (``kind="revert"``, to
    generation ``to``) would do with these options; changes nothing (no recovery, no
    kept copy, no state: $HOME and the agent state stay byte-identical).

    Returns:
        ``dry_run``, ``kind``, ``commit``, ``generation`` (the one it would create),
        ``to`` (revert), ``sequence`` (apply), ``write``/``remove``/``restore``/
        ``adopt``/``mkdir``/``rmdir`` (paths), ``kept`` (``[{path, at}]``: where
        what is overwritten would be kept), ``conflicts``, ``blockers``, ``left``,
        ``skipped``, ``would_stop`` (apply or revert would write nothing and exit 1
        [drift]), ``up_to_date`` and ``interrupted`` (an interrupted apply would be
        recovered first, so the plan may differ).

    Raises:
        NothingStagedError, StagedChangedError, UsageError, LocalStateError: as the
            command itself would, before anything is written.
    """
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    expected = None if commit is None else check_commit_id(commit)
    with state.lock() as held:
        if not held:
            raise busy_error()
        gens = state.generations()
        number = (int(gens[-1]["number"]) + 1) if gens else 1
        extra: PreviewOf = {}
        if kind == "revert":
            back_to, target = revert_target(state, gens, to)
            plan, fs = plan_apply(state, home, cfg.rules, cfg.limits, target)
            extra["to"] = back_to
        else:
            target = ensure_staged(state, expected)
            plan, fs = plan_choices(state, home, cfg, target, keep, only)
            extra["sequence"] = (state.load().get("staged") or {}).get("sequence")
        fs.close()
        out = _preview(state, plan, kind=kind, overwrite=overwrite, number=number)
        # As apply: nothing to write and this commit applied already: no new generation.
        out["up_to_date"] = kind == "apply" and out["up_to_date"] and state.applied_commit == target
        if out["up_to_date"]:
            out["generation"] = None
        out["interrupted"] = describe(state) is not None
    return {**out, **extra}


def check_preview(preview: Preview) -> None:
    """Stop, before asking or writing, when the previewed apply would stop anyway.

    Raises:
        DriftError: files in the way without ``--overwrite``, or blocked paths; the
            files are named, with the choices (as apply itself says).
    """
    if not preview["would_stop"]:
        return
    if preview["blockers"]:
        raise DriftError(
            f"{preview['kind']} would stop; nothing was written:\n  "
            + "\n  ".join(preview["blockers"])
            + "\nmove these away, or leave them out with --keep PATH"
        )
    raise DriftError(
        f"{preview['kind']} would stop on these files; nothing was written:\n  "
        + "\n  ".join(preview["conflicts"])
        + "\nsee the local changes with `qgitconf diff`, then run again with --overwrite "
        "(whatever is overwritten is kept for revert), or leave files out with --keep PATH"
    )
