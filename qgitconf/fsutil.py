"""Small durable-write helpers for qgitconf's own state files."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, BinaryIO

from qgitconf.errors import LocalStateError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename.

    The temp name is ``.<name>.`` and 8 hex digits from ``os.urandom``, created
    ``O_EXCL`` (what ``tempfile.mkstemp`` makes, whose ``random`` import costs every
    process of the apply and status benchmark rows a few ms; ``debris.clear_debris``
    knows the pattern).
    """
    tmp = write_temp(path, data, mode, sync=True)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def private_dir(parent: Path, prefix: str) -> Path:
    """A new directory of this user only (mode 0700) in ``parent``, named ``prefix``
    and 16 hex digits from ``os.urandom``: what ``tempfile.mkdtemp`` makes, without
    importing ``tempfile`` and ``random`` (the Receive service, the "publish -> staged"
    row of ``make bench``)."""
    for _ in range(100):
        path = parent / f"{prefix}{os.urandom(8).hex()}"
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free directory name in {parent}")


def remove_tree(path: Path, *, ignore_errors: bool = False) -> None:
    """Remove qgitconf's own directory ``path`` and everything below it, bottom-up
    through directory fds (``os.fwalk``), never following a symlink; with
    ``ignore_errors``, what cannot be removed stays.  Not ``shutil.rmtree``: ``shutil``
    imports ``bz2`` and ``lzma`` (3-4 ms), which neither the statuses nor Receive load."""
    try:
        for _dir, dirs, files, dirfd in os.fwalk(path, topdown=False, follow_symlinks=False):
            for name in files:
                _unlink_at(name, dirfd, ignore_errors, directory=False)
            for name in dirs:  # a symlink to a directory is listed here, never entered
                _unlink_at(name, dirfd, ignore_errors, directory=True)
        os.rmdir(path)
    except OSError:
        if not ignore_errors:
            raise


def _unlink_at(name: str, dirfd: int, ignore_errors: bool, *, directory: bool) -> None:
    try:
        if directory:
            try:
                os.rmdir(name, dir_fd=dirfd)
            except NotADirectoryError:  # a symlink
                os.unlink(name, dir_fd=dirfd)
        else:
            os.unlink(name, dir_fd=dirfd)
    except OSError:
        if not ignore_errors:
            raise


def anonymous_file(directory: Path) -> BinaryIO:
    """A read-write file in ``directory`` with no name (``O_TMPFILE``; where the file
    system has none, a private file removed at once), as ``tempfile.TemporaryFile``
    makes one on Linux, without importing ``tempfile``."""
    try:
        fd = os.open(directory, os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(100):
            path = directory / f".anon-{os.urandom(8).hex()}"
            try:
                fd = os.open(path, flags, 0o600)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"no free temp name in {directory}") from None
        os.unlink(path)
    return os.fdopen(fd, "w+b")


def write_temp(path: Path, data: bytes, mode: int = 0o600, *, sync: bool = False) -> Path:
    """Write ``data`` to a new temp file beside ``path`` (see :func:`atomic_write` for
    its name); fsynced only if ``sync``.  Returns its path; removed again on an error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.urandom(4).hex()}"
        try:
            fd = os.open(tmp, _TEMP_FLAGS, 0o600)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temp name beside {path}")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_json(path: Path, value: Any) -> None:
    """Atomically write ``value`` as pretty JSON."""
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, default: Any) -> Any:
    """Read JSON written by ``write_json``; ``default`` when the file does not exist.

    Raises:
        LocalStateError: the file cannot be read or is not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise LocalStateError(f"{path} is unreadable or corrupt: {e}") from e


def append_line(path: Path, line: str) -> None:
    """Append one line (append-only logs), fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
