"""``qgitconf target init`` and ``target remove`` in a target qube: pin the key, set up
the configuration; or take qgitconf out of the qube, after a preview."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qgitconf.agent.commands import busy_error
from qgitconf.agent.config import FPR, system_config_path, user_config_path, write_target_config
from qgitconf.agent.fault import Fault
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.journal import recover
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.agent.status import home_status as home_status  # re-exported
from qgitconf.agent.status import status as status  # re-exported
from qgitconf.core.envelope import QUBE_NAME
from qgitconf.errors import ConfigError, UsageError
from qgitconf.gpg.homes import HomeCache
from qgitconf.gpg.keys import inspect_key_file
from qgitconf.gpg.signing import Verifier
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Removed, RemovePlan, TargetInit


def target_init(
    home: Path, source: str, key_file: Path, fingerprint: str | None, allow: Sequence[str]
) -> TargetInit:
    """Pin the key in ``key_file`` and the source qube for this target qube.

    Raises:
        ConfigError: the key file holds more or other keys than the one to pin.
    """
    # Imported here: signing imports tempfile (and random), which status and apply
    # do not need (their rows of ``make bench``).
    if not QUBE_NAME.fullmatch(source):
        raise UsageError(f"{source!r} is not a valid qube name")
    try:
        data = key_file.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {key_file}: {e}") from e
    keys = inspect_key_file(data)
    if len(keys) != 1:
        raise ConfigError(f"{key_file} holds {len(keys)} keys; it must hold exactly the one to pin")
    key = keys[0]
    if fingerprint is not None:
        fpr = fingerprint.replace(" ", "").upper()
        if not FPR.fullmatch(fpr) or fpr != key.fingerprint:
            raise ConfigError(f"{key_file} holds {key.fingerprint}, not the given {fingerprint}")
    path = write_target_config(home, source, key.fingerprint, key.armored, list(allow) or ["**"])
    state = AgentState(state_dir(home))
    state.ensure()
    # Build the verification home for this pin now, as Receive would keep it after its
    # first success: the first update then does not import the key (the pin's digest
    # covers the key file's bytes as Receive reads them).
    pinned = {key.fingerprint: (path.parent / "keys" / f"{key.fingerprint}.asc").read_bytes()}
    with Verifier(pinned, HomeCache(state.verify_homes, state.tmp)):
        pass
    return {
        "config": str(path),
        "fingerprint": key.fingerprint,
        "uids": [sanitize(u) for u in key.uids],
        "source": source,
    }


def _removal_paths(home: Path) -> list[Path]:
    cfg = user_config_path(home)
    return [cfg, cfg.parent / "keys", state_dir(home)]


def target_remove_plan(home: Path, env: Mapping[str, str]) -> RemovePlan:
    """What ``target remove`` would remove and keep (for its question); changes nothing.

    Returns:
        ``remove`` (paths that exist), ``managed`` (files that stay in $HOME, no longer
        managed), ``kept_copies`` (originals and backups that go with the state),
        ``generations``, ``pending`` (a staged update not applied), ``template``
        (the template's ``/etc/qgitconf/target.toml`` exists: this qube stays a
        target through it).

    Raises:
        ConfigError: this qube has no target configuration of its own.
    """
    if not user_config_path(home).is_file():
        if system_config_path().is_file():
            raise ConfigError(
                f"this qube is a target through its template's {system_config_path()}; "
                "`target remove` removes only a qube's own ~/.config/qgitconf/target.toml: "
                "remove the template's file in the template",
                code="template-target",
            )
        raise ConfigError("this qube is not a qgitconf target; nothing to remove")
    state = AgentState(state_dir(home))
    root = state.root
    kept = 0
    for sub in ("originals", "backups"):
        if (root / sub).is_dir():
            kept += sum(1 for p in (root / sub).rglob("*") if not p.is_dir())
    data = state.load() if root.is_dir() else {}
    staged = (data.get("staged") or {}).get("commit")
    return {
        "remove": [str(p) for p in _removal_paths(home) if p.exists() or p.is_symlink()],
        "managed": len(state.manifest()) if root.is_dir() else 0,
        "kept_copies": kept,
        "generations": len(state.generations()) if root.is_dir() else 0,
        "pending": bool(staged) and staged != data.get("applied"),
        "template": system_config_path().is_file(),
    }


def target_remove(home: Path, env: Mapping[str, str]) -> Removed:
    """Forget this target: remove ``~/.config/qgitconf/target.toml``, the pinned keys
    and the agent state (``~/.local/share/qgitconf``); the files qgitconf applied stay
    in $HOME as they are.  An interrupted apply is recovered first, so no temp file
    or half-applied generation is left behind.

    Returns:
        :func:`target_remove_plan`'s keys, ``removed`` (the paths removed) and
        ``recovered``.

    Raises:
        ConfigError: not a target of its own (see :func:`target_remove_plan`).
        LocalStateError: an apply, revert or restore is running (``busy``).
    """
    plan = target_remove_plan(home, env)
    state = AgentState(state_dir(home))
    removed: list[str] = []
    recovered = None
    with state.lock() as held:
        if not held:
            raise busy_error()
        recovered = recover(state, HomeFS(home), Fault.from_env(env))
        for path in _removal_paths(home):
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
            else:
                continue
            removed.append(str(path))
    with contextlib.suppress(OSError):
        _removal_paths(home)[0].parent.rmdir()  # ~/.config/qgitconf, if now empty
    return {**plan, "removed": removed, "recovered": recovered}
