"""The one QubesDB reader: ``qubesdb-read`` and ``qubesdb-list`` from the system.

The agent learns its own name (``/name``), its pinned key from dom0
(``/vm-config/qgitconf-key``) and the persistence settings from QubesDB, which only
dom0 writes.  Never from the environment: the environment of a qrexec service is
what the user's ``~/.profile`` left (DESIGN rule 12).  The programs are found on the
fixed system PATH (:mod:`qgitconf.sysprog`).  QubesDB answers are short; they are
read with a cap and a timeout, and any failure reads as "no value".
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from qgitconf import sysprog
from qgitconf.errors import ConfigError

_CAP = 4096
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
    proc = _start(tool, [key])
    if proc is None or proc.returncode != 0 or len(proc.stdout) > _CAP:
        return None
    return proc.stdout.decode("utf-8", "replace").strip()


def _start(tool: str, args: list[str]) -> subprocess.CompletedProcess[bytes] | None:
    path = sysprog.find(tool)
    if path is None:
        return None
    try:
        return subprocess.run(
            [path, *args],
            capture_output=True,
            check=False,
            timeout=_TIMEOUT,
            env=sysprog.base_env(Path("/")),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
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
    path = sysprog.find("qubesdb-read")
    proc = None
    if path is not None:
        try:
            proc = subprocess.Popen(
                [path, "-f", *keys],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=sysprog.base_env(Path("/")),
            )
        except OSError:
            proc = None

    def values() -> dict[str, str | None]:
        if proc is None:
            return dict.fromkeys(keys)
        try:
            out, _ = proc.communicate(timeout=_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return dict.fromkeys(keys)
        # exit 1 also when a key is missing: the keys found are printed all the same
        if len(out) > _CAP * len(keys):
            return dict.fromkeys(keys)
        return parse_fullpath(out.decode("utf-8", "replace"), keys)

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
