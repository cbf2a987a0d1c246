"""The programs the agent runs, and the environment it runs them in (DESIGN rule 12).

Nothing an update writes may change how the next update is verified, reviewed or
applied.  Real qrexec starts a service through ``sh -lc`` as the qube's user, so the
user's ``~/.profile`` (which on Debian puts ``~/bin`` and ``~/.local/bin`` first on
``PATH``) has run before the agent starts; an update that places ``~/bin/gpg`` would
otherwise replace the verifier.  So:

* every program is found once on :data:`SYSTEM_PATH`, a fixed list of root-owned
  directories, never on the caller's ``PATH`` (:func:`program`);
* children get an environment built here from nothing (:func:`base_env`), never a
  copy of the one the process started with;
* git never reads the user's or the system's config, attributes or hooks
  (:func:`git_env`, :data:`GIT_ISOLATION`): an earlier update could have written
  ``~/.gitconfig`` or ``~/.config/git/attributes``.
"""

from __future__ import annotations

import os

from qgitconf.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Root-owned directories only: no ``~/bin``, no ``~/.local/bin``, no relative entry."""

# Variables a child may inherit because the user's session needs them to show a
# notification or a dialog; none of them changes what a program loads or executes.
_SESSION_VARS = ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")

GIT_ISOLATION = (
    "-c",
    "core.attributesFile=/dev/null",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.bigFileThreshold=512m",
)
"""``-c`` options for every git the agent runs: no attributes file from $HOME (git reads
``~/.config/git/attributes`` even without a global config), no hooks, no fsmonitor,
and the default big-file threshold.  No external diff can be configured (no global or
system config is read), and the diff commands add ``--no-ext-diff``."""


_FOUND: dict[str, str | None] = {}


class _Find:
    """:func:`find`: a function with ``functools.cache``'s ``cache_clear``, without
    importing ``functools`` (this module is imported by the no-drift status of
    :mod:`qgitconf.agent.statusfast`)."""

    def __call__(self, name: str) -> str | None:
        """The absolute path of ``name`` on :data:`SYSTEM_PATH`, or None (looked up
        once per process).

        What ``shutil.which(name, path=SYSTEM_PATH)`` answers for a bare program name
        (the first existing executable non-directory), without importing ``shutil``
        (with ``bz2`` and ``lzma``, 2-4 ms of every ``qgitconf status``, which asks
        QubesDB).
        """
        if name in _FOUND:
            return _FOUND[name]
        found = None
        if name and os.sep not in name:  # only bare names are looked up on the system PATH
            for directory in SYSTEM_PATH.split(os.pathsep):
                path = os.path.join(directory, name)
                if os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path):
                    found = path
                    break
        _FOUND[name] = found
        return found

    def cache_clear(self) -> None:
        """Forget what was looked up (tests that change the system PATH's programs)."""
        _FOUND.clear()


find = _Find()


def program(name: str) -> str:
    """The absolute path of the system program ``name``.

    Raises:
        ConfigError: ``name`` is not installed in any directory of :data:`SYSTEM_PATH`.
    """
    path = find(name)
    if path is None:
        raise ConfigError(
            f"{name} is not installed (looked in {SYSTEM_PATH})", code="missing-program"
        )
    return path


def base_env(home: Path | str, session: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child's environment, built from nothing: the system PATH, HOME and a UTF-8 locale.

    Args:
        home: the user's home directory.
        session: where to take the display and session-bus variables from (for
            ``notify-send`` and ``zenity``); None for none.
    """
    env = {"PATH": SYSTEM_PATH, "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    if session is not None:
        env.update({k: session[k] for k in _SESSION_VARS if k in session})
    return env


def git_env(
    home: Path | str, git_dir: Path | str, session: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a git the agent runs on its own repository: no global or
    system config, no replace refs, no prompts, no optional locks."""
    env = base_env(home, session)
    env.update(
        GIT_DIR=str(git_dir),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL="/dev/null",
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_OPTIONAL_LOCKS="0",
    )
    return env
