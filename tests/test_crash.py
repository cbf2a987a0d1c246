"""Crash consistency of apply and revert (DESIGN rule 9, issue 4's acceptance test).

The apply process is SIGKILLed at every journaled step, one trial per step, through
the fault hook (``QGITCONF_FAULT_AFTER_WRITES=N``), for three scenarios: an apply with
conflicts overwritten (originals and backups kept, a read-only hard-linked file, a file
becoming a directory and the reverse, mode and symlink changes, deletions, a drifted
deletion left in place), a revert to the previous generation, and ``revert --to 0``.
After each kill, the next command (``status``, in-process) recovers, and the test checks:

- $HOME outside the agent state is *exactly* the state before the command or exactly
  the state after an uninterrupted run (so every managed file is entirely old or
  entirely new, no temp file is left, nothing outside the plan changed);
- the agent state agrees: same manifest, originals and generations as before, or as
  after (with the originals and backups of everything overwritten present);
- no journal is left.

Some trials also kill the recovery itself, some run the real CLI as a subprocess, and
some finish the work with a new apply afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from qgitconf.agent import commands
from qgitconf.agent.apply import kept_name
from tests.applykit import STATE, home_view, stage
from tests.labkit import Lab, qg, snapshot

Command = Callable[[Path, Mapping[str, str]], object]

GEN1 = {
    ".bashrc": "one\n",
    ".config/app/a.conf": "a1\n",
    ".config/app/b.conf": "b1\n",
    ".config/old/x": "x1\n",
    ".local/bin/tool": ("#!/bin/sh\necho 1\n", 0o755),
    ".vimrc": ("link", ".config/app/a.conf"),
    "gone.txt": "gone\n",
    "changed-gone.txt": "cg\n",
    "mode.sh": "echo mode\n",
    "big.dat": bytes(range(256)) * 400,
    **{f".dots/f{i:02}": f"dot {i}\n" for i in range(8)},
}
GEN2 = {
    ".bashrc": "two\n",
    ".gitconfig": "[alias]\n\tco = checkout\n",
    ".inputrc": "set bell-style none\n",
    ".config/app/a.conf": "a2\n",
    ".config/old": "old is a file now\n",
    ".config/app2/deep/nested/c.conf": "c2\n",
    ".config/newfile": "new\n",
    ".local/bin/tool/real": ("#!/bin/sh\necho 2\n", 0o755),
    ".vimrc": ("link", ".config/app2/deep/nested/c.conf"),
    "mode.sh": ("echo mode\n", 0o755),
    "big.dat": bytes(range(255, -1, -1)) * 400,
    **{f".dots/f{i:02}": f"dot {i} v2\n" for i in range(4, 12)},
}


def _copy(src: Path, dst: Path) -> None:
    """Copy a home, keeping hard links linked (copytree alone would split them)."""
    if dst.exists():
        shutil.rmtree(dst)
    seen: dict[int, str] = {}

    def copy(a: str, b: str) -> object:
        st = os.lstat(a)
        if st.st_nlink > 1:
            if st.st_ino in seen:
                os.link(seen[st.st_ino], b)
                return b
            seen[st.st_ino] = b
        return shutil.copy2(a, b)

    shutil.copytree(src, dst, symlinks=True, copy_function=copy)


def _state(home: Path) -> dict[str, Any]:
    root = home / STATE
    out: dict[str, Any] = {}
    for name in ("manifest.json", "originals.json", "generations.json"):
        p = root / name
        data = json.loads(p.read_text()) if p.exists() else None
        if name == "manifest.json" and data:
            data = {k: {f: v for f, v in r.items() if f != "stat"} for k, r in data.items()}
        if name == "generations.json" and data:
            data = [{f: v for f, v in g.items() if f != "time"} for g in data]
        out[name] = data
    out["applied"] = json.loads((root / "state.json").read_text()).get("applied")
    out["kept"] = {
        k: v
        for k, v in snapshot(root).items()
        if k.startswith(("originals/", "backups/")) and v[0] != "dir"
    }
    return out


class Scenario:
    """A home before a command, and the home after an uninterrupted run of it."""

    def __init__(self, name: str, before: Path, command: Command, env: dict[str, str]) -> None:
        self.name = name
        self.before = before
        self.command = command
        self.env = env
        after = before.parent / f"{name}-after"
        _copy(before, after)
        command(after, dict(env, HOME=str(after)))
        self.after = after
        self.old = (home_view(before), _state(before))
        self.new = (home_view(after), _state(after))
        assert self.old[0] != self.new[0]

    def outcome(self, home: Path) -> str:
        view, state = home_view(home), _state(home)
        assert not (home / STATE / "journal").exists(), f"{self.name}: journal left"
        if (view, state) == self.old:
            return "old"
        if (view, state) == self.new:
            return "new"
        for label, (v, s) in (("old", self.old), ("new", self.new)):
            diff = sorted(k for k in set(v) | set(view) if v.get(k) != view.get(k))
            sdiff = sorted(k for k in s if s[k] != state[k])
            print(f"{self.name} vs {label}: home differs at {diff[:8]}, state at {sdiff}")
        raise AssertionError(f"{self.name}: home is neither the old nor the new state")


def _fork(command: Command, home: Path, env: Mapping[str, str]) -> int:
    """Run ``command`` in a child process; its wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            command(home, env)
        except BaseException:
            code = 1
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def _apply(home: Path, env: Mapping[str, str]) -> object:
    return commands.apply(home, env, overwrite=True)


def _revert(home: Path, env: Mapping[str, str]) -> object:
    return commands.revert(home, env, to=None, overwrite=True)


def _revert0(home: Path, env: Mapping[str, str]) -> object:
    return commands.revert(home, env, to=0, overwrite=False)


def _status(home: Path, env: Mapping[str, str]) -> object:
    return commands.status(home, env)


def _prepare(lab: Lab) -> tuple[Path, dict[str, str]]:
    home = lab.home("personal")
    (home / "changed-gone.txt").write_text("mine\n")  # pre-existing, becomes original
    stage(lab, GEN1, "gen1")
    qg(lab, "personal", "apply", "--yes", "--overwrite")
    (home / "changed-gone.txt").write_text("changed locally\n")  # deletion must leave it
    (home / ".bashrc").write_text("local edit\n")  # drift: backed up
    (home / ".inputrc").write_text("pre-existing, read-only, hard-linked\n")
    (home / ".inputrc").chmod(0o444)
    (home / "other").mkdir()
    os.link(home / ".inputrc", home / "other" / "inputrc-link")
    (home / ".config" / "newfile").write_text("was here first\n")
    (home / "unrelated").write_text("not in any plan\n")
    stage(lab, GEN2, "gen2")
    return home, lab.env("personal")


def _trials(sc: Scenario, work: Path, *, double_every: int = 4) -> dict[str, int]:
    counts = {"trials": 0, "old": 0, "new": 0, "double": 0, "completed": 0}
    n = 0
    while True:
        n += 1
        _copy(sc.before, work)
        env = dict(sc.env, HOME=str(work))
        status = _fork(sc.command, work, dict(env, QGITCONF_FAULT_AFTER_WRITES=str(n)))
        counts["trials"] += 1
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, f"{sc.name}: trial {n} failed"
            assert sc.outcome(work) == "new"
            return counts  # n passed the last journaled step: every point was covered
        assert os.WTERMSIG(status) == signal.SIGKILL
        if n % double_every == 0:  # crash the recovery too, then recover
            again = _fork(_status, work, dict(env, QGITCONF_FAULT_AFTER_WRITES=str(1 + n % 3)))
            assert os.WIFSIGNALED(again) or os.WEXITSTATUS(again) == 0
            counts["double"] += 1
        out = commands.status(work, env)
        assert not out["interrupted"]
        outcome = sc.outcome(work)
        counts[outcome] += 1
        if outcome == "old" and n % 9 == 0:  # the user runs the command again
            sc.command(work, env)
            assert sc.outcome(work) == "new"
            counts["completed"] += 1


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs directory if there is one (fsync is free there: hundreds of trials fit
    in seconds); the kill semantics are the same on any filesystem."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        base = Path(tempfile.mkdtemp(prefix="qgc-crash-", dir=shm))
        yield base
        shutil.rmtree(base, ignore_errors=True)
    else:
        yield tmp_path


def test_sigkill_at_every_journaled_step(lab: Lab, fast_dir: Path) -> None:
    home, env = _prepare(lab)
    base = fast_dir
    before_apply = base / "apply-before"
    _copy(home, before_apply)
    apply = Scenario("apply", before_apply, _apply, env)
    revert = Scenario("revert", apply.after, _revert, env)
    revert0 = Scenario("revert0", apply.after, _revert0, env)
    # The new state of each scenario keeps what it overwrote.
    kept = apply.new[1]["kept"]
    assert kept["backups/2/.bashrc"][2] == b"local edit\n"
    assert kept[f"originals/{kept_name('.inputrc')}"][2] == (
        b"pre-existing, read-only, hard-linked\n"
    )
    assert kept[f"originals/{kept_name('.config/newfile')}"][2] == b"was here first\n"
    assert apply.new[0]["changed-gone.txt"][2] == b"changed locally\n"
    assert revert0.new[0][".inputrc"] == ("file", 0o444, b"pre-existing, read-only, hard-linked\n")
    totals: dict[str, int] = {}
    for sc in (apply, revert, revert0):
        counts = _trials(sc, base / f"{sc.name}-work")
        print(sc.name, counts)
        assert counts["old"] > 0 and counts["new"] > 0
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    print("crash trials:", totals)
    assert totals["trials"] >= 200, totals


def test_sigkill_of_the_real_cli(lab: Lab, fast_dir: Path) -> None:
    """The same through ``python -m qgitconf.cli``: killed apply, then `status` recovers
    and says so; a few kills at random moments from outside as well."""
    import random

    home, env = _prepare(lab)
    before = fast_dir / "before"
    _copy(home, before)
    sc = Scenario("cli", before, _apply, env)
    work = fast_dir / "work"
    rng = random.Random(4)
    cmd = [sys.executable, "-m", "qgitconf.cli"]
    messages = set()
    for trial in range(8):
        _copy(before, work)
        wenv = dict(env, HOME=str(work))
        if trial < 5:
            n = rng.randint(1, 80)
            proc = subprocess.run(
                [*cmd, "apply", "--yes", "--overwrite"],
                env=dict(wenv, QGITCONF_FAULT_AFTER_WRITES=str(n)),
                capture_output=True,
                check=False,
            )
            assert proc.returncode in (-9, 0), proc.stderr
        else:
            p = subprocess.Popen(
                [*cmd, "apply", "--yes", "--overwrite"],
                env=wenv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                p.wait(timeout=rng.uniform(0.2, 1.0))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
                p.wait()
        st = subprocess.run([*cmd, "status", "--json"], env=wenv, capture_output=True, check=True)
        assert json.loads(st.stdout)["interrupted"] is False
        if st.stderr:
            messages.add(st.stderr.decode())
        sc.outcome(work)
    assert any("rolled back" in m for m in messages), messages
