"""The real lab booted, driven and let go: Qubes' own qrexec and split-GPG, built from
source, run on this host.

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
(``real_qubesdb.c``, C as the real client is), split-GPG's consent prompt (its remembered
answer, ``/run/qubes-gpg-split/stat.CLIENT``, refreshed by the harness).

Layout.  Sources (``$QUBES_SRC_DIR``, else ``<project>/../shared/qubes-src``) are
checked against ``qubes-src.sha256`` and built once into
``/var/tmp/qgitconf-lab/build-HASH`` (the hash covers the tarballs and ``build.py``).
Each boot gets ``/var/tmp/qgitconf-lab/run-XXXX``: the qgitconf install layer (rebuilt
every boot, as the project changes), per-qube ``/etc`` files, homes, ``/rw``, QubesDB
values, and the shared vchan directory.  Every domain is a mount namespace whose
root is a tmpfs with read-only overlays (our layers over the host's ``/usr`` and
``/etc``) and private ``/run``, ``/tmp``, ``/var/tmp``; all of them live in one PID
namespace whose PID 1 (:mod:`qgitconf.lab.real_init`) exits when the harness closes
its pipe or dies, and the kernel then kills every lab process.  No mount is made in
the host's namespace.

Parts.  :class:`RealLab` is built in layers, one module each, each using only the
ones below it: :mod:`qgitconf.lab.real_qubes` (the qubes and what dom0 knows of
them), :mod:`qgitconf.lab.real_roots` (their file systems),
:mod:`qgitconf.lab.real_domains` (their processes: boot, start, halt, disposables),
:mod:`qgitconf.lab.real_reset` (baseline and reset); this module boots the lab, runs
commands in it, attaches to one another process keeps, and closes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from qgitconf.errors import ConfigError, LocalStateError, UsageError
from qgitconf.lab.build import LAB_BASE, SYS_PATH, available, build, source_dir
from qgitconf.lab.real_domains import STATE_FILE, pid_alive
from qgitconf.lab.real_qubes import (
    KEY_FILE,
    NAME_CHARS,
    TARGET_TAG,
    VMS,
    check_extra_targets,
    check_templates,
)
from qgitconf.lab.real_reset import LabReset

VAULT_UID_NAME = "qgitconf lab vault <vault@lab.invalid>"


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


class RealLab(LabReset):
    """A booted real lab (the tests' ``lab`` fixture, the demo, ``lab up``).

    Its qubes are dom0 and ``vms``: the default five (``VMS``), the extra targets and
    the templates the lab was booted with, each tagged ``qgitconf-target`` (but the
    default five), and the disposables started since; each with its own uid (but a
    disposable), domain id, home, root volume, QubesDB, qrexec-daemon and agent,
    qgitconf installed.
    """

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

    # -- a lab kept running by another process (`qgitconf lab up`) -----------------------

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
    if not user or not user[0].isalpha() or not set(user) <= NAME_CHARS - {"."}:
        raise UsageError(f"{user!r} is not a user name")
    return user
