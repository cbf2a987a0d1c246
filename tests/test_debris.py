"""No debris a kill can leave ends in an internal error (issue 23, item 1).

A table: each row kills ``apply``, ``revert`` or ``revert --to 0`` (in this process's
child, as the qube's user, on personal's home) at a named journaled step, optionally
kills the recovery too, and may add the debris such a kill leaves where no fault point
stops the process exactly there (a half-written temp file, a ref's lock file).  Then
the real CLI in the qube runs ``qgitconf status`` - it must recover (exit 0, never 70),
leaving the home and the agent state exactly as before the command or exactly as after
an uninterrupted run, with no journal, lock file or temp name left - and then the
command the user runs next (the same command again after a rollback, ``revert`` or
``apply`` after a finish), which must reach exactly the expected home.

The rows named ``wedge-…`` reproduce the wedge of the issue (a ``refs/qgitconf/
applied.lock`` or ``generations/<N>.lock`` left by a kill during a ref write, in apply,
in revert and in recovery); they build the lock file as dulwich's ref writer leaves it,
after a kill at a step that older versions have too.  The rows ``kill-…-ref-locked``
are the same debris made by a real kill while the ref's lock file is held.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qgitconf.agent import fault as fault_module
from tests.applykit import STATE, as_user, home_view
from tests.labkit import Lab, qg, searchable
from tests.test_crash import (
    Command,
    Scenario,
    _apply,
    _as,
    _copy,
    _copy_into,
    _prepare,
    _revert,
    _revert0,
    _state,
    _status,
    _warm_up,
)

REFS = f"{STATE}/repo/refs/qgitconf"


@dataclass(frozen=True)
class Kill:
    """Stop at the ``occurrence``-th journaled step labelled ``label``."""

    label: str
    occurrence: int = 1


@dataclass(frozen=True)
class Row:
    id: str
    scenario: str  # "apply" | "revert" | "revert0"
    kill: Kill | None  # None: the command runs through (debris added afterwards)
    expect: str  # "old" | "new": what status must recover to
    recovery_kill: Kill | None = None
    debris: Callable[[Path], None] | None = None


def _fork_kill(command: Command, home: Path, env: dict[str, str], uid: int, kill: Kill) -> None:
    """Run ``command`` in a child as ``uid``; it SIGKILLs itself at ``kill``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            seen = {"n": 0}

            def named(self: fault_module.Fault, label: str) -> None:
                if label == kill.label:
                    seen["n"] += 1
                    if seen["n"] == kill.occurrence:
                        os.kill(os.getpid(), signal.SIGKILL)

            fault_module.Fault.__call__ = named  # type: ignore[method-assign]
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            command(home, env)
        except BaseException:
            code = 1
        os._exit(code)
    status = os.waitpid(pid, 0)[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"not killed at {kill}: exit status {status}"
    )


# -- debris builders (run as the qube's user on its home) -------------------------------


def _journal_after(home: Path) -> dict[str, Any]:
    plan = json.loads((home / STATE / "journal" / "plan.json").read_text())
    return dict(plan["after"])


def _ref_value(home: Path) -> bytes:
    commit = _journal_after(home)["generation"]["commit"]
    return b"" if commit is None else commit.encode() + b"\n"


def applied_lock(home: Path) -> None:
    """Killed while ``refs/qgitconf/applied`` was written: its lock file holds the new
    value, the ref the old one (dulwich's ``GitFile``)."""
    (home / REFS / "applied.lock").write_bytes(_ref_value(home))


def generation_lock(home: Path) -> None:
    """Killed while ``refs/qgitconf/generations/<N>`` was written, ``applied`` done."""
    after = _journal_after(home)
    (home / REFS / "applied").write_bytes(_ref_value(home))
    gens = home / REFS / "generations"
    gens.mkdir(exist_ok=True)
    (gens / f"{after['number']}.lock").write_bytes(_ref_value(home))


def half_plan(home: Path) -> None:
    """Killed while ``plan.json`` was written: only its temp name, half of it."""
    plan = home / STATE / "journal" / "plan.json"
    data = plan.read_bytes()
    plan.unlink()
    (plan.parent / ".plan.json.k1ll3d00").write_bytes(data[: len(data) // 2])


def half_direct(home: Path) -> None:
    """Killed while a file was created in place (a direct step: a path that was
    absent, in a directory the apply creates): the file holds the first part of its
    content only (a write cut short)."""
    plan = json.loads((home / STATE / "journal" / "plan.json").read_text())
    cut = 0
    for step in plan["steps"]:
        made = home / step["path"]
        if "direct" in step and made.is_file() and not made.is_symlink():
            data = made.read_bytes()
            made.write_bytes(data[: max(1, len(data) // 2)])
            cut += 1
    assert cut, "no file was created in place"


def undo_copy_temp(home: Path) -> None:
    """Killed while an undo copy was made across filesystems: ``undo/<i>.tmp``."""
    (home / STATE / "journal" / "undo" / "7.tmp").write_bytes(b"half a cop")


def half_committing(home: Path) -> None:
    """Killed while the ``committing`` marker was written: its temp name only."""
    (home / STATE / "journal" / ".committing.k1ll3d00").write_bytes(b"commi")


def half_records(home: Path) -> None:
    """Killed while state records were written: half-written temp names of each (a
    ``state.json`` one old enough not to be Receive's), and of the repo's HEAD."""
    root = home / STATE
    for name in ("manifest.json", "manifest.stat", "originals.json", "generations.json"):
        (root / f".{name}.k1ll3d00").write_bytes(b'{"half": ')
    old = root / ".state.json.k1ll3d00"
    old.write_bytes(b'{"applied": "')
    then = time.time() - 3600
    os.utime(old, (then, then))
    (root / "repo" / ".HEAD.k1ll3d00").write_bytes(b"0123")


def stray_locks(home: Path) -> None:
    """No journal (the command ran through), yet ref lock files are there."""
    (home / REFS / "applied.lock").write_bytes(b"")
    (home / REFS / "generations" / "1.lock").write_bytes(b"deadbeef")
    half_records(home)


def both(*builders: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(home: Path) -> None:
        for b in builders:
            b(home)

    return build


ROWS = [
    # The wedges of the issue, built as a kill in dulwich's ref writer leaves them.
    Row("wedge-applied-lock-apply", "apply", Kill("state-saved"), "new", debris=applied_lock),
    Row("wedge-generation-lock-apply", "apply", Kill("state-saved"), "new", debris=generation_lock),
    Row("wedge-applied-lock-revert", "revert", Kill("state-saved"), "new", debris=applied_lock),
    Row(
        "wedge-generation-lock-revert", "revert", Kill("state-saved"), "new", debris=generation_lock
    ),
    Row("wedge-applied-lock-revert0", "revert0", Kill("state-saved"), "new", debris=applied_lock),
    Row(
        "wedge-applied-lock-recovery",
        "apply",
        Kill("committing"),
        "new",
        recovery_kill=Kill("state-saved"),
        debris=applied_lock,
    ),
    Row(
        "wedge-generation-lock-recovery",
        "revert",
        Kill("committing"),
        "new",
        recovery_kill=Kill("state-saved"),
        debris=generation_lock,
    ),
    # The same debris left by real kills while the ref's lock file is held.
    Row("kill-apply-applied-ref-locked", "apply", Kill("applied-ref-locked"), "new"),
    Row("kill-apply-generation-ref-locked", "apply", Kill("generation-ref-locked"), "new"),
    Row("kill-revert-applied-ref-locked", "revert", Kill("applied-ref-locked"), "new"),
    Row("kill-revert-generation-ref-locked", "revert", Kill("generation-ref-locked"), "new"),
    Row("kill-revert0-applied-ref-locked", "revert0", Kill("applied-ref-locked"), "new"),
    Row(
        "kill-recovery-applied-ref-locked",
        "apply",
        Kill("committing"),
        "new",
        recovery_kill=Kill("applied-ref-locked"),
    ),
    Row(
        "kill-recovery-generation-ref-locked",
        "revert",
        Kill("manifest-saved"),
        "new",
        recovery_kill=Kill("generation-ref-locked"),
    ),
    Row("kill-apply-head-written", "apply", Kill("head-written"), "new"),
    # Subsets of the journal's files, temp names, undo links.
    Row("journal-half-plan-only", "apply", Kill("journal-written"), "old", debris=half_plan),
    Row("journal-plan-without-progress", "apply", Kill("journal-written"), "old"),
    Row("journal-undo-links-only", "apply", Kill("undo-linked", 3), "old"),
    Row("journal-undo-copy-temp", "revert", Kill("undo-linked", 2), "old", debris=undo_copy_temp),
    Row("home-half-written-temp", "apply", Kill("partial-temp", 2), "old"),
    Row("home-direct-created-empty", "apply", Kill("partial-direct", 1), "old"),
    Row("home-direct-cut-short", "apply", Kill("direct-written", 1), "old", debris=half_direct),
    Row("home-some-renamed", "apply", Kill("done-write", 3), "old"),
    Row("journal-half-committing", "apply", Kill("dirs-synced"), "old", debris=half_committing),
    Row("journal-committing", "revert", Kill("committing"), "new"),
    Row("journal-without-plan", "apply", Kill("journal-removed"), "new"),
    Row(
        "rollback-killed",
        "revert",
        Kill("done-write", 2),
        "old",
        recovery_kill=Kill("rollback-step", 3),
    ),
    # Half-written state records (temp names; the records themselves are renamed in).
    Row("records-half-written", "apply", Kill("originals-saved"), "new", debris=half_records),
    Row(
        "records-half-written-revert0",
        "revert0",
        Kill("generations-saved"),
        "new",
        debris=half_records,
    ),
    Row("no-journal-stray-locks-and-temps", "apply", None, "new", debris=stray_locks),
    Row("undo-links-and-ref-lock", "apply", Kill("undo-synced"), "old", debris=both(applied_lock)),
]


@dataclass
class World:
    lab: Lab
    env: dict[str, str]
    uid: int
    scenarios: dict[str, Scenario]
    next_after: dict[str, tuple[str, dict[str, Any]]]  # after a finish: command, home


@pytest.fixture(scope="module")
def world(real_lab: Lab) -> Iterator[World]:
    """personal with gen1 applied (and local changes) and gen2 staged, as in
    test_crash; each scenario's home before and after an uninterrupted run, and the
    home the user's next command reaches from there."""
    lab = real_lab
    lab.reset()
    home, env = _prepare(lab)
    shm = Path("/dev/shm")
    where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    base = Path(tempfile.mkdtemp(prefix="qgc-debris-", dir=where))
    uid = lab.uid("personal")
    os.chown(base, uid, uid)
    before = base / "apply-before"
    _copy(home, before)
    _warm_up(before, base / "warm-up", env)
    apply = Scenario("apply", before, _apply, env, uid)
    revert = Scenario("revert", apply.after, _revert, env, uid)
    revert0 = Scenario("revert0", apply.after, _revert0, env, uid)
    # What the user's next command reaches once status has finished the change.
    nxt = {
        "apply": ("revert", Scenario("apply-then-revert", apply.after, _revert, env, uid)),
        "revert": ("revert", Scenario("revert-then-revert", revert.after, _revert, env, uid)),
        "revert0": ("apply", Scenario("revert0-then-apply", revert0.after, _apply, env, uid)),
    }
    yield World(
        lab,
        env,
        uid,
        {"apply": apply, "revert": revert, "revert0": revert0},
        {k: (cmd, sc.new[0]) for k, (cmd, sc) in nxt.items()},
    )
    shutil.rmtree(base, ignore_errors=True)
    lab.reset()


COMMANDS = {"apply": _apply, "revert": _revert, "revert0": _revert0}
CLI = {
    "apply": ("apply", "--yes", "--overwrite"),
    "revert": ("revert", "--overwrite"),
    "revert0": ("revert", "--to", "0"),
}


def _debris_left(home: Path) -> list[str]:
    root = home / STATE
    out = [str(p.relative_to(root)) for p in root.rglob("*.lock")]
    out += [p.name for p in root.glob(".*.k1ll3d00")]
    out += [p.name for p in (root / "repo").glob(".HEAD.*")]
    if (root / "journal").exists():
        out.append("journal")
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_debris_is_recovered(world: World, row: Row) -> None:
    lab, uid = world.lab, world.uid
    sc = world.scenarios[row.scenario]
    home = lab.home("personal")
    _copy_into(sc.before, home)
    env = dict(world.env)
    command = COMMANDS[row.scenario]
    with searchable(lab):
        if row.kill is None:
            with _as(uid):
                command(home, env)
        else:
            _fork_kill(command, home, env, uid, row.kill)
        if row.recovery_kill is not None:
            _fork_kill(_status, home, env, uid, row.recovery_kill)
    if row.debris is not None:
        with as_user(lab, "personal"):
            row.debris(home)
    # status recovers: never an internal error (70), never a wedge.
    proc = qg(lab, "personal", "status", "--json", expect=None)
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["interrupted"] is False and out["busy"] is False
    assert _debris_left(home) == []
    wanted = sc.old if row.expect == "old" else sc.new
    assert (home_view(home), _state(home)) == wanted, f"{row.id}: not exactly {row.expect}"
    # Then the user's next command reaches exactly the expected home.
    if row.expect == "old":
        qg(lab, "personal", *CLI[row.scenario])
        assert (home_view(home), _state(home)) == sc.new
    else:
        what, expected_home = world.next_after[row.scenario]
        qg(lab, "personal", *CLI[what])
        assert home_view(home) == expected_home
    assert _debris_left(home) == []


def test_a_lock_that_is_not_the_agents_is_named_not_removed(world: World) -> None:
    """A symlink where a ref's lock file goes is not debris of the agent: status
    names it (exit 6, local state) and removes nothing; once it is moved away, status
    finishes the change."""
    lab = world.lab
    sc = world.scenarios["apply"]
    home = lab.home("personal")
    _copy_into(sc.before, home)
    with searchable(lab):
        _fork_kill(_apply, home, dict(world.env), world.uid, Kill("state-saved"))
    lock = home / REFS / "applied.lock"
    with as_user(lab, "personal"):
        lock.symlink_to("../../../../../../unrelated")
    proc = qg(lab, "personal", "status", "--json", expect=None)
    assert proc.returncode == 6, proc.stderr.decode()
    assert "applied.lock" in proc.stderr.decode() and "not a lock file" in proc.stderr.decode()
    assert lock.is_symlink() and (home / "unrelated").read_text() == "not in any plan\n"
    with as_user(lab, "personal"):
        lock.unlink()
    qg(lab, "personal", "status", "--json")
    assert (home_view(home), _state(home)) == sc.new
