"""Review of the staged update: signer, what changes, the risk report, the diff.

This is the orchestrator behind ``qgitconf review`` (terminal, ``--json``, ``--gui``),
``apply --interactive`` and auto-apply.  It reads the applied and staged trees from the
agent repo, hands the changed files to the pure :mod:`qgitconf.risks`, and renders the
diff with the user's own git (``--no-ext-diff --no-textconv``: no program named by any
config runs) or, without git, with a built-in diff.

DESIGN rule 11: everything returned for display is sanitised.  The diff is produced
*without* colour, sanitised line by line, and only then coloured (by
:func:`colorize`, with the SGR sequences of the user's own ``color.diff.*`` settings),
so an escape sequence inside a file can never reach the terminal, while the colours a
reader is used to still do.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from qgitconf.agent.apply import plan_apply, staged_commit
from qgitconf.agent.config import TargetConfig, load_target_config
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.fsutil import read_json, write_json
from qgitconf.gitstore import EMPTY_TREE, MODE_LINK, blob_bytes, read_commit, walk_tree
from qgitconf.limits import Limits
from qgitconf.risks import FileChange, Finding, Tree, assess, summary, tree_of
from qgitconf.sanitize import sanitize
from qgitconf.signing import inspect_key_file

AUTO_APPLY_FILE = "auto-apply.json"
"""Last auto-apply decision, in the state directory (see :func:`record_auto_apply`)."""

_SHOWN_OPS = ("write", "delete", "restore")


@dataclass(frozen=True)
class Changes:
    """The files that differ between two commits, and the new tree (its symlinks, its
    modes and its git/ssh config files: what :func:`~qgitconf.risks.assess` needs)."""

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


def changed_files(state: AgentState, old: str | None, new: str, limits: Limits) -> Changes:
    """Every path whose mode or content differs from ``old`` (None: nothing) to ``new``."""
    repo = state.repo()
    try:
        store = repo.object_store
        before = _entries(store, old, limits)
        after = _entries(store, new, limits)
        files: list[FileChange] = []
        for path in sorted(set(before) | set(after)):
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
        return Changes(files, tree)
    finally:
        repo.close()


# -- the diff -------------------------------------------------------------------------------


def _git_env(state: AgentState, env: Mapping[str, str]) -> dict[str, str]:
    out = {k: v for k, v in env.items() if k not in ("GIT_WORK_TREE", "GIT_EXTERNAL_DIFF")}
    # No work tree: attributes are read from the repo only, never from $HOME.
    out.update(GIT_DIR=str(state.repo_path), GIT_LITERAL_PATHSPECS="1")
    return out


def git_available(env: Mapping[str, str]) -> bool:
    return shutil.which("git", path=env.get("PATH")) is not None


def git_diff(
    state: AgentState,
    env: Mapping[str, str],
    old: str | None,
    new: str,
    paths: Sequence[str] = (),
    *,
    stat: bool = True,
) -> bytes | None:
    """``git diff old new`` by the user's git, uncoloured; None without git.

    ``--no-ext-diff`` and ``--no-textconv`` keep any program named by a config (which
    may itself be what the update is about) from running; ``core.quotePath`` makes git
    quote odd bytes in paths, and the caller sanitises what is left.
    """
    if not git_available(env):
        return None
    cmd = [
        "git",
        "-c",
        "core.quotePath=true",
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
        *(["--stat", "--summary"] if stat else []),
        "--patch",
        old or EMPTY_TREE,
        new,
        "--",
        *paths,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, env=_git_env(state, env), check=False)
    except OSError:
        return None
    return proc.stdout if proc.returncode == 0 else b"git diff failed:\n" + proc.stderr


def _mode(mode: int | None) -> str:
    return f"{mode:06o}" if mode is not None else ""


def builtin_diff(files: Sequence[FileChange]) -> str:
    """A git-style unified diff of ``files`` (for qubes without git); not sanitised."""
    out: list[str] = []
    for f in files:
        a, b = f"a/{f.path}", f"b/{f.path}"
        out.append(f"diff --git {a} {b}")
        if f.old_mode is None:
            out.append(f"new file mode {_mode(f.new_mode)}")
        elif f.new_mode is None:
            out.append(f"deleted file mode {_mode(f.old_mode)}")
        elif f.old_mode != f.new_mode:
            out.append(f"old mode {_mode(f.old_mode)}")
            out.append(f"new mode {_mode(f.new_mode)}")
        if f.old == f.new and f.old_mode is not None and f.new_mode is not None:
            continue
        if b"\0" in f.old or b"\0" in f.new:
            out.append(
                f"Binary files {a if f.old_mode else '/dev/null'} and "
                f"{b if f.new_mode else '/dev/null'} differ"
            )
            continue
        old = f.old.decode("utf-8", "replace").splitlines() if f.old_mode else []
        new = f.new.decode("utf-8", "replace").splitlines() if f.new_mode else []
        body = list(
            difflib.unified_diff(
                old,
                new,
                a if f.old_mode else "/dev/null",
                b if f.new_mode else "/dev/null",
                lineterm="",
            )
        )
        out.extend(body)
        if f.new_mode == MODE_LINK or f.old_mode == MODE_LINK:
            out.append("\\ No newline at end of file (symlink target)")
    return "\n".join(out) + ("\n" if out else "")


def file_notes(f: FileChange) -> list[str]:
    """Plain-words notes for what a text diff shows poorly: modes, symlinks, binaries."""
    notes: list[str] = []
    if f.old_mode is None:
        notes.append(f"new file, mode {_mode(f.new_mode)}")
    elif f.new_mode is None:
        notes.append("deleted")
    elif f.old_mode != f.new_mode:
        notes.append(f"mode {_mode(f.old_mode)} -> {_mode(f.new_mode)}")
    if f.new_mode == MODE_LINK:
        notes.append("symlink -> " + sanitize(f.new))
    if f.old_mode == MODE_LINK and f.new_mode != MODE_LINK:
        notes.append("was a symlink -> " + sanitize(f.old))
    if f.new_mode is not None and f.new_mode != MODE_LINK and b"\0" in f.new:
        notes.append(f"binary, {len(f.new)} bytes")
    return notes


# -- colour ---------------------------------------------------------------------------------

_DEFAULT_COLORS = {
    "meta": "\x1b[1m",
    "frag": "\x1b[36m",
    "old": "\x1b[31m",
    "new": "\x1b[32m",
    "high": "\x1b[1;31m",
    "medium": "\x1b[33m",
    "low": "\x1b[36m",
    "reset": "\x1b[m",
}
_GIT_SLOTS = {"meta": "normal bold", "frag": "cyan", "old": "red", "new": "green"}


def _is_sgr(seq: str) -> bool:
    return (
        seq.startswith("\x1b[")
        and seq.endswith("m")
        and all(c.isdigit() or c == ";" for c in seq[2:-1])
    )


def diff_colors(env: Mapping[str, str]) -> dict[str, str]:
    """The user's ``color.diff.*`` as SGR sequences (only ``ESC[...m`` is accepted)."""
    colors = dict(_DEFAULT_COLORS)
    if not git_available(env):
        return colors
    for slot, default in _GIT_SLOTS.items():
        try:
            proc = subprocess.run(
                ["git", "config", "--get-color", f"color.diff.{slot}", default],
                capture_output=True,
                env={k: v for k, v in env.items() if k != "GIT_DIR"},
                check=False,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        seq = proc.stdout.decode("ascii", "replace")
        if proc.returncode == 0 and (seq == "" or _is_sgr(seq)):
            colors[slot] = seq
    return colors


def colorize(text: str, colors: Mapping[str, str]) -> str:
    """Colour an already sanitised diff (it holds no ESC; only these SGRs are added)."""
    reset = colors.get("reset", "\x1b[m")
    out: list[str] = []
    in_header = False
    for line in text.split("\n"):
        slot: str | None = None
        if line.startswith("diff --git "):
            in_header, slot = True, "meta"
        elif line.startswith("@@"):
            in_header, slot = False, "frag"
        elif in_header:
            slot = "meta"
        elif line.startswith("+"):
            slot = "new"
        elif line.startswith("-"):
            slot = "old"
        seq = colors.get(slot, "") if slot else ""
        out.append(f"{seq}{line}{reset}" if seq and line else line)
    return "\n".join(out)


# -- the review -----------------------------------------------------------------------------


def _signer(cfg: TargetConfig, fpr: str) -> dict[str, Any]:
    data = cfg.pinned.get(fpr)
    uids = [sanitize(u) for k in inspect_key_file(data) for u in k.uids] if data else []
    return {"fingerprint": fpr, "uids": uids, "pinned": data is not None}


def _commit_info(state: AgentState, commit: str) -> dict[str, str]:
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


def file_entry(f: FileChange) -> dict[str, Any]:
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
        "old_mode": _mode(f.old_mode) or None,
        "new_mode": _mode(f.new_mode) or None,
        "symlink": sanitize(f.new) if f.new_mode == MODE_LINK else None,
        "binary": f.new_mode not in (None, MODE_LINK) and b"\0" in f.new,
        "notes": file_notes(f),
    }


def review(home: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Everything a person needs to decide on the staged update (all of it sanitised).

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
    changes = changed_files(state, applied, commit, cfg.limits)
    findings = assess(changes.files, changes.links)
    plan, _fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
    raw = git_diff(state, env, applied, commit)
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
        "risks": [f.as_dict() for f in findings],
        "risk_summary": summary(findings),
        "diff": diff,
        "diff_tool": tool,
        "auto_apply": last_auto_apply(state),
    }


def risks_by_path(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.path, []).append(f)
    return out


def render_text(out: Mapping[str, Any], colors: Mapping[str, str] | None = None) -> str:
    """The terminal review: header, risk report per file, then the diff.

    Everything in ``out`` is already sanitised; ``colors`` (SGR sequences, see
    :func:`diff_colors`) are the only escape sequences added.
    """
    colors = colors or {}
    reset = colors.get("reset", "") if colors else ""
    lines: list[str] = []
    signer = out["signer"]
    uids = ", ".join(signer["uids"]) or "?"
    pinned = "pinned" if signer.get("pinned") else "NOT PINNED ANY MORE"
    lines.append(f"signed by: {signer['fingerprint']} ({uids}) [{pinned}]")
    lines.append(
        f"update:    sequence {out['sequence']}, commit {out['commit']}, created {out['created']}"
    )
    lines.append(f"date:      {out.get('date', '?')}  author: {out.get('author', '?')}")
    lines.append(f"applied:   {out['applied'] or '(nothing yet)'}")
    message = str(out["message"]).replace("\n", "\n           ")
    lines.append(f"message:   {message}")
    for c in out["changes"]:
        lines.append(f"  {c['op']:8} {c['path']}")
    for c in out["conflicts"]:
        lines.append(f"  CONFLICT {c}")
    for c in out.get("blockers", []):
        lines.append(f"  BLOCKED  {c}")
    auto = out.get("auto_apply")
    if auto and auto.get("commit") == out["commit"]:
        lines.append(f"auto-apply: {auto['result']}: {auto['reason']}")
    lines.append("")
    counts = out["risk_summary"]
    lines.append(
        f"risk report: {counts['high']} high, {counts['medium']} medium, {counts['low']} low"
        " (docs/risks.md)"
    )
    by_path: dict[str, list[Mapping[str, Any]]] = {}
    for r in out["risks"]:
        by_path.setdefault(r["path"], []).append(r)
    for f in out["files"]:
        risks = by_path.get(f["path"], [])
        notes = f"  ({'; '.join(f['notes'])})" if f["notes"] else ""
        lines.append(f"  {f['path']}{notes}")
        for r in risks:
            where = f" line {r['line']}" if r["line"] is not None else ""
            text = f": {r['text']}" if r["text"] else ""
            seq = colors.get(r["severity"], "")
            sev = f"{seq}{r['severity'].upper():<6}{reset if seq else ''}"
            lines.append(f"    {sev} {r['rule']}{where}{text}")
            lines.append(f"           {r['explanation']}")
    lines.append("")
    lines.append(
        "full diff with your difftool: "
        "qgitconf git difftool refs/qgitconf/applied refs/qgitconf/staged"
        if out["applied"]
        else "full diff with your difftool: qgitconf git difftool "
        f"{EMPTY_TREE} refs/qgitconf/staged"
    )
    lines.append("")
    diff = colorize(str(out["diff"]), colors) if colors else str(out["diff"])
    return "\n".join(lines) + "\n" + diff


# -- auto-apply record ------------------------------------------------------------------------


def record_auto_apply(state: AgentState, record: Mapping[str, Any]) -> None:
    write_json(state.root / AUTO_APPLY_FILE, dict(record))


def last_auto_apply(state: AgentState) -> dict[str, Any] | None:
    data = read_json(state.root / AUTO_APPLY_FILE, None)
    return data if isinstance(data, dict) else None


def pager_command(env: Mapping[str, str]) -> str | None:
    """The user's pager as git would choose it (core.pager, GIT_PAGER, PAGER, less)."""
    pager: str | None = None
    if git_available(env):
        try:
            proc = subprocess.run(
                ["git", "var", "GIT_PAGER"],
                capture_output=True,
                env={k: v for k, v in env.items() if k != "GIT_DIR"},
                check=False,
                timeout=10,
            )
            if proc.returncode == 0:
                pager = proc.stdout.decode("utf-8", "replace").strip()
        except (OSError, subprocess.TimeoutExpired):
            pager = None
    if pager is None:
        pager = env.get("GIT_PAGER") or env.get("PAGER") or "less"
    return None if pager in ("", "cat") else pager


def page(text: str, env: Mapping[str, str]) -> None:
    """Show ``text`` (already sanitised, maybe coloured) through the user's pager."""
    pager = pager_command(env)
    data = text.encode("utf-8", errors="replace")
    if pager is None:
        os.write(1, data)
        return
    penv = dict(env)
    penv.setdefault("LESS", "FRX")  # as git does: quit if one screen, keep colours
    penv.setdefault("LV", "-c")
    try:
        # The pager string is the user's own setting, run by sh as git runs it.
        proc = subprocess.Popen(pager, shell=True, stdin=subprocess.PIPE, env=penv)  # noqa: S602
    except OSError:
        os.write(1, data)
        return
    if proc.stdin is None:  # cannot happen with stdin=PIPE; keeps the type checker honest
        return
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    proc.wait()


# -- after staging: notification and opt-in auto-apply ---------------------------------------


def auto_apply(
    home: Path, env: Mapping[str, str], cfg: TargetConfig, commit: str
) -> dict[str, Any]:
    """Apply ``commit`` only if it has no high-risk finding and nothing is in the way.

    Returns the decision record (also saved as ``auto-apply.json``): ``result`` is
    "applied" or "staged", ``reason`` says why.
    """
    from qgitconf.agent.commands import apply as do_apply
    from qgitconf.errors import QgitconfError

    state = AgentState(state_dir(home))
    record: dict[str, Any] = {
        "commit": commit,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "result": "staged",
        "reason": "",
        "generation": None,
        "risk_summary": None,
        "high": [],
    }
    try:
        changes = changed_files(state, state.applied_commit, commit, cfg.limits)
        findings = assess(changes.files, changes.links)
        record["risk_summary"] = summary(findings)
        high = [f for f in findings if f.severity == "high"]
        plan, _fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
        if high:
            record["high"] = [f"{f.rule} {f.path}" for f in high]
            ids = ", ".join(sorted({f.rule for f in high}))
            record["reason"] = f"high-risk findings ({ids}): review and apply by hand"
        elif plan.conflicts or plan.blockers:
            record["reason"] = "files changed locally are in the way: review and apply by hand"
        else:
            rec = do_apply(home, env, overwrite=False)
            record.update(result="applied", reason="no high-risk finding, no drift")
            record["generation"] = rec.get("number")
    except QgitconfError as e:
        record["reason"] = f"not applied: [{e.code}] {sanitize(e.detail)}"
    record_auto_apply(state, record)
    return record
