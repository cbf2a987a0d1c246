"""Writing into $HOME without following symlinks (DESIGN rule 9).

Every path is walked from an fd of $HOME, one component at a time, with
``O_NOFOLLOW | O_DIRECTORY``; a symlink or a file where a directory should be stops
the walk (``probe`` reports it as "blocked", writes raise ``ApplyError``), so a
planted ``~/.config -> /elsewhere`` is never followed.  Files are written to an
``O_EXCL`` temp name in the same directory, fsynced and renamed over the destination,
so a symlink or hard link at the destination is replaced, never written through.

The temp name is chosen by the caller (the journal), so that recovery after a crash
knows exactly which leftover to remove.  ``hook`` is the fault-injection seam of
``qgitconf.agent.journal`` (a no-op in production).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgitconf.errors import ApplyError
from qgitconf.sanitize import sanitize

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

# A stat cache entry is trusted only if the file's ctime is older than the moment the
# entry was taken by this much: file timestamps come from a coarse clock, so a change
# within the same tick as the write would otherwise keep size, mtime and ctime (the
# "racy git" problem).  Two seconds covers coarse-grained and network filesystems.
RACY_NS = 2_000_000_000

StatKey = tuple[int, int, int, int]  # size, mtime_ns, ino, ctime_ns


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def stat_entry(st: os.stat_result) -> list[int]:
    """The manifest's stat cache: size, mtime_ns, ino, ctime_ns, and when it was taken."""
    return [*stat_key(st), time.time_ns()]


def content(record: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest record without its stat cache (what drift is decided on)."""
    return {k: v for k, v in record.items() if k != "stat"}


def cache_hit(st: os.stat_result, record: Mapping[str, Any] | None) -> bool:
    """True if ``record``'s stat cache proves the file is unchanged (no re-hash needed)."""
    if record is None:
        return False
    cached = record.get("stat")
    if not isinstance(cached, list) or len(cached) != 5:
        return False
    if tuple(cached[:4]) != stat_key(st):
        return False
    return bool(cached[3] < cached[4] - RACY_NS)


@dataclass(frozen=True)
class DiskState:
    """What is at a path right now.

    ``kind`` is "missing", "file", "link", "dir", "other" (fifo, device...) or
    "blocked" (a component on the way is a symlink or not a directory; ``target``
    then names that component).
    """

    kind: str
    mode: int = 0
    sha256: str = ""
    target: str = ""
    st: StatKey | None = None
    hashed: bool = False  # the content was read (not taken from the stat cache)

    def record(self) -> dict[str, object]:
        if self.kind == "file":
            return {"type": "file", "mode": self.mode, "sha256": self.sha256}
        if self.kind == "link":
            return {"type": "link", "target": self.target}
        return {"type": self.kind}


def _noop(_label: str) -> None:
    return None


class HomeFS:
    """Safe operations on paths relative to one home directory."""

    def __init__(self, home: Path, hook: Callable[[str], None] | None = None) -> None:
        self.home = home
        self.hook = hook or _noop
        # While a set: directories changed but not yet fsynced (``sync_dirs`` does it
        # once per directory, before the journal's commit point).  None: at once.
        self.unsynced: set[str] | None = None

    def _sync_dir(self, d: int, path: str) -> None:
        if self.unsynced is None:
            os.fsync(d)
        else:
            self.unsynced.add(path.rpartition("/")[0])

    def sync_dirs(self) -> None:
        """fsync every directory changed since ``unsynced`` was set."""
        for rel in sorted(self.unsynced or ()):
            parts = rel.split("/") if rel else []
            with contextlib.suppress(_Blocked), self._dir(parts, create=False) as d:
                if d is not None:
                    os.fsync(d)
        if self.unsynced is not None:
            self.unsynced = set()

    # -- walking -------------------------------------------------------------------------

    @contextmanager
    def _dir(self, parts: list[str], create: bool) -> Iterator[int | None]:
        fd = os.open(self.home, _DIR_FLAGS)
        try:
            for i, name in enumerate(parts):
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        fd = -1
                        yield None
                        return
                    os.mkdir(name, 0o755, dir_fd=fd)
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        where = "/".join(parts[: i + 1])
                        raise _Blocked(where) from e
                    raise
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)

    @contextmanager
    def parent(self, path: str, create: bool = False) -> Iterator[tuple[int | None, str]]:
        """The fd of ``path``'s directory (None if missing) and the last component.

        Raises:
            ApplyError: a component on the way is a symlink or not a directory.
        """
        *parents, name = path.split("/")
        try:
            with self._dir(parents, create) as d:
                yield d, name
        except _Blocked as b:
            raise ApplyError(
                f"'{sanitize(b.where)}' is a symlink or a file, not a directory; "
                "qgitconf never follows it"
            ) from None

    # -- reading -------------------------------------------------------------------------

    def probe(self, path: str, cached: Mapping[str, Any] | None = None) -> DiskState:
        """Return what is at ``path`` without following any symlink.

        ``cached`` is the manifest record of ``path``; when its stat cache proves the
        file unchanged, the content is not read again.
        """
        *parents, name = path.split("/")
        try:
            with self._dir(parents, create=False) as d:
                if d is None:
                    return DiskState("missing")
                return self._probe_at(d, name, cached)
        except _Blocked as b:
            return DiskState("blocked", target=b.where)

    def _probe_at(self, d: int, name: str, cached: Mapping[str, Any] | None) -> DiskState:
        try:
            st = os.stat(name, dir_fd=d, follow_symlinks=False)
        except FileNotFoundError:
            return DiskState("missing")
        except NotADirectoryError:
            return DiskState("missing")
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
        *parents, name = path.split("/")
        try:
            with self._dir(parents, create=False) as d:
                if d is None:
                    return None
                try:
                    return os.stat(name, dir_fd=d, follow_symlinks=False)
                except (FileNotFoundError, NotADirectoryError):
                    return None
        except _Blocked:
            return None

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
                fd = os.open(name, _DIR_FLAGS, dir_fd=d)
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
        with self.parent(path) as (d, name):
            if d is None:
                raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=d,
            )
            try:
                view = memoryview(data)
                half = len(view) // 2
                _write_all(fd, view[:half])
                self.hook("partial-temp")
                _write_all(fd, view[half:])
                os.fchmod(fd, mode)  # exact mode, whatever the umask
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp, dir_fd=d)
                raise
            os.close(fd)
            self.hook("temp-written")
            self._replace(d, tmp, name, path)
            return os.stat(name, dir_fd=d, follow_symlinks=False)

    def write_link(self, path: str, target: str, tmp: str) -> os.stat_result:
        """Atomically replace ``path`` with a symlink to the already validated ``target``."""
        with self.parent(path) as (d, name):
            if d is None:
                raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
            os.symlink(target, tmp, dir_fd=d)
            self.hook("temp-written")
            self._replace(d, tmp, name, path)
            return os.stat(name, dir_fd=d, follow_symlinks=False)

    def _replace(self, d: int, tmp: str, name: str, path: str) -> None:
        try:
            os.rename(tmp, name, src_dir_fd=d, dst_dir_fd=d)
        except OSError as e:
            os.unlink(tmp, dir_fd=d)
            if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.ENOTDIR):
                raise ApplyError(f"'{sanitize(name)}' is a directory; not replaced") from e
            raise
        self._sync_dir(d, path)

    def remove_temp(self, path: str, tmp: str) -> bool:
        """Remove a leftover temp file ``tmp`` beside ``path``; True if there was one."""
        try:
            with self.parent(path) as (d, _name):
                if d is None:
                    return False
                try:
                    os.unlink(tmp, dir_fd=d)
                except FileNotFoundError:
                    return False
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
            except FileNotFoundError:
                return
            self._sync_dir(d, path)

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        """Create directory ``path`` (its parent must exist); exact ``mode``."""
        with self.parent(path) as (d, name):
            if d is None:
                raise ApplyError(f"the directory of '{sanitize(path)}' does not exist")
            try:
                os.mkdir(name, mode, dir_fd=d)
            except FileExistsError:
                return
            fd = os.open(name, _DIR_FLAGS, dir_fd=d)
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            self._sync_dir(d, path)

    def rmdir(self, path: str) -> bool:
        """Remove the empty directory ``path``; False if it is missing or not empty."""
        with self.parent(path) as (d, name):
            if d is None:
                return False
            try:
                os.rmdir(name, dir_fd=d)
            except (FileNotFoundError, OSError) as e:
                if isinstance(e, FileNotFoundError) or e.errno in (
                    errno.ENOTEMPTY,
                    errno.EEXIST,
                    errno.ENOTDIR,
                ):
                    return False
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


class _Blocked(Exception):
    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]
