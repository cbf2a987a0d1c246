"""Reading and writing files in $HOME without following symlinks (DESIGN rule 9).

Every path is reached through :class:`qgitconf.agent.homewalk.HomeWalk`'s no-follow
walk: a symlink or a file where a directory should be stops it (``probe`` reports it as
"blocked", writes raise ``ApplyError``), so a planted ``~/.config -> /elsewhere`` is
never followed.  Files are written to an ``O_EXCL`` temp name in the same directory,
fsynced and renamed over the destination, so a symlink or hard link at the destination
is replaced, never written through.

The temp name is chosen by the caller (the journal), so that recovery after a crash
knows exactly which leftover to remove; it is short and fixed-length, never derived
from the name it replaces, so any name of up to NAME_MAX bytes can be written.  A name
the filesystem refuses as too long (``ENAMETOOLONG``) is treated as absent when
probing, removing or rolling back: no file can have it, so there is nothing to undo.

The agent's kept copies (``originals/``, ``backups/<N>/``) are written and read through
a ``HomeFS`` of the state directory too, so they never follow a link either.

``hook`` is the fault-injection seam of ``qgitconf.agent.journal`` (a no-op in
production).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from typing import TYPE_CHECKING, NamedTuple

from qgitconf.agent.homewalk import DIR_FLAGS, Blocked, HomeWalk, absent, umask
from qgitconf.agent.statcache import StatKey, cache_hit, stat_key
from qgitconf.errors import ApplyError, DriftError
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Entry, Probed

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class DiskState(NamedTuple):
    """What is at a path right now.

    ``kind`` is "missing", "file", "link", "dir", "other" (fifo, device...) or
    "blocked" (a component on the way is a symlink or not a directory; ``target``
    then names that component).  A named tuple, not a dataclass: ``dataclasses``
    imports ``inspect``, about 5 ms of every ``qgitconf status``.
    """

    kind: str
    mode: int = 0
    sha256: str = ""
    target: str = ""
    st: StatKey | None = None
    hashed: bool = False  # the content was read (not taken from the stat cache)

    def record(self) -> Probed:
        if self.kind == "file":
            return {"type": "file", "mode": self.mode, "sha256": self.sha256}
        if self.kind == "link":
            return {"type": "link", "target": self.target}
        return {"type": self.kind}


class HomeFS(HomeWalk):
    """Safe operations on paths relative to one home directory, through the cached
    no-follow directory fds of :class:`~qgitconf.agent.homewalk.HomeWalk`
    (``rmdir`` drops the fds of what it removes)."""

    # -- reading -------------------------------------------------------------------------

    def probe(self, path: str, cached: Entry | None = None) -> DiskState:
        """Return what is at ``path`` without following any symlink.

        ``cached`` is the manifest record of ``path``; when its stat cache proves the
        file unchanged, the content is not read again.
        """
        parents, _, name = path.rpartition("/")
        try:
            d = self._dirfd(parents.split("/") if parents else [], create=False)
        except Blocked as b:
            return DiskState("blocked", target=b.where)
        if d is None:
            return DiskState("missing")
        return self._probe_at(d, name, cached)

    def _probe_at(self, d: int, name: str, cached: Entry | None) -> DiskState:
        try:
            st = os.stat(name, dir_fd=d, follow_symlinks=False)
        except OSError as e:
            if absent(e):
                return DiskState("missing")
            raise
        if stat.S_ISLNK(st.st_mode):
            return DiskState("link", target=os.readlink(name, dir_fd=d), st=stat_key(st))
        if stat.S_ISDIR(st.st_mode):
            return DiskState("dir", mode=stat.S_IMODE(st.st_mode))
        if not stat.S_ISREG(st.st_mode):
            return DiskState("other")
        mode = stat.S_IMODE(st.st_mode)
        if cached is not None and cache_hit(st, cached) and cached.get("type") == "file":
            return DiskState("file", mode, str(cached.get("sha256")), st=stat_key(st))
        fd = os.open(name, _READ_FLAGS, dir_fd=d)
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):  # swapped between stat and open
                return DiskState("other")
            h = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
        finally:
            os.close(fd)
        return DiskState("file", mode, h.hexdigest(), st=stat_key(fst), hashed=True)

    def lstat(self, path: str) -> os.stat_result | None:
        """``lstat`` of ``path`` (None if it or its directory is missing or blocked)."""
        parents, _, name = path.rpartition("/")
        try:
            d = self._dirfd(parents.split("/") if parents else [], create=False)
        except Blocked:
            return None
        if d is None:
            return None
        try:
            return os.stat(name, dir_fd=d, follow_symlinks=False)
        except OSError as e:
            if absent(e):
                return None
            raise

    def read(self, path: str) -> bytes:
        with self.parent(path) as (d, name):
            if d is None:
                raise FileNotFoundError(path)
            fd = os.open(name, _READ_FLAGS, dir_fd=d)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ApplyError(f"'{sanitize(path)}' is not a regular file")
                chunks = []
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)

    def list_under(self, path: str) -> tuple[list[str], list[str]] | None:
        """Files/symlinks and directories below directory ``path`` (deepest dirs first).

        Returns None if anything else (a fifo, a device) is in there.
        """
        files: list[str] = []
        dirs: list[str] = []

        def walk(rel: str) -> bool:
            with self.parent(rel) as (d, name):
                if d is None:
                    return False
                fd = os.open(name, DIR_FLAGS, dir_fd=d)
            try:
                for entry in sorted(os.listdir(fd)):
                    st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                    sub = f"{rel}/{entry}"
                    if stat.S_ISDIR(st.st_mode):
                        if not walk(sub):
                            return False
                    elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                        files.append(sub)
                    else:
                        return False
            finally:
                os.close(fd)
            dirs.append(rel)
            return True

        return (files, dirs) if walk(path) else None

    # -- writing -------------------------------------------------------------------------

    def write_file(self, path: str, data: bytes, mode: int, tmp: str) -> os.stat_result:
        """Atomically replace ``path`` with a regular file; return its stat.

        Steps: ``tmp`` (created ``O_EXCL | O_NOFOLLOW`` in the same directory), write,
        ``fchmod`` to the exact mode, fsync, rename over ``path``, fsync the directory.
        """
        self.write_temp(path, data, mode, tmp, sync=True)
        return self.replace(path, tmp)

    def write_temp(self, path: str, data: bytes, mode: int, tmp: str, *, sync: bool) -> None:
        """Write ``data`` as ``tmp`` beside ``path``: created ``O_EXCL | O_NOFOLLOW``,
        ``fchmod`` to the exact mode, fsynced if ``sync`` (else the caller syncs the
        filesystem before ``replace``).  On an error the temp file is removed."""
        d, _name = self._parent(path)
        if d is None:
            raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
        fd = os.open(tmp, _TEMP_FLAGS, 0o600, dir_fd=d)
        try:
            # The fault hook's "partial-temp": killed here, the temp exists, empty (a
            # temp cut short); one write then (the apply rows: a write per file).
            self.hook("partial-temp")
            _write_all(fd, memoryview(data))
            os.fchmod(fd, mode)  # exact mode, whatever the umask
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=d)
            raise
        os.close(fd)
        self.hook("temp-written")

    def create(self, path: str, data: bytes, mode: int) -> os.stat_result:
        """Create the absent ``path`` in place holding ``data`` with exact ``mode``;
        return its stat.  No temp name, no rename: the apply does this only for a path
        that was absent, in a directory it created itself (the journal's undo is the
        removal of what it wrote, or of any prefix of it: :meth:`Journal._undo_step`).
        Created ``O_EXCL | O_NOFOLLOW``: whatever appeared there since the plan is
        never written through or replaced (DriftError).  Not fsynced: the caller syncs
        the filesystem before its commit point.

        The fault hook's "partial-direct": killed there, the file exists, empty (a
        write cut short); "direct-written" after it is whole.
        """
        d, name = self._parent(path)
        if d is None:
            raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
        try:
            fd = os.open(name, _TEMP_FLAGS, mode, dir_fd=d)
        except FileExistsError:
            raise DriftError(f"appeared while applying: {sanitize(path)}") from None
        try:
            self.hook("partial-direct")
            _write_all(fd, memoryview(data))
            if mode & umask():  # else O_CREAT gave the exact mode already
                os.fchmod(fd, mode)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=d)  # ours: O_EXCL made it
            raise
        os.close(fd)
        self.hook("direct-written")
        return st

    def create_link(self, path: str, target: str) -> os.stat_result:
        """Create the symlink ``path`` -> ``target`` (already validated) where nothing
        was (as :meth:`create`: a symlink is made whole or not at all)."""
        d, name = self._parent(path)
        if d is None:
            raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
        try:
            os.symlink(target, name, dir_fd=d)
        except FileExistsError:
            raise DriftError(f"appeared while applying: {sanitize(path)}") from None
        self.hook("direct-written")
        return os.stat(name, dir_fd=d, follow_symlinks=False)

    def link_temp(self, path: str, target: str, tmp: str) -> None:
        """Create the symlink ``tmp`` -> ``target`` (already validated) beside ``path``."""
        d, _name = self._parent(path)
        if d is None:
            raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
        os.symlink(target, tmp, dir_fd=d)
        self.hook("temp-written")

    def replace(self, path: str, tmp: str) -> os.stat_result:
        """Rename ``tmp`` over ``path`` (same directory); return the new ``lstat``.

        The directory is fsynced at once, or noted in ``unsynced`` while that is a set.
        """
        d, name = self._parent(path)
        if d is None:
            raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
        self._replace(d, tmp, name, path)
        return os.stat(name, dir_fd=d, follow_symlinks=False)

    def write_link(self, path: str, target: str, tmp: str) -> os.stat_result:
        """Atomically replace ``path`` with a symlink to the already validated ``target``."""
        self.link_temp(path, target, tmp)
        return self.replace(path, tmp)

    def _replace(self, d: int, tmp: str, name: str, path: str) -> None:
        try:
            os.rename(tmp, name, src_dir_fd=d, dst_dir_fd=d)
        except OSError as e:
            if e.errno == errno.EBUSY:
                try:
                    self._rewrite_in_place(d, tmp, name, path)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=d)
                self._sync_dir(d, path)
                return
            os.unlink(tmp, dir_fd=d)
            if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.ENOTDIR):
                raise ApplyError(f"'{sanitize(name)}' is a directory; not replaced") from e
            raise
        self._sync_dir(d, path)

    def _rewrite_in_place(self, d: int, tmp: str, name: str, path: str) -> None:
        """``name`` is a mount point (a file bind-mounted by custom-persist or bind-dirs:
        rename onto it fails with EBUSY): copy the regular file ``tmp`` into it, truncate,
        set the mode, fsync.  Not atomic: the journal's undo copy (a copy, as a hard link
        cannot cross the mount) is what a crash in between rolls back to."""
        if not stat.S_ISREG(os.stat(tmp, dir_fd=d, follow_symlinks=False).st_mode):
            raise ApplyError(
                f"'{sanitize(path)}' is a mount point (custom-persist or bind-dirs): only a "
                "regular file can be written into it; persist its directory instead"
            )
        src = os.open(tmp, _READ_FLAGS, dir_fd=d)
        try:
            st = os.fstat(src)
            if not stat.S_ISREG(st.st_mode):  # replaced since the lstat
                raise ApplyError(
                    f"'{sanitize(path)}' is a mount point (custom-persist or bind-dirs): only a "
                    "regular file can be written into it; persist its directory instead"
                )
            try:
                dst = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
            except OSError as e:
                raise ApplyError(
                    f"'{sanitize(path)}' is a mount point that is not a writable file: {e}"
                ) from e
            try:
                if not stat.S_ISREG(os.fstat(dst).st_mode):
                    raise ApplyError(f"'{sanitize(path)}' is a mount point, not a file")
                os.ftruncate(dst, 0)
                self.hook("in-place")  # a crash here leaves it empty: rolled back
                while chunk := os.read(src, 1 << 20):
                    _write_all(dst, memoryview(chunk))
                os.fchmod(dst, stat.S_IMODE(st.st_mode))
                os.fsync(dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def remove_temp(self, path: str, tmp: str) -> bool:
        """Remove a leftover temp file ``tmp`` beside ``path``; True if there was one."""
        try:
            with self.parent(path) as (d, _name):
                if d is None:
                    return False
                try:
                    os.unlink(tmp, dir_fd=d)
                except OSError as e:
                    if absent(e):
                        return False  # never made (a name too long cannot have been)
                    raise
                return True
        except ApplyError:
            return False

    def remove(self, path: str) -> None:
        """Remove the file or symlink at ``path`` (never a directory)."""
        with self.parent(path) as (d, name):
            if d is None:
                return
            try:
                os.unlink(name, dir_fd=d)
            except OSError as e:
                if absent(e):
                    return
                if e.errno == errno.EBUSY:
                    raise ApplyError(
                        f"'{sanitize(path)}' is a mount point (custom-persist or bind-dirs) "
                        "and cannot be removed; undeclare it in dom0 and reboot first"
                    ) from e
                raise
            self._sync_dir(d, path)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        """Create directory ``path`` (its parent must exist); exact ``mode``."""
        with self.parent(path) as (d, name):
            if d is None:
                raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
            self._missing.discard(path)
            try:
                os.mkdir(name, mode, dir_fd=d)
            except FileExistsError:
                return
            fd = os.open(name, DIR_FLAGS, dir_fd=d)
            try:
                if mode & umask():  # else mkdir gave the exact mode already
                    os.fchmod(fd, mode)
            except BaseException:
                os.close(fd)
                raise
            # Kept as the directory's cached fd (the inode just made, opened without
            # following a link): the writes into it need no second openat.
            old = self._fds.get(path)
            self._fds[path] = fd
            if old is not None:
                os.close(old)
            self._sync_dir(d, path)

    def rmdir(self, path: str) -> bool:
        """Remove the empty directory ``path``; False if it is missing or not empty.

        A directory that is a mount point (persisted by custom-persist or bind-dirs:
        EBUSY) stays, and counts as removed: qgitconf no longer has anything in it."""
        with self.parent(path) as (d, name):
            if d is None:
                return False
            self.forget(path)
            try:
                os.rmdir(name, dir_fd=d)
            except (FileNotFoundError, OSError) as e:
                if isinstance(e, FileNotFoundError) or e.errno in (
                    errno.ENOTEMPTY,
                    errno.EEXIST,
                    errno.ENOTDIR,
                    errno.ENAMETOOLONG,
                ):
                    return False
                if e.errno == errno.EBUSY:
                    return True
                raise
            self._sync_dir(d, path)
            return True

    def link_out(self, path: str, dest_fd: int, dest: str) -> bool:
        """Hard-link the inode at ``path`` (a file or a symlink, never followed) as
        ``dest`` in directory ``dest_fd``.  False if the filesystem cannot (EXDEV...)."""
        with self.parent(path) as (d, name):
            if d is None:
                raise FileNotFoundError(path)
            try:
                os.link(name, dest, src_dir_fd=d, dst_dir_fd=dest_fd, follow_symlinks=False)
            except OSError as e:
                if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    return False
                raise
            return True

    def move_in(self, src_fd: int, src: str, path: str) -> None:
        """Rename ``src`` (in ``src_fd``) over ``path``; fsync the directory."""
        with self.parent(path) as (d, name):
            if d is None:
                raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
            os.rename(src, name, src_dir_fd=src_fd, dst_dir_fd=d)
            os.fsync(d)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]
