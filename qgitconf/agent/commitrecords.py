"""The records an apply's commit writes once its files are in place: the manifest, the
generation, the state and the agent repository's refs, as one durable batch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from qgitconf.agent.fault import Fault
from qgitconf.agent.state import APPLIED_REF, GENERATION_REF, AgentState
from qgitconf.durable import DurableBatch
from qgitconf.errors import LocalStateError
from qgitconf.fsutil import fsync_dir
from qgitconf.gitpack.store import ref_locked_error
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import After, Entry


def record_commit(
    state: AgentState,
    after: After,
    stats: Mapping[str, list[int]] | None = None,
    fault: Fault | None = None,
) -> None:
    """Write the state records an apply ends with; idempotent (roll-forward repeats it)."""
    manifest: dict[str, Entry] = {p: r.copy() for p, r in dict(after["manifest"]).items()}
    for path, st in (stats or {}).items():
        if path in manifest:
            manifest[path]["stat"] = st
    fault = fault or Fault()
    record = after.get("generation")
    # The records that grow with the number of files, and the generations: written
    # as one batch, two flushes in all (durable.DurableBatch) instead of two fsyncs
    # each; renamed in the order of their fault labels.  state.json is read and
    # written after them as before (Receive writes it too, without the state lock:
    # its read-modify-write stays short).
    batch = DurableBatch(state.root)
    try:
        state.save_manifest(manifest, batch=batch)
        state.save_originals(dict(after["originals"]), batch=batch)
        new_generation = False
        if record is not None:
            gens = state.generations()
            if not any(g.get("number") == record["number"] for g in gens):
                gens.append(record.copy())
                state.save_generations(gens, batch=batch)
                new_generation = True
        batch.flush_temps()
        batch.rename(state.root / "manifest.json")
        batch.rename(state.root / "manifest.stat")
        fault("manifest-saved")
        batch.rename(state.root / "originals.json")
        fault("originals-saved")
        if new_generation:
            batch.rename(state.root / "generations.json")
        batch.finish()
    finally:
        batch.discard()
    if record is None:
        return
    fault("generations-saved")
    commit = record["commit"]
    saved = state.load()
    if saved.get("applied") != commit or "applied" not in saved:
        saved["applied"] = commit
        state.save(saved)
    fault("state-saved")
    _write_refs(state, commit, int(record["number"]), fault)
    state.point_head(commit)
    fault("head-written")


def _write_refs(state: AgentState, commit: str | None, number: int, fault: Fault) -> None:
    """Point ``refs/qgitconf/applied`` and ``refs/qgitconf/generations/<number>`` at
    ``commit`` (or remove ``applied``: the state before qgitconf).

    Each write takes the ref's lock file (``<ref>.lock``) as git does; the fault hook
    runs while it is held (``applied-ref-locked``, ``generation-ref-locked``), where a
    kill leaves the lock behind: crash debris that :func:`clear_debris` removes under
    the state lock before this is run again.

    Raises:
        LocalStateError: a lock file is still there (it is not one the agent left).
    """
    locked_error = ref_locked_error()

    def locked(ref: bytes) -> None:
        fault("applied-ref-locked" if ref == APPLIED_REF else "generation-ref-locked")

    refs = state.refs(locked)
    message = f"qgitconf: generation {number}".encode("ascii")
    try:
        if commit is not None:
            value = commit.encode("ascii")
            refs.set_if_equals(APPLIED_REF, None, value, message=message)
            fault("applied-ref-written")
            ref = GENERATION_REF.format(n=number).encode("ascii")
            refs.set_if_equals(ref, None, value, message=message)
            fault("generation-ref-written")
        else:
            refs.remove_if_equals(APPLIED_REF, None, message=message)
            fault("applied-ref-written")
        # The renames of the lock files are durable before the journal is removed.
        ours = state.repo_path / "refs" / "qgitconf"
        fsync_dir(ours)
        if commit is not None:
            fsync_dir(ours / "generations")
    except locked_error as e:
        raise LocalStateError(
            f"a ref of the agent repository is locked ({sanitize(os.fsdecode(e.lockfilename))}); "
            "it is not a lock file qgitconf left: check that no other git command runs "
            "on it, then remove it; the next qgitconf apply, revert or status finishes "
            "the change"
        ) from e
