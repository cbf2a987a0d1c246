"""Flushing a whole filesystem in one call (``syncfs(2)``) and the batch of records it
makes durable with two flushes.

Its own module because it loads ``ctypes`` (about 2 ms; Python has no ``os.syncfs``):
only the processes that flush a filesystem import it (apply, the records of a
generation), not Receive, publish or either status (the no-op receive and status rows
of ``make bench``).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

from qgitconf.fsutil import write_temp

_LIBC_SYNCFS: Any = None
_GET_ERRNO: Any = None


def syncfs(fd: int) -> None:
    """``syncfs(fd)``: flush the filesystem holding ``fd`` (data and metadata) in one
    call; ``sync()`` where libc has no ``syncfs`` (a superset).  Python has no
    ``os.syncfs``: it is called through ctypes, and its error is raised (Linux
    reports writeback errors through it from 5.8).

    Raises:
        OSError: ``syncfs`` failed.
    """
    global _LIBC_SYNCFS, _GET_ERRNO
    if _LIBC_SYNCFS is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _LIBC_SYNCFS = libc.syncfs
            _LIBC_SYNCFS.argtypes = [ctypes.c_int]
            _LIBC_SYNCFS.restype = ctypes.c_int
            _GET_ERRNO = ctypes.get_errno
        except (OSError, AttributeError):
            _LIBC_SYNCFS = False
    if _LIBC_SYNCFS is False:
        os.sync()
        return
    if _LIBC_SYNCFS(fd) != 0:
        err = _GET_ERRNO()
        raise OSError(err, os.strerror(err))


def syncfs_path(path: Path) -> None:
    """:func:`syncfs` of the filesystem holding directory ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs(fd)
    finally:
        os.close(fd)


class DurableBatch:
    """Records replaced together with two flushes whatever their number: every temp
    file written unflushed, one ``syncfs`` (every temp's data is on disk before any
    rename, as ``atomic_write``'s fsync guarantees for one), the renames one by one,
    then one ``syncfs`` for the renames (:meth:`finish`).

    A crash before :meth:`finish` leaves each record old or new and whole, and temp
    names the owner knows how to clear (``debris.clear_debris``); the owner must redo
    the batch then (the apply journal's roll-forward does).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._temps: dict[Path, Path] = {}

    def add(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        """Write ``path``'s new content to its temp file (not flushed yet)."""
        old = self._temps.pop(path, None)
        if old is not None:
            old.unlink(missing_ok=True)
        self._temps[path] = write_temp(path, data, mode)

    def flush_temps(self) -> None:
        """One ``syncfs``: every temp's content is on disk."""
        if self._temps:
            syncfs_path(self.root)

    def rename(self, path: Path) -> None:
        """Put ``path``'s temp in place (after :meth:`flush_temps`)."""
        os.replace(self._temps.pop(path), path)

    def finish(self) -> None:
        """One ``syncfs``: every rename is on disk."""
        syncfs_path(self.root)

    def discard(self) -> None:
        """Remove the temps not renamed (after an error)."""
        for tmp in self._temps.values():
            tmp.unlink(missing_ok=True)
        self._temps.clear()
