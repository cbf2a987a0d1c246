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

Root's state lives in :data:`SYSTEM_STATE` (``/rw``: persistent in AppVMs and templates).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qgitconf.agent.apply import (
    Plan,
    Wanted,
    check_choices,
    execute,
    make_plan,
    plan_restore,
    revert_target,
    wanted_tree,
)
from qgitconf.agent.config import FPR, SYSTEM_CONFIG, load_system_rules
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.journal import Fault, recover
from qgitconf.agent.state import STAGED_SIGNATURE, STAGED_STATEMENT, AgentState
from qgitconf.agent.verify import VerifyContext, check_statement
from qgitconf.core.paths import PathRules, check_tree
from qgitconf.core.systemrules import SYSTEM_TOP, SystemRules
from qgitconf.errors import (
    BundleError,
    CommitSignatureError,
    ConfigError,
    LocalStateError,
    TooLargeError,
    UsageError,
)
from qgitconf.gitpack.store import add_raw_objects
from qgitconf.gpg.signing import Verifier
from qgitconf.limits import MAX_KEY_FILE_BYTES, Limits
from qgitconf.qubes import qubesdb
from qgitconf.system.persist import custom_persist_commands, sync_bind_dirs
from qgitconf.system.source import UserObjects, read_user_file, statement_caps

__all__ = [
    "SYSTEM_STATE",
    "Layout",
    "SystemTrust",
    "apply_system",
    "load_trust",
    "restore_system",
    "revert_system",
]

SYSTEM_STATE = Path("/rw/qgitconf-system")
"""Root's state of the system step (root-owned, 0700; ``/rw`` persists in an AppVM)."""
USER_STATE = ".local/share/qgitconf"
QubesDBRead = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Layout:
    """Where the root step reads and writes: the real system by default; tests and the
    lab give a sandbox."""

    sysroot: Path = Path("/")
    state: Path = SYSTEM_STATE
    rw: Path = Path("/rw")
    system_config: Path = SYSTEM_CONFIG


@dataclass(frozen=True)
class UserHome:
    """Whose staged update the root step reads: the user's ids and home."""

    uid: int
    gid: int
    home: Path


@dataclass(frozen=True)
class SystemTrust:
    """What root trusts, from root-owned sources only."""

    name: str
    fingerprint: str
    rules: SystemRules
    vm_type: str
    custom_persist: bool = False


def load_trust(read: QubesDBRead = qubesdb.read, layout: Layout = Layout()) -> SystemTrust:
    """Root's trust: name, pinned fingerprint and allowed prefixes.

    Raises:
        ConfigError: ``no-qubesdb``, ``system-no-key``, ``system-files-disabled``, or
            an invalid setting.
    """
    name = read("/name")
    if not name or not name.isprintable() or len(name) > 31:
        raise ConfigError(
            "cannot learn this qube's name (qubesdb-read /name failed)", code="no-qubesdb"
        )
    fpr = (read("/vm-config/qgitconf-key") or "").upper() or _config_key(layout.system_config)
    if not fpr or not FPR.fullmatch(fpr):
        raise ConfigError(
            "the system step needs the pinned key from dom0 "
            "(qvm-features QUBE vm-config.qgitconf-key FINGERPRINT) or in "
            f"{layout.system_config}; the user's own configuration does not count",
            code="system-no-key",
        )
    rules = load_system_rules(read, layout.system_config)
    if not rules.enabled:
        raise ConfigError(
            "system files are not enabled in this qube "
            "(dom0: qvm-features QUBE vm-config.qgitconf-system-paths '/etc/gitconfig ...')",
            code="system-files-disabled",
        )
    custom = read("/qubes-service/custom-persist") == "1"
    return SystemTrust(name, fpr, rules, read("/qubes-vm-type") or "", custom)


def _config_key(path: Path) -> str:
    try:
        if path.stat().st_uid != 0:
            return ""
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    keys = data.get("keys")
    if isinstance(keys, list) and len(keys) == 1 and isinstance(keys[0], str):
        return keys[0].upper()
    return ""


def _require_root() -> None:
    if os.geteuid() != 0:
        raise UsageError(
            "the system step runs as root: `sudo qgitconf system apply`, or from dom0 "
            "`qvm-run -u root QUBE 'qgitconf system apply --yes'`",
            code="system-needs-root",
        )


def _user(read: QubesDBRead, user: str | None) -> UserHome:
    name = user or read("/default-user") or "user"
    try:
        pw = pwd.getpwnam(name)
    except KeyError as e:
        raise UsageError(f"no such user: {name!r}", code="no-such-user") from e
    if pw.pw_uid == 0:
        raise UsageError("the staged update is read from a user's home, not root's")
    return UserHome(pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def _key_bytes(fpr: str, layout: Layout, home: Path) -> bytes:
    system_key = layout.system_config.parent / "keys" / f"{fpr}.asc"
    try:
        if system_key.stat().st_uid == 0:
            return system_key.read_bytes()[:MAX_KEY_FILE_BYTES]
    except OSError:
        pass
    return read_user_file(home, f".config/qgitconf/keys/{fpr}.asc", MAX_KEY_FILE_BYTES)


def _system_rules(trust: SystemTrust) -> PathRules:
    return PathRules(allow=("**",), system=trust.rules)


@dataclass(frozen=True)
class Fetched:
    """The verified objects of the staged commit's system part, still in memory: stored
    in root's repository only when the apply goes ahead (a refusal changes nothing)."""

    commit: str
    sequence: int
    bodies: list[tuple[int, bytes]]
    wanted: dict[str, Wanted]

    def store(self, state: AgentState) -> None:
        state.ensure()
        repo = state.repo()
        try:
            add_raw_objects(repo, self.bodies)
        finally:
            repo.close()


def _fetch(
    objects: UserObjects,
    commit: str,
    verifier: Verifier,
    limits: Limits,
    rules: PathRules,
) -> tuple[list[tuple[int, bytes]], dict[str, Wanted]]:
    """Step 3: the commit (signature checked), its root tree and the ``system/`` part,
    each hashed against its id; the paths checked.  Returns the objects and the files
    (``/``-relative)."""
    from qgitconf.gitpack.compat import parse_tree_entries, split_commit_signature

    raw = objects.get(commit, b"commit")
    payload, signature = split_commit_signature(raw)
    if not signature:
        raise CommitSignatureError(f"commit {commit} is not signed")
    verifier.verify(bytes(payload), bytes(signature), CommitSignatureError)
    tree_line = raw.split(b"\n", 1)[0]
    if not tree_line.startswith(b"tree ") or len(tree_line) != 45:
        raise BundleError(f"commit {commit} has no tree line")
    root_tree = tree_line[5:].decode("ascii")
    bodies: list[tuple[int, bytes]] = [(1, raw)]
    top = objects.get(root_tree, b"tree")
    bodies.append((2, top))
    entries: list[tuple[bytes, int, bytes | None]] = []
    wanted: dict[str, Wanted] = {}
    stack: list[tuple[bytes, str, int]] = []
    for name, mode, top_item in _parse(parse_tree_entries, top):
        if name == SYSTEM_TOP.encode() or name.lower().rstrip(b". ") == b"system":
            entries.append((name, mode, None))
            if mode == 0o40000:
                stack.append((name + b"/", top_item.decode("ascii"), 1))
    total = 0
    while stack:
        prefix, sha, depth = stack.pop()
        if depth > limits.max_tree_depth:
            raise TooLargeError(f"tree deeper than {limits.max_tree_depth} levels")
        body = objects.get(sha, b"tree")
        bodies.append((2, body))
        for name, mode, item in _parse(parse_tree_entries, body):
            path = prefix + name
            if len(entries) >= limits.max_tree_entries:
                raise TooLargeError(f"more than {limits.max_tree_entries} system entries")
            entries.append((path, mode, None))
            if mode == 0o40000:
                stack.append((path + b"/", item.decode("ascii"), depth + 1))
            elif mode in (0o100644, 0o100755):
                blob = objects.get(item.decode("ascii"), b"blob")
                total += len(blob)
                if total > limits.max_inflated_bytes:
                    raise TooLargeError(f"system files larger than {limits.max_inflated_bytes}")
                bodies.append((3, blob))
                rel = path.split(b"/", 1)[1].decode("utf-8", "surrogateescape")
                wanted[rel] = Wanted(rel, "file", 0o755 if mode == 0o100755 else 0o644, blob)
    # rule 7 with root's own system rules (a symlink or another mode is refused there)
    check_tree(entries, rules)
    return bodies, wanted


def _parse(
    parser: Callable[[bytes], list[tuple[bytes, int, bytes]]], body: bytes
) -> list[tuple[bytes, int, bytes]]:
    try:
        return parser(body)
    except Exception as e:  # dulwich's ObjectFormatException, or a ValueError
        raise BundleError(f"malformed tree: {e}") from e


def _verified_update(
    trust: SystemTrust,
    who: UserHome,
    state: AgentState,
    limits: Limits,
    layout: Layout,
) -> Fetched:
    """Steps 2 and 3."""
    from qgitconf.core.envelope import parse_statement

    home = who.home
    st_cap, sig_cap = statement_caps()
    statement = read_user_file(home, f"{USER_STATE}/{STAGED_STATEMENT}", st_cap)
    signature = read_user_file(home, f"{USER_STATE}/{STAGED_SIGNATURE}", sig_cap)
    key = _key_bytes(trust.fingerprint, layout, home)
    data = state.load()
    # a fresh GnuPG home each time (no cache in root's state: a refusal changes nothing)
    with Verifier({trust.fingerprint: key}) as v:
        v.verify(statement, signature)
        st = parse_statement(statement)
        ctx = VerifyContext(
            own_name=trust.name,
            source="",
            pinned={trust.fingerprint: key},
            rules=_system_rules(trust),
            limits=limits,
            last_sequence=data.get("sequence"),
            last_commit=data.get("commit"),
            objects=state.objects,
            tmp=state.tmp,
            now=datetime.now(UTC),
        )
        check_statement(st, ctx)
        repo = home / USER_STATE / "repo"
        with UserObjects(who.uid, who.gid, home, repo, limits.max_object_bytes) as objects:
            bodies, wanted = _fetch(objects, st.commit, v, limits, _system_rules(trust))
    return Fetched(st.commit, st.sequence, bodies, wanted)


def _plan(
    state: AgentState,
    fs: HomeFS,
    commit: str | None,
    trust: SystemTrust,
    wanted: dict[str, Wanted] | None = None,
) -> Plan:
    if wanted is None:  # an earlier generation: from root's own repository
        wanted = wanted_tree(state, commit, _system_rules(trust), Limits(), system=True)
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
    import ctypes

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
    layout: Layout = Layout(),
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
    _require_root()
    trust = load_trust(read, layout)
    who = who or _user(read, user)
    state = AgentState(layout.state)
    limits = Limits()
    with _locked(state):
        with HomeFS(layout.sysroot) as fs:
            recovered = recover(state, fs, fault)
        fetched = _verified_update(trust, who, state, limits, layout)
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
        data.update(sequence=fetched.sequence, commit=fetched.commit)
        state.save(data)
        kept = _persist(trust, state, layout)
    return {
        **_summary(plan, record, kept, dry_run=False, recovered=recovered),
        "custom_persist": _custom_persist(trust, state),
    }


def _summary(
    plan: Plan,
    record: dict[str, Any] | None,
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
    layout: Layout = Layout(),
    read: QubesDBRead = qubesdb.read,
    overwrite: bool = False,
    fault: Fault | None = None,
) -> dict[str, Any]:
    """Go back to an earlier system generation (``--to 0``: before qgitconf)."""
    _require_root()
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
    *, layout: Layout = Layout(), read: QubesDBRead = qubesdb.read
) -> dict[str, Any]:
    """Re-create applied system files a reboot dropped; never over a local change."""
    _require_root()
    trust = load_trust(read, layout)
    state = AgentState(layout.state)
    if not (state.root / "repo").exists():
        return {"restored": [], "left": [], "recovered": None}
    with _locked(state):
        with HomeFS(layout.sysroot) as fs:
            recovered = recover(state, fs)
        plan, fs = plan_restore(state, layout.sysroot, _system_rules(trust), Limits(), system=True)
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
