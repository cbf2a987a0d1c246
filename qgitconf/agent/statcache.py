"""The manifest's stat cache: when one ``lstat`` proves a managed file unchanged, so its
content is not read again (the status rows of ``make bench``: "status, no drift, 1k /
10k").

A manifest record of a regular file carries ``stat``: size, mtime_ns, ino, ctime_ns
and when the entry was taken.  ``cache_hit`` trusts it only outside the racy window
(``vouch.RACY_NS``); ``vouch.vouched_key`` is what ``manifest.stat`` packs of it, and
``all_unchanged`` checks a whole index of them, from ``PARALLEL_MIN_FILES`` files on
with a forked child's help.
"""

from __future__ import annotations

import os
import stat
import time
from typing import TYPE_CHECKING, cast

from qgitconf.agent import vouch
from qgitconf.agent.homewalk import HomeWalk
from qgitconf.agent.vouch import RACY_NS, VOUCHED_RECORD

if TYPE_CHECKING:
    from qgitconf.agent.records import Entry

# ``all_unchanged`` shares the lstat calls of at least this many files with a forked
# child (on two CPUs or more), as git shares them between threads (``preloadIndex``):
# Python threads would take turns on the GIL after every call.
PARALLEL_MIN_FILES = 2000

StatKey = tuple[int, int, int, int]  # size, mtime_ns, ino, ctime_ns


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def stat_entry(st: os.stat_result) -> list[int]:
    """The manifest's stat cache: size, mtime_ns, ino, ctime_ns, and when it was taken."""
    return [*stat_key(st), time.time_ns()]


def content(record: Entry) -> Entry:
    """A manifest record without its stat cache (what drift is decided on)."""
    return cast("Entry", {k: v for k, v in record.items() if k != "stat"})


def cache_hit(st: os.stat_result, record: Entry | None) -> bool:
    """True if ``record``'s stat cache proves the file is unchanged (no re-hash needed)."""
    if record is None:
        return False
    cached = record.get("stat")
    if not isinstance(cached, list) or len(cached) != 5:
        return False
    if tuple(cached[:4]) != stat_key(st):
        return False
    return bool(cached[3] < cached[4] - RACY_NS)


def unchanged(fs: HomeWalk, path: str, record: Entry) -> bool:
    """True if the stat cache of manifest ``record`` proves the regular file at
    ``path`` (below ``fs``'s home) still has the recorded mode and content (one
    ``lstat``, no read).

    The fast path of ``status``: False only means "ask ``HomeFS.probe``".
    """
    cached = record.get("stat")
    if record.get("type") != "file" or len(record) != 4 or not isinstance(cached, list):
        return False
    parents, _, name = path.rpartition("/")
    try:
        d = fs.dirfd(parents)
        if d is None:
            return False
        st = os.stat(name, dir_fd=d, follow_symlinks=False)
    except OSError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and stat.S_IMODE(st.st_mode) == record.get("mode")
        and cache_hit(st, record)
    )


def all_unchanged(fs: HomeWalk, groups: list[tuple[str, list[str]]], records: bytes) -> bool:
    """True if every file named in the ``(directory, names)`` groups still ``lstat``s
    as its key in ``records`` (one ``VOUCHED_RECORD`` per file, in the same order),
    i.e. ``unchanged`` holds for each; False if one does not, or a directory is missing
    or blocked.  One ``lstat`` per file, by name in its directory's fd (from ``fs``),
    nothing read: the fast path of ``status`` on a home without drift.

    From ``PARALLEL_MIN_FILES`` files on, a forked child checks the second half
    and answers with one byte; any other outcome (no fork, a child that dies or
    says no) is False here or a serial check, never a wrong True
    (:func:`qgitconf.agent.vouch.all_unchanged`).
    """
    return vouch.all_unchanged(
        lambda part, keys: vouch.unchanged_run(fs.dirfd, part, keys),
        groups,
        records,
        parallel_min=PARALLEL_MIN_FILES,
        may_fork=len(records) >= PARALLEL_MIN_FILES * VOUCHED_RECORD.size and _may_fork(),
        report=_report,
    )


def _may_fork() -> bool:
    """Two CPUs or more, and no other Python thread (a fork would copy its locks)."""
    return vouch.may_fork()


def _report(fd: int, unchanged: bool) -> None:
    """The forked child's answer to ``all_unchanged``: one byte."""
    vouch.report(fd, unchanged)
