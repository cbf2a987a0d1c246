"""``qgitconf diff``: the local changes to managed files, against what qgitconf applied."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

from qgitconf.agent.commands import busy_error, home_relative
from qgitconf.agent.config import load_target_config
from qgitconf.agent.diff import local_change
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.journal import describe
from qgitconf.agent.plan import matches
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.agent.status import _scan
from qgitconf.agent.status import home_status as home_status  # re-exported
from qgitconf.agent.status import status as status  # re-exported
from qgitconf.agent.treediff import applied_contents, diff_changes
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import DriftNotes, Entry, LocalDiff


def local_diff(home: Path, env: Mapping[str, str], paths: Sequence[str] = ()) -> LocalDiff:
    """Every managed file changed locally since it was applied, and the diff
    applied -> disk (like ``chezmoi diff``); writes nothing.

    ``paths`` ($HOME-relative, ``~/``, or absolute below $HOME) limit it to those files
    or directories.  The diff is made by review's isolated git
    (:func:`qgitconf.agent.treediff.diff_changes`) and sanitised, as is every path.

    Returns:
        ``applied``, ``managed``, ``drift`` (``[{path, state, notes}]``: ``state`` as
        in ``status --json``'s ``drift_detail``), ``diff``, ``diff_tool``,
        ``interrupted``.

    Raises:
        ConfigError: not a target.
        LocalStateError: an apply, revert or restore is running (``busy``).
    """
    load_target_config(home, env)
    state = AgentState(state_dir(home))
    wanted = [home_relative(home, p) for p in paths]
    with state.lock() as held, HomeFS(home) as fs:
        if not held:
            raise busy_error()
        found, managed = _scan(state, fs, save=False)
        if wanted:
            found = [(p, k) for p, k in found if matches(p, wanted)]
        manifest = state.manifest() if found else {}
        records = {p: manifest[p] for p, _k in found if p in manifest}
        applied = applied_contents(state, records)
        entries: list[DriftNotes] = []
        files = []
        for path, kind in sorted(found):
            change, notes = local_change(
                fs, path, applied.get(path), records.get(path, cast("Entry", {}))
            )
            if change is not None:
                files.append(change)
            entries.append({"path": sanitize(path), "state": kind, "notes": notes})
        interrupted = describe(state) is not None
    diff, tool = diff_changes(home, files)
    return {
        "applied": state.applied_commit,
        "managed": managed,
        "drift": entries,
        "diff": diff,
        "diff_tool": tool,
        "interrupted": interrupted,
    }
