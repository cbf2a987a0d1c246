"""Review of the staged update: signer, what changes, the risk report, the diff.

This is the orchestrator behind ``qgitconf review`` (terminal, ``--json``, ``--gui``),
``apply --interactive`` and auto-apply.  It reads the applied and staged trees from the
agent repo, hands the changed files to the pure :mod:`qgitconf.core.risks`, and renders the
diff with the system's git, isolated from everything an update can write (DESIGN rule
12: see :func:`git_diff`), or, without git, with a built-in diff.

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

import difflib
import hashlib
import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from qgitconf import sysprog
from qgitconf.agent.apply import plan_apply, staged_commit
from qgitconf.agent.config import TargetConfig, load_target_config
from qgitconf.agent.progress import Counter, Emit, note
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.core.risks import FileChange, Finding, Tree, assess, summary, tree_of
from qgitconf.errors import QgitconfError
from qgitconf.fsutil import read_json, write_json
from qgitconf.gitpack.store import (
    EMPTY_TREE,
    MODE_LINK,
    blob_bytes,
    build_trees,
    lookup_path,
    read_commit,
    walk_tree,
)
from qgitconf.gpg.signing import inspect_key_file
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

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


DIFF_OPTIONS = (
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--text",
    "--no-renames",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--unified=3",
    "--inter-hunk-context=0",
    "--diff-algorithm=myers",
    "--indent-heuristic",
    "--no-relative",
    "-O/dev/null",
)
"""Every option of review's ``git diff`` that a config could otherwise change, pinned to
git's default (``diff.noprefix``, ``diff.mnemonicPrefix``, ``diff.context``,
``diff.interHunkContext``, ``diff.algorithm``, ``diff.indentHeuristic``,
``diff.relative``, ``diff.orderFile``, ``diff.renames``), plus ``--text`` (a NUL byte,
an attribute or a size threshold never turns a change into "Binary files differ") and
no external diff or textconv program."""


def git_env(home: Path | str, git_dir: Path | str) -> dict[str, str]:
    """The environment of every git review runs: built from nothing by
    :func:`qgitconf.sysprog.git_env` (no global or system config; nothing of the
    caller's environment, so no ``GIT_EXTERNAL_DIFF``, ``GIT_DIFF_OPTS`` or
    ``GIT_CONFIG_PARAMETERS``), and attributes read from the empty tree
    (``GIT_ATTR_SOURCE``, git 2.40+: not from a ``.gitattributes`` of any tree)."""
    env = sysprog.git_env(home, git_dir)
    env.update(GIT_ATTR_SOURCE=EMPTY_TREE, GIT_LITERAL_PATHSPECS="1")
    return env


def git_available() -> bool:
    """git is installed on the system PATH (``~/bin/git`` does not count)."""
    return sysprog.find("git") is not None


def git_diff(
    state: AgentState,
    home: Path,
    old: str | None,
    new: str,
    paths: Sequence[str] = (),
    *,
    stat: bool = True,
) -> bytes | None:
    """``git diff old new`` by the system's git, uncoloured; None without git.

    The git is found on :data:`qgitconf.sysprog.SYSTEM_PATH` and runs with
    :data:`qgitconf.sysprog.GIT_ISOLATION` (no attributes file, default
    ``core.bigFileThreshold``, no external diff), in :func:`git_env`, with every diff
    option pinned (:data:`DIFF_OPTIONS`): nothing an update wrote can change what is
    shown.  ``core.quotePath`` makes git quote odd bytes in paths, and the caller
    sanitises what is left.
    """
    return _git_diff_in(state.repo_path, home, old or EMPTY_TREE, new, paths, stat=stat)


def _git_diff_in(
    git_dir: Path, home: Path, old: str, new: str, paths: Sequence[str], *, stat: bool
) -> bytes | None:
    """The body of :func:`git_diff`: ``git diff old new`` in the repository ``git_dir``."""
    git = sysprog.find("git")
    if git is None:
        return None
    cmd = [
        git,
        *sysprog.GIT_ISOLATION,
        "-c",
        "core.quotePath=true",
        "diff",
        *DIFF_OPTIONS,
        *(["--stat", "--summary"] if stat else []),
        "--patch",
        old,
        new,
        "--",
        *paths,
    ]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            env=git_env(home, git_dir),
            cwd=git_dir,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except OSError:
        return None
    return proc.stdout if proc.returncode == 0 else b"git diff failed:\n" + proc.stderr


def _mode(mode: int | None) -> str:
    return f"{mode:06o}" if mode is not None else ""


def builtin_diff(files: Sequence[FileChange]) -> str:
    """A git-style unified diff of ``files`` (for qubes without git); not sanitised.

    Like review's git (``--text``), every file is diffed as text: a NUL byte does not
    hide a change.  Bytes that are not UTF-8 show as ``\\xNN``.
    """
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
        old = f.old.decode("utf-8", "backslashreplace").split("\n") if f.old_mode else []
        new = f.new.decode("utf-8", "backslashreplace").split("\n") if f.new_mode else []
        # As git: a final newline ends the last line rather than starting an empty one.
        for lines in (old, new):
            if lines and lines[-1] == "":
                lines.pop()
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


# -- any two contents: local changes (qgitconf diff, interactive conflicts) ------------------


def diff_changes(home: Path, files: Sequence[FileChange]) -> tuple[str, str]:
    """A unified diff of ``files`` (any old and new contents: what was applied against
    what is on disk, or the disk against the update), sanitised, and who made it
    (``"git"`` or ``"builtin"``).

    The same isolated git as review's (:func:`git_diff`: the system's git, no user or
    system config, no attributes, every option pinned, ``--text``, no external diff,
    no textconv): both sides are written as blobs and trees into a throwaway bare
    repository (made by dulwich: no template, no hooks), then ``git diff OLD NEW``
    runs there.  Without git, :func:`builtin_diff`.  Rule 11: the text is sanitised.
    """
    if not files:
        return "", "git" if git_available() else "builtin"
    raw: bytes | str | None = None
    if git_available():
        with tempfile.TemporaryDirectory(prefix="qgitconf-diff-") as tmp:
            old, new = _write_trees(Path(tmp), files)
            raw = _git_diff_in(Path(tmp), home, old, new, (), stat=False)
    tool = "git" if raw is not None else "builtin"
    if raw is None:
        raw = builtin_diff(files)
    return sanitize(raw, keep_newlines=True), tool


def _write_trees(git_dir: Path, files: Sequence[FileChange]) -> tuple[str, str]:
    """Blobs and trees of both sides of ``files`` in a new bare repository at ``git_dir``."""
    sides: list[list[tuple[bytes, bytes, int]]] = [[], []]
    for f in files:
        for side, mode, data in ((0, f.old_mode, f.old), (1, f.new_mode, f.new)):
            if mode is not None:
                sides[side].append((f.path.encode("utf-8", "surrogateescape"), data, mode))
    old, new = build_trees(str(git_dir), sides)
    return old, new


def git_mode(record: Mapping[str, Any]) -> int | None:
    """The git mode of a manifest record (or a disk state's record); None if neither a
    file nor a symlink."""
    if record.get("type") == "link":
        return MODE_LINK
    if record.get("type") == "file":
        return 0o100755 if int(record.get("mode") or 0) & 0o111 else 0o100644
    return None


def applied_contents(
    state: AgentState, records: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[int, bytes]]:
    """What qgitconf wrote at each path of ``records`` (manifest records): ``(git mode,
    bytes)``.  A file's content is looked up in the applied commit, then in the commits
    of earlier generations (a path left out by ``--keep`` keeps an older content), and
    taken only if its SHA-256 is the recorded one; a path whose content is in none of
    them is left out of the result."""
    out: dict[str, tuple[int, bytes]] = {}
    files: dict[str, Mapping[str, Any]] = {}
    for path, rec in records.items():
        mode = git_mode(rec)
        if mode == MODE_LINK:
            out[path] = (mode, str(rec.get("target", "")).encode("utf-8", "surrogateescape"))
        elif mode is not None:
            files[path] = rec
    if not files:
        return out
    commits: list[str] = []
    for c in [state.applied_commit, *(g.get("commit") for g in reversed(state.generations()))]:
        if isinstance(c, str) and c not in commits:
            commits.append(c)
    repo = state.repo()
    try:
        store = repo.object_store
        trees: list[Any] = []
        for c in commits:
            try:
                trees.append(read_commit(store, c).tree)
            except Exception:  # noqa: S112 - a commit gone from the repo: look elsewhere
                continue
        for path, rec in files.items():
            name = path.encode("utf-8", "surrogateescape")
            for tree in trees:
                try:
                    _mode, sha = lookup_path(store, tree, name)
                    data = blob_bytes(store, sha)
                except Exception:  # noqa: S112 - not in this commit (or not a blob)
                    continue
                if hashlib.sha256(data).hexdigest() == rec.get("sha256"):
                    out[path] = (git_mode(rec) or 0o100644, data)
                    break
    finally:
        repo.close()
    return out


def local_change(
    fs: Any, path: str, applied: tuple[int, bytes] | None, record: Mapping[str, Any]
) -> tuple[FileChange | None, list[str]]:
    """The change from what qgitconf applied at ``path`` to what is on disk now (read
    through ``fs``, a :class:`~qgitconf.agent.homefs.HomeFS`: no link is followed), and
    plain-words notes (sanitised) for what a text diff does not show.

    Returns ``(None, notes)`` when the applied content is not known any more.
    """
    disk = fs.probe(path)
    notes: list[str] = []
    new_mode: int | None = None
    new = b""
    if disk.kind == "file":
        try:
            new = fs.read(path)
            new_mode = git_mode(disk.record())
        except (OSError, QgitconfError):
            notes.append("changed while being read")
        want = int(record.get("mode") or 0)
        if record.get("type") == "file" and disk.mode != want:
            notes.append(f"mode {want:04o} -> {disk.mode:04o}")
    elif disk.kind == "link":
        new_mode, new = MODE_LINK, disk.target.encode("utf-8", "surrogateescape")
        notes.append("symlink -> " + sanitize(disk.target))
    elif disk.kind == "missing":
        pass  # the diff shows it: "deleted file"
    elif disk.kind == "blocked":
        notes.append(f"'{sanitize(disk.target)}' on its way is a symlink or a file now")
    elif disk.kind == "dir":
        notes.append("a directory now")
    else:
        notes.append("not a regular file or symlink now")
    if applied is None:
        notes.append("what qgitconf applied is not in the agent repository any more")
        return None, notes
    old_mode, old = applied
    return FileChange(path, old_mode, new_mode, old, new), notes


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


def diff_colors(env: Mapping[str, str]) -> dict[str, str]:
    """The colours of a review on a terminal: qgitconf's fixed palette (git's default
    diff colours), or none when ``NO_COLOR`` is set in the environment.

    The user's ``color.diff.*`` is deliberately not read: ``~/.gitconfig`` is written
    by updates, and a colour whose foreground equals the background (``black black``)
    would hide every added line of the next update.
    """
    if env.get("NO_COLOR"):
        return {}
    return dict(_DEFAULT_COLORS)


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


def review(home: Path, env: Mapping[str, str], progress: Emit | None = None) -> dict[str, Any]:
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
        "risks": [f.as_dict() for f in findings],
        "risk_summary": summary(findings),
        "diff": diff,
        "diff_tool": tool,
        "auto_apply": last_auto_apply(state),
        "apply_command": apply_command(commit),
    }


def apply_command(commit: str) -> str:
    """The command that applies exactly ``commit`` and refuses anything else."""
    return f"qgitconf apply --commit {commit}"


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
    lines.append(f"apply what is shown here: {apply_command(str(out['commit']))}")
    lines.append("")
    diff = colorize(str(out["diff"]), colors) if colors else str(out["diff"])
    return "\n".join(lines) + "\n" + diff


# -- auto-apply record ------------------------------------------------------------------------


def record_auto_apply(state: AgentState, record: Mapping[str, Any]) -> None:
    write_json(state.root / AUTO_APPLY_FILE, dict(record))


def last_auto_apply(state: AgentState) -> dict[str, Any] | None:
    data = read_json(state.root / AUTO_APPLY_FILE, None)
    return data if isinstance(data, dict) else None


# -- the pager ------------------------------------------------------------------------------

_PAGER_VARS = ("TERM", "COLUMNS", "LINES", "LESS")
"""What the pager may take from the environment review was started in."""


@dataclass(frozen=True)
class PagerChoice:
    """The pager review runs: ``argv`` (absolute program first) or None for none, and
    ``note``: why the user's own setting was not used (None if it was)."""

    argv: list[str] | None
    note: str | None = None


def _system_program(word: str) -> str | None:
    """``word`` as a program on the system PATH: a bare name found there, or an
    absolute path that is exactly what the system PATH finds for its name."""
    if "/" not in word:
        return sysprog.find(word)
    found = sysprog.find(os.path.basename(word))
    return found if found == word else None


def _default_pager() -> PagerChoice:
    for name in ("less", "more"):
        found = sysprog.find(name)
        if found is not None:
            return PagerChoice([found])
    return PagerChoice(None)


def choose_pager(env: Mapping[str, str]) -> PagerChoice:
    """The pager of ``env`` (``GIT_PAGER``, else ``PAGER``, else ``less``), made safe.

    Only the environment counts, never ``core.pager`` or ``pager.*``: ``~/.gitconfig``
    is written by updates.  Empty or ``cat`` means no pager.  Otherwise the setting is
    split like a shell word list (no shell runs it); its first word must be a program
    on the system PATH and every other word an option (``-R``, ``--quit-if-one-screen``):
    a pager in ``~/bin``, a relative path, shell syntax or a file name falls back to
    the system's ``less`` (``note`` says why).
    """
    setting = env.get("GIT_PAGER")
    if setting is None:
        setting = env.get("PAGER")
    if setting is None:
        return _default_pager()
    try:
        words: list[str] | None = shlex.split(setting)
    except ValueError:
        words = None  # unbalanced quotes: not usable
    if words is not None:
        if not words or words in (["cat"], [sysprog.find("cat")]):
            return PagerChoice(None)
        program = _system_program(words[0]) if "\0" not in setting else None
        if program is not None and all(w.startswith("-") for w in words[1:]):
            return PagerChoice([program, *words[1:]])
    fallback = _default_pager()
    shown = sanitize(setting)
    return PagerChoice(
        fallback.argv,
        f"pager {shown!r} not used (review runs only a program from the system PATH, "
        "with options); using " + (fallback.argv[0] if fallback.argv else "no pager"),
    )


def pager_env(env: Mapping[str, str], empty_home: Path | str) -> dict[str, str]:
    """The pager's whole environment: built from nothing, with ``HOME`` an empty
    directory (no ``~/.lesskey``, ``~/.config/...`` of any pager is read), less in
    secure mode with no lesskey file, no ``LESSOPEN`` and no history file, and only
    ``TERM``, ``COLUMNS``, ``LINES`` and ``LESS`` (default ``FRX``) from ``env``."""
    penv = sysprog.base_env(empty_home)
    penv.update({k: env[k] for k in _PAGER_VARS if k in env})
    penv.setdefault("LESS", "FRX")  # as git does: quit if one screen, keep colours
    penv.update(
        LESSSECURE="1",
        LESSKEYIN="/dev/null",
        LESSKEY="/dev/null",
        LESSHISTFILE="-",
        LV="-c",
    )
    return penv


def git_pager(choice: PagerChoice, env: Mapping[str, str], empty_home: Path | str) -> str:
    """``GIT_PAGER`` for a git that pages itself (``qgitconf git``): the chosen pager
    started by the system's ``env -i`` with :func:`pager_env`, or ``cat``."""
    if choice.argv is None:
        return "cat"
    pairs = [f"{k}={v}" for k, v in sorted(pager_env(env, empty_home).items())]
    return shlex.join([sysprog.program("env"), "-i", *pairs, *choice.argv])


def page(text: str, env: Mapping[str, str]) -> None:
    """Show ``text`` (already sanitised, maybe coloured) through the pager of
    :func:`choose_pager`, with :func:`pager_env`; a note on stderr if the user's
    pager setting was not used."""
    choice = choose_pager(env)
    if choice.note:
        os.write(2, f"qgitconf: {choice.note}\n".encode("utf-8", "replace"))
    data = text.encode("utf-8", errors="replace")
    if choice.argv is None:
        os.write(1, data)
        return
    with tempfile.TemporaryDirectory(prefix="qgitconf-pager-") as empty:
        try:
            proc = subprocess.Popen(
                choice.argv, stdin=subprocess.PIPE, env=pager_env(env, empty), cwd=empty
            )
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
