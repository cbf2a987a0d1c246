"""The real lab: Qubes' own qrexec and split-GPG, built from source, booted on this host.

:class:`RealLab` is the lab the tests and the demo use: every command "in a qube" goes
through the real Qubes stack: dom0 runs ``qrexec-client -d QUBE user:CMD`` (what
``qvm-run`` does), dom0's real ``qrexec-daemon`` hands it to the qube's real ``qrexec-agent``,
which starts it as the qube's user through PAM. Calls between qubes go through the real
``qrexec-client-vm``, dom0's real ``qrexec-policy-daemon`` reading the shipped
``policy/`` files unchanged, and the socket vchan Qubes' own CI uses. Signing goes
through the real split-GPG (``qubes-gpg-client-wrapper`` → ``qubes.Gpg`` →
``gpg-server`` in the vault).

What cannot be real here is stood in for by the smallest piece (docs/lab.md):
qubesd (:mod:`qgitconf.lab.real_dom0`, system-info from a JSON file), the ask prompt
(the upstream policy agent's socket service answering a fixed click), QubesDB
(:mod:`qgitconf.lab.real_qubesdb`), split-GPG's consent prompt (its remembered
answer, ``/run/qubes-gpg-split/stat.CLIENT``, refreshed by the harness).

Layout.  Sources (``$QUBES_SRC_DIR``, else ``<project>/../shared/qubes-src``) are
checked against ``qubes-src.sha256`` and built once into
``/var/tmp/qgitconf-lab/build-HASH`` (the hash covers the tarballs and this file).
Each boot gets ``/var/tmp/qgitconf-lab/run-XXXX``: the qgitconf install layer (rebuilt
every boot, as the project changes), per-qube ``/etc`` files, homes, ``/rw``, QubesDB
values, and the shared vchan directory.  Every domain is a mount namespace whose
root is a tmpfs with read-only overlays (our layers over the host's ``/usr`` and
``/etc``) and private ``/run``, ``/tmp``, ``/var/tmp``; all of them live in one PID
namespace whose PID 1 (:mod:`qgitconf.lab.real_init`) exits when the harness closes
its pipe or dies, and the kernel then kills every lab process.  No mount is made in
the host's namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgitconf.errors import ConfigError, LocalStateError, UsageError
from qgitconf.lab.build import (
    HERE,
    LAB_BASE,
    SYS_PATH,
    SYSTEM_PYTHON,
    available,
    build,
    install_file,
    source_dir,
)
from qgitconf.lab.install import install_qgitconf, qgitconf_files

# root-only (the lab needs root): builds and per-boot trees, never in the checkout

TARGET_TAG = "qgitconf-target"
MGMT_TAG = "qgitconf-mgmt"  # docs/setup.md: `qvm-tags config-mgmt add qgitconf-mgmt`
# the lab's Qubes system: dom0, the vault, the repository, two targets, an attacker
QUBES: dict[str, dict[str, Any]] = {
    "dom0": {"class": "AdminVM", "tags": []},
    "vault": {"class": "AppVM", "tags": []},
    "config-mgmt": {"class": "AppVM", "tags": [MGMT_TAG]},
    "personal": {"class": "AppVM", "tags": [TARGET_TAG]},
    "work": {"class": "AppVM", "tags": [TARGET_TAG]},
    "untrusted": {"class": "AppVM", "tags": []},
}
KEY_FILE = "qgitconf-signing-key.asc"
INCOMING = f"QubesIncoming/vault/{KEY_FILE}"  # where `qvm-copy` from the vault puts it
STATE_FILE = "state.json"  # in a lab's root while `qgitconf lab up` keeps it running
# the default qubes' domain ids and uids; a lab with extra targets has more (RealLab.vms)
VMS = [n for n in QUBES if n != "dom0"]
DOMID = {name: i + 1 for i, name in enumerate(VMS)}
UID = {name: 2101 + i for i, name in enumerate(VMS)}
QUBES_GID = 2198
# extra targets (RealLab.boot(extra_targets=...)): uids from 2201, past QUBES_GID
EXTRA_UID_BASE = 2201
MAX_EXTRA_TARGETS = 100  # extra targets and templates together
# disposables (RealLab.start_disposable): their user has their disposable template's uid
# (in Qubes every qube's user is uid 1000; the lab gives each qube its own, and a
# disposable's home is a copy of its template's); domain ids from here
DISP_DOMID_BASE = 200
# A qube's root volume: the parts of its root its root user can write, each an
# overlay whose upper directory is in the qube's ``root/upper`` on the host (discarded
# at each boot of an AppVM or disposable, kept by a TemplateVM); ``root`` has the
# lab's empty directory beneath it instead of the host's /root.
ROOT_DIRS = ("usr", "etc", "opt", "srv", "root", "var/lib", "var/cache", "var/log", "var/spool")
NO_HOST_LOWER = frozenset({"root"})
# a Qubes qube name (qubes-core-admin's validate_name), short enough for a hostname
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
VAULT_UID_NAME = "qgitconf lab vault <vault@lab.invalid>"
SPLIT_GPG_POLICY = (
    "# The lab's split-GPG rule, as docs/setup.md has the user write it in dom0.\n"
    "qubes.Gpg * config-mgmt vault allow\n"
)


# -- build (cached) ---------------------------------------------------------------------


# -- the qgitconf install layer (every boot) --------------------------------------------


# Where an installed qgitconf put its qrexec files and the dom0 policy: the Debian and
# RPM packages (PREFIX=/usr), and `make install`'s default PREFIX=/usr/local.


# -- the lab ----------------------------------------------------------------------------


def _passwd_lines(path: str, drop: set[str]) -> list[str]:
    lines = Path(path).read_text().splitlines() if Path(path).exists() else []
    return [ln for ln in lines if ln.split(":", 1)[0] not in drop]


@dataclass(frozen=True)
class Overlay:
    """One overlay mount of a domain's root: ``target`` (relative to the root) shows
    ``lowers`` (the first on top); with an ``upper`` (and its ``work`` directory on the
    same file system) root can write it there, without one it is read-only."""

    target: str
    lowers: tuple[str, ...]
    upper: str | None = None
    work: str | None = None

    def options(self) -> str:
        lower = "lowerdir=" + ":".join(self.lowers)
        if self.upper is None or self.work is None:
            return f"ro,{lower}"
        # index=off: a rebooted template mounts the same upper again while the old
        # namespace may still be going away; nothing here needs the inode index
        return f"index=off,{lower},upperdir={self.upper},workdir={self.work}"


# What a qube's boot runs after its root is laid out and before its qrexec-agent starts,
# as systemd orders it in a qube: qubes-sysinit's /run/qubes-service flags from QubesDB
# (the lines of qubes-sysinit.sh that need no Xen), then upstream bind-dirs.sh unchanged.
# A failing bind-dirs.sh does not stop the boot (qubes-bind-dirs.service failing does not).
VM_BOOT_STEPS = (
    "mkdir -p /run/qubes /run/qubes-service",
    "qubesdb-multiread /qubes-service/ | while read -r srv _eq on; do "
    'case $srv in ""|.*|*/*) continue;; esac; '
    'if [ "$on" = 1 ]; then touch "/run/qubes-service/$srv"; fi; done',
    "echo > /run/qubes-service-environment",
    '/usr/lib/qubes/init/bind-dirs.sh >&2 || echo "lab: bind-dirs.sh exited $?" >&2',
)


def _holder_script(
    mnt: Path,
    kind: str,
    binds: Mapping[str, str],
    overlays: Sequence[Overlay],
    hostname: str,
    boot_steps: Sequence[str] = (),
) -> str:
    """The shell that lays out one domain's root and becomes its namespace holder.

    The holder has its own mount and UTS namespaces: its hostname is the domain's
    name, as qubes-sysinit sets it from QubesDB ``/name`` in a qube.  ``overlays``
    are mounted after ``/var`` (the host's, read-only), so some may lie over parts of
    it; ``binds`` after them, in order; ``boot_steps`` run as root in the new root
    before the holder says ``ready``.
    """
    q = shlex.quote
    lines = [
        "set -e",
        f"hostname {q(hostname)}",
        f"mount -t tmpfs -o mode=0755 lab-root {q(str(mnt))}",
        f"cd {q(str(mnt))}",
        "mkdir -p usr etc home/user run tmp var proc dev sys rw root opt srv .old",
        "chmod 0700 root",
        "for d in bin sbin lib lib64; do if [ -L /$d ]; then ln -s usr/$d $d; fi; done",
        "mount --bind /var var && mount -o remount,bind,ro var",
    ]
    for o in overlays:
        lines.append(f"mount -t overlay overlay -o {q(o.options())} {q(o.target)}")
    lines += [
        "mount --rbind /dev dev",
        "mount -t tmpfs -o mode=1777 tmpfs dev/shm",
        "mount --rbind /proc proc",
        "mount --rbind /sys sys",
        "mount -t tmpfs -o mode=1777 tmpfs var/tmp",
        "mount -t tmpfs -o mode=1777 tmpfs tmp",
        "mount -t tmpfs -o mode=0755 tmpfs run",
        "mkdir -p run/vchan run/qubes run/lock run/qubes-rpc run/qubesdb run/qgitconf-lab",
    ]
    for target, source in binds.items():
        ro = target.startswith("ro:")
        target = target.removeprefix("ro:")
        lines.append(f"mount --bind {q(source)} {q(target)}")
        if ro:
            lines.append(f"mount -o remount,bind,ro {q(target)}")
    if kind == "dom0":
        # qubes-core-qrexec-dom0's tmpfiles: /run/qubes 2770 root:qubes
        lines += [
            f"chgrp {QUBES_GID} run/qubes",
            "chmod 2770 run/qubes",
            "mkdir -p run/qubes/policy.d run/qubes/rpc-config",
        ]
    else:
        # qubes-gpg-split.tmpfiles: /run/qubes-gpg-split 775 root:qubes
        lines.append(f"install -d -m 0775 -o root -g {QUBES_GID} run/qubes-gpg-split")
    lines += [
        "pivot_root . .old",
        "cd /",
        "umount -l /.old",
        "rmdir /.old",
        *boot_steps,
        "echo ready",
        "exec sleep infinity >/dev/null",
    ]
    return "\n".join(lines) + "\n"


def _stale_runs() -> None:
    """Remove run directories of harnesses that died without close()."""
    for run in LAB_BASE.glob("run-*"):
        try:
            pid = int((run / "owner").read_text())
        except (OSError, ValueError):
            pid = 0
        if pid and pid_alive(pid):  # a zombie owner (killed, not yet reaped) is gone too
            continue
        shutil.rmtree(run, ignore_errors=True)


def _nspid_to_host(sup_host: int) -> dict[int, int]:
    """Host PIDs of the supervisor's children, by their PID inside the namespace."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{sup_host}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("NSpid:"):
                        out[int(line.split()[-1])] = int(child)
    return out


def check_extra_targets(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as extra target qubes: valid Qubes names, new, at most MAX_EXTRA_TARGETS."""
    out = tuple(names)
    if len(out) > MAX_EXTRA_TARGETS:
        raise UsageError(f"at most {MAX_EXTRA_TARGETS} extra targets, not {len(out)}")
    seen: set[str] = set()
    for name in out:
        if (
            not name
            or len(name) > 31
            or not name[0].isascii()
            or not name[0].isalpha()
            or not set(name) <= _NAME_CHARS
            or name in ("none", "default")
        ):
            raise UsageError(f"{name!r} is not a qube name")
        if name in QUBES or name in seen:
            raise UsageError(f"qube {name!r} is already in the lab")
        seen.add(name)
    return out


def check_templates(
    templates: Mapping[str, Sequence[str]],
    dispvm_templates: Sequence[str],
    appvms: Sequence[str],
) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """``templates`` (template name → the AppVMs based on it) and ``dispvm_templates``
    checked against the lab's ``appvms``: new valid names for the templates, existing
    AppVMs for the rest, each AppVM based on at most one template."""
    tpls = {name: tuple(based) for name, based in templates.items()}
    check_extra_targets([*appvms[len(VMS) :], *tpls])
    based_on: dict[str, str] = {}
    for tpl, based in tpls.items():
        for vm in based:
            if vm not in appvms:
                raise UsageError(f"{vm!r} (based on {tpl!r}) is not an AppVM of the lab")
            if vm in based_on:
                raise UsageError(f"{vm!r} is based on both {based_on[vm]!r} and {tpl!r}")
            based_on[vm] = tpl
    dvms = tuple(dispvm_templates)
    for vm in dvms:
        if vm not in appvms:
            raise UsageError(f"disposable template {vm!r} is not an AppVM of the lab")
    return tpls, dvms


class RealLab:
    """A booted real lab (the tests' ``lab`` fixture, the demo, ``lab up``).

    Its qubes are dom0 and ``vms``: the default five (``VMS``), the extra targets and
    the templates the lab was booted with, each tagged ``qgitconf-target`` (but the
    default five), and the disposables started since; each with its own uid (but a
    disposable), domain id, home, root volume, QubesDB, qrexec-daemon and agent,
    qgitconf installed.
    """

    def __init__(
        self,
        root: Path,
        build_dir: Path,
        extra_targets: Sequence[str] = (),
        templates: Mapping[str, Sequence[str]] | None = None,
        dispvm_templates: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.build_dir = build_dir
        self.fingerprint = ""
        self.extra_targets = check_extra_targets(extra_targets)
        appvms = [*VMS, *self.extra_targets]
        self.templates, self.dispvm_templates = check_templates(
            templates or {}, dispvm_templates, appvms
        )
        based_on = {vm: tpl for tpl, based in self.templates.items() for vm in based}
        self.qubes: dict[str, dict[str, Any]] = {
            **{n: {**q, "template": based_on.get(n)} for n, q in QUBES.items()},
            **{
                n: {"class": "AppVM", "tags": [TARGET_TAG], "template": based_on.get(n)}
                for n in self.extra_targets
            },
            **{n: {"class": "TemplateVM", "tags": [TARGET_TAG]} for n in self.templates},
        }
        for n in self.dispvm_templates:
            self.qubes[n]["template_for_dispvms"] = True
        self.vms: list[str] = [n for n in self.qubes if n != "dom0"]
        added = [*self.extra_targets, *self.templates]
        self._uids = {**UID, **{n: EXTRA_UID_BASE + i for i, n in enumerate(added)}}
        self._domids = {**DOMID, **{n: len(VMS) + 1 + i for i, n in enumerate(added)}}
        self._disposables = 0  # started so far: the next is disp<N+1>
        self.reset_rebooted: list[str] = []  # the qubes the last reset() restarted
        self._sup: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._host_pid: dict[str, int] = {}
        self._running = dict.fromkeys(self.vms, True)
        self._tags: dict[str, list[str]] = {n: list(q["tags"]) for n, q in self.qubes.items()}
        self._ask = "allow"
        self._qubesdb: dict[str, dict[str, str]] = {n: self._initial_qubesdb(n) for n in self.vms}
        self._baseline: dict[str, Any] | None = None
        self.boot_seconds = 0.0
        self.source_dir: Path | None = None
        # attached (``attach``): another process keeps the lab; close() only lets go
        self._attached = False
        # the root is a directory the caller named: close() empties it, leaves it
        self._keep_root_dir = False

    def _initial_qubesdb(self, name: str) -> dict[str, str]:
        """The keys qubesd writes into a qube's QubesDB at its start (qubes-core-admin
        ``QubesVM.create_qdb_entries``) that the lab's qubes and bind-dirs.sh read."""
        q = self.qubes[name]
        klass = q["class"]
        persistence = {"TemplateVM": "full", "DispVM": "none"}.get(klass, "rw-only")
        db = {
            "/name": name,
            "/type": klass,
            "/qubes-vm-type": klass,
            "/qubes-vm-updateable": str(klass == "TemplateVM"),
            "/qubes-vm-persistence": persistence,
        }
        if q.get("template"):
            db["/qubes-base-template"] = str(q["template"])
        return db

    # -- layout ---------------------------------------------------------------------------

    def qube(self, name: str) -> Path:
        """The host directory holding what is private to qube ``name``.

        Inside: ``rw`` (its private volume, the qube's ``/rw``: ``config``,
        ``home/user``, ``usrlocal``, ``bind-dirs``), ``root`` (its root volume:
        ``upper`` and ``work`` of the overlays of ``ROOT_DIRS``; ``tpl``, the
        template's root as the qube booted on it), ``etc`` (the lab's per-qube /etc
        layer: passwd, hostname, environment), ``qubesdb``; a template also has
        ``root.saved`` (its root as of its last shutdown), a disposable template
        ``rw.saved`` (likewise its private volume).
        """
        if name not in self.qubes:
            raise UsageError(f"no qube {name!r} in the lab")
        return self.root / "qubes" / name

    def home(self, name: str) -> Path:
        """The host path of qube ``name``'s ``/home/user`` (``/rw/home/user`` in it)."""
        if name not in self.vms:
            raise UsageError(f"no qube {name!r} with a home")
        return self.qube(name) / "rw/home/user"

    @property
    def policy_dir(self) -> Path:
        """The host path of dom0's ``/etc/qubes/policy.d`` (writable; the policy daemon
        reloads on change).  ``reset()`` restores it."""
        return self.root / "dom0" / "policy.d"

    def uid(self, name: str) -> int:
        return self._uids[name]

    def in_root(self, name: str) -> Path:
        """The host path of domain ``name``'s ``/`` (through its holder's /proc entry)."""
        if name not in self._host_pid:
            raise UsageError(f"qube {name!r} is not running")
        return Path(f"/proc/{self._host_pid[name]}/root")

    def template_of(self, name: str) -> str | None:
        """The lab template qube ``name`` is based on (a disposable: its disposable
        template's), or None (a template, or an AppVM on the host's stand-in template)."""
        t = self.qubes[name].get("template")
        return str(t) if t else None

    # -- boot -----------------------------------------------------------------------------

    @classmethod
    def boot(
        cls,
        root: Path | None = None,
        *,
        extra_targets: Sequence[str] = (),
        templates: Mapping[str, Sequence[str]] | None = None,
        dispvm_templates: Sequence[str] = (),
    ) -> RealLab:
        """Build (cached) and boot the lab; raise ConfigError when that fails.

        The lab's run tree goes to ``root`` when given (a new or empty directory, or
        one a dead lab left: it is emptied; close() empties it again and leaves it),
        else to a fresh ``LAB_BASE/run-XXXX`` (close() removes it).  ``extra_targets``
        are more target qubes (``t01``...), set up as ``personal`` and ``work`` are:
        tagged ``qgitconf-target``, running, the vault's public key in
        ``~/QubesIncoming/vault``.  ``templates`` adds TemplateVMs, set up as the extra
        targets, each with the AppVMs (default or extra) based on it:
        ``{"debian-tpl": ["personal", "t01"]}``.  ``dispvm_templates`` are AppVMs
        that are disposable templates (``template_for_dispvms``; start_disposable()).
        """
        extra = check_extra_targets(extra_targets)
        check_templates(templates or {}, dispvm_templates, [*VMS, *extra])
        ok, why = available()
        if not ok:
            raise ConfigError(f"real lab unavailable: {why}")
        src = source_dir()
        if src is None:  # available() checked it; for the type checker
            raise ConfigError("Qubes sources not found")
        t0 = time.monotonic()
        build_dir = build(src)
        LAB_BASE.mkdir(parents=True, exist_ok=True)
        _stale_runs()
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="run-", dir=LAB_BASE))
            keep_dir = False
        else:
            root = claim_root(root)
            keep_dir = True
        (root / "owner").write_text(str(os.getpid()))
        lab = cls(root, build_dir, extra, templates, dispvm_templates)
        lab.source_dir = src
        lab._keep_root_dir = keep_dir
        try:
            lab._prepare()
            lab._start()
            lab._init_state()
        except BaseException:
            lab.close()
            raise
        lab.boot_seconds = time.monotonic() - t0
        return lab

    def _prepare(self) -> None:
        r = self.root
        for d in ("log", "layers", "mnt", "dom0/state", "dom0/etc"):
            (r / d).mkdir(parents=True)
        # the upper directories of the qubes' roots are in the run tree: an overlay
        # refuses an upper inside one of its lower layers (the host's directories)
        for d in ROOT_DIRS:
            if d not in NO_HOST_LOWER and r.resolve().is_relative_to(Path("/", d).resolve()):
                raise ConfigError(f"the lab's run tree {r} must not be under /{d}")
        (r / "layers/empty").mkdir(mode=0o700)
        vchan = r / "vchan"
        vchan.mkdir()
        # socket vchan: the caller (qrexec-client-vm, as the qube's user) creates the
        # data vchan's socket here, so the shared directory is world-writable + sticky
        vchan.chmod(0o1777)
        with (r / "log/install.log").open("wb") as log:
            install_qgitconf(r / "layers/qgitconf", log)
        # lab stand-ins in the VMs: QubesDB's readers
        lab_vm = r / "layers/lab-vm"
        for prog in ("qubesdb-read", "qubesdb-list", "qubesdb-multiread"):
            dest = lab_vm / "usr/bin" / prog
            dest.parent.mkdir(parents=True, exist_ok=True)
            body = (HERE / "real_qubesdb.py").read_text()
            dest.write_text("#!/usr/bin/python3 -I\n" + body)
            dest.chmod(0o755)
        # dom0: the stand-ins, the project's policy unchanged, the split-GPG rule
        d0 = r / "dom0/etc"
        install_file(
            HERE / "real_dom0.py", r / "layers/lab-dom0/usr/lib/qgitconf-lab/real_dom0.py", 0o644
        )
        # dom0's /etc/qubes/policy.d: a writable directory bound over the layer, so that
        # tests can add a rule and the policy daemon's inotify watch sees it.
        pol = self.policy_dir
        shutil.copytree(self.build_dir / "dom0/etc/qubes/policy.d", pol)
        for f in sorted(qgitconf_files().policy.glob("*.policy")):
            shutil.copy2(f, pol / f.name)
        (pol / "30-split-gpg.policy").write_text(SPLIT_GPG_POLICY)
        drop = {"qubes", "user"}
        (d0 / "group").write_text(
            "\n".join([*_passwd_lines("/etc/group", drop), f"qubes:x:{QUBES_GID}:"]) + "\n"
        )
        (d0 / "hostname").write_text("dom0\n")
        self._write_system_info()
        self.set_ask_answer(self._ask)
        for name in self.vms:
            self._prepare_vm(name)
        # config-mgmt signs through the vault (docs/setup.md: /rw/config/gpg-split-domain)
        (self.qube("config-mgmt") / "rw/config/gpg-split-domain").write_text("vault\n")
        for name in self.vms:
            self._lay_root(name, fresh=True)

    def _prepare_vm(self, name: str) -> None:
        """Qube ``name``'s directories: its /etc layer, private volume, QubesDB."""
        drop = {"qubes", "user"}
        shadow_gid = next(
            (int(ln.split(":")[2]) for ln in _passwd_lines("/etc/group", set())
             if ln.startswith("shadow:")),
            0,
        )  # fmt: skip
        env_lines = _passwd_lines("/etc/environment", set())
        uid, q = self._uids[name], self.qube(name)
        etc = q / "etc"
        etc.mkdir(parents=True)
        users = _passwd_lines("/etc/passwd", {"user"})
        (etc / "passwd").write_text(
            "\n".join([*users, f"user:x:{uid}:{uid}:Qube user:/home/user:/bin/bash"]) + "\n"
        )
        groups = _passwd_lines("/etc/group", drop)
        (etc / "group").write_text(
            "\n".join([*groups, f"user:x:{uid}:", f"qubes:x:{QUBES_GID}:user"]) + "\n"
        )
        shadow = etc / "shadow"
        shadow.write_text(
            "\n".join([*_passwd_lines("/etc/shadow", {"user"}), "user:!:19000:0:99999:7:::"]) + "\n"
        )
        shadow.chmod(0o640)
        os.chown(shadow, 0, shadow_gid)
        (etc / "hostname").write_text(f"{name}\n")
        # socket vchan has no hypervisor to tell a process its domain id; pam_env
        # passes /etc/environment to every service the agent starts
        (etc / "environment").write_text(
            "\n".join([*env_lines, f"VCHAN_DOMAIN={self._domids[name]}"]) + "\n"
        )
        # the private volume as setup-rw.sh leaves it at a qube's first boot
        for d in ("rw/config", "rw/usrlocal", "rw/home"):
            (q / d).mkdir(parents=True, mode=0o755)
        home = self.home(name)
        home.mkdir()
        os.chown(home, uid, uid)
        home.chmod(0o700)
        (q / "qubesdb").mkdir()
        self._write_qubesdb(name)
        if self.qubes[name]["class"] == "TemplateVM":
            for d in ROOT_DIRS:  # no earlier session: an empty root volume
                (q / "root.saved" / d).mkdir(parents=True)

    def _lay_root(self, name: str, fresh: bool) -> None:
        """Make qube ``name``'s root volume ready for its boot.

        ``fresh`` (a boot): an AppVM's or disposable's upper directories are new and
        empty (Qubes' volatile volume), and a qube based on a lab template gets that
        template's root as of its last shutdown (``root.saved``) as its ``tpl`` layer;
        a template keeps its upper.  Without ``fresh`` (reset() restored the volume)
        everything stays.
        """
        vol = self.qube(name) / "root"
        vol.mkdir(exist_ok=True)
        volatile = self.qubes[name]["class"] != "TemplateVM"
        if fresh and volatile:
            shutil.rmtree(vol / "upper", ignore_errors=True)
            shutil.rmtree(vol / "work", ignore_errors=True)
        tpl = self.template_of(name)
        if fresh and tpl is not None:
            shutil.rmtree(vol / "tpl", ignore_errors=True)
            _cp_a_new(self.qube(tpl) / "root.saved", vol / "tpl")
        for d in ROOT_DIRS:
            (vol / "upper" / d).mkdir(parents=True, exist_ok=True)
            (vol / "work" / d).mkdir(parents=True, exist_ok=True)
            if tpl is not None:
                (vol / "tpl" / d).mkdir(parents=True, exist_ok=True)
        (vol / "upper/root").chmod(0o700)

    def _overlays(self, name: str) -> list[Overlay]:
        """The overlays of qube ``name``'s root, each writable into its root volume."""
        r, b, q = self.root, self.build_dir, self.qube(name)
        layers, vol = r / "layers", q / "root"
        tpl = self.template_of(name) is not None
        out = []
        for d in ROOT_DIRS:
            top = {"usr": [layers / "lab-vm/usr"], "etc": [q / "etc"]}.get(d, [])
            pkgs = {
                "usr": [layers / "qgitconf/usr", b / "vm/usr"],
                "etc": [layers / "qgitconf/etc", b / "vm/etc"],
            }.get(d, [])
            host = Path("/", d)
            base = host if d not in NO_HOST_LOWER and host.is_dir() else layers / "empty"
            lowers = [*top, *([vol / "tpl" / d] if tpl else []), *pkgs, base]
            out.append(
                Overlay(d, tuple(map(str, lowers)), str(vol / "upper" / d), str(vol / "work" / d))
            )
        return out

    def _holder_argv(self, name: str) -> list[str]:
        r, q = self.root, self.qube(name)
        mnt = r / "mnt" / name
        mnt.mkdir(exist_ok=True)
        binds = {
            "run/vchan": str(r / "vchan"),
            "rw": str(q / "rw"),
            # mount-dirs.sh: /rw/home on /home, /rw/usrlocal on /usr/local
            "home": str(q / "rw/home"),
            "usr/local": str(q / "rw/usrlocal"),
            "ro:run/qubesdb": str(q / "qubesdb"),
        }
        script = _holder_script(mnt, "vm", binds, self._overlays(name), name, VM_BOOT_STEPS)
        return ["unshare", "-m", "-u", "--propagation", "private", "--", "/bin/sh", "-c", script]

    def _qube_config(self, name: str) -> dict[str, Any]:
        d = self._domids[name]
        return {
            "domid": d,
            "uuid": self._uuid(name),
            "running": self._running[name],
            # what qubes-qrexec-agent.service runs, minus systemd
            "agent": ["env", "-i", f"PATH={SYS_PATH}", f"VCHAN_DOMAIN={d}",
                      "/usr/lib/qubes/qrexec-agent"],
            # what qubesd runs on VM start
            "daemon": ["/usr/sbin/qrexec-daemon", "--direct", "-u", self._uuid(name), str(d),
                       name, "user"],
        }  # fmt: skip

    def _boot_config(self) -> dict[str, Any]:
        r, b = self.root, self.build_dir
        layers = r / "layers"
        holders: dict[str, list[str]] = {}
        binds0 = {
            "run/vchan": str(r / "vchan"),
            "ro:run/qgitconf-lab": str(r / "dom0/state"),
            "etc/qubes/policy.d": str(self.policy_dir),
        }
        overlays0 = [
            Overlay("usr", (f"{layers}/lab-dom0/usr", f"{b}/dom0/usr", "/usr")),
            Overlay("etc", (f"{r}/dom0/etc", f"{b}/dom0/etc", "/etc")),
        ]
        mnt = r / "mnt/dom0"
        mnt.mkdir()
        script = _holder_script(mnt, "dom0", binds0, overlays0, "dom0")
        holders["dom0"] = [
            "unshare", "-m", "-u", "--propagation", "private", "--", "/bin/sh", "-c", script,
        ]  # fmt: skip
        for name in self.vms:
            holders[name] = self._holder_argv(name)
        state = "/run/qgitconf-lab"
        stand_ins = "/usr/lib/qgitconf-lab/real_dom0.py"
        dom0_services = [
            [SYSTEM_PYTHON, "-I", stand_ins, "qubesd", state],
            [SYSTEM_PYTHON, "-I", stand_ins, "ask-agent", state],
            ["/usr/bin/qrexec-policy-daemon", "--eval-socket-path=/run/qubes/policy.EvalSimple",
             "--gui-socket-path=/run/qubes/policy.EvalGUI"],
        ]  # fmt: skip
        return {
            "log_dir": str(r / "log"),
            "vchan_dir": str(r / "vchan"),
            "holders": holders,
            "dom0_services": dom0_services,
            "dom0_sockets": ["run/qubesd.internal.sock", "run/qubes/policy.sock",
                             "run/qubes/policy-agent.sock"],
            "qubes": {name: self._qube_config(name) for name in self.vms},
        }  # fmt: skip

    def _start(self) -> None:
        cfg = self.root / "boot.json"
        cfg.write_text(json.dumps(self._boot_config(), indent=1))
        errlog = (self.root / "log/init.log").open("wb")
        self._sup = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation",
             "private", "--", SYSTEM_PYTHON, "-I", str(HERE / "real_init.py"), str(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            env={"PATH": SYS_PATH, "LANG": "C.UTF-8"},
        )  # fmt: skip
        errlog.close()
        first = self._read_answer()
        if "ready" not in first:
            raise ConfigError(
                f"real lab did not boot: {first.get('error')} (logs: {self.root}/log)"
            )
        sup_host = self._sup_host_pid()
        by_nspid = _nspid_to_host(sup_host)
        self._host_pid = {name: by_nspid[int(nspid)] for name, nspid in first["ready"].items()}

    def _sup_host_pid(self) -> int:
        if self._sup is None:
            raise ConfigError("real lab not started")
        p = self._sup.pid
        children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        if len(children) != 1:
            raise ConfigError(f"cannot find the lab's PID 1 (children of {p}: {children})")
        return int(children[0])

    def _read_answer(self) -> dict[str, Any]:
        if self._sup is None or self._sup.stdout is None:
            raise ConfigError("real lab not started")
        line = self._sup.stdout.readline()
        if not line:
            raise ConfigError(f"the real lab's PID 1 is gone (logs: {self.root}/log)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _request(self, **req: Any) -> dict[str, Any]:
        with self._lock:
            if self._sup is None or self._sup.stdin is None:
                raise ConfigError("real lab is closed")
            self._sup.stdin.write((json.dumps(req) + "\n").encode())
            self._sup.stdin.flush()
            answer = self._read_answer()
        if "error" in answer:
            raise ConfigError(f"real lab: {req}: {answer['error']}")
        return answer

    def _init_state(self) -> None:
        """The vault key, its public half where users put it, git identities."""
        for name in self.vms:
            self.write(
                name,
                ".gitconfig",
                f"[user]\n\tname = {name} user\n\temail = user@{name}.invalid\n"
                "[init]\n\tdefaultBranch = main\n".encode(),
            )
        gen = self.run(
            "vault",
            ["gpg", "--batch", "--no-tty", "--passphrase", "", "--quick-gen-key",
             VAULT_UID_NAME, "ed25519", "sign", "never"],
        )  # fmt: skip
        if gen.returncode != 0:
            raise ConfigError(f"vault key generation failed: {gen.stderr.decode(errors='replace')}")
        listed = self.run("vault", ["gpg", "--batch", "--with-colons", "--list-secret-keys"])
        fprs = [
            ln.split(":")[9] for ln in listed.stdout.decode().splitlines() if ln.startswith("fpr:")
        ]
        if not fprs:
            raise ConfigError("vault key not found after generation")
        self.fingerprint = fprs[0]
        public = self.run(
            "vault", ["gpg", "--batch", "--armor", "--export", self.fingerprint]
        ).stdout
        self.write("vault", KEY_FILE, public)
        targets = [n for n in self.vms if TARGET_TAG in self._tags[n]]
        for name in ("config-mgmt", *targets):  # as `qvm-copy` from the vault would
            self.write(name, f"QubesIncoming/vault/{KEY_FILE}", public)
        self.run("vault", ["gpgconf", "--kill", "all"])
        self.grant_gpg_consent("config-mgmt")
        # the lab's set-up stands for the disposable templates' earlier sessions: their
        # disposables start from it (Qubes starts one from the volume saved at shutdown)
        for name in self.dispvm_templates:
            self._save_on_stop(name)
        self.save_baseline()

    # -- state of the Qubes system ------------------------------------------------------

    def _uuid(self, name: str) -> str:
        d = self._domids[name]
        return f"8b5e8a8e-{d:04d}-4c3a-9c1e-{d:012d}"

    def _write_system_info(self) -> None:
        domains: dict[str, dict[str, Any]] = {}
        for name, q in self.qubes.items():
            dom0 = name == "dom0"
            label = "black" if dom0 else "red"
            domains[name] = {
                "type": q["class"],
                "uuid": "00000000-0000-0000-0000-000000000000" if dom0 else self._uuid(name),
                "label": label,
                "icon": f"appvm-{label}",
                "tags": sorted(self._tags[name]),
                "template_for_dispvms": bool(q.get("template_for_dispvms")),
                "default_dispvm": None,
                "power_state": "Running" if dom0 or self._running[name] else "Halted",
                # dom0 is the GUI qube (the default install): `ask` goes to its agent
                "guivm": None if dom0 else "dom0",
            }
        _atomic_write(
            self.root / "dom0/state/system-info.json", json.dumps({"domains": domains}).encode()
        )

    def _write_qubesdb(self, name: str) -> None:
        _atomic_write(self.qube(name) / "qubesdb/db.json", json.dumps(self._qubesdb[name]).encode())

    # -- power: start, halt, reboot, disposables -----------------------------------------

    def set_running(self, name: str, running: bool) -> None:
        """Start or halt qube ``name``, as ``qvm-start`` and ``qvm-shutdown --wait`` do.

        Halting ends every process of the qube and its namespace (so its mounts),
        and dom0's qrexec-daemon for it; a template saves its root volume and a
        disposable template its private volume (what the qubes based on them get at
        their next start), a disposable is gone.  Starting lays out its root afresh
        (an AppVM's changes outside /rw are discarded), runs its boot steps
        (bind-dirs.sh among them) and starts its agent and daemon.
        """
        if name not in self.vms:
            raise UsageError(f"no qube {name!r} to start or halt")
        if running == self._running[name]:
            return
        self._running[name] = running
        if running:
            self._lay_root(name, fresh=True)
            self._domain_up(name)
            self._write_system_info()
        else:
            self._write_system_info()  # halted first: no new call is routed to it
            self._domain_down(name)
            if self.qubes[name]["class"] == "DispVM":
                self._forget(name)
            else:
                self._save_on_stop(name)

    def reboot(self, name: str) -> None:
        """Shut qube ``name`` down and start it again (``set_running`` off, then on).

        As in Qubes: an AppVM's root (``/etc``, ``/var/lib``, ``/opt``... outside
        ``/rw``, ``/home`` and ``/usr/local``) is as its template left it at the
        template's last shutdown, bind-dirs.sh puts the paths its
        ``qubes-bind-dirs.d`` files list back from ``/rw/bind-dirs``, and a template
        keeps its root.  Its agent and dom0's daemon for it run again, so ``run()``
        works as before.
        """
        if name not in self.vms or not self._running[name]:
            raise UsageError(f"qube {name!r} is not running: nothing to reboot")
        if self.qubes[name]["class"] == "DispVM":
            raise UsageError(f"{name!r} is a disposable: it is gone once halted")
        self.set_running(name, False)
        self.set_running(name, True)

    def start_disposable(self, dvm_template: str) -> str:
        """Start a new disposable from ``dvm_template`` and return its name (``dispN``).

        Its private volume (``/rw``, so ``/home/user``) is a copy of the disposable
        template's as of that qube's last shutdown (or the lab's set-up); its root
        is volatile, on the disposable template's template.  QubesDB ``/type`` is
        ``DispVM``; its user has the disposable template's uid.  ``set_running(name,
        False)`` (or reset()) ends and removes it.
        """
        if dvm_template not in self.dispvm_templates:
            raise UsageError(f"{dvm_template!r} is not a disposable template of the lab")
        self._disposables += 1
        name = f"disp{self._disposables}"
        self.qubes[name] = {
            "class": "DispVM",
            "tags": [],
            "template": self.qubes[dvm_template].get("template"),
            "dispvm_template": dvm_template,
        }
        self.vms.append(name)
        self._uids[name] = self._uids[dvm_template]
        self._domids[name] = DISP_DOMID_BASE + self._disposables
        self._running[name] = True
        self._tags[name] = []
        self._qubesdb[name] = self._initial_qubesdb(name)
        try:
            self._prepare_vm(name)
            rw = self.qube(name) / "rw"
            shutil.rmtree(rw)
            _cp_a_new(self.qube(dvm_template) / "rw.saved", rw)
            self._lay_root(name, fresh=True)
            self._request(
                op="add", qube=name, holder=self._holder_argv(name), config=self._qube_config(name)
            )
            self._domain_up(name)
        except BaseException:
            self._forget(name)
            raise
        self._write_system_info()
        return name

    def _domain_up(self, name: str) -> None:
        """Boot qube ``name``'s namespace from its laid-out volumes, its agent and daemon."""
        nspid = int(self._request(op="start", qube=name)["holder"])
        self._host_pid[name] = _nspid_to_host(self._sup_host_pid())[nspid]
        self._state_changed()

    def _domain_down(self, name: str) -> None:
        self._request(op="stop", qube=name)
        self._host_pid.pop(name, None)
        self._state_changed()

    def _save_on_stop(self, name: str) -> None:
        """What Qubes keeps of a halted qube for the qubes started from it later: a
        template's root volume, a disposable template's private volume."""
        q = self.qube(name)
        if self.qubes[name]["class"] == "TemplateVM":
            shutil.rmtree(q / "root.saved", ignore_errors=True)
            _cp_a_new(q / "root/upper", q / "root.saved")
        if name in self.dispvm_templates:
            shutil.rmtree(q / "rw.saved", ignore_errors=True)
            _cp_a_new(q / "rw", q / "rw.saved")

    def _forget(self, name: str) -> None:
        """Remove disposable ``name`` (halted, or never booted) from the lab."""
        with contextlib.suppress(ConfigError):
            self._request(op="remove", qube=name)
        self._host_pid.pop(name, None)
        self._running.pop(name, None)
        self._tags.pop(name, None)
        self._qubesdb.pop(name, None)
        self._uids.pop(name, None)
        self._domids.pop(name, None)
        if name in self.vms:
            self.vms.remove(name)
        shutil.rmtree(self.qube(name), ignore_errors=True)
        shutil.rmtree(self.root / "mnt" / name, ignore_errors=True)
        self.qubes.pop(name, None)
        self._write_system_info()
        self._state_changed()

    def _state_changed(self) -> None:
        # a lab that `lab up` keeps: state.json has the holders' pids (attach())
        if not self._attached and (self.root / STATE_FILE).exists():
            self.save_state()

    def set_tags(self, name: str, tags: Sequence[str]) -> None:
        self._tags[name] = list(tags)
        self._write_system_info()

    def set_ask_answer(self, answer: str, target: str | None = None) -> None:
        """What the user clicks in dom0's ``ask`` prompt: ``allow`` or ``deny``.

        The real prompt is not told which target the caller named: it lists every
        target the rule allows and the user picks one.  ``target`` is that pick;
        without it, ``allow`` takes the preselected (``default_target=``) or only
        target offered, and is a deny when there are several.
        """
        if answer not in ("allow", "deny"):
            raise UsageError(f"ask answer must be allow or deny, not {answer!r}")
        self._ask = answer if target is None or answer == "deny" else f"allow:{target}"
        _atomic_write(self.root / "dom0/state/ask", f"{self._ask}\n".encode())

    def set_qubesdb(self, name: str, key: str, value: str | None) -> None:
        """Set (or with None, remove) QubesDB ``key`` of qube ``name``."""
        if value is None:
            self._qubesdb[name].pop(key, None)
        else:
            self._qubesdb[name][key] = value
        self._write_qubesdb(name)

    def grant_gpg_consent(self, client: str, granted: bool = True) -> None:
        """The vault user's "yes" to ``client`` in qubes.Gpg's prompt, as the service records it.

        qubes.Gpg asks (zenity) unless ``/run/qubes-gpg-split/stat.CLIENT`` is younger
        than ``QUBES_GPG_AUTOACCEPT`` (default 300 s); the harness touches that file
        (at boot and every reset) instead of clicking.
        """
        stat = self.in_root("vault") / "run/qubes-gpg-split" / f"stat.{client}"
        if not granted:
            stat.unlink(missing_ok=True)
            return
        stat.touch()
        os.utime(stat)
        os.chown(stat, self._uids["vault"], self._uids["vault"])

    # -- files and commands -------------------------------------------------------------

    def write(self, name: str, rel: str, data: bytes, mode: int = 0o644) -> Path:
        """Write ``data`` to ``rel`` under qube ``name``'s home, owned by its user."""
        home = self.home(name)
        path = home / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise UsageError(f"{rel!r} is not a path under the home")
        uid = self._uids[name]
        parent = path.parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for d in reversed(missing):
            d.mkdir(mode=0o755)
            os.chown(d, uid, uid)
        path.write_bytes(data)
        os.chown(path, uid, uid)
        path.chmod(mode)
        return path

    def dom0(
        self, cmd: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``cmd`` in dom0 (root, a plain system environment)."""
        return subprocess.run(
            [*self._dom0_enter(), *cmd],
            input=input,
            capture_output=True,
            check=False,
            timeout=timeout,
            env={"PATH": SYS_PATH, "LANG": "C.UTF-8"},
        )

    def run(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        input: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
        user: str = "user",
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``cmd`` in qube ``name`` as its user, through the real qrexec.

        dom0 runs ``qrexec-client -d NAME user:CMD`` as ``qvm-run`` does; the agent
        starts CMD as the qube's user through PAM.  The working directory is the home.
        ``user="root"`` is ``qvm-run -u root``: ``qrexec-client -d NAME root:CMD``,
        CMD runs as root (in ``/root``).
        """
        if name not in self.vms:
            raise UsageError(f"no qube {name!r} to run in")
        env = [f"{k}={v}" for k, v in (extra_env or {}).items()]
        line = "cd && exec " + shlex.join(["env", *env, *cmd] if env else list(cmd))
        return self.dom0(
            ["/usr/bin/qrexec-client", "-d", name, f"{_check_user(user)}:{line}"], input=input
        )

    # -- reset ----------------------------------------------------------------------------

    # the parts of a qube's volumes reset() restores when they changed ("rw" without
    # "home": the homes are restored on their own, in place)
    _VOLUME_PARTS = ("rw", "root/upper", "root/tpl", "root.saved", "rw.saved")

    def _volume_state(self, name: str) -> dict[str, list[tuple[object, ...]]]:
        q = self.qube(name)
        return {
            part: _tree_state(q / part, frozenset({"home"}) if part == "rw" else frozenset())
            for part in self._VOLUME_PARTS
        }

    def save_baseline(self) -> None:
        """Remember every home, root and private volume, QubesDB, tags, power state and
        ask answer for reset()."""
        base = self.root / "baseline"
        if base.exists():
            shutil.rmtree(base)
        base.mkdir()
        self._request(op="killusers", uids=list(self._uids.values()))
        for name in self.vms:
            _cp_a(self.home(name), base / name)
            q, vol = self.qube(name), base / "vol" / name
            vol.mkdir(parents=True)
            for part in self._VOLUME_PARTS:
                if not (q / part).exists():
                    continue
                if part == "rw":
                    (vol / "rw").mkdir()
                    for child in (q / "rw").iterdir():
                        if child.name != "home":
                            _cp_a_new(child, vol / "rw" / child.name)
                else:
                    (vol / part).parent.mkdir(parents=True, exist_ok=True)
                    _cp_a_new(q / part, vol / part)
        shutil.copytree(self.policy_dir, base / "policy.d")
        self._baseline = {
            "vms": list(self.vms),
            "qubesdb": json.loads(json.dumps(self._qubesdb)),
            "running": dict(self._running),
            "tags": {n: list(t) for n, t in self._tags.items()},
            "ask": self._ask,
            "volumes": {n: self._volume_state(n) for n in self.vms},
        }

    def _restore_volumes(self, name: str) -> None:
        """Qube ``name``'s volumes as save_baseline() saw them (the qube is halted)."""
        q, vol = self.qube(name), self.root / "baseline/vol" / name
        for part in self._VOLUME_PARTS:
            if part == "rw":
                for child in list((q / "rw").iterdir()):
                    if child.name == "home":
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
                if (vol / "rw").exists():
                    _cp_a(vol / "rw", q / "rw")
                continue
            shutil.rmtree(q / part, ignore_errors=True)
            if (vol / part).exists():
                _cp_a_new(vol / part, q / part)
        shutil.rmtree(q / "root/work", ignore_errors=True)
        self._lay_root(name, fresh=False)

    def reset(self) -> None:
        """Back to the state save_baseline() saw: homes byte for byte, volumes, QubesDB,
        power, ask.

        Each home directory keeps its inode (it is bind-mounted into its qube); its
        contents are replaced.  Leftover processes of the qubes' users go first.  A
        qube whose root or private volume changed (a root write, a reboot) is halted,
        its volumes restored, and started again (``reset_rebooted`` names them);
        disposables started since are removed.
        """
        if self._baseline is None:
            raise UsageError("reset() before save_baseline()")
        b = self._baseline
        for name in [n for n in self.vms if n not in b["vms"]]:
            self.set_running(name, False)  # a disposable: removed
        for name in self.vms:
            if self._running[name] != b["running"][name]:
                self.set_running(name, b["running"][name])
        self._request(op="killusers", uids=list(self._uids.values()))
        self.reset_rebooted = []
        for name in self.vms:
            if self._volume_state(name) == b["volumes"][name]:
                continue
            up = self._running[name]
            if up:
                self._domain_down(name)
            self._restore_volumes(name)
            if up:
                self._domain_up(name)
            b["volumes"][name] = self._volume_state(name)
            self.reset_rebooted.append(name)
        for name in self.vms:
            home = self.home(name)
            for child in list(home.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            _cp_a(self.root / "baseline" / name, home)
            st = (self.root / "baseline" / name).stat()
            os.chown(home, st.st_uid, st.st_gid)
            home.chmod(st.st_mode & 0o7777)
        # the policy files (the include/ directory is left as it is)
        base = self.root / "baseline/policy.d"
        saved = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
        for p in self.policy_dir.iterdir():
            if p.is_file() and saved.get(p.name) != p.read_bytes():
                p.unlink()
        for name, data in saved.items():
            if not (self.policy_dir / name).exists():
                (self.policy_dir / name).write_bytes(data)
        for name in self.vms:
            if self._qubesdb[name] != b["qubesdb"][name]:
                self._qubesdb[name] = dict(b["qubesdb"][name])
                self._write_qubesdb(name)
        if self._tags != b["tags"]:
            self._tags = {n: list(t) for n, t in b["tags"].items()}
            self._write_system_info()
        if self._ask != b["ask"]:
            self._ask = b["ask"]
            _atomic_write(self.root / "dom0/state/ask", f"{self._ask}\n".encode())
        self.grant_gpg_consent("config-mgmt")

    # -- a lab kept running by another process (`qgitconf lab up`) -----------------------

    def save_state(self) -> Path:
        """Record, in ``ROOT/state.json``, what another process needs to attach()."""
        state = {
            "pid": os.getpid(),
            "host_pid": self._host_pid,
            "build_dir": str(self.build_dir),
            "source_dir": str(self.source_dir or ""),
            "fingerprint": self.fingerprint,
            "boot_seconds": self.boot_seconds,
            "extra_targets": list(self.extra_targets),
            "templates": {t: list(b) for t, b in self.templates.items()},
            "dispvm_templates": list(self.dispvm_templates),
        }
        path = self.root / STATE_FILE
        _atomic_write(path, json.dumps(state, indent=1).encode())
        path.chmod(0o600)
        return path

    @classmethod
    def attach(cls, root: Path) -> RealLab:
        """The running lab in ``root`` (booted and kept by another process).

        run(), dom0(), write(), home() and the QubesDB and ask settings work; starting
        or halting qubes, reset() and save_baseline() need the process that booted
        it.  close() lets go without stopping anything.
        """
        root = root.resolve()
        try:
            state = json.loads((root / STATE_FILE).read_text())
        except (OSError, ValueError) as e:
            raise LocalStateError(f"no lab is running in {root} (qgitconf lab up)") from e
        lab = cls(
            root,
            Path(state["build_dir"]),
            state.get("extra_targets", ()),
            state.get("templates", {}),
            state.get("dispvm_templates", ()),
        )
        lab._attached = True
        lab.fingerprint = str(state["fingerprint"])
        lab.boot_seconds = float(state["boot_seconds"])
        lab.source_dir = Path(state["source_dir"]) if state["source_dir"] else None
        lab._host_pid = {str(k): int(v) for k, v in state["host_pid"].items()}
        if not (pid_alive(int(state["pid"])) and pid_alive(lab._host_pid["dom0"])):
            raise LocalStateError(f"the lab in {root} is not running anymore (qgitconf lab up)")
        return lab

    def alive(self) -> bool:
        """Whether the lab still runs (its PID 1, or for an attached lab its keeper)."""
        if self._attached:
            return pid_alive(self.keeper_pid) and pid_alive(self._host_pid["dom0"])
        return self._sup is not None and self._sup.poll() is None

    @property
    def keeper_pid(self) -> int:
        """The process keeping this lab running (this one unless attached)."""
        if not self._attached:
            return os.getpid()
        return int(json.loads((self.root / STATE_FILE).read_text())["pid"])

    def qrexec_argv(self, name: str, line: str, user: str = "user") -> list[str]:
        """The host command that runs shell ``line`` in qube ``name`` through qrexec.

        ``qrexec-client -d NAME user:LINE`` in dom0, as ``qvm-run`` does: the qube's
        agent starts LINE as its user (or ``user``, e.g. root), through PAM and a
        login shell.  For a caller that passes its own stdin, stdout and stderr
        through (``lab run``).
        """
        if name not in self.vms:
            raise UsageError(f"no qube {name!r} in the lab (qubes: {', '.join(self.vms)})")
        return [
            *self._dom0_enter(), "/usr/bin/qrexec-client", "-d", name,
            f"{_check_user(user)}:{line}",
        ]  # fmt: skip

    def _dom0_enter(self) -> list[str]:
        return ["nsenter", "-t", str(self._host_pid["dom0"]), "-m", "-u", "-p", "-r", "-w", "--"]

    def close(self, keep: bool | None = None) -> None:
        """Stop every lab process (PID 1 ends, the kernel kills the rest) and clean up.

        The run tree is removed unless ``keep`` (default: ``$QGITCONF_REAL_LAB_KEEP``);
        an attached lab is only let go.
        """
        if self._attached:
            return
        sup, self._sup = self._sup, None
        if sup is not None:
            if sup.stdin is not None:
                with contextlib.suppress(OSError):
                    sup.stdin.close()
            try:
                sup.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sup.kill()
                sup.wait()
            if sup.stdout is not None:
                sup.stdout.close()
        if keep is None:
            keep = bool(os.environ.get("QGITCONF_REAL_LAB_KEEP"))
        if keep:
            (self.root / STATE_FILE).unlink(missing_ok=True)
            return
        if self._keep_root_dir:
            _empty_dir(self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RealLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _empty_dir(path: Path) -> None:
    for child in list(path.iterdir()) if path.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def claim_root(root: Path) -> Path:
    """Make ``root`` (absolute from here on) ready for a lab's run tree.

    It must be new, empty, or the run tree of a lab whose process is gone (its
    ``owner`` and ``boot.json`` are there, the owner is dead): that one is emptied.
    Anything else is refused, so that a mistyped directory is never wiped.
    """
    root = root.resolve()
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        try:
            owner = int((root / "owner").read_text())
        except (OSError, ValueError):
            owner = 0
        if not owner or not (root / "boot.json").exists():
            raise UsageError(f"{root} is not empty and holds no lab: give a new or empty directory")
        if pid_alive(owner):
            raise UsageError(f"{root} holds a lab that is running (process {owner})")
        _empty_dir(root)
    return root


def _check_user(user: str) -> str:
    """``user`` as the user part of a qrexec command (``user:CMD``): a plain name."""
    if not user or not user[0].isalpha() or not set(user) <= _NAME_CHARS - {"."}:
        raise UsageError(f"{user!r} is not a user name")
    return user


def _cp_a_new(src: Path, dest: Path) -> None:
    """``cp -a SRC DEST`` for a new DEST: SRC's tree, owners, modes, xattrs (an overlay
    upper's whiteouts and opaque marks) and times."""
    proc = subprocess.run(["cp", "-a", "--", str(src), str(dest)], capture_output=True, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"cp -a {src} {dest}: {proc.stderr.decode(errors='replace')}")


def _tree_state(path: Path, skip: frozenset[str] = frozenset()) -> list[tuple[object, ...]]:
    """What tells whether the tree at ``path`` changed: each entry's path, type, mode,
    owner, size, times and link target (``skip``: names left out at the top)."""
    out: list[tuple[object, ...]] = []
    if not path.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        if here == path:
            dirnames[:] = [d for d in dirnames if d not in skip]
            filenames = [f for f in filenames if f not in skip]
        links = [d for d in dirnames if (here / d).is_symlink()]  # os.walk does not enter
        for p in [here, *(here / f for f in filenames), *(here / d for d in links)]:
            st = p.lstat()
            link = os.readlink(p) if p.is_symlink() else ""
            out.append(
                (str(p.relative_to(path)), st.st_mode, st.st_uid, st.st_gid, st.st_size,
                 st.st_mtime_ns, st.st_ctime_ns, link)
            )  # fmt: skip
    return sorted(out, key=lambda e: str(e[0]))


def _cp_a(src: Path, dest: Path) -> None:
    """``cp -a SRC/. DEST``: contents with owners, modes, links and times (DEST may exist)."""
    proc = subprocess.run(
        ["cp", "-a", "--", f"{src}/.", str(dest)], capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise ConfigError(f"cp -a {src} {dest}: {proc.stderr.decode(errors='replace')}")


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by rename, so a reader in a qube never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)
