"""The config-mgmt side."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def default_repo_path(home: Path, env: Mapping[str, str]) -> Path:
    """The config-mgmt repository: ``$QGITCONF_REPO``, else ``~/qgitconf.git``.

    Here, not in ``qgitconf.mgmt.repo`` (which re-exports it): ``agent.side`` asks
    it on every target command, and ``mgmt.repo`` imports dulwich (the apply and
    status rows of ``make bench``).
    """
    return Path(env.get("QGITCONF_REPO") or home / "qgitconf.git")
