"""``qgitconf persist``: keep the agent state and managed files across reboots.

In Qubes OS an app qube keeps ``/home``, ``/usr/local`` and ``/rw/config``; the rest of
its root comes from the template at each boot.  So on R4.2, and on R4.3 without
``custom-persist``, qgitconf needs nothing: it writes only under ``$HOME``.

R4.3's ``custom-persist`` service changes that: with it on, ``/home`` is rebuilt from
``/etc/skel`` at every boot and only the paths declared as ``custom-persist.NAME``
features survive.  A qube whose agent state is lost forgets the last accepted
sequence and commit, and would then accept an older signed update again (rule 4 and 6
protect only what the state remembers).  This module prints the dom0 commands that
declare, and only for a qube where custom-persist is already on (never the command
that turns it on: see :func:`persist_commands`):

- the agent state directory and the target configuration directory, in the ``dir:``
  form so they are created even before they exist (a plain path that does not exist
  yet is skipped silently);
- the directory of each managed file, in the ``dir:`` form: declared files would be
  bind mounts, which a rename cannot replace (:func:`persisted_dirs`); files directly
  in $HOME are re-created at boot by ``qgitconf restore`` from the persistent state.

Each key is at most :data:`FEATURE_KEY_MAX` characters (:func:`feature_key`).

It also answers "is the state persistent here?" for ``doctor`` from QubesDB
(``/qubes-service/custom-persist``, ``/persist/*``, ``/type``).

:func:`persist_commands` and :func:`state_persistence` are pure; the readers at the
bottom do the I/O.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qgitconf.agent.state import AgentState, state_dir
from qgitconf.errors import ConfigError, LocalStateError
from qgitconf.qubes import qubesdb
from qgitconf.sanitize import sanitize

__all__ = [
    "CONFIG_REL",
    "FEATURE_KEY_MAX",
    "STATE_REL",
    "Persistence",
    "feature_key",
    "managed_paths_from_branch",
    "managed_paths_from_state",
    "persist_commands",
    "persisted_dirs",
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

FEATURE_KEY_MAX = 54
"""Longest ``custom-persist.<key>`` key: dom0 writes each one to QubesDB as
``/persist/<key>`` and refuses a key longer than the QubesDB key limit (63) less
``/persist/`` (qubes-core-admin ``qubes/ext/custom_persist.py``, ``_check_key``)."""
_HASH_LEN = 10


def _slug(rel: str) -> str:
    return _SLUG.sub("-", rel.lower()).strip("-") or "file"


def feature_key(prefix: str, rel: str) -> str:
    """The ``custom-persist`` key for ``rel``: ``PREFIX-<slug>``, or, when that is longer
    than :data:`FEATURE_KEY_MAX` or not enough to tell paths apart, the slug cut short
    and a short hash of the path (``PREFIX-<slug…>-<sha256[:10]>``)."""
    base = f"{prefix}-{_slug(rel)}"
    if len(base) <= FEATURE_KEY_MAX:
        return base
    return _hashed(base, rel)


def _hashed(base: str, rel: str) -> str:
    digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:_HASH_LEN]
    return f"{base[: FEATURE_KEY_MAX - _HASH_LEN - 1].rstrip('-')}-{digest}"


def _feature_names(prefix: str, paths: Sequence[str]) -> list[str]:
    """One unique key per path, each at most :data:`FEATURE_KEY_MAX` characters."""
    seen: set[str] = set()
    names: list[str] = []
    for rel in paths:
        name = feature_key(prefix, rel)
        if name in seen:
            name = _hashed(f"{prefix}-{_slug(rel)}", rel)
        n = 2
        while name in seen:  # a hash collision: practically never
            name = _hashed(f"{prefix}-{_slug(rel)}", f"{rel}\0{n}")
            n += 1
        seen.add(name)
        names.append(name)
    return names


def persisted_dirs(managed: Iterable[str]) -> tuple[list[str], list[str]]:
    """The directories to declare for ``managed`` paths, and the files left at $HOME's top.

    custom-persist (like bind-dirs) bind-mounts each declared path; a declared *file*
    becomes a mount point that no rename can replace (EBUSY), and one that does not
    exist at boot is skipped (core-agent ``vm-systemd/bind-dirs.sh``).  So the parent
    directory of each managed file is declared instead (its other files persist too),
    minus those inside another declared directory.  A file directly in $HOME has no
    directory but $HOME itself; it is returned apart.

    Returns:
        (directories, top-level files), both $HOME-relative and sorted.
    """
    parents: set[str] = set()
    top: list[str] = []
    for rel in set(managed):
        parent = str(PurePosixPath(rel).parent)
        if parent == ".":
            top.append(rel)
        else:
            parents.add(parent)
    kept = [
        d
        for d in sorted(parents)
        if not any(p in parents for p in (str(a) for a in PurePosixPath(d).parents) if p != ".")
    ]
    return kept, sorted(top)


def persist_commands(
    qube: str,
    managed: Iterable[str],
    *,
    home: str = "/home/user",
    user: str = "user",
    custom_persist: bool | None = None,
) -> list[str]:
    """The dom0 commands (with ``#`` explanations) that make qgitconf persistent in QUBE.

    Never a command that turns custom-persist on: on a qube that did not use it, the
    next boot would rebuild ``/home`` from ``/etc/skel`` and every undeclared file of
    the user would vanish from view (core-agent ``vm-systemd/mount-dirs.sh``).

    Args:
        qube: The target qube's name.
        managed: $HOME-relative paths qgitconf manages there.
        home: The home directory inside the qube.
        user: The owner (and group) of the state directories.
        custom_persist: Whether custom-persist is on in the qube (QubesDB
            ``/qubes-service/custom-persist`` is ``1``), as the qube itself reads it;
            ``None`` when unknown (config-mgmt): the declarations are then printed
            commented out, after what to check.

    Returns:
        Lines of a shell script for dom0; comment lines start with ``#``.  With
        ``custom_persist`` False, comments only.

    Raises:
        ConfigError: If ``qube`` or ``user`` is not a valid name, or ``home`` is not
            an absolute path.
    """
    base = _checked_base(qube, user, home)
    if custom_persist is False:
        return [
            f"# custom-persist is off in {qube} (QubesDB /qubes-service/custom-persist is",
            "# not 1): all of /home persists, so qgitconf's state and files already survive",
            "# a reboot. Nothing to declare.",
            *_NEVER,
        ]
    quoted = custom_persist is None
    lead = "#   " if quoted else ""

    def feature(name: str, value: str) -> str:
        return f"{lead}qvm-features {qube} custom-persist.{name} {shlex.quote(value)}"

    lines = _preamble(qube, quoted)
    lines += [
        "# The agent state (accepted sequence and commit, generations, backups): required,",
        "# or a reboot makes the qube forget what it accepted. dir: form = created if missing.",
        feature("qgitconf-state", f"dir:{user}:{user}:0700:{base / STATE_REL}"),
        "# The target configuration (source qube, pinned key, allowlist), if kept per qube.",
        feature("qgitconf-config", f"dir:{user}:{user}:0700:{base / CONFIG_REL}"),
    ]
    return lines + _managed_lines(feature, managed, user, base)


_NEVER = (
    "# Never turn custom-persist on for qgitconf's sake: with it on, /home is rebuilt",
    "# from /etc/skel at every boot and every file of the user that is not declared",
    "# vanishes from view (qubes-core-agent-linux vm-systemd/mount-dirs.sh).",
)


def _checked_base(qube: str, user: str, home: str) -> PurePosixPath:
    """``home`` as a path, once ``qube``, ``user`` and ``home`` are checked (ConfigError)."""
    if not _QUBE.fullmatch(qube):
        raise ConfigError(f"not a qube name: {sanitize(qube)}")
    if not _USER.fullmatch(user):
        raise ConfigError(f"not a user name: {sanitize(user)}")
    if not home.startswith("/") or sanitize(home) != home or ":" in home:
        raise ConfigError(f"home must be an absolute path without ':': {sanitize(home)}")
    return PurePosixPath(home)


def _preamble(qube: str, quoted: bool) -> list[str]:
    """The explanation above the declarations: what to check first when it is not known
    whether custom-persist is on (``quoted``), or why they are needed."""
    if quoted:
        return [
            "# Only for a qube that ALREADY uses custom-persist (Qubes R4.3). Check first,",
            f"# in dom0: `qvm-service {qube}` must list custom-persist as on (or run",
            f"# `qgitconf persist` in {qube}: it reads QubesDB and prints only what applies).",
            "# If it is off, or on R4.2: stop here, /home persists and nothing is needed.",
            *_NEVER,
            "# If it is on: run the commands below in dom0, without the leading '#   '.",
        ]
    return [
        f"# In dom0: keep qgitconf's state in {qube} across reboots. custom-persist is",
        f"# on in {qube} (QubesDB /qubes-service/custom-persist = 1): only declared paths",
        "# of /home survive a reboot. A declaration takes effect at the next boot.",
    ]


def _managed_lines(
    feature: Callable[[str, str], str], managed: Iterable[str], user: str, base: PurePosixPath
) -> list[str]:
    """The declarations of the managed files' directories, and notes on what is not
    declared (files directly in $HOME, unprintable paths)."""
    lines: list[str] = []
    paths = sorted(set(managed))
    printable = [p for p in paths if sanitize(p) == p and p and not p.startswith("/")]
    dirs, top = persisted_dirs(printable)
    if dirs:
        lines += [
            "# The directories of the managed files (directories, not files: a declared file",
            "# is bind-mounted, and bind-dirs skips one that is missing at boot).",
        ]
        for name, rel in zip(_feature_names("qgitconf-d", dirs), dirs, strict=True):
            lines.append(feature(name, f"dir:{user}:{user}:0755:{base / rel}"))
    if top:
        lines += [
            "# Not declared: managed files directly in $HOME (only $HOME itself holds them).",
            "# `qgitconf restore` re-creates them at boot from the persistent state. If you",
            "# declare one yourself, apply rewrites it in place (it is a mount point).",
        ]
        lines += [f"#   {base / rel}" for rel in top]
    if not printable:
        lines.append("# No managed files yet: run this again after the first apply.")
    for rel in paths:
        if rel not in printable:
            lines.append(f"# skipped a path with unprintable characters: {sanitize(rel)}")
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
    """This qube's QubesDB (:mod:`qgitconf.qubes.qubesdb`, the one reader) and the entries
    under ``/persist/``.

    Returns:
        The reader (``None`` for missing keys or no QubesDB) and the entries under
        ``/persist/``.
    """
    return qubesdb.read, qubesdb.list_keys("/persist/")


# -- where the managed paths come from ----------------------------------------------------


def managed_paths_from_state(home: Path) -> list[str]:
    """The paths the agent manages in this qube (its manifest).

    Args:
        home: $HOME.

    Returns:
        $HOME-relative paths, sorted; empty before the first apply.
    """
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
