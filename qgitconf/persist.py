"""``qgitconf persist``: keep the agent state and managed files across reboots.

In Qubes OS an app qube keeps ``/home``, ``/usr/local`` and ``/rw/config``; the rest of
its root comes from the template at each boot.  So on R4.2, and on R4.3 without
``custom-persist``, qgitconf needs nothing: it writes only under ``$HOME``.

R4.3's ``custom-persist`` service changes that: with it on, ``/home`` is rebuilt from
``/etc/skel`` at every boot and only the paths declared as ``custom-persist.NAME``
features survive.  A qube whose agent state is lost forgets the last accepted
sequence and commit, and would then accept an older signed update again (rule 4 and 6
protect only what the state remembers).  This module prints the dom0 commands that
declare:

- the agent state directory and the target configuration directory, in the ``dir:``
  form so they are created even before they exist (a plain path that does not exist
  yet is skipped silently);
- each managed path, in the plain form (kept once the file exists in the persistent
  store; ``qgitconf restore`` re-creates the others from the persistent state).

It also answers "is the state persistent here?" for ``doctor`` from QubesDB
(``/qubes-service/custom-persist``, ``/persist/*``, ``/type``).

:func:`persist_commands` and :func:`state_persistence` are pure; the readers at the
bottom do the I/O.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qgitconf.errors import ConfigError, LocalStateError
from qgitconf.sanitize import sanitize

__all__ = [
    "CONFIG_REL",
    "STATE_REL",
    "Persistence",
    "managed_paths_from_branch",
    "managed_paths_from_state",
    "persist_commands",
    "qubesdb_reader",
    "state_persistence",
]

STATE_REL = ".local/share/qgitconf"
"""The agent state directory, relative to $HOME."""
CONFIG_REL = ".config/qgitconf"
"""The per-qube target configuration (target.toml, keys/), relative to $HOME."""

_SLUG = re.compile(r"[^a-z0-9]+")
_QUBE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,30}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _slug(rel: str) -> str:
    return _SLUG.sub("-", rel.lower()).strip("-") or "file"


def _feature_names(paths: Sequence[str]) -> list[str]:
    """One unique ``qgitconf-f-…`` feature name per path (dots and slashes become ``-``)."""
    seen: set[str] = set()
    names: list[str] = []
    for rel in paths:
        base = f"qgitconf-f-{_slug(rel)}"
        name, n = base, 2
        while name in seen:
            name, n = f"{base}-{n}", n + 1
        seen.add(name)
        names.append(name)
    return names


def persist_commands(
    qube: str,
    managed: Iterable[str],
    *,
    home: str = "/home/user",
    user: str = "user",
) -> list[str]:
    """The dom0 commands (with ``#`` explanations) that make qgitconf persistent in QUBE.

    Args:
        qube: The target qube's name.
        managed: $HOME-relative paths qgitconf manages there.
        home: The home directory inside the qube.
        user: The owner (and group) of the state directories.

    Returns:
        Lines of a shell script for dom0; comment lines start with ``#``.

    Raises:
        ConfigError: If ``qube`` or ``user`` is not a valid name, or ``home`` is not
            an absolute path.
    """
    if not _QUBE.fullmatch(qube):
        raise ConfigError(f"not a qube name: {sanitize(qube)}")
    if not _USER.fullmatch(user):
        raise ConfigError(f"not a user name: {sanitize(user)}")
    if not home.startswith("/") or sanitize(home) != home or ":" in home:
        raise ConfigError(f"home must be an absolute path without ':': {sanitize(home)}")
    base = PurePosixPath(home)

    def feature(name: str, value: str) -> str:
        return f"qvm-features {qube} custom-persist.{name} {shlex.quote(value)}"

    lines = [
        f"# In dom0: keep qgitconf's state in {qube} across reboots (R4.3 custom-persist).",
        "# Not needed on R4.2, or on R4.3 without custom-persist: /home persists there.",
        "# Declare the state BEFORE enabling the service: once custom-persist is on, every",
        f"# path of {qube}'s /home that is not declared is rebuilt from /etc/skel at boot.",
        "# So the declarations come first, and the service is enabled last.",
        "# The agent state (accepted sequence and commit, generations, backups): required,",
        "# or a reboot makes the qube forget what it accepted. dir: form = created if missing.",
        feature("qgitconf-state", f"dir:{user}:{user}:0700:{base / STATE_REL}"),
        "# The target configuration (source qube, pinned key, allowlist), if kept per qube.",
        feature("qgitconf-config", f"dir:{user}:{user}:0700:{base / CONFIG_REL}"),
    ]
    paths = sorted(set(managed))
    printable = [p for p in paths if sanitize(p) == p and p and not p.startswith("/")]
    if printable:
        lines += [
            "# The managed files. A plain path is kept once it exists in the persistent store;",
            "# until then `qgitconf restore` re-creates it at boot from the persistent state.",
        ]
        for name, rel in zip(_feature_names(printable), printable, strict=True):
            lines.append(feature(name, str(base / rel)))
    else:
        lines.append("# No managed files yet: run this again after the first apply.")
    for rel in paths:
        if rel not in printable:
            lines.append(f"# skipped a path with unprintable characters: {sanitize(rel)}")
    lines += [
        "# Last, with everything above declared: turn custom-persist on.",
        f"qvm-service -e {qube} custom-persist",
    ]
    return lines


# -- is the state persistent? -------------------------------------------------------------


@dataclass(frozen=True)
class Persistence:
    """Whether the agent state survives a reboot, and why.

    Attributes:
        result: ``ok``, ``warn`` or ``skip`` (not a Qubes qube).
        message: The explanation.
    """

    result: str
    message: str


QubesDB = Callable[[str], str | None]
"""Read one QubesDB key; ``None`` when absent.  ``/persist/`` lists its entries."""


def _persisted_path(value: str) -> str:
    # custom-persist values: "/path" or "dir:OWNER:GROUP:MODE:/path" (also file:).
    if value.startswith(("dir:", "file:")):
        parts = value.split(":", 4)
        return parts[4] if len(parts) == 5 else ""
    return value


def state_persistence(read: QubesDB, state: str, entries: Sequence[str]) -> Persistence:
    """Decide whether ``state`` (the state directory, absolute) survives a reboot.

    Args:
        read: QubesDB reader (see :func:`qubesdb_reader`).
        state: The state directory as seen in the qube, e.g.
            ``/home/user/.local/share/qgitconf``.
        entries: The names under ``/persist/`` (``qubesdb-list /persist/``).

    Returns:
        The verdict.
    """
    name = read("/name")
    if name is None:
        return Persistence("skip", "not in a Qubes qube (no qubesdb-read /name)")
    kind = read("/type") or "?"
    if kind == "DispVM":
        return Persistence(
            "warn",
            "disposable qube: the state is lost at shutdown; manage its disposable "
            "template instead",
        )
    if kind in ("TemplateVM", "StandaloneVM"):
        return Persistence("ok", f"{kind}: the whole root and /home persist")
    if read("/qubes-service/custom-persist") != "1":
        return Persistence("ok", "/home persists (custom-persist is off)")
    target = PurePosixPath(state)
    for entry in entries:
        path = _persisted_path(read(f"/persist/{entry}") or "")
        if not path.startswith("/"):
            continue
        p = PurePosixPath(path)
        if p == target or p in target.parents:
            return Persistence("ok", f"custom-persist keeps {sanitize(path)} ({sanitize(entry)})")
    return Persistence(
        "warn",
        f"custom-persist is on and {state} is not declared: the state is lost at reboot "
        "(run `qgitconf persist` and the printed commands in dom0)",
    )


def qubesdb_reader() -> tuple[QubesDB, list[str]]:
    """This qube's QubesDB (:mod:`qgitconf.qubesdb`, the one reader) and the entries
    under ``/persist/``.

    Returns:
        The reader (``None`` for missing keys or no QubesDB) and the entries under
        ``/persist/``.
    """
    from qgitconf import qubesdb

    return qubesdb.read, qubesdb.list_keys("/persist/")


# -- where the managed paths come from ----------------------------------------------------


def managed_paths_from_state(home: Path) -> list[str]:
    """The paths the agent manages in this qube (its manifest).

    Args:
        home: $HOME.

    Returns:
        $HOME-relative paths, sorted; empty before the first apply.
    """
    from qgitconf.agent.state import AgentState, state_dir

    return sorted(AgentState(state_dir(home)).manifest())


def managed_paths_from_branch(repo_path: Path, target: str, env: Mapping[str, str]) -> list[str]:
    """The paths of TARGET's branch tip in the config-mgmt repository.

    Args:
        repo_path: The bare repository.
        target: The target (branch) name.
        env: The environment git runs in.

    Returns:
        Every file path of the tip tree, sorted.

    Raises:
        ConfigError: If the repository or the branch does not exist.
    """
    if not _QUBE.fullmatch(target):
        raise ConfigError(f"not a target name: {sanitize(target)}")
    proc = subprocess.run(
        [
            "git",
            f"--git-dir={repo_path}",
            "ls-tree",
            "-r",
            "-z",
            "--name-only",
            f"refs/heads/{target}",
            "--",
        ],
        capture_output=True,
        check=False,
        env=dict(env),
    )
    if proc.returncode != 0:
        raise ConfigError(
            f"no branch {target} in {repo_path}: "
            f"{sanitize(proc.stderr.decode('utf-8', 'replace').strip())}"
        )
    try:
        names = proc.stdout.decode("utf-8").split("\0")
    except UnicodeDecodeError as e:
        raise LocalStateError(f"branch {target} has a path that is not UTF-8") from e
    return sorted(n for n in names if n)
