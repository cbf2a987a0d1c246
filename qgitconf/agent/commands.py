"""Target-side commands: target init, review, apply, revert, status, log, git.

Each function does the I/O for one command and returns plain data (dicts or text);
the click layer only prints.  Everything that came from another qube is sanitised
before it is returned for display (rule 11).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qgitconf.agent.apply import execute, plan_apply, revert_target, staged_commit
from qgitconf.agent.config import FPR, load_target_config, write_target_config
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.envelope import QUBE_NAME
from qgitconf.errors import ConfigError, UsageError
from qgitconf.gitstore import EMPTY_TREE
from qgitconf.sanitize import sanitize
from qgitconf.signing import inspect_key_file


def target_init(
    home: Path, source: str, key_file: Path, fingerprint: str | None, allow: Sequence[str]
) -> dict[str, Any]:
    """Pin the key in ``key_file`` and the source qube for this target qube.

    Raises:
        ConfigError: the key file holds more or other keys than the one to pin.
    """
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
    AgentState(state_dir(home)).ensure()
    return {
        "config": str(path),
        "fingerprint": key.fingerprint,
        "uids": [sanitize(u) for u in key.uids],
        "source": source,
    }


def _signer_uids(pinned: Mapping[str, bytes], fpr: str) -> list[str]:
    data = pinned.get(fpr)
    if data is None:
        return []
    return [sanitize(u) for k in inspect_key_file(data) for u in k.uids]


def _git_env(state: AgentState, home: Path, env: Mapping[str, str]) -> dict[str, str]:
    out = dict(env)
    out.update(GIT_DIR=str(state.repo_path), GIT_WORK_TREE=str(home))
    return out


def review(home: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Who signed the staged update, what it is, and the diff from what is applied."""
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    commit = staged_commit(state)
    data = state.load()
    staged = data["staged"]
    applied = data.get("applied")
    plan, _fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
    proc = subprocess.run(
        [
            "git",
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--stat",
            "--patch",
            applied or EMPTY_TREE,
            commit,
        ],
        capture_output=True,
        env=_git_env(state, home, env),
        check=False,
    )
    diff = proc.stdout if proc.returncode == 0 else proc.stderr
    message = subprocess.run(
        ["git", "log", "-1", "--format=%B", commit],
        capture_output=True,
        env=_git_env(state, home, env),
        check=False,
    ).stdout
    return {
        "signer": {
            "fingerprint": staged["signer"],
            "uids": _signer_uids(cfg.pinned, staged["signer"]),
        },
        "sequence": staged["sequence"],
        "commit": commit,
        "created": staged["created"],
        "applied": applied,
        "message": sanitize(message.decode("utf-8", "replace").strip(), keep_newlines=True),
        "changes": [{"op": a.op, "path": sanitize(a.path)} for a in plan.changes],
        "conflicts": plan.conflicts,
        "diff": sanitize(diff, keep_newlines=True),
    }


def apply(home: Path, env: Mapping[str, str], *, overwrite: bool) -> dict[str, Any]:
    """Apply the staged update into ``home``; returns the new generation's record."""
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    commit = staged_commit(state)
    plan, fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
    if not plan.changes and state.applied_commit == commit:
        return {
            "number": None,
            "commit": commit,
            "written": [],
            "removed": [],
            "note": "up to date",
        }
    return execute(plan, fs, state, overwrite=overwrite, kind="apply")


def revert(
    home: Path, env: Mapping[str, str], *, to: int | None, overwrite: bool
) -> dict[str, Any]:
    """Go back to generation ``to`` (default: the one before the current)."""
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    number, commit = revert_target(state, state.generations(), to)
    plan, fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
    return execute(
        plan, fs, state, overwrite=overwrite, kind="revert", note=f"revert to generation {number}"
    )


def status(home: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """Staged vs applied, sequence, and files changed locally since the last apply."""
    cfg = load_target_config(home, env)
    state = AgentState(state_dir(home))
    data = state.load()
    fs = HomeFS(home)
    drift = [
        sanitize(p) for p, rec in sorted(state.manifest().items()) if fs.probe(p).record() != rec
    ]
    staged = data.get("staged") or {}
    gens = state.generations()
    return {
        "role": "target",
        "source": cfg.source,
        "keys": sorted(cfg.pinned),
        "sequence": data.get("sequence"),
        "staged": staged.get("commit"),
        "received": staged.get("received"),
        "applied": data.get("applied"),
        "pending": bool(staged) and staged.get("commit") != data.get("applied"),
        "generation": gens[-1]["number"] if gens else 0,
        "drift": drift,
        "interrupted": (state.root / "journal.json").exists(),
    }


def log(home: Path) -> list[dict[str, Any]]:
    """The generations, oldest first."""
    state = AgentState(state_dir(home))
    return state.generations()


def git(home: Path, env: Mapping[str, str], args: Sequence[str]) -> int:
    """Run the user's git on the agent repo with ``GIT_DIR``/``GIT_WORK_TREE`` set."""
    state = AgentState(state_dir(home))
    if not state.repo_path.exists():
        raise ConfigError("no agent repository yet (run: qgitconf target init)")
    return subprocess.run(["git", *args], env=_git_env(state, home, env), check=False).returncode
