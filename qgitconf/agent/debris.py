"""Crash debris outside the journal: the temps of the agent's own records, ref lock
files and stale temps a killed process left; recognised by name and removed under the
state lock, never anything the agent did not write (issue 23)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time

from qgitconf.agent.state import AgentState
from qgitconf.errors import LocalStateError
from qgitconf.sanitize import sanitize

_RECORD_TEMP = re.compile(
    r"\.(manifest\.json|manifest\.stat|originals\.json|generations\.json|state\.json"
    r"|config\.memo)"
    r"\.[a-z0-9_]{8}"
)


_HEAD_TEMP = re.compile(r"\.HEAD\.[a-z0-9_]{8}")


_GENERATION_LOCK = re.compile(r"[1-9][0-9]{0,17}\.lock")


_RECEIVE_GRACE_S = 600


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def clear_debris(state: AgentState) -> list[str]:
    """Remove what a process of the agent killed outside the journal left behind;
    the caller holds the state lock.  Returns the names removed (relative to the
    state directory).

    - ``repo/refs/qgitconf/applied.lock`` and ``repo/refs/qgitconf/generations/<N>.lock``:
      the lock file of a ref write cut short (the ref still holds its old value).  Only
      the agent writes these refs, and only under the state lock, which this process
      holds: no live writer can own them.  Each must be a regular file of this user,
      reached without following any link from the state directory.
    - the temp files of the state records (``.manifest.json.XXXXXXXX`` …, and
      ``repo/.HEAD.XXXXXXXX``): an atomic write cut short before its rename.  A
      temp of ``state.json`` only when it is older than Receive's writes can be.

    Raises:
        LocalStateError: something else (a symlink, a directory, another user's file)
            is where a ref lock goes: the agent cannot write that ref, and does not
            remove what it did not make.
    """
    removed: list[str] = []
    try:
        root = os.open(state.root, _DIR_FLAGS)
    except OSError:
        return removed
    try:
        for name in _names(root):
            if _RECORD_TEMP.fullmatch(name) and _stale_temp(root, name):
                _remove_own(root, name, name, removed, strict=False)
        repo = _open_dir(root, "repo")
        if repo is None:
            return removed
        try:
            for name in _names(repo):
                if _HEAD_TEMP.fullmatch(name):
                    _remove_own(repo, name, f"repo/{name}", removed, strict=False)
            _clear_ref_locks(repo, removed)
        finally:
            os.close(repo)
    finally:
        os.close(root)
    return removed


def _clear_ref_locks(repo: int, removed: list[str]) -> None:
    refs = _open_dir(repo, "refs")
    if refs is None:
        return
    try:
        ours = _open_dir(refs, "qgitconf")
    finally:
        os.close(refs)
    if ours is None:
        return
    try:
        if "applied.lock" in _names(ours):
            _remove_own(ours, "applied.lock", "repo/refs/qgitconf/applied.lock", removed)
        gens = _open_dir(ours, "generations")
        if gens is None:
            return
        try:
            for name in _names(gens):
                if _GENERATION_LOCK.fullmatch(name):
                    where = f"repo/refs/qgitconf/generations/{name}"
                    _remove_own(gens, name, where, removed)
        finally:
            os.close(gens)
    finally:
        os.close(ours)


def _names(d: int) -> list[str]:
    try:
        return os.listdir(d)
    except OSError:
        return []


def _open_dir(d: int, name: str) -> int | None:
    """``name`` in ``d`` as a directory fd, never through a link; None if it is
    missing or not a directory (nothing of the agent's can be below it then)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=d)
    except OSError as e:
        if isinstance(e, FileNotFoundError) or e.errno in (errno.ELOOP, errno.ENOTDIR):
            return None
        raise


def _stale_temp(d: int, name: str) -> bool:
    if not name.startswith(".state.json."):
        return True
    try:
        st = os.stat(name, dir_fd=d, follow_symlinks=False)
    except OSError:
        return False
    return st.st_mtime < time.time() - _RECEIVE_GRACE_S


def _remove_own(d: int, name: str, where: str, removed: list[str], *, strict: bool = True) -> None:
    """Unlink ``name`` in ``d`` if it is a regular file of this user (not a link);
    otherwise raise (``strict``: it blocks a ref write) or leave it."""
    try:
        st = os.stat(name, dir_fd=d, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        if not strict:
            return
        raise LocalStateError(
            f"{sanitize(where)} in the agent state directory is not a lock file qgitconf "
            "left (a symlink, a directory or another user's file); the agent cannot "
            "write that ref: move it away, then run qgitconf status"
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=d)
    removed.append(where)
