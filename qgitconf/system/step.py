"""The root step: apply, revert and restore the system files of the staged update (issue 15).

Receive, verify and stage stay unprivileged.  ``qgitconf system apply``, run as root
(``sudo`` in a qube with passwordless root, or ``qvm-run -u root QUBE ...`` from dom0:
docs/design.md "Privilege"), then trusts nothing the user's side holds:

1. Its own trust, from root-owned sources only: the qube's name (QubesDB ``/name``), the
   pinned key's fingerprint (QubesDB ``/vm-config/qgitconf-key`` or ``keys`` of
   ``/etc/qgitconf/target.toml``), the allowed system prefixes
   (``qgitconf.agent.config.load_system_rules``).  No pinned fingerprint or no prefixes:
   refused.
2. The kept signed statement (``staged.statement``) is verified against that key (the
   key file may come from the user's side: the verifier accepts it only if it is
   exactly the pinned key), then checked by the same ``check_statement`` as Receive:
   this qube's name, a sequence not below the last one root applied (rule 4).
3. The objects come from the user's repository through an unprivileged child
   (:mod:`qgitconf.system.source`), each hashed against its id: the commit the
   statement names, its signature verified as Receive does (rule 6), the root tree, and
   only the ``system/`` part below it, under the same caps and path rules (rule 7,
   :mod:`qgitconf.core.systemrules`).  They are stored in root's own repository.
4. The files are applied by the same planner, fd-based writer and journal as $HOME
   (``qgitconf.agent.apply``): drift rules, kept originals and backups, revert,
   crash recovery; root owns what it writes, modes are 0644 or 0755.
5. In an AppVM the bind-dirs list and copies are brought up to date
   (:mod:`qgitconf.system.persist`).

Root's state lives in :data:`qgitconf.system.trust.SYSTEM_STATE` (``/rw``: persistent in
AppVMs and templates).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from qgitconf.agent.apply import execute, plan_restore, revert_target
from qgitconf.agent.fault import Fault
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.journal import recover
from qgitconf.agent.plan import Plan, check_choices, make_plan
from qgitconf.agent.state import AgentState
from qgitconf.agent.wanted import Wanted, wanted_tree
from qgitconf.errors import (
    LocalStateError,
)
from qgitconf.limits import Limits
from qgitconf.qubes import qubesdb
from qgitconf.system.fetch import verified_update
from qgitconf.system.persist import custom_persist_commands, sync_bind_dirs
from qgitconf.system.trust import (
    DEFAULT_LAYOUT,
    Layout,
    QubesDBRead,
    SystemTrust,
    UserHome,
    load_trust,
    require_root,
    system_rules,
    user_home,
)

if TYPE_CHECKING:
    from qgitconf.agent.records import Applied

__all__ = ["apply_system", "restore_system", "revert_system"]


def _plan(
    state: AgentState,
    fs: HomeFS,
    commit: str | None,
    trust: SystemTrust,
    wanted: dict[str, Wanted] | None = None,
) -> Plan:
    if wanted is None:  # an earlier generation: from root's own repository
        wanted = wanted_tree(state, commit, system_rules(trust), Limits(), system=True)
    return make_plan(fs, wanted, state.manifest(), state.originals(), commit, root=state.root)


def _mount_points() -> set[str]:
    """The mount points of this mount namespace (``/proc/self/mountinfo``, unescaped)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read(4 * 1024 * 1024).splitlines()
    except OSError:
        return set()
    out: set[str] = set()
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            raw = fields[4].decode("utf-8", "surrogateescape")
            out.add(raw.encode("latin-1", "surrogateescape").decode("unicode_escape"))
    return out


def _unmount_removed(plan: Plan, layout: Layout) -> bool:
    """Detach the bind-dirs mount of each file the plan removes (bind-dirs mounted its
    /rw copy over it at boot: a mount point cannot be unlinked).  Returns whether any
    was detached (the caller plans again: what is beneath is the template's)."""
    mounts = _mount_points()
    gone = [
        str(layout.sysroot / a.path)
        for a in plan.changes
        if a.op == "delete" and str(layout.sysroot / a.path) in mounts
    ]
    if not gone:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    for path in gone:
        if libc.umount2(path.encode(), 2) != 0:  # MNT_DETACH
            err = ctypes.get_errno()
            raise LocalStateError(
                f"cannot detach the bind-dirs mount of {path}: {os.strerror(err)}"
            )
        rel = os.path.relpath(path, layout.sysroot)
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            # bind-dirs.sh touches an empty file to mount over when the template has
            # none; a file qgitconf created (no original kept) leaves no such stub
            if stat.S_ISREG(st.st_mode) and st.st_size == 0 and rel not in plan.originals:
                os.unlink(path)
    return True


def _persist(trust: SystemTrust, state: AgentState, layout: Layout) -> list[str]:
    if trust.vm_type != "AppVM":
        return []
    return sync_bind_dirs(layout.rw, layout.sysroot, state.manifest())


def _custom_persist(trust: SystemTrust, state: AgentState) -> list[str]:
    """With R4.3's custom-persist on, the dom0 commands that keep the managed files."""
    if trust.vm_type != "AppVM" or not trust.custom_persist:
        return []
    return custom_persist_commands(trust.name, state.manifest())


@contextlib.contextmanager
def _locked(state: AgentState) -> Iterator[None]:
    """Root's state lock (the directory, created empty and 0700 if need be)."""
    with state.lock() as held:
        if not held:
            raise LocalStateError("another qgitconf system command is running", code="busy")
        yield


def apply_system(
    *,
    user: str | None = None,
    who: UserHome | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    layout: Layout = DEFAULT_LAYOUT,
    read: QubesDBRead = qubesdb.read,
    fault: Fault | None = None,
) -> dict[str, Any]:
    """Verify the staged update again as root and apply its system files.

    Raises:
        UsageError: not root (``system-needs-root``), no such user.
        ConfigError: no root-owned trust (see :func:`load_trust`).
        UntrustedInputError: the statement, commit or a path does not verify.
        LocalStateError: the user's side is damaged or lies (an object's hash).
        DriftError: a system file changed locally (``--overwrite`` keeps a copy).
    """
    require_root()
    trust = load_trust(read, layout)
    who = who or user_home(read, user)
    state = AgentState(layout.state)
    limits = Limits()
    with _locked(state):
        with HomeFS(layout.sysroot) as fs:
            recovered = recover(state, fs, fault)
        fetched = verified_update(trust, who, state, limits, layout)
        with HomeFS(layout.sysroot) as fs:
            plan = _plan(state, fs, fetched.commit, trust, fetched.wanted)
            if not dry_run and _unmount_removed(plan, layout):
                fs.forget()
                plan = _plan(state, fs, fetched.commit, trust, fetched.wanted)
            if dry_run:
                return _summary(plan, None, [], dry_run=True, recovered=recovered)
            check_choices(plan, overwrite=overwrite)
            record = None
            if plan.touches_disk or fetched.commit != state.applied_commit:
                fetched.store(state)
                record = execute(plan, fs, state, overwrite=overwrite, kind="apply", fault=fault)
        data = state.load()
        data.update({"sequence": fetched.sequence, "commit": fetched.commit})
        state.save(data)
        kept = _persist(trust, state, layout)
    return {
        **_summary(plan, record, kept, dry_run=False, recovered=recovered),
        "custom_persist": _custom_persist(trust, state),
    }


def _summary(
    plan: Plan,
    record: Applied | None,
    kept: list[str],
    *,
    dry_run: bool,
    recovered: str | None = None,
) -> dict[str, Any]:
    return {
        "commit": plan.commit,
        "dry_run": dry_run,
        "generation": None if record is None else record["number"],
        "changes": [{"op": a.op, "path": "/" + a.path} for a in plan.changes],
        "conflicts": plan.conflicts,
        "bind_dirs": ["/" + p for p in kept],
        "recovered": recovered,
    }


def revert_system(
    *,
    to: int | None = None,
    layout: Layout = DEFAULT_LAYOUT,
    read: QubesDBRead = qubesdb.read,
    overwrite: bool = False,
    fault: Fault | None = None,
) -> dict[str, Any]:
    """Go back to an earlier system generation (``--to 0``: before qgitconf)."""
    require_root()
    trust = load_trust(read, layout)
    state = AgentState(layout.state)
    with _locked(state):
        with HomeFS(layout.sysroot) as fs:
            recovered = recover(state, fs, fault)
            number, commit = revert_target(state, state.generations(), to)
            plan = _plan(state, fs, commit, trust)
            if _unmount_removed(plan, layout):
                fs.forget()
                plan = _plan(state, fs, commit, trust)
            record = execute(
                plan,
                fs,
                state,
                overwrite=overwrite,
                kind="revert",
                note=f"to {number}",
                fault=fault,
            )
        kept = _persist(trust, state, layout)
    return _summary(plan, record, kept, dry_run=False, recovered=recovered)


def restore_system(
    *, layout: Layout = DEFAULT_LAYOUT, read: QubesDBRead = qubesdb.read
) -> dict[str, Any]:
    """Re-create applied system files a reboot dropped; never over a local change."""
    require_root()
    trust = load_trust(read, layout)
    state = AgentState(layout.state)
    if not (state.root / "repo").exists():
        return {"restored": [], "left": [], "recovered": None}
    with _locked(state):
        with HomeFS(layout.sysroot) as fs:
            recovered = recover(state, fs)
        plan, fs = plan_restore(state, layout.sysroot, system_rules(trust), Limits(), system=True)
        plan.left.extend(plan.blockers)  # at boot: do what can be done, report the rest
        plan.blockers = []
        written: list[str] = []
        try:
            if plan.touches_disk:
                written = execute(plan, fs, state, overwrite=False, kind="restore")["written"]
        finally:
            fs.close()
        _persist(trust, state, layout)
    return {"restored": ["/" + p for p in written], "left": plan.left, "recovered": recovered}
