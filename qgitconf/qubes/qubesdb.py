"""The one QubesDB reader: ``qubesdb-read`` and ``qubesdb-list`` from the system.

The agent learns its own name (``/name``), its pinned key from dom0
(``/vm-config/qgitconf-key``) and the persistence settings from QubesDB, which only
dom0 writes.  Never from the environment: the environment of a qrexec service is
what the user's ``~/.profile`` left (DESIGN rule 12).  The programs are found on the
fixed system PATH (:mod:`qgitconf.sysprog`).  QubesDB answers are short; they are
read with a cap and a timeout, and any failure reads as "no value".
"""

from __future__ import annotations

import os
import time

from qgitconf import sysprog
from qgitconf.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable

MAX_QUBESDB_VALUE_BYTES = 4096
"""Most bytes of one QubesDB value read.  The one cap kept outside ``limits.py``: the
no-drift status (:mod:`qgitconf.agent.statusfast`, the status 1k row of ``make bench``)
imports this module, and ``limits.py`` imports ``typing`` for its named tuple."""

_TIMEOUT = 10


def _run(tool: str, key: str) -> str | None:
    import subprocess

    path = sysprog.find(tool)
    if path is None:
        return None
    try:
        proc = subprocess.run(
            [path, key],
            capture_output=True,
            check=False,
            timeout=_TIMEOUT,
            env=sysprog.base_env("/"),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return answer(proc.returncode, proc.stdout)


def answer(returncode: int, stdout: bytes) -> str | None:
    """The value a ``qubesdb-read`` that exited with ``returncode`` and printed
    ``stdout`` gives: None for a failure or an answer over the cap."""
    if returncode != 0 or len(stdout) > MAX_QUBESDB_VALUE_BYTES:
        return None
    return stdout.decode("utf-8", "replace").strip()


def read_spawned(key: str, timeout_s: float = 2.0) -> tuple[bool, str | None]:
    """``(True, read(key))`` without ``subprocess`` (``posix_spawn``, a pipe, ``poll``),
    for the no-drift status of :mod:`qgitconf.agent.statusfast`; ``(False, None)``
    when that cannot answer as :func:`read` would for sure (the spawn failed, no exit
    within ``timeout_s``, an answer over the cap): the caller then does without it."""
    return start_read(key, timeout_s)()


def start_read(key: str, timeout_s: float = 2.0) -> Callable[[], tuple[bool, str | None]]:
    """:func:`read_spawned` in two halves: the program is started now, and the
    returned function waits for its answer (the timeout counts from now); the caller
    works meanwhile.  Call the function in any case: it reaps the child."""
    path = sysprog.find("qubesdb-read")
    if path is None:
        return lambda: (True, None)
    r, w = os.pipe()
    try:
        pid = os.posix_spawn(
            path,
            [path, key],
            sysprog.base_env("/"),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, w, 1),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
        )
    except OSError:
        os.close(r)
        os.close(w)
        return lambda: (False, None)
    os.close(w)
    deadline = time.monotonic() + timeout_s
    done: list[tuple[bool, str | None]] = []

    def finish() -> tuple[bool, str | None]:
        if not done:
            done.append(_collect(pid, r, deadline))
        return done[0]

    return finish


def _collect(pid: int, r: int, deadline: float) -> tuple[bool, str | None]:
    """The answer of the child ``pid`` on the pipe ``r`` (closed here), by ``deadline``."""
    import select

    out = b""
    ok = False
    try:
        poller = select.poll()
        poller.register(r, select.POLLIN)
        while len(out) <= MAX_QUBESDB_VALUE_BYTES:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                break  # no answer in time
            chunk = os.read(r, MAX_QUBESDB_VALUE_BYTES + 1)
            if not chunk:
                ok = True
                break
            out += chunk
        while ok:  # stdout closed: its exit, within the same deadline
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return True, answer(os.waitstatus_to_exitcode(status), out)
            if time.monotonic() > deadline:
                ok = False
            else:
                time.sleep(0.0005)
    finally:
        os.close(r)
        if not ok:
            os.kill(pid, 9)  # SIGKILL
            os.waitpid(pid, 0)
    return False, None


def available() -> bool:
    """True when ``qubesdb-read`` is installed (in a Qubes qube, or the lab's)."""
    return sysprog.find("qubesdb-read") is not None


def read(key: str) -> str | None:
    """The value of ``key``, or None (missing key, no QubesDB, an error)."""
    return _run("qubesdb-read", key)


def list_keys(prefix: str) -> list[str]:
    """The names under ``prefix`` (``qubesdb-list``), or [] when there is no answer."""
    out = _run("qubesdb-list", prefix)
    return [e for e in out.split() if e] if out else []


def own_name() -> str:
    """This qube's name, as dom0 wrote it into QubesDB (``/name``).

    Raises:
        ConfigError: no QubesDB, or no usable answer.
    """
    name = read("/name")
    if not name or not name.isprintable() or len(name) > 31:
        raise ConfigError(
            "cannot learn this qube's name (qubesdb-read /name failed): "
            "the agent runs only inside a Qubes qube",
            code="no-qubesdb",
        )
    return name
