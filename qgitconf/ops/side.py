"""Which side this qube is on: config-mgmt (a repository), target (a pinned key), or both.

A command of the other side fails with :class:`qgitconf.errors.WrongSideError`
(``wrong-side``) saying where it belongs, instead of a hint that would make the
config-mgmt qube a target of itself (``target init``) or a target a config-mgmt
qube (``init``).  A qube that is both (``target init --force`` next to a
repository) runs the commands of both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from qgitconf.agent.where import system_config_path, user_config_path
from qgitconf.errors import WrongSideError
from qgitconf.mgmt import default_repo_path
from qgitconf.mgmt.repo import MgmtRepo


class Side(NamedTuple):
    """What this qube holds."""

    target: bool  # a target.toml (this qube's own or the template's)
    mgmt: bool  # a config-mgmt repository at the default path (or $QGITCONF_REPO)
    repo: Path


def side(home: Path, env: Mapping[str, str]) -> Side:
    """Look at the files that make this qube a target or config-mgmt (reads nothing else)."""
    repo = default_repo_path(home, env)
    target = user_config_path(home).is_file() or system_config_path().is_file()
    mgmt = (repo / "HEAD").is_file() and (repo / "qgitconf").is_dir()
    return Side(target=target, mgmt=mgmt, repo=repo)


def require_target(home: Path, env: Mapping[str, str], command: str) -> None:
    """Refuse target command ``command`` in a config-mgmt qube that is no target.

    Raises:
        WrongSideError: this qube holds a config-mgmt repository and no target config.
    """
    s = side(home, env)
    if s.mgmt and not s.target:
        raise WrongSideError(
            f"this is the config-mgmt qube (repository {s.repo}); `{command}` runs in a "
            "target qube"
            + (": here, `qgitconf revert TARGET [--to COMMIT]`" if command == "revert" else "")
        )


def require_mgmt(home: Path, env: Mapping[str, str], command: str) -> None:
    """Refuse config-mgmt command ``command`` in a target qube that holds no repository.

    Raises:
        WrongSideError: this qube is a target and holds no config-mgmt repository.
    """
    s = side(home, env)
    if s.target and not s.mgmt:
        hint = " (`qgitconf revert` without TARGET goes back here)" if command == "revert" else ""
        raise WrongSideError(
            f"this is a target qube; `{command}` runs in the config-mgmt qube{hint}"
        )


def check_target_init(home: Path, env: Mapping[str, str], *, force: bool) -> None:
    """``target init`` in a qube holding a config-mgmt repository needs ``--force``.

    Raises:
        WrongSideError: a repository is here and ``force`` is not given.
    """
    s = side(home, env)
    if s.mgmt and not force:
        raise WrongSideError(
            f"this is the config-mgmt qube (repository {s.repo}); `target init` runs in "
            "each target qube, which then receives updates from here. Making config-mgmt "
            "a target of itself lets what it publishes change its own $HOME: "
            "use --force only if that is what you want"
        )


def check_mgmt_init(home: Path, env: Mapping[str, str], *, force: bool) -> None:
    """``init`` in a target qube needs ``--force``.

    Raises:
        WrongSideError: this qube is a target and ``force`` is not given.
    """
    s = side(home, env)
    if s.target and not s.mgmt and not force:
        raise WrongSideError(
            "this is a target qube; `init` (the config-mgmt repository) runs in the "
            "offline config-mgmt qube, which sends updates here. Use --force only to keep "
            "a config-mgmt repository in this target qube as well"
        )


def completion_names(
    home: Path, env: Mapping[str, str], *, targets: bool = True, layers: bool = False
) -> list[str]:
    """Names to complete a TARGET (and/or LAYER) argument with: the branch names of the
    repository's targets (and layers), from its records, sorted.

    Only in the config-mgmt qube: in a target qube (and anywhere without a
    repository) there is nothing to complete.  Never raises: a broken repository
    completes nothing.
    """
    try:
        s = side(home, env)
        if not s.mgmt:
            return []
        repo = MgmtRepo(s.repo, home, env)
        names: set[str] = set()
        if targets:
            names.update(repo.targets())
        if layers:
            names.update(repo.layers())
        return sorted(n for n in names if isinstance(n, str))
    except Exception:  # completion must never print a traceback into the shell
        return []
