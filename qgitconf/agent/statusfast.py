"""``qgitconf status`` when nothing changed, without the full status's imports.

It exists for the status rows of ``make bench`` (issue 21, ``tests/bench/bench_apply.py``):
at 1,000 managed files the whole process may take 1.5x (``git status`` + a bare
``python3 -I -S -c pass``), about 25 ms, of which the interpreter alone is 10; the full
status (:mod:`qgitconf.agent.status`) imports ``tomllib``, ``re``, ``json``, ``pathlib``,
``hashlib``, ``datetime`` and ``typing`` before its first useful system call.  This
module imports only ``os``, ``sys`` and C modules (``_json``, ``_struct``,
``_sha256``, ``fcntl``, ``select``), and the three light modules it shares with the
full status: :mod:`qgitconf.agent.vouch` (the one reader and check of
``manifest.stat``), :mod:`qgitconf.agent.configmemo` (the configuration memo) and
:mod:`qgitconf.qubes.qubesdb`.

It answers only the common case, with exactly the result the full status gives
(``tests/test_statusfast.py`` runs both on the same homes): the configuration memo
matches every input of the configuration reader; the state lock is free; there is no
journal and nothing :func:`qgitconf.agent.debris.clear_debris` would remove; the
state records parse; ``manifest.stat`` belongs to ``manifest.json`` and vouches for
every managed regular file, which all ``lstat`` as recorded; every other managed
entry is a symlink with its recorded target.  On anything else - a record it cannot
read, a changed or racy file, an interrupted apply, a busy lock, any doubt - it
returns None and the caller runs the full status, which recovers, reports drift,
refreshes caches and explains errors.  It writes nothing.
"""

from __future__ import annotations

import _json
import fcntl
import os
import stat

from qgitconf.agent import configmemo, vouch
from qgitconf.agent.stamps import stamp_age
from qgitconf.qubes import qubesdb

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from qgitconf.agent.records import Status

STATE_REL = "/.local/share/qgitconf"  # ``state.state_dir``
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # ``homewalk``'s
_MAX_FDS = 256
_MAX_RECORD_BYTES = 64 << 20  # state.json, generations.json, manifest.stat read at most
_SMALL_HASH = 512 << 10  # below this, the builtin SHA-256 (no OpenSSL import); above, OpenSSL
_HASH_BYTES_PER_LSTAT = 1000  # hashing (and loading OpenSSL) vs lstat, measured here: ~1 KB each
# ``debris.clear_debris``'s names: a state record's temp (``atomic_write``), HEAD's temp
_RECORD_TEMPS = tuple(
    f".{name}."
    for name in (
        "manifest.json",
        "manifest.stat",
        "originals.json",
        "generations.json",
        "state.json",
        configmemo.MEMO,
    )
)


class _Fallback(Exception):
    """Not the common case: the full status answers."""


def status(home: str, env: Mapping[str, str]) -> Status | None:
    """What :func:`qgitconf.agent.status.status` returns for ``home``, if this is
    the common case (see the module's docstring); else None."""
    if env.get("QGITCONF_FAULT_AFTER_WRITES"):  # a fault trial: the full status
        return None
    root = home + STATE_REL
    try:
        return _status(home, root)
    except Exception:  # _Fallback, or anything unexpected: the full status decides
        return None


def _status(home: str, root: str) -> Status:
    # QubesDB's answer is asked now and collected at the end: its program runs
    # beside the drift check.
    config = configmemo.begin_lookup(root, qubesdb.start_read)
    try:
        out = _home_state(home, root)
    finally:
        answer = config()
    if answer is None:
        raise _Fallback
    out["source"], out["keys"] = answer
    return out


def _home_state(home: str, root: str) -> Status:
    rootfd = os.open(root, _DIR_FLAGS)
    try:
        try:
            fcntl.flock(rootfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _Fallback from None  # busy: the full status says so
        _no_debris(rootfd)
        data = _load_json(rootfd, "state.json", {})
        managed = _no_drift(home, rootfd)
        if "journal" in os.listdir(rootfd):  # not there before: ``describe`` is None
            raise _Fallback
    finally:
        os.close(rootfd)  # the lock goes with it
    gens = _load_json_at(root + "/generations.json", [])
    if not isinstance(data, dict) or not isinstance(gens, list):
        raise _Fallback
    staged = data.get("staged") or {}
    if not isinstance(staged, dict):
        raise _Fallback
    last = gens[-1] if gens else None
    number, when, age, skipped = 0, None, None, []
    if last is not None:
        if not isinstance(last, dict) or not isinstance(last.get("skipped") or [], list):
            raise _Fallback
        number, when, age = last["number"], last["time"], _age(last["time"])
        skipped = list(last.get("skipped") or [])
    return {
        "role": "target",
        "source": None,
        "keys": None,
        "sequence": data.get("sequence"),
        "staged": staged.get("commit"),
        "received": staged.get("received"),
        "applied": data.get("applied"),
        "pending": bool(staged) and staged.get("commit") != data.get("applied"),
        "generation": number,
        "last_update": when,
        "last_update_age": age,
        "skipped": skipped,
        "managed": managed,
        "drift": [],
        "drift_detail": [],
        "interrupted": False,
        "journal": None,
        "busy": False,
        "recovered": None,
    }


def _no_debris(rootfd: int) -> None:
    """Nothing :func:`qgitconf.agent.debris.clear_debris` would remove (a record's
    or HEAD's temp, a ref's lock file) and no journal; else the full status (which
    removes it and says so)."""
    for name in os.listdir(rootfd):
        if name == "journal" or name.startswith(_RECORD_TEMPS):
            raise _Fallback
    repo = _open_dir(rootfd, "repo")
    if repo is None:
        return
    try:
        if any(name.startswith(".HEAD.") for name in os.listdir(repo)):
            raise _Fallback
        refs = _open_dir(repo, "refs")
    finally:
        os.close(repo)
    if refs is None:
        return
    try:
        ours = _open_dir(refs, "qgitconf")
    finally:
        os.close(refs)
    if ours is None:
        return
    try:
        if "applied.lock" in os.listdir(ours):
            raise _Fallback
        gens = _open_dir(ours, "generations")
        if gens is not None:
            try:
                if any(name.endswith(".lock") for name in os.listdir(gens)):
                    raise _Fallback
            finally:
                os.close(gens)
    finally:
        os.close(ours)


def _open_dir(d: int, name: str) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=d)
    except FileNotFoundError:
        return None


def _read(fd: int, cap: int) -> bytes:
    chunks = []
    size = 0
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            raise _Fallback
    return b"".join(chunks)


def _read_at(rootfd: int, name: str) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=rootfd)
    except FileNotFoundError:
        return None
    try:
        return _read(fd, _MAX_RECORD_BYTES)
    finally:
        os.close(fd)


class _Decoder:
    """What ``json.loads`` gives its C scanner (``json.decoder.JSONDecoder()``'s
    defaults), except NaN and Infinity, which no record of ours holds: they raise."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise _Fallback


_scan = _json.make_scanner(_Decoder())  # type: ignore[arg-type]


def loads(data: bytes) -> Any:
    """``json.loads`` of ``data`` (UTF-8) through the same C scanner; any doubt (not
    UTF-8, a BOM, trailing data, NaN) raises ``ValueError``."""
    text = data.decode("utf-8")
    if text.startswith("\ufeff"):
        raise ValueError("a BOM")
    at = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        value, end = _scan(text, at)
    except Exception:  # StopIteration, NaN's _Fallback; and without ``json.decoder``
        # imported, the scanner's error is a SystemError ("returned NULL without
        # setting an exception": it raises json.decoder.JSONDecodeError only if loaded)
        raise ValueError("not JSON") from None
    if len(text[end:].lstrip(" \t\n\r")):
        raise ValueError("extra data")
    return value


def _load_json(rootfd: int, name: str, default: object) -> Any:
    raw = _read_at(rootfd, name)
    return default if raw is None else loads(raw)


def _load_json_at(path: str, default: object) -> Any:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return default
    try:
        return loads(_read(fd, _MAX_RECORD_BYTES))
    finally:
        os.close(fd)


def _no_drift(home: str, rootfd: int) -> int:
    """The number of managed entries, if ``manifest.stat`` vouches for every one and
    each is as recorded (``status._scan``'s fast case, with nothing left to probe).

    The index must belong to ``manifest.json`` (its SHA-256): with many files, that
    hash (2.2 MB at 10,000 files) is taken by the forked child that checks part of
    the files, beside the parent's ``lstat`` calls; the answer counts only if it holds.
    """
    raw = _read_at(rootfd, "manifest.stat")
    if raw is None or len(raw) < len(vouch.STAT_MAGIC) + 32:
        raise _Fallback
    bound = raw[len(vouch.STAT_MAGIC) : len(vouch.STAT_MAGIC) + 32]
    index = vouch.parse_stat_index(raw, bound, loads)  # bound: checked below
    if index is None:
        raise _Fallback
    groups, records, others, managed = index
    mfd = os.open("manifest.json", os.O_RDONLY | os.O_CLOEXEC, dir_fd=rootfd)
    dirs = _Dirs(home)
    try:
        size = os.fstat(mfd).st_size

        def bound_to_manifest() -> bool:
            return _sha256_of(mfd, size) == bound

        if not vouch.all_unchanged(
            dirs.run,
            groups,
            records,
            parallel_min=_parallel_min(),
            may_fork=vouch.may_fork(),
            report=vouch.report,
            child_first=bound_to_manifest,
            child_load=size // _HASH_BYTES_PER_LSTAT,
        ):
            raise _Fallback
        if not isinstance(others, dict):
            raise _Fallback
        for path, rec in others.items():
            dirs.same_link(path, rec)
    finally:
        dirs.close()
        os.close(mfd)
    return managed


def _sha256_of(fd: int, size: int) -> bytes:
    h = configmemo.sha256(large=size >= _SMALL_HASH)
    at = 0
    while chunk := os.pread(fd, 1 << 20, at):
        h.update(chunk)
        at += len(chunk)
    digest: bytes = h.digest()
    return digest


def _parallel_min() -> int:
    return 2000  # ``statcache.PARALLEL_MIN_FILES`` (tests/test_statusfast.py compares)


class _Dirs:
    """Directory fds below the home, each component opened ``O_NOFOLLOW`` from the
    one above (``homewalk.HomeWalk._dirfd``): a symlink on the way is never followed."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.fds: dict[str, int] = {}

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def get(self, parent: str) -> int:
        fd = self.fds.get(parent)
        if fd is not None:
            return fd
        if not parent:
            if len(self.fds) >= _MAX_FDS:  # no fd of the cache is in use between groups
                self.close()
            fd = os.open(self.home, _DIR_FLAGS)
        else:
            above, _, name = parent.rpartition("/")
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.get(above))
        self.fds[parent] = fd
        return fd

    def run(self, groups: vouch.Groups, records: bytes) -> bool:
        return vouch.unchanged_by_path(self.get(""), groups, records)

    def same_link(self, path: str, rec: object) -> None:
        """A managed entry not vouched for: only a symlink to its recorded target
        passes (``status._drift`` finds no drift then, and refreshes nothing)."""
        if (
            not isinstance(rec, dict)
            or rec.get("type") != "link"
            or {k for k in rec if k != "stat"} != {"type", "target"}
            or not isinstance(rec["target"], str)
        ):
            raise _Fallback
        parent, _, name = path.rpartition("/")
        if not name or (parent and not vouch.is_relative_dir(parent)):
            raise _Fallback
        d = self.get(parent)
        st = os.stat(name, dir_fd=d, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode) or os.readlink(name, dir_fd=d) != rec["target"]:
            raise _Fallback


def _age(stamp: object) -> int:
    """:func:`qgitconf.agent.stamps.stamp_age`; anything it cannot read falls back."""
    age = stamp_age(stamp)
    if age is None:
        raise _Fallback
    return age
