"""``qgitconf status`` in a target qube: staged and applied, drift, the last generation.

Its own module so that ``qgitconf status`` (:mod:`qgitconf.entry`) imports neither the
planner nor the path rules (issue 21): only the state, $HOME's reader and the
journal's recovery check.  :mod:`qgitconf.agent.commands` re-exports these names.
The drift check is the one ``local_diff`` also uses (:func:`_scan`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from qgitconf.agent import configmemo
from qgitconf.agent.config import load_target_config
from qgitconf.agent.fault import Fault
from qgitconf.agent.homefs import DiskState, HomeFS
from qgitconf.agent.journal import describe, recover
from qgitconf.agent.stamps import stamp_age
from qgitconf.agent.statcache import all_unchanged, content, unchanged
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.fsutil import atomic_write
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Drift, Entry, HomeStatus, Status

__all__ = ["home_status", "stat_entry_from", "status"]


def _drift(disk: DiskState, rec: Entry) -> str | None:
    want = content(rec)
    if disk.record() == want:
        return None
    if disk.kind == "missing":
        return "missing"
    if disk.kind == "blocked":
        return "blocked"
    if disk.kind == "file" and want.get("type") == "file":
        return "mode" if disk.sha256 == want.get("sha256") else "modified"
    if disk.kind == "link" and want.get("type") == "link":
        return "modified"
    return "type"


def status(home: Path, env: Mapping[str, str]) -> Status:
    """Staged vs applied, drift per file, an interrupted apply, the age of the last update.

    Recovers an interrupted apply first (unless one is running right now).  Unchanged
    files are recognised by the manifest's stat cache, not re-hashed; entries the cache
    could not vouch for are refreshed when they are found unchanged.
    """
    seen: list[tuple[str, str, bytes]] = []
    cfg = load_target_config(home, env, system_rules=False, seen=seen)  # decides nothing by them
    state = AgentState(state_dir(home))
    keys = sorted(cfg.pinned)

    def remember() -> None:
        """The memo of this answer for the no-drift status (``agent/configmemo.py``)."""
        with contextlib.suppress(OSError):  # only a cache: a full disk may skip it
            configmemo.remember(str(state.root), seen, cfg.source, keys, _write_memo)

    return {
        "role": "target",
        "source": cfg.source,
        "keys": keys,
        **home_status(state, home, env, while_locked=remember),
    }


def _write_memo(path: str, data: bytes) -> None:
    atomic_write(Path(path), data)


def home_status(
    state: AgentState,
    home: Path,
    env: Mapping[str, str],
    *,
    while_locked: Callable[[], None] | None = None,
) -> HomeStatus:
    """The part of ``status`` that looks at the agent state and $HOME (no config).

    ``while_locked`` is called under the state lock once the scan is done, in a home
    where an update was applied and no journal is left (``status`` stores its
    configuration memo there)."""
    recovered = None
    with state.lock() as held, HomeFS(home) as fs:
        if held:
            recovered = recover(state, fs, Fault.from_env(env))
        data = state.load()
        found, managed = _scan(state, fs, save=held)
        drift: list[Drift] = [{"path": sanitize(p), "state": k} for p, k in sorted(found)]
        interrupted = describe(state)
        if held and while_locked is not None and managed and interrupted is None:
            while_locked()
    staged = data.get("staged") or {}
    gens = state.generations()
    last = gens[-1] if gens else None
    return {
        "sequence": data.get("sequence"),
        "staged": staged.get("commit"),
        "received": staged.get("received"),
        "applied": data.get("applied"),
        "pending": bool(staged) and staged.get("commit") != data.get("applied"),
        "generation": last["number"] if last else 0,
        "last_update": last["time"] if last else None,
        "last_update_age": stamp_age(last["time"]) if last else None,
        "skipped": list(last.get("skipped") or []) if last else [],
        "managed": managed,
        "drift": [d["path"] for d in drift],
        "drift_detail": drift,
        "interrupted": interrupted is not None,
        "journal": interrupted,
        "busy": not held,
        "recovered": recovered,
    }


def _scan(state: AgentState, fs: HomeFS, *, save: bool) -> tuple[list[tuple[str, str]], int]:
    """Drift of every managed file: ``(path, kind)`` pairs and the number managed.

    Fast path: ``manifest.stat`` vouches for the unchanged regular files with one
    ``lstat`` each, so the (large) manifest is not parsed; only the entries it cannot
    vouch for are probed.  If any vouched file changed, the whole manifest is scanned.
    Entries found unchanged by hashing get a fresh stat cache, and a missing or stale
    ``manifest.stat`` is written again (if ``save``).
    """
    index = state.stat_index()
    manifest: dict[str, Entry] | None = None
    if index is not None and all_unchanged(fs, index.vouched, index.records):
        records, managed = index.others, index.managed
    else:
        manifest = records = state.manifest()
        managed = len(manifest)
    found: list[tuple[str, str]] = []
    refreshed: dict[str, list[int]] = {}
    for path, rec in records.items():
        if unchanged(fs, path, rec):  # one lstat: the stat cache vouches for it
            continue
        disk = fs.probe(path, rec)
        kind = _drift(disk, rec)
        if kind is not None:
            found.append((path, kind))
        elif disk.hashed and disk.st is not None:
            refreshed[path] = stat_entry_from(disk.st)
    # Nothing managed (never applied): no manifest.stat to write.
    rebuild = index is None and bool(manifest)
    if save and (refreshed or rebuild) and not state.journal_dir.exists():
        if manifest is None:
            manifest = state.manifest()
        for path, entry in refreshed.items():
            if path in manifest:
                manifest[path]["stat"] = entry
        with contextlib.suppress(OSError):  # only a cache: a full disk may skip it
            state.save_manifest(manifest)
    return found, managed


def stat_entry_from(st: tuple[int, int, int, int]) -> list[int]:
    return [*st, time.time_ns()]
