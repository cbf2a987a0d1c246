"""Writing into $HOME without following symlinks (DESIGN rule 9).

Every path is walked from an fd of $HOME, one component at a time, with
``O_NOFOLLOW | O_DIRECTORY``; a symlink or a file where a directory should be stops
the walk with ``ApplyError``.  Files are written to an ``O_EXCL`` temp name in the same
directory, fsynced and renamed over the destination, so a symlink or hard link at the
destination is replaced, never written through.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qgitconf.errors import ApplyError
from qgitconf.sanitize import sanitize

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class DiskState:
    """What is at a path right now: kind "missing", "file", "link", "dir" or "other"."""

    kind: str
    mode: int = 0
    sha256: str = ""
    target: str = ""

    def record(self) -> dict[str, object]:
        if self.kind == "file":
            return {"type": "file", "mode": self.mode, "sha256": self.sha256}
        if self.kind == "link":
            return {"type": "link", "target": self.target}
        return {"type": self.kind}


class HomeFS:
    """Safe operations on paths relative to one home directory."""

    def __init__(self, home: Path) -> None:
        self.home = home

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
                        where = sanitize("/".join(parts[: i + 1]))
                        raise ApplyError(
                            f"'{where}' is a symlink or a file, not a directory; "
                            "qgitconf never follows it"
                        ) from e
                    raise
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)

    def probe(self, path: str) -> DiskState:
        """Return what is at ``path`` without following any symlink."""
        *parents, name = path.split("/")
        try:
            with self._dir(parents, create=False) as d:
                if d is None:
                    return DiskState("missing")
                try:
                    st = os.stat(name, dir_fd=d, follow_symlinks=False)
                except FileNotFoundError:
                    return DiskState("missing")
                if stat.S_ISLNK(st.st_mode):
                    return DiskState("link", target=os.readlink(name, dir_fd=d))
                if stat.S_ISDIR(st.st_mode):
                    return DiskState("dir")
                if not stat.S_ISREG(st.st_mode):
                    return DiskState("other")
                data = self._read_at(d, name)
                return DiskState("file", stat.S_IMODE(st.st_mode), hashlib.sha256(data).hexdigest())
        except ApplyError:
            return DiskState("other")

    def read(self, path: str) -> bytes:
        *parents, name = path.split("/")
        with self._dir(parents, create=False) as d:
            if d is None:
                raise FileNotFoundError(path)
            return self._read_at(d, name)

    @staticmethod
    def _read_at(d: int, name: str) -> bytes:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write_file(self, path: str, data: bytes, mode: int) -> None:
        """Atomically replace ``path`` with a regular file (temp, fsync, rename, fsync dir)."""
        *parents, name = path.split("/")
        with self._dir(parents, create=True) as d:
            if d is None:
                raise ApplyError(f"cannot create the directory of '{sanitize(path)}'")
            tmp = f".{name[:200]}.qgc-{secrets.token_hex(4)}"
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=d,
            )
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fchmod(fd, mode)  # exact mode, whatever the umask
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp, dir_fd=d)
                raise
            os.close(fd)
            self._replace(d, tmp, name)

    def write_link(self, path: str, target: str) -> None:
        """Atomically replace ``path`` with a symlink to the already validated ``target``."""
        *parents, name = path.split("/")
        with self._dir(parents, create=True) as d:
            if d is None:
                raise ApplyError(f"cannot create the directory of '{sanitize(path)}'")
            tmp = f".{name[:200]}.qgc-{secrets.token_hex(4)}"
            os.symlink(target, tmp, dir_fd=d)
            self._replace(d, tmp, name)

    @staticmethod
    def _replace(d: int, tmp: str, name: str) -> None:
        try:
            os.rename(tmp, name, src_dir_fd=d, dst_dir_fd=d)
        except OSError as e:
            os.unlink(tmp, dir_fd=d)
            if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.ENOTDIR):
                raise ApplyError(f"'{sanitize(name)}' is a directory; not replaced") from e
            raise
        os.fsync(d)

    def remove(self, path: str) -> None:
        """Remove the file or symlink at ``path`` (never a directory); directories stay."""
        *parents, name = path.split("/")
        with self._dir(parents, create=False) as d:
            if d is None:
                return
            try:
                os.unlink(name, dir_fd=d)
            except FileNotFoundError:
                return
            os.fsync(d)
