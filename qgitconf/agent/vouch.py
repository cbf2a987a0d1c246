"""``manifest.stat`` read and checked with nothing but ``os`` and C modules.

The one reader of the stat index (``state.AgentState.stat_index``) and the one
no-drift check of its vouched files (``statcache.all_unchanged``), shared with
the no-drift ``qgitconf status`` of :mod:`qgitconf.agent.statusfast`, which must not
import ``hashlib``, ``json``, ``pathlib`` or ``typing`` (issue 21: the status rows of
``make bench``).  The index's format is described at ``state._stat_index_bytes``.
"""

from __future__ import annotations

import os
import stat
import sys
from struct import Struct
from struct import error as StructError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

if TYPE_CHECKING:
    from collections.abc import Callable

    from qgitconf.agent.records import Entry

STAT_MAGIC = b"qgitconf-stat-2\n"
STAT_HEAD = Struct("<32sIIIIII")  # manifest SHA-256; counts and lengths below
STAT_COUNT = Struct("<I")  # vouched files in one directory
# A stat cache entry is trusted only if the file's ctime is older than the moment the
# entry was taken by this much: file timestamps come from a coarse clock, so a change
# within the same tick as the write would otherwise keep size, mtime and ctime (the
# "racy git" problem).  Two seconds covers coarse-grained and network filesystems.
RACY_NS = 2_000_000_000

# What one lstat must show for a vouched file: st_mode, size, mtime_ns, ino, ctime_ns
# (``vouched_key``); packed as VOUCHED_RECORD (status compares the packed bytes).
VouchedKey = tuple[int, int, int, int, int]
VOUCHED_RECORD = Struct("<IQqQq")

Groups = list[tuple[str, list[str]]]


def vouched_key(record: Entry) -> VouchedKey | None:
    """What ``lstat`` must show for the stat cache of ``record`` to prove the file
    unchanged (``statcache.unchanged`` in one comparison); None if it never can.

    Exactly the records and conditions ``statcache.unchanged`` accepts: a regular file whose
    cache entry was taken more than ``RACY_NS`` after its ctime.
    """
    cached = record.get("stat")
    mode = record.get("mode")
    if (
        record.get("type") != "file"
        or len(record) != 4
        or not isinstance(cached, list)
        or len(cached) != 5
        or type(mode) is not int
        or not 0 <= mode <= 0o7777
        or not all(type(v) is int for v in cached)
        or not cached[3] < cached[4] - RACY_NS
    ):
        return None
    return (stat.S_IFREG | mode, cached[0], cached[1], cached[2], cached[3])


def parse_stat_index(
    raw: bytes, manifest_sha256: bytes, loads: Callable[[bytes], object]
) -> tuple[Groups, bytes, object, int] | None:
    """``(vouched, records, others, managed)`` of the index ``raw`` if it is
    well-formed and bound to ``manifest_sha256``; else None.  ``others`` is what
    ``loads`` (a JSON reader raising ``ValueError``) made of the others' JSON, checked
    to be a dict of the announced size."""
    start = len(STAT_MAGIC) + STAT_HEAD.size
    if len(raw) < start or not raw.startswith(STAT_MAGIC):
        return None
    digest, n, n_dirs, n_others, len_dirs, len_files, len_rest = STAT_HEAD.unpack_from(
        raw, len(STAT_MAGIC)
    )
    records_at = start + n_dirs * STAT_COUNT.size
    names_at = records_at + n * VOUCHED_RECORD.size
    files_at = names_at + len_dirs
    rest_at = files_at + len_files
    if digest != manifest_sha256 or len(raw) != rest_at + len_rest:
        return None
    counts = [c for (c,) in STAT_COUNT.iter_unpack(raw[start:records_at])]
    dir_names = raw[names_at:files_at]
    file_names = raw[files_at:rest_at]
    dirs = dir_names.decode("utf-8", "surrogateescape").split("\0") if n_dirs else []
    names = file_names.decode("utf-8", "surrogateescape").split("\0") if n else []
    try:
        others = loads(raw[rest_at:])
    except ValueError:
        return None
    if (
        len(dirs) != n_dirs
        or len(names) != n
        or sum(counts) != n
        or 0 in counts
        or b"/" in file_names  # base names: each one lstat in its directory
        or not all(is_relative_dir(d) for d in dirs)
        or not isinstance(others, dict)
        or len(others) != n_others
    ):
        return None
    vouched = []
    at = 0
    for parent, count in zip(dirs, counts, strict=True):
        vouched.append((parent, names[at : at + count]))
        at += count
    return vouched, raw[records_at:names_at], others, n + n_others


def is_relative_dir(parent: str) -> bool:
    """``parent`` names a directory below the home (``""``: the home itself)."""
    return parent == "" or all(part not in ("", ".", "..") for part in parent.split("/"))


def unchanged_run(dirfd: Callable[[str], int | None], groups: Groups, records: bytes) -> bool:
    """True if every file named in ``groups`` still ``lstat``s as its key in
    ``records`` (one process).  ``dirfd(parent)`` is the fd of a directory (None: it
    is missing; an ``OSError``: it cannot be reached without following a link).  The
    keys are packed as they come and compared with ``records`` in one go at the end."""
    seen = bytearray(len(records))
    at = 0
    for parent, names in groups:
        try:
            d = dirfd(parent)
            if d is None:
                return False
            at = _pack_keys(seen, at, d, "", names)
        except (OSError, StructError):  # StructError: beyond any key
            return False
    return at == len(records) and seen == records


def _pack_keys(seen: bytearray, at: int, d: int, prefix: str, names: list[str]) -> int:
    """Each of ``names`` (below ``prefix`` in the directory fd ``d``) ``lstat``ed and
    its key packed into ``seen`` from ``at`` on; returns where the next key goes."""
    pack_into = VOUCHED_RECORD.pack_into
    step = VOUCHED_RECORD.size
    stat_at = os.stat
    for name in names:
        st = stat_at(prefix + name, dir_fd=d, follow_symlinks=False)
        pack_into(seen, at, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        at += step
    return at


def unchanged_by_path(home: int, groups: Groups, records: bytes) -> bool:
    """:func:`unchanged_run` by paths from the home's fd ``home``: no directory is
    opened (the 1,000 files of the benchmark's tree sit in 679 directories: an
    ``openat`` and a ``close`` each), but every directory on the way is ``lstat``ed
    first and must be one, not a symlink - what ``HomeFS``'s walk with
    ``O_NOFOLLOW | O_DIRECTORY`` requires - and readable, as its ``open`` needs, and
    each file is ``lstat``ed by its path (the last component never followed)."""
    seen = bytearray(len(records))
    at = 0
    stat_at = os.stat
    checked = {""}
    for parent, names in groups:
        try:
            if parent not in checked:
                parts = parent.split("/")
                for i in range(1, len(parts) + 1):
                    sub = "/".join(parts[:i])
                    if sub in checked:
                        continue
                    mode = stat_at(sub, dir_fd=home, follow_symlinks=False).st_mode
                    if mode & 0o170000 != 0o040000:  # S_ISDIR: a symlink is not one
                        return False
                    # ``HomeFS`` opens it (O_RDONLY): where it could not, the full
                    # status decides (an error there, not a clean answer here)
                    if not os.access(sub, os.R_OK, dir_fd=home, follow_symlinks=False):
                        return False
                    checked.add(sub)
            at = _pack_keys(seen, at, home, f"{parent}/" if parent else "", names)
        except (OSError, StructError):  # StructError: beyond any key
            return False
    return at == len(records) and seen == records


def all_unchanged(
    run: Callable[[Groups, bytes], bool],
    groups: Groups,
    records: bytes,
    *,
    parallel_min: int,
    may_fork: bool,
    report: Callable[[int, bool], None],
    child_first: Callable[[], bool] | None = None,
    child_load: int = 0,
) -> bool:
    """``run`` over all of ``groups``; from ``parallel_min`` files on (and
    ``may_fork``), a forked child runs the second half and answers with one byte
    (``report``).  Any other outcome (no fork, a child that dies or says no) is False
    here or a serial check, never a wrong True.

    ``child_first``, if given, is a check that must also hold: the child runs it
    before its part (the parent, when there is no child), and its part is smaller
    by ``child_load`` files (what the check costs, counted in lstats)."""
    step = VOUCHED_RECORD.size
    if len(records) < parallel_min * step or not may_fork:
        return (child_first is None or child_first()) and run(groups, records)
    cut, files = 0, 0
    while cut < len(groups) and files * 2 < len(records) // step + child_load:
        files += len(groups[cut][1])
        cut += 1
    first, second = groups[:cut], groups[cut:]
    at = files * step
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return (child_first is None or child_first()) and run(groups, records)
    if pid == 0:  # the child: its half, one byte, and out (no cleanup, no flush)
        try:
            os.close(r)
            report(w, (child_first is None or child_first()) and run(second, records[at:]))
        finally:
            os._exit(0)
    os.close(w)
    try:
        mine = run(first, records[:at])
        if not mine:  # the answer is no, whatever the child says
            os.kill(pid, 9)  # SIGKILL (``signal`` imports ``enum``)
        theirs = os.read(r, 1) if mine else b""
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return mine and theirs == b"1"


def may_fork() -> bool:
    """Two CPUs or more, and no other Python thread (a fork would copy its locks)."""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return False
    if not hasattr(os, "fork"):
        return False
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cpus or 1) > 1


def report(fd: int, unchanged: bool) -> None:
    """The forked child's answer: one byte."""
    os.write(fd, b"1" if unchanged else b"0")
