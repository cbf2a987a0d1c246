"""The agent's state directory ``~/.local/share/qgitconf`` (DESIGN "Target state").

Layout::

    repo/             bare git repo: refs/qgitconf/staged, refs/qgitconf/applied,
                      refs/qgitconf/generations/<N>
    state.json        last accepted sequence and commit, what is staged and applied
    generations.json  one record per apply (commit, time, files, backups)
    manifest.json     per managed file: type, mode, SHA-256 as written (drift)
    manifest.stat     the manifest's stat cache in a compact binary form, bound to
                      manifest.json by its SHA-256 (status reads it, not the JSON)
    config.memo       the configuration reader's answer for status, keyed by its
                      inputs (qgitconf.agent.configmemo)
    originals/        files that existed before qgitconf first overwrote them
    backups/<N>/      files overwritten by generation N after a local change
    rejected.log      append-only, one JSON line per rejected update; rotated to
                      rejected.log.1 before it would pass MAX_REJECTED_LOG_BYTES
    journal/          present only while an apply runs: plan.json, progress, undo/
                      (see qgitconf.agent.journal and docs/apply.md)
    tmp/              quarantines for incoming updates
    verify-gnupg/     a GnuPG home holding exactly the pinned keys, named by their
                      SHA-256 (``qgitconf.gpg.homes.HomeCache``); kept after a
                      successful verification, rebuilt when the pins change
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from qgitconf.agent import vouch
from qgitconf.errors import LocalStateError
from qgitconf.fsutil import atomic_write, read_json
from qgitconf.gitpack.store import open_refs, open_repo
from qgitconf.limits import MAX_REJECTED_DETAIL_CHARS, MAX_REJECTED_LOG_BYTES
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Entry, Generation, Original, StateRecord
    from qgitconf.durable import DurableBatch

STAGED_REF = b"refs/qgitconf/staged"
APPLIED_REF = b"refs/qgitconf/applied"
GENERATION_REF = "refs/qgitconf/generations/{n}"
STAGED_STATEMENT = "staged.statement"
"""The staged update's signed statement, as it came (the root step verifies it again)."""
STAGED_SIGNATURE = "staged.statement.asc"
"""Its detached signature."""


_STAT_MAGIC = vouch.STAT_MAGIC
_STAT_HEAD = vouch.STAT_HEAD  # manifest SHA-256; counts and lengths below
_STAT_COUNT = vouch.STAT_COUNT  # vouched files in one directory


class StatIndex(NamedTuple):
    """``manifest.stat``: what status needs to see that no managed file changed.

    ``vouched`` holds, directory by directory (``""`` for the home itself), the names
    of the regular files whose stat cache can prove them unchanged; ``records`` the
    ``lstat`` each must show, in the same order (``vouch.vouched_key`` packed as
    ``vouch.VOUCHED_RECORD``); ``others`` the full manifest records of every other
    entry (symlinks, entries without a usable cache).
    """

    vouched: list[tuple[str, list[str]]]
    records: bytes
    others: dict[str, Entry]
    managed: int  # manifest entries in all


def state_dir(home: Path) -> Path:
    return home / ".local" / "share" / "qgitconf"


class AgentState:
    """Paths and small JSON records of the agent's state; the orchestrators' view."""

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"AgentState({self.root!r})"

    @property
    def repo_path(self) -> Path:
        return self.root / "repo"

    @property
    def objects(self) -> Path:
        return self.repo_path / "objects"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def verify_homes(self) -> Path:
        return self.root / "verify-gnupg"

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"

    @contextlib.contextmanager
    def lock(self, *, wait: bool = False) -> Iterator[bool]:
        """Hold the state lock (``flock`` of this directory).

        Yields False if another process holds it and ``wait`` is false.  A killed
        holder releases it with its last fd.
        """
        # flock() on the directory itself: no lock file, so a command that changes
        # nothing leaves the state byte-identical (rule 8's tests compare it).
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def ensure(self) -> None:
        """Create the state directory and the bare repo on first use."""
        if (self.repo_path / "HEAD").exists() and self.tmp.is_dir():
            return
        from qgitconf.gitpack.compatinit import init_bare

        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp.mkdir(exist_ok=True, mode=0o700)
        if not (self.repo_path / "HEAD").exists():
            # No config read for the default branch (~/.gitconfig is an update's to
            # write: DESIGN rule 12).
            init_bare(str(self.repo_path), b"main")

    def refs(self, while_locked: Callable[[bytes], None] | None = None) -> Any:
        """The agent repo's refs (dulwich's loose-ref writer, with its lock files);
        cheaper to load than the whole ``Repo`` (Receive only moves one ref).

        ``while_locked(ref)`` is called while a write given a ``message`` holds the
        ref's lock file (``<ref>.lock`` written, not yet renamed over the ref): the
        fault hook's seam for a kill in the middle of a ref write (issue 23).  No
        reflog is written either way.
        """
        if not (self.repo_path / "HEAD").exists():
            raise LocalStateError(f"no agent repository at {self.repo_path}")
        if while_locked is None:
            return open_refs(str(self.repo_path))
        hook = while_locked

        def logger(ref: bytes, *_rest: object) -> None:
            hook(ref)

        return open_refs(str(self.repo_path), logger)

    def repo(self) -> Any:
        if not (self.repo_path / "HEAD").exists():
            raise LocalStateError(f"no agent repository at {self.repo_path}")
        return open_repo(str(self.repo_path))

    def point_head(self, commit: str | None) -> None:
        """Detach HEAD at the applied commit, so plain `git log` in the repo shows it."""
        head = f"{commit}\n" if commit else "ref: refs/heads/main\n"
        atomic_write(self.repo_path / "HEAD", head.encode("ascii"), 0o644)

    # -- state.json ---------------------------------------------------------------------

    def load(self) -> StateRecord:
        data: StateRecord = read_json(self.root / "state.json", {})
        if not isinstance(data, dict):
            raise LocalStateError("state.json is corrupt")
        return data

    def save(self, data: StateRecord) -> None:
        _save_json(self.root / "state.json", data)

    @property
    def last_sequence(self) -> int | None:
        value = self.load().get("sequence")
        return value if isinstance(value, int) else None

    @property
    def last_commit(self) -> str | None:
        value = self.load().get("commit")
        return value if isinstance(value, str) else None

    @property
    def applied_commit(self) -> str | None:
        value = self.load().get("applied")
        return value if isinstance(value, str) else None

    # -- generations / manifest ---------------------------------------------------------

    def generations(self) -> list[Generation]:
        data = read_json(self.root / "generations.json", [])
        return data if isinstance(data, list) else []

    def save_generations(
        self, gens: list[Generation], *, batch: DurableBatch | None = None
    ) -> None:
        """Write ``generations.json`` (into ``batch``, if given: see ``fsutil``)."""
        _save_json(self.root / "generations.json", gens, batch)

    def manifest(self) -> dict[str, Entry]:
        data = read_json(self.root / "manifest.json", {})
        return data if isinstance(data, dict) else {}

    def save_manifest(
        self, manifest: dict[str, Entry], *, batch: DurableBatch | None = None
    ) -> None:
        """Write ``manifest.json``, then ``manifest.stat`` for it (a crash between the
        two leaves a ``manifest.stat`` that no longer matches: ignored); into
        ``batch``, if given (renamed in that order by its owner)."""
        data = _save_json(self.root / "manifest.json", manifest, batch)
        stat_index = _stat_index_bytes(manifest, data)
        if batch is None:
            atomic_write(self.root / "manifest.stat", stat_index)
        else:
            batch.add(self.root / "manifest.stat", stat_index)

    def stat_index(self) -> StatIndex | None:
        """``manifest.stat`` if it belongs to the current ``manifest.json``; else None
        (missing, stale, or unreadable: the caller reads the manifest instead)."""
        try:
            manifest = (self.root / "manifest.json").read_bytes()
            raw = (self.root / "manifest.stat").read_bytes()
        except OSError:
            return None
        return _parse_stat_index(raw, hashlib.sha256(manifest).digest())

    def originals(self) -> dict[str, Original]:
        data = read_json(self.root / "originals.json", {})
        return data if isinstance(data, dict) else {}

    def save_originals(
        self, originals: dict[str, Original], *, batch: DurableBatch | None = None
    ) -> None:
        """Write ``originals.json`` (into ``batch``, if given)."""
        _save_json(self.root / "originals.json", originals, batch)

    # -- rejected log ------------------------------------------------------------------

    def log_rejection(self, code: str, detail: str, sender: str) -> None:
        """Append one line to ``rejected.log`` (the one write a rejection may make).

        The log is capped: a line that would take it past
        :data:`~qgitconf.limits.MAX_REJECTED_LOG_BYTES` first moves it to
        ``rejected.log.1`` (replacing the older one), so a stream of garbage from the
        source uses at most twice the cap of the private volume.  A detail is cut to
        :data:`~qgitconf.limits.MAX_REJECTED_DETAIL_CHARS`.
        """
        shown = sanitize(detail)
        if len(shown) > MAX_REJECTED_DETAIL_CHARS:
            shown = shown[:MAX_REJECTED_DETAIL_CHARS] + "..."
        record = {
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "from": sanitize(sender)[:MAX_REJECTED_DETAIL_CHARS],
            "reason": code,
            "detail": shown,
        }
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        # A full disk must not turn a rejection into a crash.
        with contextlib.suppress(OSError):
            _append_capped(self.root / "rejected.log", line, MAX_REJECTED_LOG_BYTES)


def _append_capped(path: Path, line: bytes, cap: int) -> None:
    """Append ``line`` to the log ``path`` (fsynced), rotating it to ``<path>.1`` first
    if the line would take it past ``cap`` bytes.

    Under ``flock`` of the open log: two rejections at once neither rotate twice nor
    write into a log that was just moved aside (the inode is checked after the lock).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                continue  # rotated away meanwhile: open the new one
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                continue
            if st.st_size and st.st_size + len(line) > cap:
                os.replace(path, path.with_name(path.name + ".1"))
                continue
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            return
        finally:
            os.close(fd)


def _save_json(path: Path, value: Any, batch: DurableBatch | None = None) -> bytes:
    """Atomically write ``value`` as compact one-line JSON with sorted keys; return the
    bytes.

    For the records that grow with the number of managed files: ``json.dumps`` without
    ``indent`` runs in C, about ten times faster than an indented dump, and without
    spaces after the separators the 10,000-file manifest is some 10 % smaller.  The
    records of older versions (indented, or with spaces) read as before.
    """
    data = (json.dumps(value, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    if batch is None:
        atomic_write(path, data)
    else:
        batch.add(path, data)
    return data


def _stat_index_bytes(manifest: Mapping[str, Entry], manifest_json: bytes) -> bytes:
    """``manifest.stat`` for ``manifest`` (written as ``manifest_json``).

    The magic line; a header (SHA-256 of manifest.json, the numbers of vouched files,
    of their directories and of other entries, the lengths of the two name lists and
    of the others' JSON); per directory the number of its vouched files; one
    fixed-size record per vouched file, grouped by directory; the directories' names,
    then the files' base names, each list NUL-separated (a path never holds NUL, rule
    7); the other entries' records as JSON.  Grouping lets status open each directory once and
    ``lstat`` its files by name.
    """
    groups: dict[str, list[tuple[str, bytes]]] = {}
    others: dict[str, Entry] = {}
    for path, rec in manifest.items():
        key = vouch.vouched_key(rec)
        packed = None
        if key is not None:
            with contextlib.suppress(struct.error):  # out of range: not vouched
                packed = vouch.VOUCHED_RECORD.pack(*key)
        if packed is None:
            others[path] = rec
        else:
            parent, _, name = path.rpartition("/")
            groups.setdefault(parent, []).append((name, packed))
    dirs = sorted(groups)
    counts = [_STAT_COUNT.pack(len(groups[d])) for d in dirs]
    records = [packed for d in dirs for _, packed in groups[d]]
    dir_names = "\0".join(dirs).encode("utf-8", "surrogateescape")
    files = "\0".join(name for d in dirs for name, _ in groups[d])
    file_names = files.encode("utf-8", "surrogateescape")
    rest = json.dumps(others, sort_keys=True).encode("utf-8")
    digest = hashlib.sha256(manifest_json).digest()
    head = _STAT_HEAD.pack(
        digest, len(records), len(dirs), len(others), len(dir_names), len(file_names), len(rest)
    )
    return b"".join([_STAT_MAGIC, head, *counts, *records, dir_names, file_names, rest])


def _parse_stat_index(raw: bytes, manifest_sha256: bytes) -> StatIndex | None:
    """The index in ``raw`` if it is well-formed and bound to ``manifest_sha256``
    (:func:`qgitconf.agent.vouch.parse_stat_index`, the one reader of the format)."""
    parsed = vouch.parse_stat_index(raw, manifest_sha256, json.loads)
    if parsed is None:
        return None
    vouched, records, others, managed = parsed
    return StatIndex(vouched, records, cast("dict[str, Entry]", others), managed)
