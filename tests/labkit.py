"""Helpers for tests that drive the lab: run commands in qubes, snapshot state.

The lab is the real one (:class:`qgitconf.lab.real.RealLab`): every command runs inside
a qube through Qubes' own qrexec, as its own user; files the host puts into a home go
through ``lab.write`` so that the qube's user owns them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import shlex
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from qgitconf.errors import GitError, TooLargeError
from qgitconf.lab.real import RealLab
from qgitconf.lab.real_qubes import KEY_FILE
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.qubes.qrexec import CallResult

Lab = RealLab

INCOMING = f"QubesIncoming/vault/{KEY_FILE}"


def run(
    lab: Lab, qube: str, *args: str, input: bytes | None = None, expect: int | None = 0
) -> subprocess.CompletedProcess[bytes]:
    """Run a command in a lab qube; check its exit status unless ``expect`` is None."""
    proc = lab.run(qube, list(args), input=input)
    if expect is not None and proc.returncode != expect:
        raise AssertionError(
            f"{args} in {qube} exited {proc.returncode} (expected {expect})\n"
            f"stdout: {proc.stdout.decode(errors='replace')}\n"
            f"stderr: {proc.stderr.decode(errors='replace')}"
        )
    return proc


def qg(lab: Lab, qube: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return run(lab, qube, "qgitconf", *args, **kw)


def setup_lab(lab: Lab) -> None:
    """config-mgmt repo with targets personal and work; both targets pinned."""
    qg(lab, "config-mgmt", "init", "--signing-key", lab.fingerprint)
    for t in ("personal", "work"):
        qg(lab, "config-mgmt", "target", "add", t)
        qg(
            lab,
            t,
            "target",
            "init",
            "--source",
            "config-mgmt",
            "--key-file",
            INCOMING,
            "--fingerprint",
            lab.fingerprint,
        )


def commit_files(
    lab: Lab, target: str, files: Mapping[str, str | bytes | tuple[str | bytes, int]], message: str
) -> str:
    """Write ``files`` ($HOME-relative; a ``(content, mode)`` pair for another mode than
    0644) for ``target`` in config-mgmt and commit them."""
    for rel, spec in files.items():
        content, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        data = content.encode() if isinstance(content, str) else content
        lab.write("config-mgmt", f"src/{target}/{rel}", data, mode=mode)
        qg(lab, "config-mgmt", "add", target, f"src/{target}/{rel}", "--as", rel)
    qg(lab, "config-mgmt", "commit", target, "-m", message)
    return tip(lab, target)


def tip(lab: Lab, target: str) -> str:
    return (
        run(
            lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "rev-parse", f"refs/heads/{target}"
        )
        .stdout.decode()
        .strip()
    )


def publish(lab: Lab, target: str, expect: int = 0) -> dict[str, Any]:
    out = qg(lab, "config-mgmt", "publish", target, "--json", expect=expect).stdout
    return dict(json.loads(out)[0])


def kept_update(lab: Lab, target: str) -> bytes:
    return (
        lab.home("config-mgmt") / "qgitconf.git" / "qgitconf" / "updates" / f"{target}.update"
    ).read_bytes()


def send(lab: Lab, source: str, target: str, data: bytes) -> tuple[int, dict[str, Any] | None]:
    """Pipe ``data`` into ``target``'s qgitconf.Receive from ``source`` (through policy)."""
    proc = run(lab, source, "qrexec-client-vm", target, "qgitconf.Receive", input=data, expect=None)
    out = proc.stdout.decode().strip()
    return proc.returncode, (json.loads(out) if out else None)


def snapshot(root: Path, *, skip: tuple[str, ...] = ("rejected.log",)) -> dict[str, Any]:
    """Every file, link and directory under ``root``: mode and content, byte for byte."""
    out: dict[str, Any] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if name in skip:
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


def target_snapshot(lab: Lab, qube: str) -> dict[str, Any]:
    """The whole home of a target qube (agent state included), minus rejected.log."""
    return snapshot(lab.home(qube))


def rejected_log(lab: Lab, qube: str) -> list[dict[str, Any]]:
    p = lab.home(qube) / ".local/share/qgitconf/rejected.log"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines()]


def signer_in(lab: Lab, qube: str, fingerprint: str) -> Callable[[bytes], bytes]:
    """Sign detached and armored with ``fingerprint``'s key, by gpg inside ``qube``."""

    def sign(data: bytes) -> bytes:
        cmd = ["gpg", "--batch", "--armor", "--detach-sign", "--local-user", fingerprint]
        return run(lab, qube, *cmd, input=data).stdout

    return sign


def vault_signer(lab: Lab) -> Callable[[bytes], bytes]:
    """The vault's own key, used in the vault (as split-GPG's gpg-server would)."""
    return signer_in(lab, "vault", lab.fingerprint)


def make_key_in(lab: Lab, qube: str, uid: str, *extra: str) -> str:
    """A new ed25519 signing key in ``qube``'s own GnuPG home; its fingerprint."""
    run(
        lab,
        qube,
        "gpg",
        "--batch",
        "--passphrase",
        "",
        "--quick-gen-key",
        uid,
        "ed25519",
        "sign",
        *(extra or ("never",)),
    )
    out = run(lab, qube, "gpg", "--with-colons", "--list-secret-keys", uid).stdout.decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def export_key(lab: Lab, qube: str, fingerprint: str) -> bytes:
    return run(lab, qube, "gpg", "--armor", "--export", fingerprint).stdout


def rogue_signer(lab: Lab) -> Callable[[bytes], bytes]:
    """A compromised config-mgmt without the vault: a key of its own, made there."""
    fpr = make_key_in(lab, "config-mgmt", "Rogue <rogue@lab.invalid>")
    return signer_in(lab, "config-mgmt", fpr)


def in_qube(
    lab: Lab, qube: str, cmd: list[str], stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``cmd`` in ``qube`` (as its user, through the real qrexec), callable from
    in-process code under :func:`as_qube_user` and from any thread: only the child goes
    back to root (the real uid) to enter the lab; this process keeps its uids."""
    return subprocess.run(
        lab.qrexec_argv(qube, "cd && exec " + shlex.join(cmd)),
        input=stdin,
        capture_output=True,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        user=0,
        group=0,
    )


class QubeTransport:
    """The transport seam's lab adapter: ``qrexec-client-vm TARGET SERVICE`` run inside
    ``source`` through the real qrexec, so an in-process publish reaches the target
    exactly as the installed client would."""

    def __init__(self, lab: Lab, source: str = "config-mgmt") -> None:
        self.lab = lab
        self.source = source

    def call(self, target: str, service: str, stdin: bytes, stdout_cap: int) -> CallResult:
        proc = in_qube(self.lab, self.source, ["qrexec-client-vm", target, service], stdin)
        if len(proc.stdout) > stdout_cap:
            raise TooLargeError(f"{service} in {target} answered more than {stdout_cap} bytes")
        return CallResult(proc.returncode, proc.stdout, proc.stderr)


def mgmt(lab: Lab) -> MgmtRepo:
    """config-mgmt's repo for in-process calls (under :func:`as_qube_user`)."""
    home = lab.home("config-mgmt")
    return MgmtRepo(home / "qgitconf.git", home, host_env(lab, "config-mgmt"))


@contextlib.contextmanager
def in_process_publish(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> Iterator[MgmtRepo]:
    """In-process publish on config-mgmt's repo, as config-mgmt's user.  The statement
    is signed by the repo's own ``gpg.program`` (qubes-gpg-client-wrapper) run in
    config-mgmt, through the real split-GPG: the host has no split-GPG client.  Send it
    with ``QubeTransport(lab)``."""
    from qgitconf.mgmt import update as update_mod

    def sign_in_config_mgmt(
        program: str, key: str, payload: bytes, env: Mapping[str, str]
    ) -> bytes:
        cmd = [program, "--detach-sign", "--armor", "--local-user", key]
        proc = in_qube(lab, "config-mgmt", cmd, payload)
        if proc.returncode != 0 or b"-----BEGIN PGP SIGNATURE-----" not in proc.stdout:
            raise GitError(f"signing with {program} in config-mgmt failed: {proc.stderr!r}")
        return proc.stdout

    monkeypatch.setattr(update_mod, "sign_detached", sign_in_config_mgmt)
    with as_qube_user(lab, "config-mgmt"):
        yield mgmt(lab)


QUBE_HOME = Path("/home/user")


def host_path(lab: Lab, qube: str, inside: str | Path) -> Path:
    """The host path of ``inside`` (a path under ``/home/user`` as the qube sees it)."""
    return lab.home(qube) / Path(inside).relative_to(QUBE_HOME)


def qube_path(lab: Lab, qube: str, host: str | Path) -> str:
    """The path as the qube sees it of ``host`` (a host path under the qube's home)."""
    return str(QUBE_HOME / Path(host).relative_to(lab.home(qube)))


def host_env(lab: Lab, qube: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for calling agent functions in-process on ``qube``'s home (from
    the host): HOME is the host path of that home.  Use with :func:`as_qube_user`."""
    env = {"HOME": str(lab.home(qube)), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update(LANG="C.UTF-8", GIT_CONFIG_NOSYSTEM="1", **(extra or {}))
    return env


# What the agent imports lazily: this Python's standard library and the venv lie under
# /root (0700), out of a qube user's reach, so these are imported first, as root.
LAZY_IMPORTS = (
    "ctypes",
    "gc",
    "html",
    "mmap",
    "pwd",
    "shlex",
    "tempfile",
    "traceback",
    "encodings.latin_1",
    "dulwich.midx",
    "dulwich.object_store",
    "dulwich.refs",
    "dulwich.repo",
    "gnupg",
    "qgitconf.agent.commands",
    "concurrent.futures",
    "concurrent.futures.thread",
)
if importlib.util.find_spec("dulwich.midx") is None:  # dulwich 0.21 and 0.22: none to import
    LAZY_IMPORTS = tuple(m for m in LAZY_IMPORTS if m != "dulwich.midx")


@contextlib.contextmanager
def searchable(lab: Lab) -> Iterator[None]:
    """The lab's run root (0700 root, ``mkdtemp``) searchable (o+x, not listable) for the
    block, so that a qube user's uid on this host reaches that qube's home."""
    mode = stat.S_IMODE(lab.root.stat().st_mode)
    lab.root.chmod(mode | 0o001)
    try:
        yield
    finally:
        lab.root.chmod(mode)


def sh(lab: Lab, qube: str, script: str, user: str = "user", rc: int = 0) -> str:
    """``sh -c script`` in ``qube`` through the real qrexec (as ``user``); its stdout."""
    proc = lab.run(qube, ["sh", "-c", script], user=user)
    assert proc.returncode == rc, (qube, script, proc.stdout, proc.stderr)
    return proc.stdout.decode()


def exists(lab: Lab, qube: str, path: str) -> bool:
    """Whether ``path`` exists in ``qube`` (asked as root, through the real qrexec)."""
    return lab.run(qube, ["test", "-e", path], user="root").returncode == 0


@contextlib.contextmanager
def as_qube_user(lab: Lab, qube: str) -> Iterator[None]:
    """Run in-process code with ``qube``'s uid as effective uid, so that what it writes
    into the qube's home belongs to the qube's user (the tests run as root).

    The lab's run root is 0700 root (``mkdtemp``): it is made searchable (o+x, not
    listable) for the block, so the host path of the qube's home can be reached; the
    agent's lazy imports (:data:`LAZY_IMPORTS`) are done first, as root.
    """
    for module in LAZY_IMPORTS:
        importlib.import_module(module)
    with searchable(lab), as_uid(lab.uid(qube)):
        yield


@contextlib.contextmanager
def as_uid(uid: int) -> Iterator[None]:
    """In-process code with ``uid`` as effective uid and gid (back to root after)."""
    os.setegid(uid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
