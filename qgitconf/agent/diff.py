"""Diffs for review, isolated from everything an update can write (DESIGN rule 12): the
system's git with no user or system config, no attributes and nothing from the
environment, or a built-in diff; a local change's notes.  Diffs through git trees (what
qgitconf applied, two sides written as trees) are :mod:`qgitconf.agent.treediff`'s.
Everything returned is sanitised (rule 11); colour is added later, by
:mod:`qgitconf.agent.render`."""

from __future__ import annotations

import difflib
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgitconf import sysprog
from qgitconf.agent.state import AgentState
from qgitconf.core.risks import FileChange
from qgitconf.errors import QgitconfError
from qgitconf.gitpack.store import (
    EMPTY_TREE,
    MODE_LINK,
)
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Entry

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
    return git_diff_in(state.repo_path, home, old or EMPTY_TREE, new, paths, stat=stat)


def git_diff_in(
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


def mode_text(mode: int | None) -> str:
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
            out.append(f"new file mode {mode_text(f.new_mode)}")
        elif f.new_mode is None:
            out.append(f"deleted file mode {mode_text(f.old_mode)}")
        elif f.old_mode != f.new_mode:
            out.append(f"old mode {mode_text(f.old_mode)}")
            out.append(f"new mode {mode_text(f.new_mode)}")
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


def git_mode(record: Entry) -> int | None:
    """The git mode of a manifest record (or a disk state's record); None if neither a
    file nor a symlink."""
    if record.get("type") == "link":
        return MODE_LINK
    if record.get("type") == "file":
        return 0o100755 if int(record.get("mode") or 0) & 0o111 else 0o100644
    return None


def local_change(
    fs: Any, path: str, applied: tuple[int, bytes] | None, record: Entry
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
        notes.append(f"new file, mode {mode_text(f.new_mode)}")
    elif f.new_mode is None:
        notes.append("deleted")
    elif f.old_mode != f.new_mode:
        notes.append(f"mode {mode_text(f.old_mode)} -> {mode_text(f.new_mode)}")
    if f.new_mode == MODE_LINK:
        notes.append("symlink -> " + sanitize(f.new))
    if f.old_mode == MODE_LINK and f.new_mode != MODE_LINK:
        notes.append("was a symlink -> " + sanitize(f.old))
    if f.new_mode is not None and f.new_mode != MODE_LINK and b"\0" in f.new:
        notes.append(f"binary, {len(f.new)} bytes")
    return notes
