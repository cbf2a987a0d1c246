"""Where a target qube's configuration is: the two paths alone.

Apart from ``qgitconf.agent.config`` (which re-exports them) so that a command that
only asks which side this qube is on (``agent.side``: ``qgitconf publish`` in
config-mgmt, the "publish -> staged" row of ``make bench``) does not import the
configuration reader (``tomllib``, the path rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def user_config_path(home: Path) -> Path:
    return home / ".config" / "qgitconf" / "target.toml"


SYSTEM_CONFIG = Path("/etc/qgitconf/target.toml")
"""The template-wide configuration: root-owned, never taken from the environment."""


def system_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``/etc/qgitconf/target.toml``; ``env`` is not consulted (DESIGN rule 12)."""
    return SYSTEM_CONFIG
