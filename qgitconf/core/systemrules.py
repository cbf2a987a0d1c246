"""Which system files an update may hold, and which it never may (issue 15).

A target's branch keeps its home files at the top of the tree and its system files
under one reserved top-level directory, :data:`SYSTEM_TOP` (``system/etc/gitconfig`` is
``/etc/gitconfig``).  Everything here is pure: no I/O, no clock, no environment.

* System files are **off** unless a root-owned setting names the allowed prefixes:
  QubesDB ``/vm-config/qgitconf-system-paths`` (dom0: ``qvm-features QUBE
  vm-config.qgitconf-system-paths '/etc/gitconfig /etc/vim/'``) or ``system_paths`` in
  ``/etc/qgitconf/target.toml`` (the template's).  :func:`parse_prefixes` reads that
  value; the user's ``~/.config`` is never asked (``qgitconf.agent.config``).
* A prefix, and every system path, lies under :data:`SYSTEM_ROOTS` (``/etc`` and
  ``/usr/local``): nothing else of the root filesystem is a place for configuration.
* :data:`DENIED` cannot be widened by any setting: what authenticates users, what the
  dynamic loader and every process's environment read, Qubes' own and qrexec's
  configuration, the agent's own settings, and whatever the agent or the programs it
  verifies with load (DESIGN rule 12: nothing an update writes may change how the next
  update is verified).  Each entry says why.
* Only regular files (modes 100644 and 100755) are system files: no symlinks (a link in
  ``/etc`` could point anywhere the root step would later write through) and no
  directories other than the ones the files imply.

The components are compared folded (lower case): the system filesystems are case
sensitive, so this refuses more (``etc/Shadow``), never less.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from qgitconf.core.programs import PROTECTED_PROGRAMS
from qgitconf.errors import ConfigError, SystemPathError
from qgitconf.limits import MAX_SYSTEM_PREFIXES
from qgitconf.sanitize import sanitize

__all__ = [
    "DENIED",
    "PROTECTED_PROGRAMS_DIRS",
    "SYSTEM_ROOTS",
    "SYSTEM_TOP",
    "SystemRules",
    "check_system_file",
    "denied_reason",
    "parse_prefixes",
    "system_rel",
]

SYSTEM_TOP = "system"
"""The reserved top-level directory of a target's tree that holds its system files."""

SYSTEM_ROOTS: tuple[str, ...] = ("etc", "usr/local")
"""Where system files may go (relative to ``/``)."""


# (folded path pattern, a component ending in "*" matching any name it starts, reason)
DENIED: tuple[tuple[str, str], ...] = (
    # who may log in and become root
    ("etc/shadow", "password hashes"),
    ("etc/gshadow", "group password hashes"),
    ("etc/passwd", "the accounts (uids, homes, shells)"),
    ("etc/group", "group membership (sudo, qubes)"),
    ("etc/sudo*", "sudo's rules and settings: root for whoever they name"),
    ("etc/doas.conf", "doas's rules: root for whoever they name"),
    ("etc/pam.d", "authentication of every session, qrexec services included"),
    ("etc/security", "PAM module settings (pam_env's environment, limits, access)"),
    ("etc/polkit-1", "who may act as root through polkit"),
    ("etc/login.defs", "account and login defaults"),
    # what every process loads or inherits
    ("etc/ld.so.*", "the dynamic loader's preload list and search path: code in every program"),
    ("etc/nsswitch.conf", "NSS modules: code in every program that looks up a user"),
    ("etc/environment", "the environment of every PAM session (LD_PRELOAD, PATH)"),
    ("etc/fstab", "mounts at boot: could cover what the agent runs"),
    ("etc/systemd/system.conf*", "systemd's default environment for every service"),
    ("etc/systemd/user.conf*", "systemd's default environment for every user service"),
    ("usr/local/lib*", "libraries and Python modules the system's programs load"),
    # Qubes and qrexec
    ("etc/qubes*", "Qubes' own configuration (qrexec, rpc-config, bind-dirs, services)"),
    ("usr/local/etc/qubes*", "qrexec services and their configuration"),
    # the agent and what it verifies with
    ("etc/qgitconf", "the agent's root-owned settings (keys, allowed paths)"),
    ("etc/python3*", "the system Python's sitecustomize: code in the agent"),
    ("etc/gnupg", "GnuPG's global settings: the verifier's"),
)
"""System paths no setting can allow: a path equal to or below one of these (folded,
``*`` matching the rest of that component) is refused."""

PROTECTED_PROGRAMS_DIRS: tuple[str, ...] = ("usr/local/bin", "usr/local/sbin")
"""Directories on the agent's fixed ``PATH`` (``qgitconf.sysprog.SYSTEM_PATH``) ahead of
``/usr/bin``: the programs qgitconf runs (``qgitconf.core.programs.PROTECTED_PROGRAMS``,
``python3*``) may not be placed there.  Other programs there are high risk, not refused
(``qgitconf.core.risks``)."""


def _denied_matches(pattern: str, folded: Sequence[str]) -> bool:
    parts = pattern.split("/")
    if len(folded) < len(parts):
        return False
    for want, got in zip(parts, folded, strict=False):
        if want.endswith("*"):
            if not got.startswith(want[:-1]):
                return False
        elif want != got:
            return False
    return True


def denied_reason(rel: str) -> str | None:
    """Why the system path ``rel`` (relative to ``/``, slash-separated) is denied, or
    None.  Also refuses the programs qgitconf runs in :data:`PROTECTED_PROGRAMS_DIRS`."""

    folded = [p.lower() for p in rel.split("/")]
    for pattern, reason in DENIED:
        if _denied_matches(pattern, folded):
            return f"{pattern.replace('*', '…')}: {reason}"
    for d in PROTECTED_PROGRAMS_DIRS:
        dparts = d.split("/")
        if folded[: len(dparts)] == dparts and len(folded) > len(dparts):
            name = folded[len(dparts)]
            if name in PROTECTED_PROGRAMS or name.startswith("python3"):
                return f"{d}/{name}: a program the agent runs (found on its PATH first)"
    return None


def _under(rel: str, root: str) -> bool:
    return rel == root or rel.startswith(root + "/")


class SystemRules(NamedTuple):
    """The system prefixes a root-owned setting allows (empty: system files are off).

    Each prefix is relative to ``/``; one ending in ``/`` allows what is below that
    directory, one without it exactly that file (or, if a directory, what is below).
    """

    prefixes: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.prefixes)

    def allows(self, rel: str) -> bool:
        return any(
            rel == p.rstrip("/") or rel.startswith(p.rstrip("/") + "/") for p in self.prefixes
        )


def parse_prefixes(value: str | Sequence[str] | None, where: str) -> SystemRules:
    """Read a root-owned setting: absolute prefixes, separated by spaces or commas.

    Each must be absolute, under ``/etc`` or ``/usr/local``, with no empty, ``.`` or
    ``..`` component and only printable characters, and must not lie inside
    :data:`DENIED` (a setting that names a denied place is an error, so the dom0 user
    learns it will never be written).

    Raises:
        ConfigError: an invalid prefix (code ``system-paths-invalid``).
    """
    if value is None:
        return SystemRules()
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    if len(items) > MAX_SYSTEM_PREFIXES:
        raise ConfigError(
            f"{where}: more than {MAX_SYSTEM_PREFIXES} system prefixes", code="system-paths-invalid"
        )
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.startswith("/") or not item.isprintable():
            raise ConfigError(
                f"{where}: {sanitize(str(item))!r} is not an absolute path",
                code="system-paths-invalid",
            )
        slash = item.endswith("/") and item != "/"
        rel = item.strip("/")
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts) or len(item) > 1024:
            raise ConfigError(
                f"{where}: {sanitize(item)!r} is not a plain absolute path",
                code="system-paths-invalid",
            )
        if not any(_under(rel, r) for r in SYSTEM_ROOTS):
            raise ConfigError(
                f"{where}: {sanitize(item)!r} is outside /etc and /usr/local",
                code="system-paths-invalid",
            )
        reason = denied_reason(rel)
        if reason is not None:
            raise ConfigError(
                f"{where}: {sanitize(item)!r} is never written by qgitconf ({reason})",
                code="system-paths-invalid",
            )
        out.append(rel + ("/" if slash else ""))
    return SystemRules(tuple(out))


def system_rel(parts: Sequence[str]) -> str:
    """``/``-relative path of a tree path's components ``system/...``."""
    return "/".join(parts[1:])


def check_system_file(parts: Sequence[str], mode: int, rules: SystemRules) -> str:
    """Check one non-tree entry below :data:`SYSTEM_TOP`; return its ``/``-relative path.

    Raises:
        SystemPathError: ``system-files-disabled`` (no root-owned setting allows system
            files here), ``system-path-denied`` (:data:`DENIED`, whatever the setting),
            ``system-path-not-allowed`` (outside the allowed prefixes or the system
            roots), ``system-not-a-file`` (a symlink or other mode).
    """
    rel = system_rel(parts)
    shown = sanitize("/" + rel)
    if not rules.enabled:
        raise SystemPathError(
            f"'{shown}': system files are not enabled in this qube "
            "(dom0: qvm-features QUBE vm-config.qgitconf-system-paths ...)",
            code="system-files-disabled",
        )
    reason = denied_reason(rel)
    if reason is not None:
        raise SystemPathError(f"'{shown}': never written ({reason})", code="system-path-denied")
    if not any(_under(rel, r) for r in SYSTEM_ROOTS) or not rules.allows(rel):
        allowed = ", ".join("/" + p for p in rules.prefixes)
        raise SystemPathError(
            f"'{shown}': not under an allowed system prefix ({allowed})",
            code="system-path-not-allowed",
        )
    if mode not in (0o100644, 0o100755):
        raise SystemPathError(
            f"'{shown}': only regular files are system files (mode {mode:o})",
            code="system-not-a-file",
        )
    return rel
