"""What the root step reads from the user's side, as untrusted bytes (issue 15).

The user-level agent has verified and staged the update in ``~/.local/share/qgitconf``,
a directory the user (and so anything that took over the user) can change.  The root
step therefore trusts none of it: it reads the kept signed statement, and git objects
named by id, and checks every byte itself.

* The statement and its signature are opened below $HOME one component at a time with
  ``O_NOFOLLOW`` (a symlink planted in the user's tree cannot make root read another
  file), must be regular files, and are read up to their caps.
* Objects come from ``git cat-file --batch`` run **as the user** (uid, gid, no
  supplementary groups; the system git with the agent's isolated environment): root
  never opens the user's repository.  Every object is read up to a cap and must hash
  to the id root asked for, so the child can lie only by failing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO

from qgitconf import sysprog
from qgitconf.errors import LocalStateError, NothingStagedError, TooLargeError
from qgitconf.limits import MAX_SIGNATURE_BYTES, MAX_STATEMENT_BYTES

__all__ = ["UserObjects", "read_user_file"]

_TYPES = (b"commit", b"tree", b"blob")


def read_user_file(home: Path, rel: str, cap: int) -> bytes:
    """Read ``home/rel`` without following any symlink, up to ``cap`` bytes.

    Raises:
        NothingStagedError: the file does not exist.
        LocalStateError: a symlink, not a regular file, or larger than ``cap``.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = rel.split("/")
        for part in parts[:-1]:
            try:
                nxt = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except FileNotFoundError as e:
                raise NothingStagedError(f"nothing staged in {home} ({rel} missing)") from e
            except OSError as e:
                raise LocalStateError(f"{home}/{rel}: {e.strerror} (a symlink?)") from e
            os.close(fd)
            fd = nxt
        try:
            f = os.open(parts[-1], flags, dir_fd=fd)
        except FileNotFoundError as e:
            raise NothingStagedError(f"nothing staged in {home} ({rel} missing)") from e
        except OSError as e:
            raise LocalStateError(f"{home}/{rel}: {e.strerror} (a symlink?)") from e
        try:
            st = os.fstat(f)
            if not stat.S_ISREG(st.st_mode):
                raise LocalStateError(f"{home}/{rel} is not a regular file")
            data = os.read(f, cap + 1)
        finally:
            os.close(f)
    finally:
        os.close(fd)
    if len(data) > cap:
        raise TooLargeError(f"{rel} is larger than {cap} bytes")
    return data


def statement_caps() -> tuple[int, int]:
    """The caps of a kept statement and its signature (the envelope's)."""
    return MAX_STATEMENT_BYTES, MAX_SIGNATURE_BYTES


class UserObjects:
    """Git objects of the user's agent repository, read by an unprivileged child.

    Use as a context manager; ``get(sha, kind)`` returns the object's body, checked to
    hash to ``sha`` and to be of ``kind``.
    """

    def __init__(self, uid: int, gid: int, home: Path, repo: Path, max_object_bytes: int) -> None:
        self._cap = max_object_bytes
        git = sysprog.program("git")
        env = sysprog.git_env(home, repo)
        self._proc = subprocess.Popen(
            [git, *sysprog.GIT_ISOLATION, "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd="/",
            user=uid,
            group=gid,
            extra_groups=[],
            close_fds=True,
        )
        if self._proc.stdin is None or self._proc.stdout is None:
            raise LocalStateError("cannot start git cat-file")
        self._in: IO[bytes] = self._proc.stdin
        self._out: IO[bytes] = self._proc.stdout

    def __enter__(self) -> UserObjects:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        with contextlib.suppress(OSError):
            self._out.close()

    def get(self, sha: str, kind: bytes) -> bytes:
        """The body of object ``sha``, which must be a ``kind``.

        Raises:
            LocalStateError: missing, of another type, larger than the cap, or its bytes
                do not hash to ``sha`` (the user's repository is damaged or lies).
        """
        if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
            raise LocalStateError(f"not an object id: {sha[:64]!r}")
        if kind not in _TYPES:
            raise ValueError(kind)
        try:
            self._in.write(sha.encode("ascii") + b"\n")
            self._in.flush()
            header = self._out.readline(128)
        except OSError as e:
            raise LocalStateError(f"reading object {sha}: {e}") from e
        fields = header.split()
        if len(fields) == 2 and fields[1] == b"missing":
            raise LocalStateError(f"object {sha} is missing from the user's repository")
        if len(fields) != 3 or fields[0].decode("ascii", "replace") != sha:
            raise LocalStateError(f"object {sha}: unexpected answer from git")
        if fields[1] != kind:
            raise LocalStateError(f"object {sha} is a {fields[1][:16]!r}, not a {kind.decode()}")
        if not fields[2].isdigit() or int(fields[2]) > self._cap:
            raise TooLargeError(f"object {sha} is larger than {self._cap} bytes")
        size = int(fields[2])
        body = self._out.read(size + 1)
        if len(body) != size + 1 or body[-1:] != b"\n":
            raise LocalStateError(f"object {sha}: short answer from git")
        body = body[:-1]
        digest = hashlib.sha1(b"%s %d\x00" % (kind, size))  # noqa: S324 - git object ids
        digest.update(body)
        if digest.hexdigest() != sha:
            raise LocalStateError(f"object {sha}: its bytes do not hash to its id")
        return body
