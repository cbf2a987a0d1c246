"""The programs qgitconf runs, or that run qgitconf: no update may place one where it is found."""

from __future__ import annotations

__all__ = ["PROTECTED_PROGRAMS", "protected_program"]

PROTECTED_PROGRAMS: frozenset[str] = frozenset(
    {
        "qgitconf",
        "qgitconf-service",
        "git",
        "gpg",
        "gpgv",
        "gpg-agent",
        "gpgconf",
        "python3",
        "python",
        "sh",
        "bash",
        "dash",
        "env",
        "notify-send",
        "zenity",
        "timeout",
        "qubesdb-read",
        "qubesdb-list",
        "qrexec-client-vm",
        "qubes-gpg-client-wrapper",
        "qubes-gpg-client",
        "sudo",
        "su",
        "pkexec",
    }
)
"""Programs qgitconf runs, or that run qgitconf: never placed in a ``PATH`` directory of
$HOME (``python3.*`` neither)."""


def protected_program(name: str) -> bool:
    """``name`` (folded) is a program qgitconf runs or that runs qgitconf (``python3.*``
    too)."""
    return name in PROTECTED_PROGRAMS or name.startswith("python3.")
