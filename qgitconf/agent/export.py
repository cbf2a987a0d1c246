"""The ``qgitconf.Export`` service in a target qube: one regular file out of $HOME.

config-mgmt (``qgitconf import``) sends one line on stdin: a ``$HOME``-relative path.
dom0's policy asks the user before the call reaches this qube.  The path is checked
like a tree path of an update (rule 7: every component through ``check_component``,
never the agent's own directories or ``~/.gnupg``), then walked from ``$HOME`` with
``O_NOFOLLOW`` directory fds: a symlink anywhere on the way, or as the file itself,
is refused, as is anything but a regular file with one link, or a file over the cap.

The answer on stdout is
``QGITCONF-EXPORT 2\\nqube: NAME\\nmode: <100644|100755>\\nsize: N\\n\\n`` followed by
exactly N bytes; ``qgitconf.mgmt.importing.parse_export`` reads it.  ``NAME`` is this
qube's name from QubesDB ``/name`` (never the environment): dom0's ``ask`` dialog
lets the user pick any tagged qube, so the caller cannot know which qube answered
unless the answer says, and ``import`` refuses a file from another qube than the
one it asked.  Version 1 answers had no ``qube:`` line and are refused.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from qgitconf.core.exportfmt import format_export
from qgitconf.core.paths import MODE_EXECUTABLE, MODE_FILE, PathRules, check_tree_entry
from qgitconf.errors import MalformedError, TooLargeError, UnsafePathError
from qgitconf.limits import MAX_EXPORT_BYTES, MAX_EXPORT_REQUEST_BYTES
from qgitconf.qubes import qubesdb


def read_request(stream: BinaryIO) -> str:
    """Read the requested path: one ``\\n``-terminated UTF-8 line, bounded.

    Raises:
        MalformedError: not exactly one line, too long, or not UTF-8.
    """
    data = stream.read(MAX_EXPORT_REQUEST_BYTES + 1)
    if len(data) > MAX_EXPORT_REQUEST_BYTES or not data.endswith(b"\n") or data.count(b"\n") != 1:
        raise MalformedError("the request must be one line holding a path")
    try:
        return data[:-1].decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedError("the requested path is not UTF-8") from e


def _open_dir(name: str, parent: int, shown: str) -> int:
    try:
        return os.open(
            name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
        )
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(f"'{shown}': a symlink or a file where a directory is") from e
        raise UnsafePathError(f"'{shown}': {os.strerror(e.errno or 0)}") from e


def read_home_file(home: Path, rel: str, cap: int = MAX_EXPORT_BYTES) -> tuple[int, bytes]:
    """Read the regular file ``rel`` under ``home`` without following any symlink.

    Returns:
        (git mode, content).

    Raises:
        UnsafePathError: a bad or denied path, a symlink, not a regular file.
        TooLargeError: the file is larger than ``cap``.
    """
    text = check_tree_entry(rel.encode("utf-8"), MODE_FILE, PathRules())
    parts = text.split("/")
    fds = [os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for i, part in enumerate(parts[:-1]):
            fds.append(_open_dir(part, fds[-1], "/".join(parts[: i + 1])))
        try:
            fd = os.open(
                parts[-1],
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=fds[-1],
            )
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePathError(f"'{text}': is a symlink; only regular files") from e
            raise UnsafePathError(f"'{text}': {os.strerror(e.errno or 0)}") from e
        fds.append(fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"'{text}': not a regular file")
        if st.st_nlink != 1:
            raise UnsafePathError(f"'{text}': has {st.st_nlink} hard links; refusing")
        if st.st_size > cap:
            raise TooLargeError(f"'{text}': {st.st_size} bytes, more than {cap}")
        chunks, total = [], 0
        while chunk := os.read(fd, 65536):
            total += len(chunk)
            if total > cap:
                raise TooLargeError(f"'{text}': grew past {cap} bytes while read")
            chunks.append(chunk)
        mode = MODE_EXECUTABLE if st.st_mode & stat.S_IXUSR else MODE_FILE
        return mode, b"".join(chunks)
    finally:
        for fd in reversed(fds):
            os.close(fd)


def answer(home: Path, stream: BinaryIO) -> bytes:
    """Serve one Export call: this qube's name, then the requested file, as the answer.

    The name comes from QubesDB ``/name`` (dom0 writes it), read before the request.

    Raises:
        ConfigError: no QubesDB name.
        MalformedError, UnsafePathError, TooLargeError: as :func:`read_request` and
            :func:`read_home_file`.
    """
    qube = qubesdb.own_name()
    mode, content = read_home_file(home, read_request(stream))
    return format_export(qube, mode, content)
