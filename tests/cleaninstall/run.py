"""``make test-install``: the .deb, installed with plain apt in clean Debian 12 and 13.

Issue 20's first acceptance item.  For each suite (bookworm, trixie) this

1. makes a clean system with ``mmdebstrap --variant=apt`` from the distribution's own
   repositories (main, updates, security), cached as a tarball under
   ``$QGITCONF_CI_CACHE`` (default ``/var/cache/qgitconf-ci/SUITE.tar``, rebuilt when
   older than a week) and unpacked afresh for every run;
2. installs ``dist/qgitconf_*_all.deb`` (``make deb``) with ``apt-get install -y
   ./qgitconf_*.deb`` (Recommends included, as apt does by default), and checks that
   dpkg is left consistent (``apt-get check``, ``dpkg --audit``);
3. runs the installed package inside that system, as it runs in Qubes: a config-mgmt
   user (``mgmt``) with a real gpg key makes the repository (``qgitconf init``,
   ``target add``), pushes a signed commit through the installed ``pre-receive`` hook
   (accepted) and an unsigned one (refused); a target user (``user``, qube
   ``personal``) pins the key; ``qgitconf publish`` meets qrexec's refusal (no dom0
   here: the ``qrexec-client-vm`` stand-in answers every call as a halted target does,
   exit 126) and keeps the update; then the harness plays qrexec-agent: it runs the
   installed ``/etc/qubes-rpc/qgitconf.Fetch`` as ``mgmt`` for the caller ``personal``,
   and feeds what it printed to the installed ``/etc/qubes-rpc/qgitconf.Receive`` as
   ``user`` for the caller ``config-mgmt`` (first a copy with one signature byte
   changed: refused, the home unchanged; then the update: staged), both started
   exactly as ``qrexec-agent`` starts a service (``/bin/sh -lc`` with its script, the
   ``QREXEC_*`` variables, the PAM session's ``HOME``/``USER``/``LOGNAME``/``SHELL``,
   the home as working directory); then ``review``, ``apply --yes`` and ``revert``,
   checking the files in the target's home after each, and ``doctor`` on both sides.

Every command runs in ``chroot`` inside a private mount and PID namespace
(``unshare --mount --pid --fork --kill-child``) with its own ``/proc``, a minimal
``/dev`` and a fresh ``/tmp``: when a command ends or times out, its namespace and
every mount and process in it go with it, so a failure leaves nothing mounted on the
host.  The unpacked systems live in ``$QGITCONF_CI_WORK`` (``/var/tmp/qgitconf-ci``)
and are removed at the end (``--keep`` keeps them).  Downloaded packages are kept per
suite in ``CACHE/SUITE/archives`` (apt still resolves every dependency from the
distribution's indices; the cache only saves the download).

Usage (root): ``python -m tests.cleaninstall.run [--deb FILE] [--keep] [SUITE...]``.
Exit 0 only if every step of every suite behaved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITES = {"bookworm": "Debian 12", "trixie": "Debian 13"}
MIRROR = os.environ.get("QGITCONF_CI_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("QGITCONF_CI_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
CACHE = Path(os.environ.get("QGITCONF_CI_CACHE", "/var/cache/qgitconf-ci"))
WORK = Path(os.environ.get("QGITCONF_CI_WORK", "/var/tmp/qgitconf-ci"))
BASE_MAX_AGE = 7 * 86400  # a week: the security updates reach the base soon enough
SYS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PACKAGES = ("python3", "python3-dulwich", "python3-gnupg", "python3-click", "git", "gpg")

# The chroot's private namespace: /proc, a minimal /dev, a fresh /tmp, the package
# cache for apt; then chroot (numeric ids: nothing is looked up on the host) and env -i.
# For the lab demo (--lab-demo): /sys, and the Qubes sources read-only in /srv/qubes-src.
# Arguments: ROOT ARCHIVES(or "") USERSPEC(or "") QUBES_SRC(or "") COMMAND...
ENTER = r"""
set -e
R=$1 ARCHIVES=$2 USERSPEC=$3 QUBES_SRC=$4
shift 4
# the system's root a mount point, as a real root is (pivot_root and propagation
# changes in it, e.g. the lab's namespaces, need one)
mount --bind "$R" "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t tmpfs -o mode=0755,size=1m,nosuid,noexec dev "$R/dev"
for d in null zero full random urandom tty; do
  : > "$R/dev/$d"
  mount --bind "/dev/$d" "$R/dev/$d"
done
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mkdir "$R/dev/shm" "$R/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$R/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$R/tmp"
if [ -n "$ARCHIVES" ]; then mount --bind "$ARCHIVES" "$R/var/cache/apt/archives"; fi
if [ -n "$QUBES_SRC" ]; then
  mount --rbind /sys "$R/sys"
  mkdir -p "$R/srv/qubes-src"
  mount --bind "$QUBES_SRC" "$R/srv/qubes-src"
  mount -o remount,bind,ro "$R/srv/qubes-src"
fi
if [ -n "$USERSPEC" ]; then
  exec chroot --userspec="$USERSPEC" --groups="${USERSPEC#*:}" "$R" "$@"
fi
exec chroot "$R" "$@"
"""

# What qrexec-agent runs for a service call (qubes-core-qrexec libqrexec/exec.c,
# exec_qubes_rpc2 with use_shell): `/bin/sh -lc SCRIPT sh PROGRAM FULL_NAME REMOTE
# ARGUMENT TARGET`, after a PAM session that set HOME, SHELL, USER, LOGNAME and
# QREXEC_AGENT_PID, in the user's home.  qrexec-daemon appends "+" to a service called
# without an argument, so QREXEC_SERVICE_ARGUMENT is set and empty.
QREXEC_SCRIPT = (
    "set -e\n"
    "unset QREXEC_SERVICE_FULL_NAME QREXEC_REMOTE_DOMAIN QREXEC_REQUESTED_TARGET_TYPE "
    "QREXEC_SERVICE_ARGUMENT QREXEC_REQUESTED_TARGET QREXEC_REQUESTED_TARGET_KEYWORD\n"
    'export "QREXEC_SERVICE_FULL_NAME=$2" "QREXEC_REMOTE_DOMAIN=$3" '
    'QREXEC_REQUESTED_TARGET_TYPE=name QREXEC_REQUESTED_TARGET="$5" '
    '"QREXEC_SERVICE_ARGUMENT=$4"\n'
    'exec "$1" '
)

# No dom0 here: every call is refused as real qrexec-client-vm reports a denied call
# or a halted target the policy does not start (exit 126, "Request refused").
QREXEC_CLIENT_STANDIN = """#!/bin/sh
# qgitconf clean-install test: qrexec-client-vm stand-in (no dom0 in this system).
echo "Request refused" >&2
exit 126
"""

GITCONFIG = "[alias]\n\tst = status\n\tlg = log --oneline\n"
BASHRC = "PS1='\\u@personal:\\w\\$ '\n"


class StepFailed(Exception):
    """A step did not behave; the message says what was expected and what came."""


@dataclass(frozen=True)
class User:
    name: str
    uid: int

    @property
    def home(self) -> str:
        return f"/home/{self.name}"


MGMT = User("mgmt", 1001)  # the config-mgmt qube's user
TARGET = User("user", 1002)  # the personal qube's user


@dataclass
class Proc:
    argv: list[str]
    status: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def text(self) -> str:
        return (
            f"$ {shlex.join(self.argv)}\nexit {self.status}\n"
            f"--- stdout\n{self.out[-3000:]}\n"
            f"--- stderr\n{self.stderr.decode('utf-8', 'replace')[-3000:]}"
        )


@dataclass
class Result:
    suite: str
    steps: list[tuple[str, str, float]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    failure: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failure and bool(self.steps)


def log(msg: str) -> None:
    print(msg, flush=True)


# -- the base systems (cached) ----------------------------------------------------------


def base_tarball(suite: str, timeout: float = 900) -> tuple[Path, str]:
    """The clean system's tarball, built by mmdebstrap when missing or older than a week."""
    tar = CACHE / f"{suite}.tar"
    if tar.is_file() and time.time() - tar.stat().st_mtime < BASE_MAX_AGE:
        return tar, "cached"
    if shutil.which("mmdebstrap") is None:
        raise StepFailed("mmdebstrap is not installed (apt-get install mmdebstrap)")
    CACHE.mkdir(parents=True, exist_ok=True)
    part = CACHE / f"{suite}.part.tar"
    argv = [
        "mmdebstrap", "--quiet", "--mode=root", "--variant=apt",
        # the indices stay in the base: each run only refreshes them
        "--skip=cleanup/apt/lists",
        suite, str(part),
        f"deb {MIRROR} {suite} main",
        f"deb {MIRROR} {suite}-updates main",
        f"deb {SECURITY} {suite}-security main",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        part.unlink(missing_ok=True)
        raise StepFailed(Proc(argv, proc.returncode, proc.stdout, proc.stderr).text())
    part.rename(tar)
    return tar, "built"


# -- one system -------------------------------------------------------------------------


class System:
    """An unpacked clean system and the way to run commands in it."""

    def __init__(self, suite: str, root: Path) -> None:
        self.suite = suite
        self.root = root
        self.archives = CACHE / suite / "archives"

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def run(
        self,
        argv: Sequence[str],
        *,
        user: User | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        input: bytes | None = None,
        timeout: float = 120,
        apt: bool = False,
        qubes_src: Path | None = None,
    ) -> Proc:
        """Run ``argv`` in the system (``env -i`` plus ``env``), as root or ``user``."""
        base = {"PATH": SYS_PATH, "LANG": "C.UTF-8"}
        if user is not None:
            base.update(HOME=user.home, USER=user.name, LOGNAME=user.name, SHELL="/bin/bash")
        else:
            base["HOME"] = "/root"
        base.update(env or {})
        inner = ["/usr/bin/env", "-i"]
        if cwd or user:
            inner += ["-C", cwd or (user.home if user else "/")]
        inner += [f"{k}={v}" for k, v in base.items()] + list(argv)
        spec = f"{user.uid}:{user.uid}" if user else ""
        cmd = [
            "unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
            "/bin/sh", "-c", ENTER, "enter", str(self.root),
            str(self.archives) if apt else "", spec, str(qubes_src or ""), *inner,
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                cmd, input=input, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise StepFailed(
                f"timed out after {timeout:.0f} s: {shlex.join(argv)}\n"
                f"--- stdout\n{(e.stdout or b'').decode(errors='replace')[-2000:]}\n"
                f"--- stderr\n{(e.stderr or b'').decode(errors='replace')[-2000:]}"
            ) from None
        return Proc(list(argv), proc.returncode, proc.stdout, proc.stderr)

    def login(self, user: User, command: Sequence[str], **kw: object) -> Proc:
        """``command`` as ``user`` in a login shell in the home (a terminal in the qube)."""
        script = 'cd "$HOME" && exec "$@"'
        return self.run(["/bin/sh", "-lc", script, "sh", *command], user=user, **kw)  # type: ignore[arg-type]

    def qrexec_service(
        self, user: User, service: str, remote: str, target: str, stdin: bytes
    ) -> Proc:
        """The installed ``/etc/qubes-rpc/SERVICE`` as qrexec-agent runs it for ``remote``."""
        argv = [
            "/bin/sh", "-lc", QREXEC_SCRIPT, "sh",
            f"/etc/qubes-rpc/{service}", f"{service}+", remote, "", target,
        ]  # fmt: skip
        env = {"QREXEC_AGENT_PID": "1"}
        proc = self.run(argv, user=user, env=env, input=stdin, timeout=180)
        proc.argv = [f"qrexec-agent:{service} from {remote} as {user.name}"]
        return proc

    def add_user(self, user: User) -> None:
        for name, line in (
            ("passwd", f"{user.name}:x:{user.uid}:{user.uid}::{user.home}:/bin/bash"),
            ("group", f"{user.name}:x:{user.uid}:"),
            ("shadow", f"{user.name}:!:19000:0:99999:7:::"),
        ):
            with self.path(f"/etc/{name}").open("a") as f:
                f.write(line + "\n")
        home = self.path(user.home)
        home.mkdir(parents=True)
        os.chown(home, user.uid, user.uid)
        home.chmod(0o700)

    def put(self, rel: str, data: bytes, mode: int = 0o644, owner: User | None = None) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(p.parent, owner.uid, owner.uid)
        p.write_bytes(data)
        p.chmod(mode)
        if owner is not None:
            os.chown(p, owner.uid, owner.uid)

    def tree_digest(self, rel: str, skip: Sequence[str] = ()) -> str:
        """A digest of every name, mode and content under ``rel`` but ``skip``."""
        h = hashlib.sha256()
        top = self.path(rel)
        for p in sorted(top.rglob("*")):
            if str(p.relative_to(top)) in skip:
                continue
            st = p.lstat()
            h.update(f"{p.relative_to(top)}\0{st.st_mode:o}\0".encode())
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
            elif p.is_symlink():
                h.update(os.readlink(p).encode())
        return h.hexdigest()


def expect(proc: Proc, status: int = 0, contains: str | None = None) -> Proc:
    if proc.status != status:
        raise StepFailed(f"expected exit {status}\n{proc.text()}")
    if contains is not None and contains not in proc.out + proc.stderr.decode(errors="replace"):
        raise StepFailed(f"expected {contains!r} in the output\n{proc.text()}")
    return proc


# -- the flow ---------------------------------------------------------------------------


class Flow:
    """The steps, in order, against one :class:`System`."""

    def __init__(
        self, system: System, deb: Path, result: Result, qubes_src: Path | None = None
    ) -> None:
        self.s = system
        self.deb = deb
        self.r = result
        self.qubes_src = qubes_src
        self.fpr = ""
        self.pushed = ""
        self.update = b""
        self.demo_output = ""

    def step(self, name: str, fn: Callable[[], str | None]) -> None:
        t0 = time.monotonic()
        try:
            note = fn() or ""
        except StepFailed as e:
            self.r.steps.append((name, "FAIL", time.monotonic() - t0))
            raise StepFailed(f"{self.s.suite}: step {name!r} failed:\n{e}") from None
        dt = time.monotonic() - t0
        self.r.steps.append((name, "OK" + (f" ({note})" if note else ""), dt))
        log(f"  [{self.s.suite}] {name}: OK{f' ({note})' if note else ''} {dt:.1f} s")

    def all(self) -> None:
        self.step("apt-get install ./qgitconf_*.deb", self.install)
        self.step("installed files, no source tree", self.installed)
        self.step("doctor (fresh qube)", self.doctor_fresh)
        self.step("config-mgmt: gpg key, init, target add, doctor", self.mgmt_init)
        self.step("pre-receive hook: signed push accepted", self.push_signed)
        self.step("pre-receive hook: unsigned push refused", self.push_unsigned)
        self.step("target: target init (pin the key)", self.target_init)
        self.step("publish: refused by qrexec, update kept", self.publish)
        self.step("qgitconf.Fetch (installed service) answers personal", self.fetch)
        self.step("qgitconf.Receive refuses a changed signature", self.receive_tampered)
        self.step("qgitconf.Receive stages the signed update", self.receive)
        self.step("review", self.review)
        self.step("apply --yes", self.apply)
        self.step("doctor (target, after apply)", self.doctor_target)
        self.step("revert", self.revert)
        if self.qubes_src is not None:
            self.step("the lab's build tools (apt-get install)", self.lab_tools)
            self.step("qgitconf lab demo from the installed package", self.lab_demo)

    # -- steps

    def install(self) -> str:
        s = self.s
        s.archives.mkdir(parents=True, exist_ok=True)
        shutil.copy2("/etc/resolv.conf", s.path("/etc/resolv.conf"))
        s.put(f"/srv/qgitconf/{self.deb.name}", self.deb.read_bytes())
        s.path("/srv/qgitconf").chmod(0o755)
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        expect(s.run(["apt-get", "update", "-q"], env=env, timeout=600, apt=True))
        proc = s.run(
            ["apt-get", "install", "-y", f"./{self.deb.name}"],
            env=env,
            cwd="/srv/qgitconf",
            timeout=1200,
            apt=True,
        )
        expect(proc)
        # dpkg left consistent: no unmet dependency that would block the next upgrade
        expect(s.run(["apt-get", "check"], env=env))
        audit = expect(s.run(["dpkg", "--audit"]))
        if audit.out.strip():
            raise StepFailed(f"dpkg --audit reports:\n{audit.out}")
        expect(
            s.run(["dpkg-query", "-W", "-f=${Status}", "qgitconf"]), contains="install ok installed"
        )
        fmt = "${Package} ${Version}\n"
        out = expect(s.run(["dpkg-query", "-W", f"-f={fmt}", *PACKAGES, "qgitconf"])).out
        for line in out.splitlines():
            name, _, version = line.partition(" ")
            self.r.versions[name] = version
        py = expect(s.run(["python3", "--version"])).out.strip()
        self.r.versions["python3"] += f" ({py})"
        ext = expect(
            s.run(
                ["python3", "-I", "-c",
                 "import importlib.util as u; print('C' if u.find_spec('dulwich._objects') "
                 "else 'pure Python')"]
            )
        ).out.strip()  # fmt: skip
        self.r.versions["python3-dulwich"] += f" ({ext})"
        newly = proc.out.count("\nSetting up ")
        return f"{newly} packages set up"

    def installed(self) -> str:
        s = self.s
        code = "import qgitconf, sys; print(qgitconf.__file__); print(qgitconf.__version__)"
        out = expect(s.run(["python3", "-I", "-c", code], cwd="/")).out.split()
        if not out[0].startswith("/usr/lib/python3/dist-packages/qgitconf/"):
            raise StepFailed(f"qgitconf imported from {out[0]}")
        for path in (
            "/usr/bin/qgitconf",
            "/usr/bin/qgitconf-service",
            "/etc/qubes-rpc/qgitconf.Receive",
            "/etc/qubes-rpc/qgitconf.Fetch",
            "/etc/qubes/rpc-config/qgitconf.Receive",
            "/usr/share/qgitconf/policy/90-qgitconf.policy",
        ):
            expect(s.run(["dpkg", "-S", path]), contains="qgitconf")
        first = s.path("/usr/bin/qgitconf").read_text().splitlines()[0]
        if first.replace(" ", "") != "#!/usr/bin/python3-I":
            raise StepFailed("/usr/bin/qgitconf does not run isolated (python3 -I)")
        # The lab's QubesDB stand-in, as the real lab installs it, from the installed
        # package; the qrexec-client-vm stand-in (no dom0 here).
        # (compiled here: the image has no compiler yet; its glibc is as new or newer)
        source = s.path("/usr/lib/python3/dist-packages/qgitconf/lab/real_qubesdb.c")
        subprocess.run(
            ["gcc", "-O2", "-o", str(s.path("/usr/bin/qubesdb-cmd")), str(source)], check=True
        )
        for prog in ("qubesdb-read", "qubesdb-list"):
            s.path(f"/usr/bin/{prog}").symlink_to("qubesdb-cmd")
        s.put("/run/qubesdb/db", b"/name\0personal\0", 0o644)  # KEY NUL VALUE NUL
        s.put("/usr/bin/qrexec-client-vm", QREXEC_CLIENT_STANDIN.encode(), 0o755)
        s.add_user(MGMT)
        s.add_user(TARGET)
        expect(s.run(["qubesdb-read", "/name"]), contains="personal")
        return f"qgitconf {out[1]} from {out[0].rsplit('/', 1)[0]}"

    def doctor_fresh(self) -> str:
        proc = expect(self.s.login(TARGET, ["qgitconf", "doctor"]))
        for name in ("gpg", "python-gnupg", "dulwich", "click"):
            if not any(ln.split()[1:2] == [name] for ln in proc.out.splitlines()):
                raise StepFailed(f"doctor has no {name} line\n{proc.text()}")
        return ", ".join(
            " ".join(ln.split()[2:4]) for ln in proc.out.splitlines() if ln.startswith("OK ")
        )

    def mgmt_init(self) -> str:
        s = self.s
        gen = [
            "gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
            "--quick-gen-key", "qgitconf CI <ci@example.invalid>", "ed25519", "sign", "1y",
        ]  # fmt: skip
        expect(s.login(MGMT, gen))
        cols = expect(s.login(MGMT, ["gpg", "--batch", "--with-colons", "--list-keys"])).out
        self.fpr = next(ln.split(":")[9] for ln in cols.splitlines() if ln.startswith("fpr:"))
        key = expect(s.login(MGMT, ["gpg", "--batch", "--armor", "--export", self.fpr])).stdout
        s.put(f"{MGMT.home}/signing-key.asc", key, 0o644, MGMT)
        # what `qvm-copy` from the vault leaves in the target
        s.put(f"{TARGET.home}/QubesIncoming/vault/signing-key.asc", key, 0o644, TARGET)
        init = ["qgitconf", "init", "--signing-key", self.fpr, "--gpg-program", "gpg",
                "--key-file", "signing-key.asc"]  # fmt: skip
        expect(s.login(MGMT, init), contains="initialised")
        expect(s.login(MGMT, ["qgitconf", "target", "add", "personal"]))
        # doctor in config-mgmt makes a test signature through gpg.program
        expect(s.login(MGMT, ["qgitconf", "doctor"]))
        return f"key {self.fpr[:16]}…"

    def _git(self, *args: str, status: int = 0, contains: str | None = None) -> Proc:
        return expect(self.s.login(MGMT, ["git", "-C", "work", *args]), status, contains)

    def push_signed(self) -> str:
        s = self.s
        expect(s.login(MGMT, ["git", "clone", "-q", "-b", "personal", "qgitconf.git", "work"]))
        for k, v in (
            ("user.name", "qgitconf CI"),
            ("user.email", "ci@example.invalid"),
            ("user.signingkey", self.fpr),
            ("gpg.program", "gpg"),
            ("commit.gpgsign", "true"),
        ):
            self._git("config", k, v)
        s.put(f"{MGMT.home}/work/.gitconfig", GITCONFIG.encode(), 0o644, MGMT)
        s.put(f"{MGMT.home}/work/.bashrc", BASHRC.encode(), 0o644, MGMT)
        self._git("add", ".gitconfig", ".bashrc")
        self._git("commit", "-q", "-m", "git aliases and a prompt")
        self._git("verify-commit", "HEAD")
        self._git("push", "-q", "origin", "personal")
        self.pushed = self._git("rev-parse", "HEAD").out.strip()
        tip = expect(s.login(MGMT, ["git", "--git-dir=qgitconf.git", "rev-parse", "personal"]))
        if tip.out.strip() != self.pushed:
            raise StepFailed(f"the bare repo's personal is {tip.out.strip()}, pushed {self.pushed}")
        return f"personal at {self.pushed[:12]}"

    def push_unsigned(self) -> str:
        s = self.s
        s.put(f"{MGMT.home}/work/.profile", b"# unsigned\n", 0o644, MGMT)
        self._git("add", ".profile")
        self._git("-c", "commit.gpgsign=false", "commit", "-q", "-m", "unsigned")
        proc = s.login(MGMT, ["git", "-C", "work", "push", "origin", "personal"])
        if proc.status == 0:
            raise StepFailed(f"an unsigned push was accepted\n{proc.text()}")
        err = proc.stderr.decode(errors="replace")
        if "pre-receive hook declined" not in err:
            raise StepFailed(f"the push failed, but not in the pre-receive hook\n{proc.text()}")
        tip = expect(s.login(MGMT, ["git", "--git-dir=qgitconf.git", "rev-parse", "personal"]))
        if tip.out.strip() != self.pushed:
            raise StepFailed("the refused push moved the branch")
        self._git("reset", "-q", "--hard", "origin/personal")
        reason = next((ln for ln in err.splitlines() if "remote:" in ln), "").strip()
        return reason[:70]

    def target_init(self) -> str:
        argv = ["qgitconf", "target", "init", "--source", "config-mgmt", "--key-file",
                "QubesIncoming/vault/signing-key.asc", "--fingerprint", self.fpr]  # fmt: skip
        expect(self.s.login(TARGET, argv))
        return ""

    def publish(self) -> str:
        proc = self.s.login(MGMT, ["qgitconf", "publish", "personal", "--json"])
        try:
            results = json.loads(proc.stdout)
        except ValueError:
            raise StepFailed(f"publish --json printed no JSON\n{proc.text()}") from None
        rows = results if isinstance(results, list) else results.get("results", [results])
        if not rows or rows[0].get("status") != "denied":
            raise StepFailed(f"expected publish to report denied\n{proc.text()}")
        kept = self.s.path(f"{MGMT.home}/qgitconf.git/qgitconf/updates/personal.update")
        if not kept.is_file():
            raise StepFailed(f"no kept update at {kept}")
        return f"exit {proc.status}, {kept.stat().st_size} bytes kept"

    def fetch(self) -> str:
        proc = self.s.qrexec_service(MGMT, "qgitconf.Fetch", "personal", "config-mgmt", b"")
        expect(proc)
        if not proc.stdout.startswith(b"QGITCONF-UPDATE 1\n"):
            raise StepFailed(f"Fetch did not answer an update\n{proc.text()}")
        self.update = proc.stdout
        return f"{len(self.update)} bytes"

    def _receive(self, data: bytes) -> tuple[Proc, dict[str, object]]:
        proc = self.s.qrexec_service(TARGET, "qgitconf.Receive", "config-mgmt", "personal", data)
        lines = proc.stdout.splitlines()
        try:
            reply = json.loads(lines[-1]) if lines else {}
        except ValueError:
            raise StepFailed(f"Receive answered no JSON line\n{proc.text()}") from None
        return proc, reply

    def receive_tampered(self) -> str:
        head, sep, rest = self.update.partition(b"\n\n")
        lengths = dict(
            ln.split(b": ") for ln in head.splitlines()[1:]
        )  # statement-length, signature-length
        n, m = int(lengths[b"statement-length"]), int(lengths[b"signature-length"])
        sig = bytearray(rest[n : n + m])
        # a byte in the middle of the armored signature: base64, change it to another
        i = len(sig) // 2
        while not chr(sig[i]).isalnum():
            i += 1
        sig[i] = ord("A") if sig[i] != ord("A") else ord("B")
        bad = head + sep + rest[:n] + bytes(sig) + rest[n + m :]
        # DESIGN rule 8: the home and the agent state stay byte-identical, but for the
        # append-only log of rejected attempts
        skip = (".local/share/qgitconf/rejected.log",)
        before = self.s.tree_digest(TARGET.home, skip)
        proc, reply = self._receive(bad)
        if proc.status == 0 or reply.get("result") != "rejected":
            raise StepFailed(f"a changed signature was not rejected\n{proc.text()}")
        if self.s.tree_digest(TARGET.home, skip) != before:
            raise StepFailed("a rejected update changed the target's home or state")
        if not self.s.path(f"{TARGET.home}/{skip[0]}").is_file():
            raise StepFailed("the rejection was not logged")
        return f"rejected: {reply.get('reason')}"

    def receive(self) -> str:
        proc, reply = self._receive(self.update)
        if proc.status != 0 or reply.get("result") != "staged":
            raise StepFailed(f"the update was not staged\n{proc.text()}")
        if reply.get("commit") != self.pushed:
            raise StepFailed(f"staged {reply.get('commit')}, pushed {self.pushed}")
        return f"staged {self.pushed[:12]}, sequence {reply.get('sequence')}"

    def review(self) -> str:
        proc = expect(self.s.login(TARGET, ["qgitconf", "review"]), contains=".gitconfig")
        if self.fpr not in proc.out.replace(" ", ""):
            raise StepFailed(f"review does not name the signer {self.fpr}\n{proc.text()}")
        return ""

    def apply(self) -> str:
        expect(self.s.login(TARGET, ["qgitconf", "apply", "--yes"]))
        for rel, want in ((".gitconfig", GITCONFIG), (".bashrc", BASHRC)):
            p = self.s.path(f"{TARGET.home}/{rel}")
            if not p.is_file() or p.read_text() != want:
                raise StepFailed(f"{p} is not what was committed")
            if p.stat().st_uid != TARGET.uid:
                raise StepFailed(f"{p} is not owned by {TARGET.name}")
        return ""

    def doctor_target(self) -> str:
        proc = expect(self.s.login(TARGET, ["qgitconf", "doctor"]))
        return next((ln.strip() for ln in proc.out.splitlines() if "Receive" in ln), "")[:70]

    def revert(self) -> str:
        expect(self.s.login(TARGET, ["qgitconf", "revert"]))
        left = [r for r in (".gitconfig", ".bashrc") if self.s.path(f"{TARGET.home}/{r}").exists()]
        if left:
            raise StepFailed(f"revert to the state before the first apply left {left}")
        return "the files are gone again"

    def lab_tools(self) -> str:
        # what .ci/run installs for the real lab (docs/lab.md)
        tools = ["build-essential", "pkg-config", "libpam0g-dev", "python3-pyinotify"]
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        proc = self.s.run(["apt-get", "install", "-y", *tools], env=env, timeout=1200, apt=True)
        expect(proc)
        return f"{proc.out.count(chr(10) + 'Setting up ')} packages set up"

    def lab_demo(self) -> str:
        """The installed package's own demo: no checkout in this system; the lab takes
        the installed services, rpc-config and policy (qgitconf.lab.install.qgitconf_files)."""
        s = self.s
        code = (
            "from qgitconf.lab.install import qgitconf_files as f; x = f(); "
            "print(x.source, x.rpc, x.rpc_config, x.policy)"
        )
        where = expect(s.run(["python3", "-I", "-c", code], cwd="/")).out.split()
        want = ["None", "/etc/qubes-rpc", "/etc/qubes/rpc-config", "/usr/share/qgitconf/policy"]
        if where != want:
            raise StepFailed(f"the lab would take its files from {where}, not {want}")
        proc = s.run(
            ["qgitconf", "lab", "demo"],
            env={"QUBES_SRC_DIR": "/srv/qubes-src"},
            cwd="/",
            timeout=1500,
            qubes_src=self.qubes_src,
        )
        expect(proc, contains="Demo complete")
        self.demo_output = proc.out
        last = [ln for ln in proc.out.splitlines() if ln.startswith("Demo complete")]
        return last[0][:90] if last else ""


# -- driver -----------------------------------------------------------------------------


def build_deb() -> Path:
    proc = subprocess.run(
        ["make", "-C", str(ROOT), "deb"],
        capture_output=True,
        text=True,
        env=dict(os.environ, MAKEFLAGS=""),
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise StepFailed(f"make deb failed\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    debs = sorted((ROOT / "dist").glob("qgitconf_*_all.deb"), key=lambda p: p.stat().st_mtime)
    if not debs:
        raise StepFailed("make deb made no dist/qgitconf_*_all.deb")
    return debs[-1]


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in the host's namespace (there should be none)."""
    top = str(root.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == top or point.startswith(top + "/"):
            found.append(point)
    return found


def remove_system(root: Path) -> None:
    """Remove an unpacked system, never through a mount (a bound /sys, the sources or
    the package cache): every mount lived in a namespace that is gone, and this checks."""
    leaked = mounts_under(root)
    if leaked:
        raise StepFailed(f"not removing {root}: still mounted there: {', '.join(leaked)}")
    shutil.rmtree(root, ignore_errors=True)


def run_suite(suite: str, deb: Path, keep: bool, qubes_src: Path | None = None) -> Result:
    result = Result(suite)
    t0 = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"{suite}-", dir=WORK))
    log(f"== {suite} ({SUITES[suite]}): {root}")
    try:
        tb = time.monotonic()
        tar, how = base_tarball(suite)
        result.steps.append((f"base system ({how})", "OK", time.monotonic() - tb))
        log(f"  [{suite}] base system ({how}, {tar}): {time.monotonic() - tb:.1f} s")
        subprocess.run(["tar", "-xf", str(tar), "-C", str(root)], check=True, timeout=300)
        Flow(System(suite, root), deb, result, qubes_src).all()
    except StepFailed as e:
        result.failure = str(e)
        log(f"\nFAILED: {e}\n")
    except (OSError, subprocess.SubprocessError) as e:
        result.failure = f"{suite}: {type(e).__name__}: {e}"
        log(f"\nFAILED: {result.failure}\n")
    finally:
        result.seconds = time.monotonic() - t0
        if keep:
            log(f"  kept {root}")
        else:
            try:
                remove_system(root)
            except StepFailed as e:
                result.failure = result.failure or str(e)
                log(f"\nFAILED: {e}\n")
    return result


def summary(results: Sequence[Result], deb: Path) -> str:
    lines = [f"\n== clean install of {deb.name}"]
    for r in results:
        lines.append(
            f"{r.suite} ({SUITES[r.suite]}): {'PASS' if r.ok else 'FAIL'} in {r.seconds:.0f} s"
        )
        for name in (*PACKAGES, "qgitconf"):
            if name in r.versions:
                lines.append(f"  {name:16} {r.versions[name]}")
        for name, status, dt in r.steps:
            lines.append(f"  {status.split(' ')[0]:4} {dt:6.1f} s  {name}")
        if r.failure:
            lines.append("  " + r.failure.splitlines()[0])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make test-install", description=__doc__.split("\n")[0])
    p.add_argument("suites", nargs="*", default=list(SUITES), choices=[*SUITES, []])
    p.add_argument("--deb", type=Path, help="the package to install (default: make deb)")
    p.add_argument("--keep", action="store_true", help="keep the unpacked systems")
    p.add_argument(
        "--lab-demo",
        action="store_true",
        help="then install the lab's build tools and run `qgitconf lab demo` there "
        "(Qubes sources from $QUBES_SRC_DIR or ../shared/qubes-src)",
    )
    args = p.parse_args(argv)
    qubes_src = None
    if args.lab_demo:
        qubes_src = Path(os.environ.get("QUBES_SRC_DIR") or ROOT.parent / "shared/qubes-src")
        if not (qubes_src / "qubes-core-qrexec.tar.gz").is_file():
            print(f"--lab-demo: no Qubes sources in {qubes_src}", file=sys.stderr)
            return 2
        qubes_src = qubes_src.resolve()
    if os.geteuid() != 0:
        print("make test-install needs root (chroot, namespaces)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        deb = args.deb.resolve() if args.deb else build_deb()
    except StepFailed as e:
        print(e, file=sys.stderr)
        return 1
    log(f"package: {deb} ({time.monotonic() - t0:.0f} s)")
    results = [run_suite(s, deb, args.keep, qubes_src) for s in args.suites or SUITES]
    print(summary(results, deb))
    print(f"total {time.monotonic() - t0:.0f} s")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
