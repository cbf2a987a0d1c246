"""Small durable-write helpers for qgitconf's own state files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
    process of the apply and status benchmark rows a few ms; ``journal.clear_debris``
    knows the pattern).
    """
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
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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
