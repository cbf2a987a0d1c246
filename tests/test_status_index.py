"""``status`` on a large home: ``manifest.stat`` and its fast path (issue 8).

The fast path must report exactly what the full scan reports: these tests build a
home and its manifest by hand, then check that status reads the manifest only when
the stat index cannot vouch for every file, and that a stale index is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from qgitconf.agent import statcache
from qgitconf.agent.commands import home_status
from qgitconf.agent.statcache import stat_entry
from qgitconf.agent.state import AgentState
from qgitconf.agent.vouch import RACY_NS, VOUCHED_RECORD, vouched_key

FILES = {".bashrc": b"PS1='$ '\n", ".config/git/config": b"[user]\n", "bin/tool": b"#!/bin/sh\n"}


def _record(path: Path, *, racy: bool = False) -> dict[str, Any]:
    st = os.lstat(path)
    entry = stat_entry(st)
    entry[4] = st.st_ctime_ns + (0 if racy else RACY_NS + 1)  # as if taken later
    return {
        "type": "file",
        "mode": st.st_mode & 0o7777,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "stat": entry,
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[AgentState, Path, dict[str, dict[str, Any]]]:
    home = tmp_path / "h"
    manifest: dict[str, dict[str, Any]] = {}
    for rel, data in FILES.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_bytes(data)
        manifest[rel] = _record(home / rel)
    (home / ".vimrc").symlink_to(".config/git/config")
    manifest[".vimrc"] = {"type": "link", "target": ".config/git/config"}
    state = AgentState(tmp_path / "state")
    state.root.mkdir()
    state.save_manifest(manifest)
    return state, home, manifest


def _no_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: AgentState) -> None:
        raise AssertionError("the manifest was parsed")

    monkeypatch.setattr(AgentState, "manifest", refuse)


def test_no_drift_is_answered_from_the_index(
    setup: tuple[AgentState, Path, dict[str, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, home, _manifest = setup
    _no_manifest(monkeypatch)
    out = home_status(state, home, {})
    assert out["managed"] == 4 and out["drift"] == []


def test_symlink_drift_is_seen_on_the_fast_path(
    setup: tuple[AgentState, Path, dict[str, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, home, _manifest = setup
    (home / ".vimrc").unlink()
    (home / ".vimrc").symlink_to("elsewhere")
    _no_manifest(monkeypatch)
    assert home_status(state, home, {})["drift_detail"] == [{"path": ".vimrc", "state": "modified"}]


def test_an_edit_keeping_size_and_mtime_is_drift(
    setup: tuple[AgentState, Path, dict[str, dict[str, Any]]],
) -> None:
    state, home, _manifest = setup
    path = home / ".bashrc"
    st = os.lstat(path)
    path.write_bytes(b"PS1='# '\n")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ctime still moves on
    assert home_status(state, home, {})["drift_detail"] == [
        {"path": ".bashrc", "state": "modified"}
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("chmod", "mode"),
        ("remove", "missing"),
        ("dir-to-symlink", "blocked"),
    ],
)
def test_other_changes_of_vouched_files(
    setup: tuple[AgentState, Path, dict[str, dict[str, Any]]], change: str, expected: str
) -> None:
    state, home, _manifest = setup
    if change == "chmod":
        (home / "bin/tool").chmod(0o700)
        path = "bin/tool"
    elif change == "remove":
        (home / "bin/tool").unlink()
        path = "bin/tool"
    else:  # the same files, reached through a symlink: never followed
        os.rename(home / ".config", home / "moved")
        (home / ".config").symlink_to("moved")
        path = ".config/git/config"
    drift = home_status(state, home, {})["drift_detail"]
    assert {"path": path, "state": expected} in drift


def test_a_stale_index_is_never_used(
    setup: tuple[AgentState, Path, dict[str, dict[str, Any]]],
) -> None:
    """manifest.json changed behind the index (a crash between the two writes, a
    hand edit): the index no longer matches its SHA-256 and the manifest decides."""
    state, home, manifest = setup
    manifest["gone"] = dict(manifest[".bashrc"])
    (state.root / "manifest.json").write_text(json.dumps(manifest))
    assert state.stat_index() is None
    out = home_status(state, home, {})
    assert out["managed"] == 5
    assert out["drift_detail"] == [{"path": "gone", "state": "missing"}]


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_a_missing_or_damaged_index_is_rebuilt(
    setup: tuple[AgentState, Path, dict[str, dict[str, Any]]], damage: str
) -> None:
    state, home, _manifest = setup
    index = state.root / "manifest.stat"
    if damage == "missing":
        index.unlink()
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[:-3])
    else:
        index.write_bytes(b"qgitconf-stat-2\n" + os.urandom(200))
    assert state.stat_index() is None
    assert home_status(state, home, {})["drift"] == []
    index_now = state.stat_index()
    assert index_now is not None and index_now.managed == 4


def test_racy_and_link_entries_are_not_vouched(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "f").write_bytes(b"x")
    assert vouched_key(_record(home / "f")) is not None
    assert vouched_key(_record(home / "f", racy=True)) is None
    assert vouched_key({"type": "link", "target": "f"}) is None
    bad_mode = {**_record(home / "f"), "mode": 0o100644}
    assert vouched_key(bad_mode) is None


def test_a_racy_entry_is_rehashed_and_refreshed(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "f").write_bytes(b"x")
    state = AgentState(tmp_path / "state")
    state.root.mkdir()
    state.save_manifest({"f": _record(home / "f", racy=True)})
    index = state.stat_index()
    assert index is not None and list(index.vouched) == [] and list(index.others) == ["f"]
    out = home_status(state, home, {})
    assert out["drift"] == [] and out["managed"] == 1
    # Re-hashed, found unchanged: its fresh cache entry is saved.
    rec = state.manifest()["f"]
    assert len(rec["stat"]) == 5


def test_status_before_any_apply_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    state = AgentState(tmp_path / "state")
    state.root.mkdir()
    out = home_status(state, home, {})
    assert out["managed"] == 0 and out["drift"] == []
    assert os.listdir(state.root) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"config\0", b"con/ig\0"),  # a base name with a slash: not one lstat in its dir
        (b".config/git\0", b"x/../config\0"),  # a directory that climbs out of the home
    ],
)
def test_an_index_naming_paths_outside_its_groups_is_not_used(
    setup: tuple[AgentState, Path, dict[str, dict[str, Any]]], old: bytes, new: bytes
) -> None:
    """Names of the same length changed in place: the index is well-sized and bound
    to the manifest, but names a path status must not lstat; the manifest decides."""
    state, home, _manifest = setup
    index = state.root / "manifest.stat"
    raw = index.read_bytes()
    assert raw.count(old) == 1 and len(old) == len(new)
    index.write_bytes(raw.replace(old, new))
    assert state.stat_index() is None
    out = home_status(state, home, {})
    assert out["managed"] == 4 and out["drift"] == []


def test_the_index_groups_files_by_directory(
    setup: tuple[AgentState, Path, dict[str, dict[str, Any]]],
) -> None:
    state, _home, manifest = setup
    index = state.stat_index()
    assert index is not None
    assert dict(index.vouched) == {"": [".bashrc"], ".config/git": ["config"], "bin": ["tool"]}
    paths = [f"{parent}/{name}".lstrip("/") for parent, names in index.vouched for name in names]
    keys = dict(zip(paths, VOUCHED_RECORD.iter_unpack(index.records), strict=True))
    assert keys == {path: vouched_key(manifest[path]) for path in FILES}


# --- the forked half (statcache.PARALLEL_MIN_FILES) --------------------------------------


@pytest.fixture
def wide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[AgentState, Path]:
    """40 files in 8 directories, and the forked path taken from 2 files on."""
    home = tmp_path / "h"
    manifest: dict[str, dict[str, Any]] = {}
    for i in range(40):
        path = home / f"d{i % 8}" / f"f{i:02d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%d\n" % i)
        manifest[f"d{i % 8}/f{i:02d}"] = _record(path)
    state = AgentState(tmp_path / "state")
    state.root.mkdir()
    state.save_manifest(manifest)
    monkeypatch.setattr(statcache, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(statcache, "_may_fork", lambda: True)  # even on one CPU
    return state, home


def test_the_forked_half_vouches_for_its_files(
    wide: tuple[AgentState, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, home = wide
    forks = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    _no_manifest(monkeypatch)
    out = home_status(state, home, {})
    assert out["managed"] == 40 and out["drift"] == [] and len(forks) == 1


@pytest.mark.parametrize("where", ["d0/f00", "d7/f39"])  # the parent's half, the child's
def test_a_change_in_either_half_is_drift(wide: tuple[AgentState, Path], where: str) -> None:
    state, home = wide
    (home / where).write_bytes(b"changed\n")
    assert home_status(state, home, {})["drift_detail"] == [{"path": where, "state": "modified"}]


def test_a_child_without_an_answer_vouches_for_nothing(
    wide: tuple[AgentState, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child dies before it answers: the manifest decides (no drift, found slowly)."""
    state, home = wide

    def die(fd: int, unchanged: bool) -> None:
        raise RuntimeError("the child dies")

    monkeypatch.setattr(statcache, "_report", die)
    parsed = []
    real_manifest = AgentState.manifest

    def manifest(self: AgentState) -> dict[str, dict[str, Any]]:
        parsed.append(1)
        return real_manifest(self)

    monkeypatch.setattr(AgentState, "manifest", manifest)
    out = home_status(state, home, {})
    assert out["drift"] == [] and out["managed"] == 40 and parsed
