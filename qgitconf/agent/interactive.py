"""``qgitconf apply --interactive``: accept or skip each changed file in a terminal.

For every path the apply would touch, the user sees its notes (new, deleted, mode,
symlink, binary), its risk findings, any local change in the way, and its diff - risk
lines *above* the diff - and answers accept, skip or quit.  The accepted paths are then
applied with the same ``only`` selection as ``apply --only`` (nothing else is written),
and only if the staged commit is still the one that was shown: the commit is named at
the top and in every prompt, and passed to apply, which refuses any other
(``staged-changed``).  With ``expect`` (``apply --interactive --commit C``) the walk
refuses to start unless C is the staged commit.

A file changed locally (or not written by qgitconf) must be accepted with "o"
(overwrite; the local copy is kept for ``revert``), so no drift is overwritten by a
plain "accept" (rule 10).  Before the question, such a file shows its own diff: the
local change since the apply (applied -> now) for a managed file, or what overwriting
would change (now -> update) for a file qgitconf never wrote.  A path the update does
not change (left out of an earlier apply, or drifted) shows what writing it does.
An answer that is not one of the choices prints them again.  No click here: the
prompts are callables (STYLE ring 3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from qgitconf.agent.apply import plan_apply
from qgitconf.agent.commands import apply as do_apply
from qgitconf.agent.commands import check_commit_id, ensure_staged
from qgitconf.agent.config import load_target_config
from qgitconf.agent.diff import builtin_diff, file_notes, git_diff, git_mode, local_change
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.plan import Action, Plan
from qgitconf.agent.render import colorize
from qgitconf.agent.review import changed_files
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.agent.treediff import applied_contents, diff_changes
from qgitconf.core.risks import FileChange, Finding, assess
from qgitconf.errors import QgitconfError
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import ApplyResult, Entry

Ask = Callable[[str], str]
Show = Callable[[str], None]


@dataclass
class Choices:
    """What the user chose, per $HOME-relative path."""

    commit: str
    accepted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    overwrite: bool = False  # some accepted path had a conflict and was accepted with "o"
    quit: bool = False


def _conflict_for(path: str, conflicts: list[str]) -> str:
    shown = sanitize(path)
    return next((c for c in conflicts if c.endswith(": " + shown)), f"in the way: {shown}")


def choose(
    home: Path,
    env: Mapping[str, str],
    ask: Ask,
    show: Show,
    colors: Mapping[str, str] | None = None,
    expect: str | None = None,
) -> Choices:
    """Walk the changed files with the user; returns the choices (writes nothing).

    Raises:
        StagedChangedError: ``expect`` is given and is not the staged commit.
    """
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    commit = ensure_staged(state, None if expect is None else check_commit_id(expect))
    plan, fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
    try:
        return _walk(home, state, plan, fs, cfg.limits, commit, ask, show, colors)
    finally:
        fs.close()


_CHOICES = "answer a (accept), s (skip) or q (quit: nothing is applied)"
_CONFLICT_CHOICES = (
    "a local file is in the way, so a does not take it: answer o (overwrite it; the local "
    "copy is kept for `qgitconf revert`), s (skip: leave it as it is) or q (quit: nothing "
    "is applied)"
)


def _walk(
    home: Path,
    state: AgentState,
    plan: Plan,
    fs: HomeFS,
    limits: Limits,
    commit: str,
    ask: Ask,
    show: Show,
    colors: Mapping[str, str] | None,
) -> Choices:
    """The body of :func:`choose`, with the plan and its HomeFS (closed by the caller)."""
    applied = state.applied_commit
    manifest = state.manifest()
    local = applied_contents(
        state, {a.path: manifest[a.path] for a in plan.changes if a.conflict and a.path in manifest}
    )
    changes = changed_files(state, applied, commit, limits)
    by_path: dict[str, FileChange] = {f.path: f for f in changes.files}
    findings = assess(changes.files, changes.links)
    actions = [a for a in plan.changes if a.op in ("write", "delete", "restore")]
    choices = Choices(commit)
    sequence = (state.load().get("staged") or {}).get("sequence")
    show(f"update: sequence {sequence}, commit {commit}")
    show(f"applied: {applied or '(nothing yet)'}")
    if plan.blockers:
        show("blocked (move these away first; they are skipped):")
        for b in plan.blockers:
            show(f"  {b}")
    total = len(actions)
    for n, act in enumerate(actions, 1):
        shown = sanitize(act.path)
        change = by_path.get(act.path)
        notes = file_notes(change) if change else []
        if change is None:
            notes.append(_unchanged_note(act, manifest))
        show("")
        show(f"[{n}/{total}] {act.op} {shown}" + (f"  ({'; '.join(notes)})" if notes else ""))
        _show_risks([f for f in findings if f.path == shown], show, colors)
        conflict = _conflict_for(act.path, plan.conflicts) if act.conflict else None
        if conflict:
            show(f"  CONFLICT {conflict}")
        if change is not None:
            raw = git_diff(state, home, applied, commit, [act.path], stat=False)
            diff = sanitize(raw if raw is not None else builtin_diff([change]), keep_newlines=True)
            show(colorize(diff, colors) if colors else diff.rstrip("\n"))
        elif act.op in ("write", "restore") and act.new is not None:
            show("  what this writes (what is there now -> the update):")
            _show_diff(home, [_disk_to_update(fs, act)], show, colors)
        if conflict:
            _show_conflict(home, fs, act, manifest, local, show, colors)
        answer = _ask_choice(ask, show, commit, conflict=bool(conflict))
        if answer == "quit":
            choices.quit = True
            return choices
        if answer == "skip":
            choices.skipped.append(act.path)
        else:
            choices.accepted.append(act.path)
            choices.overwrite = choices.overwrite or bool(conflict)
    return choices


def _show_risks(risks: Sequence[Finding], show: Show, colors: Mapping[str, str] | None) -> None:
    """The risk findings of one file, coloured by severity when ``colors`` is given."""
    for f in risks:
        seq = (colors or {}).get(f.severity, "")
        reset = (colors or {}).get("reset", "") if seq else ""
        where = f" line {f.line}" if f.line is not None else ""
        text = f": {f.text}" if f.text else ""
        show(f"  {seq}{f.severity.upper():<6}{reset} {f.rule}{where}{text}")
        show(f"         {f.explanation}")
    if not risks:
        show("  no risk findings")


def _ask_choice(ask: Ask, show: Show, commit: str, *, conflict: bool) -> str:
    """Ask until the answer is known: ``take`` (accept, or overwrite a conflict),
    ``skip`` or ``quit``."""
    prompt = f"[commit {commit[:12]}] " + (
        "overwrite the local file (a copy is kept) [o], skip [s], quit [q]? "
        if conflict
        else "accept [a], skip [s], quit [q]? "
    )
    take = ("o", "overwrite") if conflict else ("a", "accept", "y", "yes")
    while True:
        answer = ask(prompt).strip().lower()
        if answer in take:
            return "take"
        if answer in ("s", "skip", "n", "no"):
            return "skip"
        if answer in ("q", "quit"):
            return "quit"
        show(f"  {_CONFLICT_CHOICES if conflict else _CHOICES}")


def _unchanged_note(act: Action, manifest: Mapping[str, Entry]) -> str:
    """The note for a path the plan touches although the update does not change it."""
    if act.op == "write" and act.path not in manifest:
        return (
            "not changed by this update, but left out of an earlier apply "
            "(skipped, --keep or --only): written now for the first time"
        )
    if act.op == "write":
        return "not changed by this update; puts back what qgitconf applied (changed locally)"
    if act.op == "restore":
        return "no longer in the update; puts back your file from before qgitconf"
    return f"{act.op} (not a change of the update)"


def _show_diff(
    home: Path, files: list[FileChange], show: Show, colors: Mapping[str, str] | None
) -> None:
    diff, _tool = diff_changes(home, files)
    if diff:
        show(colorize(diff, colors) if colors else diff.rstrip("\n"))


def _disk_to_update(fs: HomeFS, act: Action) -> FileChange:
    """What writing ``act`` changes: the file on disk now (or nothing) -> the update."""
    new_mode = git_mode(act.new or cast("Entry", {}))
    old_mode: int | None = None
    old = b""
    if act.old.kind == "file":
        try:
            old = fs.read(act.path)
            old_mode = git_mode(act.old.record())
        except (OSError, QgitconfError):
            old_mode = None
    elif act.old.kind == "link":
        old_mode, old = (
            git_mode(act.old.record()),
            act.old.target.encode("utf-8", "surrogateescape"),
        )
    return FileChange(act.path, old_mode, new_mode, old, act.data)


def _show_conflict(
    home: Path,
    fs: HomeFS,
    act: Action,
    manifest: Mapping[str, Entry],
    local: Mapping[str, tuple[int, bytes]],
    show: Show,
    colors: Mapping[str, str] | None,
) -> None:
    """The local file in the way: its own change since the apply (a managed file that
    drifted), or what overwriting it would change (a file qgitconf never wrote)."""
    if act.path in manifest:
        change, notes = local_change(fs, act.path, local.get(act.path), manifest[act.path])
        show(
            "  changed locally since the last apply (applied -> now)"
            + (f" ({'; '.join(notes)})" if notes else "")
            + ":"
        )
        if change is not None:
            _show_diff(home, [change], show, colors)
        return
    show("  your file, not written by qgitconf; overwriting it changes it so (now -> update):")
    _show_diff(home, [_disk_to_update(fs, act)], show, colors)


def apply_choices(home: Path, env: Mapping[str, str], choices: Choices) -> ApplyResult | None:
    """Apply exactly the accepted paths of the commit that was shown; None if none.

    Raises:
        StagedChangedError: another update was staged while the user was choosing
            (checked by apply under its lock; nothing is applied).
    """
    if choices.quit or not choices.accepted:
        return None
    # Absolute paths: apply's --only parser reads "~/x" as $HOME/x, which a tree
    # path "~/x" (a directory named "~") must not be mistaken for.
    only = [str(home / p) for p in choices.accepted]
    return do_apply(home, env, overwrite=choices.overwrite, only=only, commit=choices.commit)
