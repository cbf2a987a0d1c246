"""Review of the staged update: signer, what changes, the risk report, the diff.

The record behind ``qgitconf review`` (terminal, ``--json``, ``--gui``), ``apply
--interactive`` and auto-apply.  It reads the applied and staged trees from the agent
repo, hands the changed files to the pure :mod:`qgitconf.core.risks`, and takes the
diff from :mod:`qgitconf.agent.diff` (the system's git, isolated from everything an
update can write, DESIGN rule 12, or a built-in diff); :mod:`qgitconf.agent.render`
shows it.

An earlier update may have written ``~/.gitconfig``, ``~/.config/git/attributes``,
``~/.lesskey``, ``~/bin/git`` or the shell startup files that set the environment:
none of them may hide or fake what the next update changes.  So review's git and
pager are found on the system PATH (:mod:`qgitconf.sysprog`), git reads no user or
system config, no attributes and nothing from the environment, and the pager runs
with an empty ``HOME``.  Of the user's settings, review honours only the pager named
in the environment it was started from (``GIT_PAGER``/``PAGER``, a system program
with options), ``LESS``, ``TERM``/``COLUMNS``/``LINES`` and ``NO_COLOR``
(``docs/review.md``, "What review honours").

DESIGN rule 11: everything returned for display is sanitised.  The diff is produced
*without* colour, sanitised line by line, and only then coloured (by
:func:`colorize`, with qgitconf's own fixed palette: git's default diff colours), so an
escape sequence inside a file can never reach the terminal.  The user's
``color.diff.*`` is not read: an update could set ``new = black black`` and make the
added lines invisible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from qgitconf.agent.apply import plan_apply, staged_commit
from qgitconf.agent.config import TargetConfig, load_target_config
from qgitconf.agent.diff import builtin_diff, file_notes, git_diff, mode_text
from qgitconf.agent.progress import Counter, Emit, note
from qgitconf.agent.render import apply_command
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.core.risks import FileChange, Tree, assess, summary, tree_of
from qgitconf.fsutil import read_json, write_json
from qgitconf.gitpack.store import (
    MODE_LINK,
    blob_bytes,
    read_commit,
    walk_tree,
)
from qgitconf.gpg.keys import inspect_key_file
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import AutoApply, CommitInfo, FileEntry, Review, Risk, Signer

AUTO_APPLY_FILE = "auto-apply.json"
"""Last auto-apply decision, in the state directory (see :func:`record_auto_apply`)."""

_SHOWN_OPS = ("write", "delete", "restore")


@dataclass(frozen=True)
class Changes:
    """The files that differ between two commits, and the new tree (its symlinks, its
    modes and its git/ssh config files: what :func:`~qgitconf.core.risks.assess` needs)."""

    files: list[FileChange]
    links: Tree


def _entries(store: Any, commit: str | None, limits: Limits) -> dict[str, tuple[int, str]]:
    if commit is None:
        return {}
    tree = read_commit(store, commit).tree.decode("ascii")
    out: dict[str, tuple[int, str]] = {}
    for e in walk_tree(store, tree, limits):
        if not e.is_tree:
            out[e.path.decode("utf-8", errors="surrogateescape")] = (e.mode, e.sha)
    return out


def changed_files(
    state: AgentState,
    old: str | None,
    new: str,
    limits: Limits,
    progress: Emit | None = None,
) -> Changes:
    """Every path whose mode or content differs from ``old`` (None: nothing) to ``new``.

    ``progress`` gets a line now and then on a big tree (:mod:`qgitconf.agent.progress`).
    """
    repo = state.repo()
    try:
        store = repo.object_store
        before = _entries(store, old, limits)
        after = _entries(store, new, limits)
        files: list[FileChange] = []
        paths = sorted(set(before) | set(after))
        counter = Counter(progress, "review: comparing the trees", len(paths))
        for path in paths:
            counter.step()
            a, b = before.get(path), after.get(path)
            if a == b:
                continue
            files.append(
                FileChange(
                    path,
                    a[0] if a else None,
                    b[0] if b else None,
                    blob_bytes(store, a[1]) if a else b"",
                    blob_bytes(store, b[1]) if b else b"",
                )
            )
        links = {
            p: blob_bytes(store, sha).decode("utf-8", errors="replace")
            for p, (mode, sha) in after.items()
            if mode == MODE_LINK
        }
        modes = {p: mode for p, (mode, _sha) in after.items()}
        tree = tree_of(modes, links, lambda p: blob_bytes(store, after[p][1]))
        counter.finish()
        return Changes(files, tree)
    finally:
        repo.close()


# -- the diff -------------------------------------------------------------------------------


# -- any two contents: local changes (qgitconf diff, interactive conflicts) ------------------


# -- colour ---------------------------------------------------------------------------------


# -- the review -----------------------------------------------------------------------------


def _signer(cfg: TargetConfig, fpr: str) -> Signer:
    data = cfg.pinned.get(fpr)
    uids = [sanitize(u) for k in inspect_key_file(data) for u in k.uids] if data else []
    return {"fingerprint": fpr, "uids": uids, "pinned": data is not None}


def _commit_info(state: AgentState, commit: str) -> CommitInfo:
    repo = state.repo()
    try:
        c = read_commit(repo.object_store, commit)
        tz = timezone(timedelta(seconds=int(c.commit_timezone)))
        when = datetime.fromtimestamp(int(c.commit_time), UTC).astimezone(tz)
        return {
            "date": when.isoformat(),
            "author": sanitize(bytes(c.author)),
            "message": sanitize(
                bytes(c.message).decode("utf-8", "replace").strip(), keep_newlines=True
            ),
        }
    finally:
        repo.close()


def file_entry(f: FileChange) -> FileEntry:
    if f.old_mode is None:
        status = "added"
    elif f.new_mode is None:
        status = "deleted"
    elif (f.old_mode == MODE_LINK) != (f.new_mode == MODE_LINK):
        status = "type-changed"
    elif f.old == f.new:
        status = "mode-changed"
    else:
        status = "modified"
    return {
        "path": sanitize(f.path),
        "status": status,
        "old_mode": mode_text(f.old_mode) or None,
        "new_mode": mode_text(f.new_mode) or None,
        "symlink": sanitize(f.new) if f.new_mode == MODE_LINK else None,
        "binary": f.new_mode not in (None, MODE_LINK) and b"\0" in f.new,
        "notes": file_notes(f),
    }


def review(home: Path, env: Mapping[str, str], progress: Emit | None = None) -> Review:
    """Everything a person needs to decide on the staged update (all of it sanitised).

    ``progress`` (the click layer's, only for a terminal or ``--progress``) gets a line
    per phase and now and then while comparing a tree of 2,000 files or more.

    Returns:
        The review; the schema is documented in ``docs/review.md``.

    Raises:
        NothingStagedError: no update is staged.
        ConfigError: this qube is not set up as a target.
    """
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    commit = staged_commit(state)
    data = state.load()
    staged = data["staged"]
    applied = data.get("applied")
    changes = changed_files(state, applied, commit, cfg.limits, progress)
    size = len(changes.files)
    note(progress, size, f"review: assessing the risks of {size} changed files")
    findings = assess(changes.files, changes.links)
    note(progress, size, "review: checking $HOME for what apply would do")
    plan, fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
    fs.close()
    note(progress, size, "review: making the diff")
    raw = git_diff(state, home, applied, commit)
    tool = "git" if raw is not None else "builtin"
    diff = sanitize(raw if raw is not None else builtin_diff(changes.files), keep_newlines=True)
    return {
        "signer": _signer(cfg, staged["signer"]),
        "sequence": staged["sequence"],
        "commit": commit,
        "created": staged["created"],
        "received": staged.get("received"),
        **_commit_info(state, commit),
        "applied": applied,
        "changes": [
            {"op": a.op, "path": sanitize(a.path)} for a in plan.changes if a.op in _SHOWN_OPS
        ],
        "conflicts": list(plan.conflicts),
        "blockers": list(plan.blockers),
        "files": [file_entry(f) for f in changes.files],
        "risks": cast("list[Risk]", [f.as_dict() for f in findings]),
        "risk_summary": summary(findings),
        "diff": diff,
        "diff_tool": tool,
        "auto_apply": last_auto_apply(state),
        "apply_command": apply_command(commit),
    }


# -- auto-apply record ------------------------------------------------------------------------


def record_auto_apply(state: AgentState, record: AutoApply) -> None:
    write_json(state.root / AUTO_APPLY_FILE, dict(record))


def last_auto_apply(state: AgentState) -> AutoApply | None:
    data: AutoApply | None = read_json(state.root / AUTO_APPLY_FILE, None)
    return data if isinstance(data, dict) else None


# -- the pager ------------------------------------------------------------------------------


# -- after staging: notification and opt-in auto-apply ---------------------------------------
