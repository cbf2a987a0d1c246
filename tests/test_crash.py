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

Some trials also kill the recovery itself, some run the real CLI in the qube, and
some finish the work with a new apply afterwards.  Every trial killed after the commit
point has its recovery killed at each of the recovery's own steps in turn (its state
records, the ref writes with the ref's lock file held, HEAD, the journal's removal), so
a lock file left by a killed ref write (issue 23) is met by apply, revert and recovery
alike.  A fourth scenario applies a change of shapes (a file becoming a nested directory,
a directory with content becoming a file, a symlink becoming a directory) over many
files.  Each trial's kill point is named (the fault hook's label), and the counts per
phase are printed.

The in-process trials run on copies of the qube's home (on a tmpfs when there is one),
owned by the qube's user, and every command - in this process or in the child that is
killed - runs with that user's uid: permissions bind them as they bind the agent.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from qgitconf.agent import commands
from qgitconf.agent import fault as fault_module
from qgitconf.agent.plan import kept_name
from tests.applykit import STATE, as_user, home_view, stage
from tests.labkit import LAZY_IMPORTS, Lab, as_uid, host_env, qg, run, snapshot

# The agent runs here with the qube user's uid, which may not reach this interpreter's
# standard library (under /root): what it imports lazily is imported now, as root
# (and _warm_up runs each command once as root, on a throwaway copy).
for _module in LAZY_IMPORTS:
    importlib.import_module(_module)

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

# From GEN2: changes of shape at depths 1-3 and many files (issue 23, item 2).
GEN3 = {
    **{
        k: v for k, v in GEN2.items() if not k.startswith((".config/app2/", ".gitconfig", ".vimrc"))
    },
    ".config/app2": "a directory with content below is a file now\n",
    ".gitconfig/include/work/settings": "[user]\n\tname = deep\n",
    ".vimrc/after/plugin/x.vim": "set nu\n",
    ".inputrc": ("link", ".bashrc"),
    "mode.sh": ("echo mode 3\n", 0o644),
    **{f".many/d{i % 5}/f{i:02}": f"many {i}\n" for i in range(40)},
}

PHASES = {
    "journal-written": "journal",
    "kept": "keep",
    "undo-linked": "undo",
    "undo-synced": "undo",
    "done-delete": "change",
    "done-rmdir": "change",
    "done-mkdir": "change",
    "partial-temp": "change",
    "temp-written": "change",
    "partial-direct": "change",
    "direct-written": "change",
    "temps-synced": "change",
    "done-write": "rename",
    "done-restore": "rename",
    "dirs-synced": "synced",
    "committing": "commit point",
    "manifest-saved": "records",
    "originals-saved": "records",
    "generations-saved": "records",
    "state-saved": "records",
    "applied-ref-locked": "ref writes",
    "applied-ref-written": "ref writes",
    "generation-ref-locked": "ref writes",
    "generation-ref-written": "ref writes",
    "head-written": "ref writes",
    "journal-removed": "journal removed",
    "rollback-step": "rollback",
}
# The phases at which the change is past its commit point: recovery finishes it.
COMMITTED = ("commit point", "records", "ref writes", "journal removed")


def _copy(src: Path, dst: Path) -> None:
    """Copy a home, keeping hard links linked (copytree alone would split them) and
    every owner (the copy belongs to the qube's user as the home does)."""
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
    for dirpath, dirnames, filenames in os.walk(src):
        for name in ["", *dirnames, *filenames]:
            a = Path(dirpath) / name
            st = os.lstat(a)
            os.lchown(dst / a.relative_to(src), st.st_uid, st.st_gid)


def _copy_into(src: Path, home: Path) -> None:
    """Make the qube's ``home`` a copy of ``src``; the directory itself stays (it is
    bind-mounted into the qube)."""
    for child in list(home.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    staging = home.parent / "crash-copy"
    _copy(src, staging)
    for child in list(staging.iterdir()):
        os.rename(child, home / child.name)
    staging.rmdir()


_as = as_uid  # in-process code with the home copies' owner as effective uid


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
    everything = snapshot(root)
    out["kept"] = {
        k: v
        for k, v in everything.items()
        if k.startswith(("originals/", "backups/")) and v[0] != "dir"
    }
    # The refs and HEAD agree with the records; no lock file or temp name is left.
    out["refs"] = {
        k: v for k, v in everything.items() if k.startswith("repo/refs/qgitconf/") and v[0] != "dir"
    }
    out["HEAD"] = everything.get("repo/HEAD")
    out["debris"] = sorted(
        k for k in everything if k.endswith(".lock") or _temp_name(k.rpartition("/")[2])
    )
    return out


def _temp_name(name: str) -> bool:
    """A temp name of a state record or of the repo's HEAD (``fsutil.atomic_write``)."""
    return name.startswith(".") and any(
        name.startswith(f".{r}.")
        for r in (
            "manifest.json",
            "manifest.stat",
            "originals.json",
            "generations.json",
            "state.json",
            "HEAD",
        )
    )


class Scenario:
    """A home before a command, and the home after an uninterrupted run of it."""

    def __init__(
        self, name: str, before: Path, command: Command, env: dict[str, str], uid: int
    ) -> None:
        self.name = name
        self.before = before
        self.command = command
        self.env = env
        self.uid = uid
        after = before.parent / f"{name}-after"
        _copy(before, after)
        with _as(uid):
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


def _fork(command: Command, home: Path, env: Mapping[str, str], uid: int) -> int:
    """Run ``command`` in a child process with ``uid`` (all of its ids); its wait status."""
    return _fork_named(command, home, env, uid)[0]


def _fork_named(
    command: Command, home: Path, env: Mapping[str, str], uid: int
) -> tuple[int, str | None]:
    """As :func:`_fork`, and the label of the journaled step the fault hook stopped
    the child at (None if it was not stopped there)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            plain = fault_module.Fault.__call__

            def named(self: fault_module.Fault, label: str) -> None:
                if self.after is not None and self.count + 1 == self.after:
                    os.write(w, label.encode() + b"\n")
                plain(self, label)

            fault_module.Fault.__call__ = named  # type: ignore[method-assign]
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            command(home, env)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    status = os.waitpid(pid, 0)[1]
    with os.fdopen(r, "rb") as f:
        said = f.read().decode().split()
    return status, (said[-1] if said else None)


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
    with as_user(lab, "personal"):
        (home / "changed-gone.txt").write_text("mine\n")  # pre-existing, becomes original
    stage(lab, GEN1, "gen1")
    qg(lab, "personal", "apply", "--yes", "--overwrite")
    with as_user(lab, "personal"):
        (home / "changed-gone.txt").write_text("changed locally\n")  # deletion must leave it
        (home / ".bashrc").write_text("local edit\n")  # drift: backed up
        (home / ".inputrc").write_text("pre-existing, read-only, hard-linked\n")
        (home / ".inputrc").chmod(0o444)
        (home / "other").mkdir()
        os.link(home / ".inputrc", home / "other" / "inputrc-link")
        (home / ".config" / "newfile").write_text("was here first\n")
        (home / "unrelated").write_text("not in any plan\n")
    stage(lab, GEN2, "gen2")
    return home, host_env(lab, "personal")


def _warm_up(before: Path, work: Path, env: Mapping[str, str]) -> None:
    """Every command once, as root, on a throwaway copy: its lazy imports done."""
    for command in (_apply, _revert, _revert0, _status):
        _copy(before, work)
        command(work, dict(env, HOME=str(work)))
    shutil.rmtree(work)


def _phase(label: str | None) -> str:
    return PHASES.get(label or "", f"other:{label}")


def _trials(sc: Scenario, work: Path, *, double_every: int = 4) -> dict[str, Any]:
    """One trial per journaled step of ``sc``; returns the counts, with the trials
    per phase (``phases``) and the recovery kills per phase (``recovery``)."""
    counts: dict[str, Any] = {"trials": 0, "old": 0, "new": 0, "double": 0, "completed": 0}
    phases: dict[str, int] = {}
    recovery: dict[str, int] = {}
    n = 0
    while True:
        n += 1
        _copy(sc.before, work)
        env = dict(sc.env, HOME=str(work))
        kill = dict(env, QGITCONF_FAULT_AFTER_WRITES=str(n))
        status, label = _fork_named(sc.command, work, kill, sc.uid)
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, f"{sc.name}: trial {n} failed"
            assert sc.outcome(work) == "new"
            counts["phases"], counts["recovery"] = phases, recovery
            return counts  # n passed the last journaled step: every point was covered
        counts["trials"] += 1
        assert os.WTERMSIG(status) == signal.SIGKILL
        phase = _phase(label)
        phases[phase] = phases.get(phase, 0) + 1
        if phase in COMMITTED:  # recovery killed at each of its own steps in turn
            for where in _kill_each_recovery_step(sc, work, env):
                recovery[where] = recovery.get(where, 0) + 1
                counts["double"] += 1
        elif n % double_every == 0:  # crash the recovery too, then recover
            again, at = _fork_named(
                _status, work, dict(env, QGITCONF_FAULT_AFTER_WRITES=str(1 + n % 3)), sc.uid
            )
            assert os.WIFSIGNALED(again) or os.WEXITSTATUS(again) == 0
            if os.WIFSIGNALED(again):
                recovery[_phase(at)] = recovery.get(_phase(at), 0) + 1
                counts["double"] += 1
        with _as(sc.uid):
            out = commands.status(work, env)
        assert not out["interrupted"]
        outcome = sc.outcome(work)
        counts[outcome] += 1
        assert outcome == "new" or phase not in COMMITTED, f"{sc.name}: {label} rolled back"
        if outcome == "old" and n % 9 == 0:  # the user runs the command again
            with _as(sc.uid):
                sc.command(work, env)
            assert sc.outcome(work) == "new"
            counts["completed"] += 1


def _kill_each_recovery_step(sc: Scenario, work: Path, env: dict[str, str]) -> list[str]:
    """``work`` was killed past the commit point: on copies of it, kill the recovery
    (``status``) at its first, second, ... step until it runs through; each killed
    recovery is recovered in turn and must reach the new state.  ``work`` stays as it
    was killed.  The phases the recoveries were killed at."""
    killed_at = work.with_name(work.name + "-killed")
    again = work.with_name(work.name + "-again")
    _copy(work, killed_at)
    phases: list[str] = []
    for k in range(1, 100):
        _copy(killed_at, again)
        renv = dict(env, HOME=str(again))
        status, label = _fork_named(
            _status, again, dict(renv, QGITCONF_FAULT_AFTER_WRITES=str(k)), sc.uid
        )
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, f"{sc.name}: recovery failed"
            assert sc.outcome(again) == "new"
            break
        assert os.WTERMSIG(status) == signal.SIGKILL
        phases.append(_phase(label))
        with _as(sc.uid):
            out = commands.status(again, renv)  # never an internal error
        assert not out["interrupted"]
        assert sc.outcome(again) == "new", f"{sc.name}: recovery killed at {label}"
    shutil.rmtree(again, ignore_errors=True)
    shutil.rmtree(killed_at, ignore_errors=True)
    return phases


@pytest.fixture
def fast_dir(lab: Lab) -> Iterator[Path]:
    """A tmpfs directory if there is one (fsync is free there: hundreds of trials fit
    in seconds; the kill semantics are the same on any filesystem), else one in the
    system's temporary directory; owned by personal's user."""
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    base = Path(tempfile.mkdtemp(prefix="qgc-crash-", dir=where))
    os.chown(base, lab.uid("personal"), lab.uid("personal"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_sigkill_at_every_journaled_step(lab: Lab, fast_dir: Path) -> None:
    home, env = _prepare(lab)
    base = fast_dir
    before_apply = base / "apply-before"
    _copy(home, before_apply)
    _warm_up(before_apply, base / "warm-up", env)
    uid = lab.uid("personal")
    apply = Scenario("apply", before_apply, _apply, env, uid)
    revert = Scenario("revert", apply.after, _revert, env, uid)
    revert0 = Scenario("revert0", apply.after, _revert0, env, uid)
    # The new state of each scenario keeps what it overwrote.
    kept = apply.new[1]["kept"]
    assert kept["backups/2/.bashrc"][2] == b"local edit\n"
    assert kept[f"originals/{kept_name('.inputrc')}"][2] == (
        b"pre-existing, read-only, hard-linked\n"
    )
    assert kept[f"originals/{kept_name('.config/newfile')}"][2] == b"was here first\n"
    assert apply.new[0]["changed-gone.txt"][2] == b"changed locally\n"
    assert revert0.new[0][".inputrc"] == ("file", 0o444, b"pre-existing, read-only, hard-linked\n")
    # A change of shapes over many files, from GEN2 applied (issue 23, item 2).
    qg(lab, "personal", "apply", "--yes", "--overwrite")
    stage(lab, GEN3, "gen3")
    before_deep = base / "deep-before"
    _copy(home, before_deep)
    deep = Scenario("apply-shapes", before_deep, _apply, env, uid)
    assert deep.new[0][".gitconfig/include/work/settings"][2] == b"[user]\n\tname = deep\n"
    totals: dict[str, int] = {}
    per_kind: dict[str, int] = {"apply": 0, "revert": 0}
    for sc in (apply, deep, revert, revert0):
        counts = _trials(sc, base / f"{sc.name}-work")
        phases, recovery = counts.pop("phases"), counts.pop("recovery")
        print(sc.name, counts)
        print(f"  {sc.name} kills per phase:", dict(sorted(phases.items())))
        print(f"  {sc.name} recovery kills per phase:", dict(sorted(recovery.items())))
        assert counts["old"] > 0 and counts["new"] > 0
        # Kills were aimed at every phase, the ref writes included.
        want = {"journal", "undo", "change", "rename", "synced", "commit point", "records"}
        want |= {"ref writes", "journal removed"}
        assert want <= set(phases), phases
        assert not any(p.startswith("other:") for p in phases), phases
        assert {"records", "ref writes"} <= set(recovery), recovery
        per_kind["apply" if sc.command is _apply else "revert"] += counts["trials"]
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
    print("crash trials:", totals, per_kind)
    assert per_kind["apply"] >= 200 and per_kind["revert"] >= 50, per_kind


def test_sigkill_of_the_real_cli(lab: Lab, fast_dir: Path) -> None:
    """The same through the installed ``qgitconf`` in the qube (through qrexec, as its
    user): killed apply, then `status` recovers and says so; a few kills at random
    moments from outside as well (``timeout -s KILL`` in the qube)."""
    import random

    home, env = _prepare(lab)
    before = fast_dir / "before"
    _copy(home, before)
    _warm_up(before, fast_dir / "warm-up", env)
    sc = Scenario("cli", before, _apply, env, lab.uid("personal"))
    rng = random.Random(4)
    apply = ["qgitconf", "apply", "--yes", "--overwrite"]
    messages = set()
    for trial in range(8):
        _copy_into(before, home)
        if trial < 5:
            n = rng.randint(1, 80)
            proc = lab.run("personal", apply, extra_env={"QGITCONF_FAULT_AFTER_WRITES": str(n)})
            # qrexec's exit code for a command killed by SIGKILL: 128 + 9
            assert proc.returncode in (128 + signal.SIGKILL, 0), proc.stderr
        else:
            after = f"{rng.uniform(0.2, 1.0):.2f}"
            run(lab, "personal", "timeout", "-s", "KILL", after, *apply, expect=None)
        st = qg(lab, "personal", "status", "--json")
        assert json.loads(st.stdout)["interrupted"] is False
        if st.stderr:
            messages.add(st.stderr.decode())
        sc.outcome(home)
    assert any("rolled back" in m for m in messages), messages
