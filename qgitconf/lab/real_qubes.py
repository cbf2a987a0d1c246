"""The real lab's Qubes system as dom0 knows it: its qubes, their names, ids, tags,
QubesDB and power state, and where each one's files are on the host."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qgitconf.errors import UsageError

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
# a Qubes qube name (qubes-core-admin's validate_name), short enough for a hostname
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


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
            or not set(name) <= NAME_CHARS
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


def qubesdb_store(db: Mapping[str, str]) -> bytes:
    """The file the lab's ``qubesdb-read`` (``real_qubesdb.c``) reads: ``KEY NUL VALUE
    NUL`` per key, keys sorted."""
    return b"".join(f"{k}\0{db[k]}\0".encode("utf-8", "surrogateescape") for k in sorted(db))


class LabQubes:
    """The lab's qubes and what dom0 knows of them (the base of
    :class:`qgitconf.lab.real.RealLab`): their classes, tags, uids, domain ids,
    QubesDB and power state, the ask answer, and the host paths of their files."""

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
        atomic_write(
            self.root / "dom0/state/system-info.json", json.dumps({"domains": domains}).encode()
        )

    def _write_qubesdb(self, name: str) -> None:
        atomic_write(self.qube(name) / "qubesdb/db", qubesdb_store(self._qubesdb[name]))

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
        atomic_write(self.root / "dom0/state/ask", f"{self._ask}\n".encode())

    def set_qubesdb(self, name: str, key: str, value: str | None) -> None:
        """Set (or with None, remove) QubesDB ``key`` of qube ``name``."""
        if "\0" in key or (value is not None and "\0" in value):
            raise UsageError(f"QubesDB {key!r}: keys and values hold no NUL")
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


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by rename, so a reader in a qube never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)
