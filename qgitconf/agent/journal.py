"""The apply journal: every change to $HOME is planned, journaled and undoable (rule 9).

Layout, under the agent state directory (``~/.local/share/qgitconf/journal/``)::

    plan.json    the whole plan, written (fsynced) before the first change: every step
                 with the disk state it expects before and the record it writes, plus
                 the state records to save once all steps are done ("after")
    progress     append-only, one line per phase reached (for messages; not flushed,
                 recovery does not read it: it needs only the plan and the disk)
    undo/<i>     a hard link to (or, across filesystems, a copy of) whatever step i
                 replaces or deletes, made before step i touches it
    committing   marker: every step is done, only the state records remain

Recovery (``recover``), run under the state lock by apply, revert, restore and status,
first clears what a killed process of the agent left outside the journal (a ref's lock
file, a state record's temp name: ``clear_debris``), then:

- no ``plan.json``: nothing was interrupted (a leftover directory is removed);
- ``committing`` present: every change is on disk; the state records are written
  again (idempotently) and the journal removed - the apply is **finished**;
- otherwise the apply is **rolled back**: in reverse order every step is undone from
  ``undo/<i>`` (a rename, so it needs no free space), files the apply created are
  removed if they still hold what it wrote, leftover temp files are removed, created
  directories are removed if empty, and the copies it kept are dropped.

The commit point is the ``committing`` marker; ``plan.json`` is removed last.

Fault injection (tests and docs/apply.md): ``QGITCONF_FAULT_AFTER_WRITES=N`` makes the
N-th journaled step of this process SIGKILL itself (or, with
``QGITCONF_FAULT_KIND=enospc|eacces``, fail with that error; with
``QGITCONF_FAULT_KIND=stop``, SIGSTOP itself, so that a test can send it a real
SIGINT or SIGTERM at exactly that step and then SIGCONT).  It only ever stops the
process at a point that a crash or a full disk could stop it anyway, which is what the
journal is built to survive; unset, it costs one integer comparison per step.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgitconf.agent.commitrecords import record_commit
from qgitconf.agent.debris import clear_debris
from qgitconf.agent.fault import Fault
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.statcache import content
from qgitconf.agent.state import AgentState
from qgitconf.errors import ApplyError, LocalStateError
from qgitconf.fsutil import atomic_write, fsync_dir, read_json, remove_tree
from qgitconf.gitpack.packread import PackReader
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import After, Interrupted, JournalData, Step

JOURNAL_VERSION = 1


def temp_name(path: str, jid: str, i: int) -> str:
    """The temp name step ``i`` writes beside ``path`` (recovery knows it in advance).

    Short and fixed-length, never derived from the name it replaces: any name of up to
    NAME_MAX bytes stays writable (issue 14; at most ``limits.MAX_TEMP_NAME_BYTES``).
    ``path`` is not used; it is kept in the signature for the callers.
    """
    del path
    return f".qgc-{jid}-{i}"


class Journal:
    """One journal directory; ``data`` is the content of ``plan.json``.

    A plain class, not a dataclass: ``dataclasses`` imports ``inspect`` (about 5 ms of
    every ``qgitconf status``, which imports this module for the recovery check).
    """

    def __init__(self, state: AgentState, data: JournalData, fault: Fault | None = None) -> None:
        self.state = state
        self.data = data
        self.fault = Fault() if fault is None else fault
        self._progress_fd: int | None = None

    @property
    def dir(self) -> Path:
        return self.state.journal_dir

    @property
    def jid(self) -> str:
        return str(self.data["id"])

    @property
    def steps(self) -> list[Step]:
        return self.data["steps"]

    @classmethod
    def begin(cls, state: AgentState, steps: list[Step], after: After, fault: Fault) -> Journal:
        """Write ``plan.json`` (durably) before the first change."""
        if (state.journal_dir / "plan.json").exists():
            raise LocalStateError("an interrupted apply must be recovered first")
        if state.journal_dir.exists():
            remove_tree(state.journal_dir)
        (state.journal_dir / "undo").mkdir(parents=True, mode=0o700)
        jid = os.urandom(4).hex()  # not ``secrets``: its ``random`` import costs every apply
        data: JournalData = {
            "version": JOURNAL_VERSION,
            "id": jid,
            "steps": steps,
            "after": after,
        }
        for s in steps:
            if "direct" not in s:  # a direct step writes its file in place
                s["tmp"] = temp_name(s["path"], jid, s["i"])
        j = cls(state, data, fault)
        # Compact JSON: the C encoder (an indented dump is ~10x slower on 10k steps).
        atomic_write(j.dir / "plan.json", dump(data).encode("utf-8"))
        fsync_dir(state.root)
        fault("journal-written")
        return j

    @classmethod
    def load(cls, state: AgentState) -> Journal | None:
        path = state.journal_dir / "plan.json"
        if not path.exists():
            return None
        data: JournalData = read_json(path, None)
        if (
            not isinstance(data, dict)
            or data.get("version") != JOURNAL_VERSION
            or not isinstance(data.get("steps"), list)
        ):
            raise LocalStateError(
                f"{path} is not a journal this qgitconf can recover; "
                "check the files it lists, then remove the journal directory"
            )
        return cls(state, data)

    # -- progress ------------------------------------------------------------------------

    def progress(self, line: str, *, sync: bool = False) -> None:
        """Append ``line`` to ``progress`` (kept open while the journal is in use).

        One line per phase, none per file, and not flushed by the apply: recovery
        decides on ``plan.json``, the ``committing`` marker and the disk alone, and a
        line lost in a crash only makes its message less precise."""
        fd = self._progress_fd
        if fd is None:
            fd = os.open(
                self.dir / "progress",
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                0o600,
            )
            self._progress_fd = fd
        os.write(fd, (line + "\n").encode("utf-8"))
        if sync:
            os.fsync(fd)

    def release(self) -> None:
        """Close the ``progress`` fd (the journal itself stays)."""
        if self._progress_fd is not None:
            os.close(self._progress_fd)
            self._progress_fd = None

    def phase(self) -> str:
        """The last phase ``progress`` names ("none" before the first), for messages."""
        try:
            lines = (self.dir / "progress").read_text(encoding="utf-8").splitlines()
        except OSError:
            return "none"
        phases = [line[6:] for line in lines if line.startswith("phase ")]
        return sanitize(phases[-1]) if phases else "none"

    def mark_committing(self) -> None:
        """The commit point: ``committing`` created (empty: only its existence is
        read), then the journal directory flushed - one flush."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(self.dir / "committing", flags, 0o600))
        fsync_dir(self.dir)
        self.fault("committing")

    @property
    def committing(self) -> bool:
        return (self.dir / "committing").exists()

    def close(self) -> None:
        """Remove the journal: ``plan.json`` first (the journal ends there), then the rest."""
        self.release()
        (self.dir / "plan.json").unlink(missing_ok=True)
        fsync_dir(self.dir)
        self.fault("journal-removed")
        remove_tree(self.dir, ignore_errors=True)

    # -- undo copies ---------------------------------------------------------------------

    def keep_undo(self, fs: HomeFS, step: Step, undo_fd: int) -> None:
        """Keep what ``step`` will replace or delete as ``undo/<i>``: a hard link (no
        copy, no free space needed), or a copy through a temp name across filesystems."""
        name = str(step["i"])
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=undo_fd)
        if fs.link_out(step["path"], undo_fd, name):
            return
        old = step["old"]
        tmp = name + ".tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=undo_fd)
        if old["type"] == "link":
            os.symlink(old["target"], tmp, dir_fd=undo_fd)
        else:
            data = fs.read(step["path"])
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o600, dir_fd=undo_fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, int(old["mode"]))
                os.fsync(fd)
            finally:
                os.close(fd)
        os.rename(tmp, name, src_dir_fd=undo_fd, dst_dir_fd=undo_fd)

    def open_undo(self) -> int:
        """The fd of ``undo/``; created empty if it is missing (a journal is made with
        it, so only a hand-trimmed one lacks it: then no step has an undo copy)."""
        path = self.dir / "undo"
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    # -- rollback ------------------------------------------------------------------------

    def rollback(self, fs: HomeFS) -> list[str]:
        """Undo every step, newest first; returns paths that could not be put back."""
        problems: list[str] = []
        undo_fd = self.open_undo()
        try:
            for step in reversed(self.steps):
                try:
                    self._undo_step(fs, step, undo_fd)
                except (OSError, ApplyError) as e:
                    problems.append(f"{sanitize(step['path'])}: {e}")
                self.fault("rollback-step")
        finally:
            os.close(undo_fd)
        number = self.data["after"].get("number")
        self._drop_kept_originals()
        if number is not None:
            remove_tree(self.state.root / "backups" / str(number), ignore_errors=True)
        if not problems:
            self.close()
        return problems

    def _drop_kept_originals(self) -> None:
        """Remove the originals this apply kept (and their temp files), walking the
        state directory without following any link: a kept original may itself be a
        symlink (issue 14), and one from an older layout may lie on the way."""
        kept = HomeFS(self.state.root)
        try:
            for step in self.steps:
                at = step.get("keep_at")
                if step.get("keep") != "original" or not is_kept_path(at):
                    continue
                with contextlib.suppress(OSError, ApplyError):
                    kept.remove_temp(str(at), str(step.get("tmp", "")) or ".qgc-none")
                    kept.remove(str(at))
        finally:
            kept.close()

    def _undo_step(self, fs: HomeFS, step: Step, undo_fd: int) -> None:
        op, path, name = step["op"], step["path"], str(step["i"])
        if op == "adopt":
            return  # $HOME was not touched; the kept copy goes with the other originals
        if op == "mkdir":
            # Only a directory is removed (if empty).  A path on the way may be the
            # file a directory was to replace, put back already or never removed
            # (a file ``c/foo`` becoming ``c/foo/baz/deep``): nothing was made there.
            if fs.probe(path).kind == "dir":
                fs.rmdir(path)
            return
        if op == "rmdir":
            if fs.probe(path).kind == "missing":
                fs.mkdir(path, int(step["old"].get("mode", 0o755)))
            return
        # write / restore / delete
        if op != "delete" and "tmp" in step:
            fs.remove_temp(path, str(step["tmp"]))
        try:
            kept = os.stat(name, dir_fd=undo_fd, follow_symlinks=False)
        except FileNotFoundError:
            kept = None
        if kept is not None:
            now = fs.lstat(path)
            if now is not None and op == "delete" and now.st_ino != kept.st_ino:
                raise ApplyError("something new is at this path; the deleted file stays kept")
            try:
                fs.move_in(undo_fd, name, path)
            except OSError as e:
                # EXDEV: another filesystem; EBUSY: ``path`` is a mount point (a file
                # persisted by custom-persist or bind-dirs), written back in place.
                if e.errno not in (errno.EXDEV, errno.EBUSY):
                    raise
                self._copy_back(fs, step, undo_fd, kept)
            return
        if op != "delete" and step["old"]["type"] == "missing" and step["new"] is not None:
            disk = fs.probe(path)
            whole = disk.kind != "missing" and disk.record() == content(step["new"])
            if whole or (disk.kind == "file" and self._partial(fs, step)):
                fs.remove(path)

    def _partial(self, fs: HomeFS, step: Step) -> bool:
        """The file at a direct step's path holds a prefix of what the step writes (a
        write cut short by a crash: ``HomeFS.create``); compared with the step's blob
        in the agent repo.  False for anything else, or if the blob cannot be read."""
        blob = step.get("direct")
        if not isinstance(blob, str) or len(blob) != 40 or blob.strip("0123456789abcdef"):
            return False
        try:
            have = fs.read(str(step["path"]))
        except (OSError, ApplyError):
            return False
        want = _read_blob(self.state, blob)
        return want is not None and len(have) < len(want) and want.startswith(have)

    def _copy_back(self, fs: HomeFS, step: Step, undo_fd: int, kept: os.stat_result) -> None:
        name = str(step["i"])
        tmp = step.get("tmp") or temp_name(step["path"], self.jid, int(step["i"]))
        if stat.S_ISLNK(kept.st_mode):
            fs.write_link(step["path"], os.readlink(name, dir_fd=undo_fd), tmp)
            return
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=undo_fd)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
        fs.write_file(step["path"], b"".join(chunks), stat.S_IMODE(kept.st_mode), tmp)


def _read_blob(state: AgentState, blob: str) -> bytes | None:
    """The content of blob ``blob`` in the agent repo, or None (missing, damaged)."""
    try:
        with PackReader(state.objects) as packs:
            kind, data = packs.get_raw(blob)
        return data if kind == 3 else None
    except KeyError:
        pass
    except (OSError, LocalStateError):
        return None
    try:
        repo = state.repo()
        try:
            kind, data = repo.object_store.get_raw(blob.encode("ascii"))
        finally:
            repo.close()
    except Exception:  # dulwich's errors for a missing or damaged object
        return None
    return bytes(data) if kind == 3 else None


def is_kept_path(rel: object) -> bool:
    """``rel`` names a place in the state directory: relative, no empty, ``.`` or
    ``..`` component (a record of the state is never trusted to walk out of it)."""
    return (
        isinstance(rel, str)
        and bool(rel)
        and not rel.startswith("/")
        and all(part not in ("", ".", "..") for part in rel.split("/"))
    )


# -- the commit: state records --------------------------------------------------------------


# -- crash debris outside the journal ----------------------------------------------------

# The state records the agent writes (``fsutil.atomic_write``: ``mkstemp`` names them
# ``.<name>.`` and 8 characters), and the ref lock files of the refs only the agent
# writes, under the state lock.
# Receive writes state.json too, without the state lock (its write takes
# milliseconds): a temp file of it is debris only once it is this old.


def recover(state: AgentState, fs: HomeFS, fault: Fault | None = None) -> str | None:
    """Finish or roll back an interrupted apply (the caller holds the state lock).

    Returns:
        A message for the user, or None if nothing was interrupted.

    Raises:
        ApplyError: the rollback could not put everything back (the journal stays, so
            the next command tries again; nothing is lost).
    """
    # Under the state lock no other apply runs: a ref lock or a temp name of a state
    # record left by the agent is debris of a killed process (issue 23).
    cleared = clear_debris(state)
    journal = Journal.load(state)
    if journal is None:
        if state.journal_dir.exists():  # removed after its plan.json: just finish
            remove_tree(state.journal_dir, ignore_errors=True)
        if cleared:
            return "leftovers of an interrupted qgitconf were removed: " + ", ".join(
                sanitize(c) for c in cleared
            )
        return None
    if fault is not None:
        journal.fault = fault
    after = journal.data["after"]
    what = f"{after.get('kind', 'apply')}"
    if after.get("number") is not None:
        what += f" (generation {after['number']})"
    if journal.committing:
        record_commit(state, after, None, journal.fault)
        journal.close()
        return f"an interrupted {what} was finished: all its changes were already on disk"
    phase = journal.phase()
    problems = journal.rollback(fs)
    if problems:
        raise ApplyError(
            f"an interrupted {what} could not be rolled back completely; the journal in "
            f"{state.journal_dir} keeps what was replaced:\n  " + "\n  ".join(problems)
        )
    return (
        f"an interrupted {what} was rolled back (it had {len(journal.steps)} steps and "
        f"had reached its phase '{phase}'); $HOME is as it was before it"
    )


def describe(state: AgentState) -> Interrupted | None:
    """What an interrupted journal says (for status), without touching it."""
    journal = Journal.load(state)
    if journal is None:
        return None
    after = journal.data["after"]
    return {
        "kind": after.get("kind"),
        "generation": after.get("number"),
        "steps": len(journal.steps),
        "phase": journal.phase(),
        "committing": journal.committing,
    }


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
