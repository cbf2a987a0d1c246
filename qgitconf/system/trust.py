"""Root's own trust for the system step: the qube's name, the pinned key, the allowed
prefixes and the user, from root-owned sources only (step 1 of :mod:`qgitconf.system.step`)."""

from __future__ import annotations

import os
import pwd
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qgitconf.agent.config import FPR, SYSTEM_CONFIG, load_system_rules
from qgitconf.core.paths import PathRules
from qgitconf.core.systemrules import SystemRules
from qgitconf.errors import (
    ConfigError,
    UsageError,
)
from qgitconf.limits import MAX_KEY_FILE_BYTES
from qgitconf.qubes import qubesdb
from qgitconf.system.source import read_user_file

SYSTEM_STATE = Path("/rw/qgitconf-system")
"""Root's state of the system step (root-owned, 0700; ``/rw`` persists in an AppVM)."""
USER_STATE = ".local/share/qgitconf"
QubesDBRead = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Layout:
    """Where the root step reads and writes: the real system by default; tests and the
    lab give a sandbox."""

    sysroot: Path = Path("/")
    state: Path = SYSTEM_STATE
    rw: Path = Path("/rw")
    system_config: Path = SYSTEM_CONFIG


DEFAULT_LAYOUT = Layout()
"""The real system's layout (the default of every root-step command)."""


@dataclass(frozen=True)
class UserHome:
    """Whose staged update the root step reads: the user's ids and home."""

    uid: int
    gid: int
    home: Path


@dataclass(frozen=True)
class SystemTrust:
    """What root trusts, from root-owned sources only."""

    name: str
    fingerprint: str
    rules: SystemRules
    vm_type: str
    custom_persist: bool = False


def load_trust(read: QubesDBRead = qubesdb.read, layout: Layout = DEFAULT_LAYOUT) -> SystemTrust:
    """Root's trust: name, pinned fingerprint and allowed prefixes.

    Raises:
        ConfigError: ``no-qubesdb``, ``system-no-key``, ``system-files-disabled``, or
            an invalid setting.
    """
    name = read("/name")
    if not name or not name.isprintable() or len(name) > 31:
        raise ConfigError(
            "cannot learn this qube's name (qubesdb-read /name failed)", code="no-qubesdb"
        )
    fpr = (read("/vm-config/qgitconf-key") or "").upper() or config_key(layout.system_config)
    if not fpr or not FPR.fullmatch(fpr):
        raise ConfigError(
            "the system step needs the pinned key from dom0 "
            "(qvm-features QUBE vm-config.qgitconf-key FINGERPRINT) or in "
            f"{layout.system_config}; the user's own configuration does not count",
            code="system-no-key",
        )
    rules = load_system_rules(read, layout.system_config)
    if not rules.enabled:
        raise ConfigError(
            "system files are not enabled in this qube "
            "(dom0: qvm-features QUBE vm-config.qgitconf-system-paths '/etc/gitconfig ...')",
            code="system-files-disabled",
        )
    custom = read("/qubes-service/custom-persist") == "1"
    return SystemTrust(name, fpr, rules, read("/qubes-vm-type") or "", custom)


def config_key(path: Path) -> str:
    try:
        if path.stat().st_uid != 0:
            return ""
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    keys = data.get("keys")
    if isinstance(keys, list) and len(keys) == 1 and isinstance(keys[0], str):
        return keys[0].upper()
    return ""


def require_root() -> None:
    if os.geteuid() != 0:
        raise UsageError(
            "the system step runs as root: `sudo qgitconf system apply`, or from dom0 "
            "`qvm-run -u root QUBE 'qgitconf system apply --yes'`",
            code="system-needs-root",
        )


def user_home(read: QubesDBRead, user: str | None) -> UserHome:
    name = user or read("/default-user") or "user"
    try:
        pw = pwd.getpwnam(name)
    except KeyError as e:
        raise UsageError(f"no such user: {name!r}", code="no-such-user") from e
    if pw.pw_uid == 0:
        raise UsageError("the staged update is read from a user's home, not root's")
    return UserHome(pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def key_bytes(fpr: str, layout: Layout, home: Path) -> bytes:
    system_key = layout.system_config.parent / "keys" / f"{fpr}.asc"
    try:
        if system_key.stat().st_uid == 0:
            return system_key.read_bytes()[:MAX_KEY_FILE_BYTES]
    except OSError:
        pass
    return read_user_file(home, f".config/qgitconf/keys/{fpr}.asc", MAX_KEY_FILE_BYTES)


def system_rules(trust: SystemTrust) -> PathRules:
    return PathRules(allow=("**",), system=trust.rules)
