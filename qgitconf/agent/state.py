"""The agent's state directory ``~/.local/share/qgitconf`` (DESIGN "Target state").

Layout::

    repo/             bare git repo: refs/qgitconf/staged, refs/qgitconf/applied,
                      refs/qgitconf/generations/<N>
    state.json        last accepted sequence and commit, what is staged and applied
    generations.json  one record per apply (commit, time, files, backups)
    manifest.json     per managed file: type, mode, SHA-256 as written (drift)
    originals/        files that existed before qgitconf first overwrote them
    backups/<N>/      files overwritten by generation N after a local change
    rejected.log      append-only, one JSON line per rejected update
    journal/          present only while an apply runs: plan.json, progress, undo/
                      (see qgitconf.agent.journal and docs/apply.md)
    tmp/              quarantines for incoming updates
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qgitconf.errors import LocalStateError
from qgitconf.fsutil import append_line, atomic_write, read_json, write_json
from qgitconf.sanitize import sanitize

STAGED_REF = b"refs/qgitconf/staged"
APPLIED_REF = b"refs/qgitconf/applied"
GENERATION_REF = "refs/qgitconf/generations/{n}"


def state_dir(home: Path) -> Path:
    return home / ".local" / "share" / "qgitconf"


@dataclass
class AgentState:
    """Paths and small JSON records of the agent's state; the orchestrators' view."""

    root: Path

    @property
    def repo_path(self) -> Path:
        return self.root / "repo"

    @property
    def objects(self) -> Path:
        return self.repo_path / "objects"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"

    @contextlib.contextmanager
    def lock(self, *, wait: bool = False) -> Iterator[bool]:
        """Hold the state lock (``flock`` of this directory).

        Yields False if another process holds it and ``wait`` is false.  A killed
        holder releases it with its last fd.
        """
        # flock() on the directory itself: no lock file, so a command that changes
        # nothing leaves the state byte-identical (rule 8's tests compare it).
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def ensure(self) -> None:
        """Create the state directory and the bare repo on first use."""
        if (self.repo_path / "HEAD").exists() and self.tmp.is_dir():
            return
        from dulwich.repo import Repo

        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp.mkdir(exist_ok=True, mode=0o700)
        if not (self.repo_path / "HEAD").exists():
            Repo.init_bare(str(self.repo_path), mkdir=True)

    def repo(self) -> Any:
        from dulwich.repo import Repo

        if not (self.repo_path / "HEAD").exists():
            raise LocalStateError(f"no agent repository at {self.repo_path}")
        return Repo(str(self.repo_path))

    def point_head(self, commit: str | None) -> None:
        """Detach HEAD at the applied commit, so plain `git log` in the repo shows it."""
        head = f"{commit}\n" if commit else "ref: refs/heads/main\n"
        atomic_write(self.repo_path / "HEAD", head.encode("ascii"), 0o644)

    # -- state.json ---------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        data = read_json(self.root / "state.json", {})
        if not isinstance(data, dict):
            raise LocalStateError("state.json is corrupt")
        return data

    def save(self, data: dict[str, Any]) -> None:
        write_json(self.root / "state.json", data)

    @property
    def last_sequence(self) -> int | None:
        value = self.load().get("sequence")
        return value if isinstance(value, int) else None

    @property
    def last_commit(self) -> str | None:
        value = self.load().get("commit")
        return value if isinstance(value, str) else None

    @property
    def applied_commit(self) -> str | None:
        value = self.load().get("applied")
        return value if isinstance(value, str) else None

    # -- generations / manifest ---------------------------------------------------------

    def generations(self) -> list[dict[str, Any]]:
        data = read_json(self.root / "generations.json", [])
        return data if isinstance(data, list) else []

    def save_generations(self, gens: list[dict[str, Any]]) -> None:
        _save_json(self.root / "generations.json", gens)

    def manifest(self) -> dict[str, dict[str, Any]]:
        data = read_json(self.root / "manifest.json", {})
        return data if isinstance(data, dict) else {}

    def save_manifest(self, manifest: dict[str, dict[str, Any]]) -> None:
        _save_json(self.root / "manifest.json", manifest)

    def originals(self) -> dict[str, dict[str, Any]]:
        data = read_json(self.root / "originals.json", {})
        return data if isinstance(data, dict) else {}

    def save_originals(self, originals: dict[str, dict[str, Any]]) -> None:
        _save_json(self.root / "originals.json", originals)

    # -- rejected log ------------------------------------------------------------------

    def log_rejection(self, code: str, detail: str, sender: str) -> None:
        """Append one line to ``rejected.log`` (the one write a rejection may make)."""
        record = {
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "from": sanitize(sender),
            "reason": code,
            "detail": sanitize(detail),
        }
        # A full disk must not turn a rejection into a crash.
        with contextlib.suppress(OSError):
            append_line(self.root / "rejected.log", json.dumps(record, sort_keys=True))


def _save_json(path: Path, value: Any) -> None:
    """Atomically write ``value`` as one-line JSON with sorted keys.

    For the records that grow with the number of managed files: ``json.dumps`` without
    ``indent`` runs in C, about ten times faster than an indented dump.
    """
    atomic_write(path, (json.dumps(value, sort_keys=True) + "\n").encode("utf-8"))
