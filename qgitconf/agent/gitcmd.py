"""``qgitconf log`` and ``qgitconf git``: the agent repository's history through the
system's git, isolated from what an update wrote (DESIGN rule 12)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgitconf import sysprog
from qgitconf.agent.config import load_target_config
from qgitconf.agent.render import choose_pager, git_pager
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.agent.status import home_status as home_status  # re-exported
from qgitconf.agent.status import status as status  # re-exported
from qgitconf.errors import ConfigError
from qgitconf.gitpack.store import EMPTY_TREE

if TYPE_CHECKING:
    from qgitconf.agent.records import Generation


def _tempdir(prefix: str) -> Any:
    """A ``tempfile.TemporaryDirectory``; imported here, not on the apply and status
    paths (``tempfile`` imports ``random``)."""
    return tempfile.TemporaryDirectory(prefix=prefix)


def log(home: Path) -> list[Generation]:
    """The generations, oldest first."""
    state = AgentState(state_dir(home))
    return state.generations()


_GIT_TERMINAL_VARS = ("TERM", "COLUMNS", "LINES")


def _pinned_gnupg_home(home: Path, directory: str) -> None:
    """Fill ``directory`` as a GnuPG home holding only the pinned keys, for git's
    ``--show-signature`` and ``verify-commit``: the verdict shown is the pinned key's,
    never the user's ``~/.gnupg`` (which may not hold it, and which is not created)."""
    os_dir = Path(directory)
    os_dir.chmod(0o700)
    (os_dir / "gpg.conf").write_text("trust-model always\nno-auto-key-retrieve\n")
    try:
        pinned = load_target_config(home).pinned
    except ConfigError:
        return  # not a target (yet): an empty home, "No public key"
    gpg = sysprog.program("gpg")
    for key in pinned.values():
        subprocess.run(
            [gpg, "--homedir", directory, "--batch", "--quiet", "--import"],
            input=key,
            capture_output=True,
            check=False,
            env=sysprog.base_env(home),
        )


def git(home: Path, env: Mapping[str, str], args: Sequence[str]) -> int:
    """Run the system's git on the agent repo with ``GIT_DIR``/``GIT_WORK_TREE`` set.

    Isolated like review's git (DESIGN rule 12): the git of the system PATH, no user
    or system config (so no ``core.pager``, ``pager.*``, ``diff.external``, textconv,
    ``difftool.*.cmd`` or ``core.bigFileThreshold`` from ``~/.gitconfig``), no
    attributes file, attributes from the empty tree (git 2.40+), and an environment
    built from nothing: the session variables (a GUI difftool), the terminal's
    ``TERM``/``COLUMNS``/``LINES``, and review's pager (``GIT_PAGER``, see
    :func:`qgitconf.agent.review.choose_pager`).  What the user types in ``args``
    (``-c``, ``--tool``) is git's to honour.  Signatures (``log --show-signature``,
    ``verify-commit``) are checked by the system's gpg in a temporary home holding only
    the pinned keys: the verdict is the pinned key's, and ``~/.gnupg`` is not touched.
    """
    state = AgentState(state_dir(home))
    if not state.repo_path.exists():
        raise ConfigError("no agent repository yet (run: qgitconf target init)")
    program = sysprog.program("git")
    choice = choose_pager(env)
    if choice.note:
        print(f"qgitconf: {choice.note}", file=sys.stderr)
    with (
        _tempdir("qgitconf-pager-") as empty,
        _tempdir("qgitconf-keys-") as keys,
    ):
        _pinned_gnupg_home(home, keys)
        genv = sysprog.git_env(home, state.repo_path, session=env)
        genv.update({k: env[k] for k in _GIT_TERMINAL_VARS if k in env})
        genv.update(
            GIT_WORK_TREE=str(home),
            GIT_ATTR_SOURCE=EMPTY_TREE,
            GIT_PAGER=git_pager(choice, env, empty),
            GNUPGHOME=keys,
        )
        gpg = ["-c", f"gpg.program={sysprog.program('gpg')}"]
        return subprocess.run(
            [program, *sysprog.GIT_ISOLATION, *gpg, *args], env=genv, check=False
        ).returncode
