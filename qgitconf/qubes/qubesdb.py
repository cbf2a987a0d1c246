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
import select
import time

from qgitconf import sysprog
from qgitconf.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MAX_QUBESDB_VALUE_BYTES = 4096
"""Most bytes of one QubesDB value read.  The one cap kept outside ``limits.py``: the
no-drift status (:mod:`qgitconf.agent.statusfast`, the status 1k row of ``make bench``)
imports this module, and ``limits.py`` imports ``typing`` for its named tuple."""

_TIMEOUT = 10

NAME_KEY = "/name"
PIN_KEY = "/vm-config/qgitconf-key"
"""The pinned fingerprint (from dom0: ``qvm-features QUBE vm-config.qgitconf-key FPR``)."""
SYSTEM_PATHS_KEY = "/vm-config/qgitconf-system-paths"
"""The allowed system prefixes (dom0: ``qvm-features QUBE
vm-config.qgitconf-system-paths '/etc/gitconfig /etc/vim/'``)."""
RECEIVE_KEYS = (PIN_KEY, SYSTEM_PATHS_KEY, NAME_KEY)
"""What the Receive service asks QubesDB on every update, in one process."""


def _run(tool: str, key: str) -> str | None:
    """``TOOL KEY``'s answer (:func:`answer`), or None."""
    got = _spawn([tool, key])
    if got is None:
        return None
    res = _collect(*got, time.monotonic() + _TIMEOUT, MAX_QUBESDB_VALUE_BYTES)
    return answer(*res) if res is not None else None


def answer(returncode: int, stdout: bytes) -> str | None:
    """The value a ``qubesdb-read`` that exited with ``returncode`` and printed
    ``stdout`` gives: None for a failure or an answer over the cap."""
    if returncode != 0 or len(stdout) > MAX_QUBESDB_VALUE_BYTES:
        return None
    return stdout.decode("utf-8", "replace").strip()


def qubesdb_bytes(value: str | None) -> bytes:
    """A QubesDB answer as the key holds it (None and "" differ), as the configuration
    reader records it for :mod:`qgitconf.agent.configmemo`."""
    return b"-" if value is None else b"=" + value.encode("utf-8", "surrogateescape")


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
    if sysprog.find("qubesdb-read") is None:
        return lambda: (True, None)
    got = _spawn(["qubesdb-read", key])
    if got is None:
        return lambda: (False, None)
    deadline = time.monotonic() + timeout_s
    done: list[tuple[bool, str | None]] = []

    def finish() -> tuple[bool, str | None]:
        if not done:
            res = _collect(*got, deadline, MAX_QUBESDB_VALUE_BYTES)
            done.append((True, answer(*res)) if res is not None else (False, None))
        return done[0]

    return finish


def _spawn(argv: list[str]) -> tuple[int, int] | None:
    """``argv`` (its program found on the fixed system PATH) started with
    ``posix_spawn``, stdin and stderr on ``/dev/null``: ``(pid, read end of its
    stdout)``; None when the program is missing or cannot start.  No ``subprocess``:
    the no-drift status imports this module (the status 1k row of ``make bench``)."""
    path = sysprog.find(argv[0])
    if path is None:
        return None
    r, w = os.pipe()
    try:
        pid = os.posix_spawn(
            path,
            [path, *argv[1:]],
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
        return None
    os.close(w)
    return pid, r


def _collect(pid: int, r: int, deadline: float, cap: int) -> tuple[int, bytes] | None:
    """``(exit status, stdout)`` of the child ``pid`` writing to the pipe ``r`` (closed
    here) by ``deadline``; None (the child killed) for no exit in time or more than
    ``cap`` bytes."""
    out = b""
    ok = False
    try:
        poller = select.poll()
        poller.register(r, select.POLLIN)
        while len(out) <= cap:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                break  # no answer in time
            chunk = os.read(r, cap + 1)
            if not chunk:
                ok = True
                break
            out += chunk
        while ok:  # stdout closed: its exit, within the same deadline
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status), out
            if time.monotonic() > deadline:
                ok = False
            else:
                time.sleep(0.0005)
    finally:
        os.close(r)
        if not ok:
            os.kill(pid, 9)  # SIGKILL
            os.waitpid(pid, 0)
    return None


def available() -> bool:
    """True when ``qubesdb-read`` is installed (in a Qubes qube, or the lab's)."""
    return sysprog.find("qubesdb-read") is not None


def read(key: str) -> str | None:
    """The value of ``key``, or None (missing key, no QubesDB, an error)."""
    return _run("qubesdb-read", key)


def read_many(keys: Sequence[str]) -> dict[str, str | None]:
    """The values of ``keys`` from one ``qubesdb-read -f`` process (each missing key,
    and every key when there is no QubesDB or no usable answer: None).

    One process instead of one per key: the Receive service asks for three values on
    every update (the "publish -> staged" row of ``make bench``).
    """
    return start_many(keys)()


def start_many(keys: Sequence[str]) -> Callable[[], dict[str, str | None]]:
    """:func:`read_many`, started: ``qubesdb-read`` runs while the caller goes on (the
    Receive service loads its modules meanwhile); the returned function waits for it
    (at most the usual timeout) and gives the values."""
    keys = list(keys)
    got = _spawn(["qubesdb-read", "-f", *keys])
    deadline = time.monotonic() + _TIMEOUT

    def values() -> dict[str, str | None]:
        if got is None:
            return dict.fromkeys(keys)
        res = _collect(*got, deadline, MAX_QUBESDB_VALUE_BYTES * len(keys))
        if res is None:
            return dict.fromkeys(keys)
        # exit 1 also when a key is missing: the keys found are printed all the same
        return parse_fullpath(res[1].decode("utf-8", "replace"), keys)

    return values


def parse_fullpath(output: str, keys: Sequence[str]) -> dict[str, str | None]:
    """Parse ``qubesdb-read -f KEY...`` output: one ``KEY = VALUE`` line per key found,
    in the order asked (the values are printed escaped, so no value holds a newline).

    A line that is not ``KEY = `` of the next key asked for, in order, makes the whole
    answer unusable (every key None): the values are never guessed at.
    """
    values: dict[str, str | None] = dict.fromkeys(keys)
    lines = output.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    at = 0
    for line in lines:
        while at < len(keys) and not line.startswith(f"{keys[at]} = "):
            at += 1
        if at == len(keys):
            return dict.fromkeys(keys)
        values[keys[at]] = line[len(keys[at]) + 3 :].strip()
        at += 1
    return values


def list_keys(prefix: str) -> list[str]:
    """The names under ``prefix`` (``qubesdb-list``), or [] when there is no answer."""
    out = _run("qubesdb-list", prefix)
    return [e for e in out.split() if e] if out else []


def own_name() -> str:
    """This qube's name, as dom0 wrote it into QubesDB (``/name``).

    Raises:
        ConfigError: no QubesDB, or no usable answer.
    """
    return checked_name(read("/name"))


def checked_name(name: str | None) -> str:
    """``name`` (QubesDB's ``/name``) when it is usable as this qube's name.

    Raises:
        ConfigError: no QubesDB, or no usable answer.
    """
    if not name or not name.isprintable() or len(name) > 31:
        raise ConfigError(
            "cannot learn this qube's name (qubesdb-read /name failed): "
            "the agent runs only inside a Qubes qube",
            code="no-qubesdb",
        )
    return name
