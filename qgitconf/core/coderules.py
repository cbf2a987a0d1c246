"""Paths that load code (DESIGN rule 12, issue 14 section 1): refused in any tree like the
agent's own directories (the reasons are in :mod:`qgitconf.core.paths`' docstring)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from qgitconf.core.programs import protected_program


def _user_site(name: str) -> bool:
    """``name`` (folded) is a Python user site directory (``python3.11``, ``python``)."""
    return name.startswith("python")


def _pam_environment(name: str) -> bool:
    return name == ".pam_environment"


class CodeLoadingRule(NamedTuple):
    """A place from which the agent or the programs around it load code.

    Attributes:
        parent: the directory, as folded components (``()`` for $HOME).
        match: tells, for a folded name in ``parent``, whether it is refused (and
            everything below it).
        reason: why, for the error detail.
    """

    parent: tuple[str, ...]
    match: Callable[[str], bool]
    reason: str


_PATH_REASON = "a program qgitconf runs or that runs it, shadowed on the PATH ~/.profile sets"


CODE_LOADING_RULES: tuple[CodeLoadingRule, ...] = (
    CodeLoadingRule(
        (".local", "lib"),
        _user_site,
        "Python user site-packages: every Python start runs its .pth files and usercustomize",
    ),
    CodeLoadingRule(
        (),
        _pam_environment,
        "sets the environment of every PAM session, qrexec services included",
    ),
    CodeLoadingRule(("bin",), protected_program, _PATH_REASON),
    CodeLoadingRule((".local", "bin"), protected_program, _PATH_REASON),
)
"""Refused like :data:`DENIED_PREFIXES` (module docstring, "Paths that load code")."""
