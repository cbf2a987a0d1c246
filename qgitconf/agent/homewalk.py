"""The one no-follow walk of $HOME: directory fds opened one component at a time from
an fd of the home with ``O_NOFOLLOW | O_DIRECTORY``, and cached (DESIGN rule 9).

A symlink or a file where a directory should be stops the walk (``Blocked``), so a
planted ``~/.config -> /elsewhere`` is never followed; every read and write of
:class:`qgitconf.agent.homefs.HomeFS` starts from these fds.  A name the filesystem
refuses as too long (``ENAMETOOLONG``) is treated as absent when looking: no file can
have it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from qgitconf.durable import syncfs
from qgitconf.errors import ApplyError
from qgitconf.sanitize import sanitize

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# At most this many directory fds are cached (the cache starts afresh when full).
_MAX_FDS = 256
_UMASK: list[int] = []


def umask() -> int:
    """The process's umask, read once (``os.umask`` can only be read by setting it)."""
    if not _UMASK:
        mask = os.umask(0o077)
        os.umask(mask)
        _UMASK.append(mask)
    return _UMASK[0]


def _noop(_label: str) -> None:
    return None


class HomeWalk:
    """The directory fds of one home directory, walked without following a link.

    Directories are opened one component at a time from an fd of the home with
    ``O_NOFOLLOW | O_DIRECTORY``; each directory's fd is kept (a cache keyed by its
    relative path) so a walk over thousands of files opens each directory once, not
    once per file.  A cached fd names the directory inode that was checked when it was
    opened: it is never re-resolved through a path, so a symlink planted later is not
    followed either.  ``forget`` drops the cache (the apply does it between planning
    and changing, so the changes walk afresh), and ``close`` (or the end of a ``with``
    block, or garbage collection) closes them all.
    """

    def __init__(self, home: Path, hook: Callable[[str], None] | None = None) -> None:
        self.home = home
        self.hook = hook or _noop
        # While a set: directories changed but not yet fsynced (``sync_dirs`` does it
        # once per directory, before the journal's commit point).  None: at once.
        self.unsynced: set[str] | None = None
        self._fds: dict[str, int] = {}
        # Directories found missing since the last ``forget`` (a probe below one is
        # answered without an ``openat``: an apply into an empty home would otherwise
        # try each file's missing directory again); ``mkdir`` takes its own out.
        self._missing: set[str] = set()
        self._finalizer = weakref.finalize(self, _close_fds, self._fds)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every cached directory fd."""
        self.forget()

    def forget(self, below: str | None = None) -> None:
        """Drop cached directory fds: all of them, or ``below`` and what is under it."""
        if below is None:
            _close_fds(self._fds)
            self._missing.clear()
            return
        self._missing.clear()  # what is known missing may be made below it
        prefix = below + "/"
        for key in [k for k in self._fds if k == below or k.startswith(prefix)]:
            os.close(self._fds.pop(key))

    def _sync_dir(self, d: int, path: str) -> None:
        if self.unsynced is None:
            os.fsync(d)
        else:
            self.unsynced.add(path.rpartition("/")[0])

    def sync_dirs(self) -> None:
        """fsync every directory changed since ``unsynced`` was set."""
        for rel in sorted(self.unsynced or ()):
            parts = rel.split("/") if rel else []
            with contextlib.suppress(Blocked):
                d = self._dirfd(parts, create=False)
                if d is not None:
                    os.fsync(d)
        if self.unsynced is not None:
            self.unsynced = set()

    def syncfs(self) -> None:
        """Flush everything written on the home's filesystem (data and metadata) to
        disk, in one call: ``syncfs(2)`` where there is one, else ``sync(2)``."""
        fd = self._dirfd([], create=False)
        if fd is None:
            raise ApplyError("the home directory disappeared during apply")
        _syncfs(fd)

    # -- walking -------------------------------------------------------------------------

    def _dirfd(self, parts: list[str], create: bool) -> int | None:
        """The (cached, borrowed: do not close) fd of directory ``parts``; None if it
        is missing and ``create`` is false.

        Raises:
            Blocked: a component is a symlink or not a directory.
        """
        key = "/".join(parts)
        fd = self._fds.get(key)
        if fd is not None:
            return fd
        if not create and key in self._missing:
            return None
        if not parts:
            if len(self._fds) >= _MAX_FDS:  # before any fd is handed out: none in use
                self.forget()
            fd = os.open(self.home, DIR_FLAGS)
            self._fds[""] = fd
            return fd
        parent = self._dirfd(parts[:-1], create)
        if parent is None:
            return None
        name = parts[-1]
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                self._missing.add(key)
                return None
            self._missing.discard(key)
            os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Blocked(key) from e
            if e.errno == errno.ENAMETOOLONG and not create:
                return None  # no directory can have this name
            raise
        self._fds[key] = fd
        return fd

    @contextmanager
    def parent(self, path: str, create: bool = False) -> Iterator[tuple[int | None, str]]:
        """The fd of ``path``'s directory (None if missing) and the last component.

        The fd is borrowed from the cache: do not close it.

        Raises:
            ApplyError: a component on the way is a symlink or not a directory.
        """
        d, name = self._parent(path, create)
        yield d, name

    def _parent(self, path: str, create: bool = False) -> tuple[int | None, str]:
        parents, _, name = path.rpartition("/")
        try:
            return self._dirfd(parents.split("/") if parents else [], create), name
        except Blocked as b:
            raise ApplyError(
                f"'{sanitize(b.where)}' is a symlink or a file, not a directory; "
                "qgitconf never follows it"
            ) from None

    def dirfd(self, parent: str) -> int | None:
        """The (cached, borrowed) fd of directory ``parent`` (``""``: the home); None if
        it is missing or a component on the way is a symlink or not a directory.

        Raises:
            OSError: the directory cannot be opened (for another reason).
        """
        fd = self._fds.get(parent)
        if fd is not None:
            return fd
        try:
            return self._dirfd(parent.split("/") if parent else [], create=False)
        except Blocked:
            return None


def absent(e: OSError) -> bool:
    """``e`` says nothing is there: missing, a file on the way, or a name too long for
    the filesystem (such a name cannot exist, so there is nothing to read, remove or
    put back)."""
    return isinstance(e, (FileNotFoundError, NotADirectoryError)) or e.errno == errno.ENAMETOOLONG


class Blocked(Exception):
    """A component on the way (``where``) is a symlink or not a directory."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


def _close_fds(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _syncfs(fd: int) -> None:
    """``syncfs(fd)`` (``durable.syncfs``: its error raised)."""
    syncfs(fd)
