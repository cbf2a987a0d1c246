"""Every change of shape the path rules admit applies, reverts and survives a kill
(issue 23, item 2).

A path at depth 1, 2 or 3 changes between a file, a directory with content below it
(a file in it and one three levels further down) and a symlink, in each direction.
For each change: an apply of the new tree, then a revert to the old one, each reaching
exactly the wanted home; then both again with a SIGKILL at every journaled step, after
which recovery (what ``status`` runs first) leaves the home exactly old or exactly new,
and running the command again reaches the new one.

Unit level: the agent's plan and journal on a home under ``tmp_path`` (no qube is
needed: nothing here is verified or signed), ``make_plan`` + ``execute`` as
``commands.apply`` and ``commands.revert`` call them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qgitconf.agent.apply import execute
from qgitconf.agent.commands import home_status
from qgitconf.agent.fault import Fault
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.plan import make_plan
from qgitconf.agent.statcache import content
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.agent.wanted import Wanted

# path -> bytes (a 0644 file), (bytes, mode), or ("link", target)
Tree = dict[str, Any]

BASE: Tree = {"keep.txt": b"always here\n", "top/other": b"a neighbour\n"}
SHAPES = ("file", "dir", "link")
PLACES = {1: "s", 2: "top/s", 3: "top/mid/s"}


def shape(kind: str, at: str) -> Tree:
    """The entries that make ``at`` a file, a directory with content, or a symlink."""
    up = "../" * at.count("/")
    if kind == "file":
        return {at: (b"#!/bin/sh\necho " + at.encode() + b"\n", 0o755)}
    if kind == "link":
        return {at: ("link", up + "keep.txt")}
    return {f"{at}/f": b"in the directory\n", f"{at}/baz/deep/g": b"three below\n"}


CASES = [
    pytest.param(a, b, depth, id=f"{a}-to-{b}-depth{depth}")
    for depth in PLACES
    for a, b in itertools.permutations(SHAPES, 2)
]


def wanted(tree: Tree) -> dict[str, Wanted]:
    out: dict[str, Wanted] = {}
    for path, spec in tree.items():
        if isinstance(spec, tuple) and spec[0] == "link":
            out[path] = Wanted(path, "link", 0o644, spec[1].encode())
        else:
            data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
            out[path] = Wanted(path, "file", mode, data)
    return out


def commit_of(tree: Tree) -> str:
    return hashlib.sha1(repr(sorted(tree.items())).encode()).hexdigest()


def view(home: Path) -> dict[str, Any]:
    """The home outside the agent state: every file, link and directory."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(home):
        rel_dir = Path(dirpath).relative_to(home)
        if rel_dir.parts[:1] == (".local",):
            continue
        for name in dirnames + filenames:
            rel = str(rel_dir / name) if str(rel_dir) != "." else name
            if rel == ".local":
                continue
            st = os.lstat(Path(dirpath) / name)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(Path(dirpath) / name))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), (Path(dirpath) / name).read_bytes())
    return out


def expected(tree: Tree) -> dict[str, Any]:
    """Exactly what a home holding ``tree`` (and nothing else) looks like."""
    out: dict[str, Any] = {}
    for path, spec in tree.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            out["/".join(parts[:i])] = ("dir",)
        if isinstance(spec, tuple) and spec[0] == "link":
            out[path] = ("link", spec[1])
        else:
            data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
            out[path] = ("file", mode, data)
    return out


def run(home: Path, tree: Tree, kind: str, fault: Fault | None = None) -> None:
    """What ``commands.apply`` / ``revert`` do once the tree is read: plan, execute."""
    state = AgentState(state_dir(home))
    fs = HomeFS(home)
    try:
        plan = make_plan(
            fs, wanted(tree), state.manifest(), state.originals(), commit_of(tree), root=state.root
        )
        assert not plan.blockers and not plan.conflicts, (plan.blockers, plan.conflicts)
        execute(plan, fs, state, overwrite=False, kind=kind, fault=fault)
    finally:
        fs.close()


def recover(home: Path) -> dict[str, Any]:
    """``status``: recovery under the state lock, then the drift scan."""
    out = home_status(AgentState(state_dir(home)), home, {})
    assert not out["interrupted"] and not out["busy"]
    return out


def records(home: Path) -> tuple[Any, ...]:
    state = AgentState(state_dir(home))
    manifest = {p: content(r) for p, r in state.manifest().items()}
    return manifest, state.applied_commit, [g["number"] for g in state.generations()]


def killed(home: Path, tree: Tree, kind: str, n: int) -> bool:
    """Run the change in a child that SIGKILLs itself at journaled step ``n``; True
    if it was killed (False: ``n`` is past the last step, it finished)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            run(home, tree, kind, Fault(n))
        except BaseException:
            code = 1
        os._exit(code)
    status = os.waitpid(pid, 0)[1]
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0, f"step {n}: the change failed"
        return False
    assert os.WTERMSIG(status) == signal.SIGKILL
    return True


def fresh(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    home.mkdir()
    AgentState(state_dir(home)).ensure()
    return home


@pytest.mark.parametrize(("old", "new", "depth"), CASES)
def test_shape_change_applies_and_reverts(tmp_path: Path, old: str, new: str, depth: int) -> None:
    at = PLACES[depth]
    gen1, gen2 = {**BASE, **shape(old, at)}, {**BASE, **shape(new, at)}
    home = fresh(tmp_path, "qube-home")
    run(home, gen1, "apply")
    assert view(home) == expected(gen1)
    run(home, gen2, "apply")
    assert view(home) == expected(gen2)
    assert recover(home)["drift"] == []
    run(home, gen1, "revert")  # back to generation 1: the same shape change reversed
    assert view(home) == expected(gen1)
    assert recover(home)["drift"] == []
    assert records(home)[2] == [1, 2, 3]


def _kill_trials(
    tmp_path: Path, prepare: Callable[[Path], None], tree: Tree, kind: str, before: Tree
) -> dict[str, int]:
    """One trial per journaled step: killed there, recovered, exactly old or new."""
    ref = fresh(tmp_path, f"{kind}-ref")
    prepare(ref)
    old_view, old_records = view(ref), records(ref)
    assert old_view == expected(before)
    run(ref, tree, kind)
    new_view, new_records = view(ref), records(ref)
    assert new_view == expected(tree)
    counts = {"old": 0, "new": 0}
    for n in itertools.count(1):
        home = fresh(tmp_path, f"{kind}-{n}")
        prepare(home)
        if not killed(home, tree, kind, n):
            assert (view(home), records(home)) == (new_view, new_records)
            break
        if n % 4 == 0:  # the recovery is killed too, then recovered
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                try:
                    home_status(
                        AgentState(state_dir(home)), home, {"QGITCONF_FAULT_AFTER_WRITES": "1"}
                    )
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
        recover(home)
        now = (view(home), records(home))
        if now == (old_view, old_records):
            counts["old"] += 1
            run(home, tree, kind)  # the user runs the command again
            assert (view(home), records(home)) == (new_view, new_records)
        else:
            assert now == (new_view, new_records), f"step {n}: neither old nor new"
            counts["new"] += 1
    assert counts["old"] and counts["new"], counts
    return counts


@pytest.mark.parametrize(("old", "new", "depth"), CASES)
def test_shape_change_killed_midway(tmp_path: Path, old: str, new: str, depth: int) -> None:
    at = PLACES[depth]
    gen1, gen2 = {**BASE, **shape(old, at)}, {**BASE, **shape(new, at)}

    def applied1(home: Path) -> None:
        run(home, gen1, "apply")

    def applied2(home: Path) -> None:
        run(home, gen1, "apply")
        run(home, gen2, "apply")

    _kill_trials(tmp_path, applied1, gen2, "apply", gen1)
    _kill_trials(tmp_path, applied2, gen1, "revert", gen2)
