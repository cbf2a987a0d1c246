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
from pathlib import Path

from qgitconf import sysprog
from qgitconf.errors import ConfigError
from qgitconf.limits import MAX_QUBESDB_VALUE_BYTES

_TIMEOUT = 10


def _run(tool: str, key: str) -> str | None:
    path = sysprog.find(tool)
    if path is None:
        return None
    try:
        proc = subprocess.run(
            [path, key],
            capture_output=True,
            check=False,
            timeout=_TIMEOUT,
            env=sysprog.base_env(Path("/")),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or len(proc.stdout) > MAX_QUBESDB_VALUE_BYTES:
        return None
    return proc.stdout.decode("utf-8", "replace").strip()


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
