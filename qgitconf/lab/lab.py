"""A simulated Qubes OS: qubes as directories, each with its own HOME and PATH.

``LAB/lab.json`` lists the qubes (class, tags, running); ``LAB/dom0/policy.d`` holds a
copy of the project's ``policy/`` files; every other qube gets the project's ``rpc/``
services installed (as a template package would) and shims on its PATH:
``qrexec-client-vm`` (the emulator in ``qgitconf.lab.qrexec``, which enforces the
policy files) and, in config-mgmt, ``qubes-gpg-client-wrapper`` (split-GPG to the
vault).  The vault holds a fresh OpenPGP key.

The ``qrexec-client-vm`` shim imports this module on every call, so it imports at
run time only what :class:`Lab` needs; the rest is imported where it is used.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from qgitconf.errors import ConfigError, UsageError
from qgitconf.policy import QubeInfo

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs every qrexec call
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Mapping, Sequence
    from typing import Any

TARGET_TAG = "qgitconf-target"
QUBES: dict[str, dict[str, Any]] = {
    "dom0": {"class": "AdminVM", "tags": []},
    "vault": {"class": "AppVM", "tags": []},
    "config-mgmt": {"class": "AppVM", "tags": []},
    "personal": {"class": "AppVM", "tags": [TARGET_TAG]},
    "work": {"class": "AppVM", "tags": [TARGET_TAG]},
    "untrusted": {"class": "AppVM", "tags": []},
}
KEY_FILE = "qgitconf-signing-key.asc"


def source_root() -> Path:
    """The project tree holding ``rpc/`` and ``policy/`` (a checkout or installed data)."""
    env = os.environ.get("QGITCONF_SOURCE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent


def gpg_in(home: Path, *args: str, input: bytes | None = None) -> bytes:
    """Run gpg in the GnuPG home ``home`` (batch, no tty); return stdout or raise ConfigError."""
    import subprocess

    proc = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", *args],
        input=input,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ConfigError(f"gpg {args[0]} failed: {proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout


def make_key(home: Path, uid: str, *extra: str) -> str:
    """Generate an ed25519 signing key without passphrase in ``home``; return its fingerprint."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    gpg_in(
        home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", *(extra or ("never",))
    )
    out = gpg_in(home, "--with-colons", "--list-secret-keys", uid).decode()
    fprs = [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]
    return fprs[0]


@dataclass(frozen=True)
class Lab:
    """A lab directory."""

    root: Path

    # -- layout -------------------------------------------------------------------------

    def qube(self, name: str) -> Path:
        return self.root / "qubes" / name

    def home(self, name: str) -> Path:
        return self.qube(name) / "home"

    def rpc_dir(self, name: str) -> Path:
        return self.qube(name) / "rpc"

    @property
    def policy_dir(self) -> Path:
        return self.root / "dom0" / "policy.d"

    @property
    def vault_gnupg(self) -> Path:
        return self.home("vault") / ".gnupg"

    def info(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "lab.json").read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.root} is not a qgitconf lab (run: qgitconf lab init)") from e
        if not isinstance(data, dict):
            raise ConfigError("lab.json is corrupt")
        return data

    def save_info(self, data: Mapping[str, Any]) -> None:
        (self.root / "lab.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def qubes(self) -> dict[str, QubeInfo]:
        return {
            name: QubeInfo(name, frozenset(q.get("tags", [])), q.get("class", "AppVM"))
            for name, q in self.info()["qubes"].items()
        }

    def set_running(self, name: str, running: bool) -> None:
        data = self.info()
        data["qubes"][name]["running"] = running
        self.save_info(data)

    def set_ask_answer(self, answer: str) -> None:
        data = self.info()
        data["ask"] = answer
        self.save_info(data)

    @property
    def fingerprint(self) -> str:
        return str(self.info()["vault_key"])

    # -- running things "inside" a qube -------------------------------------------------

    def env(self, name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        if name not in self.info()["qubes"] or name == "dom0":
            raise UsageError(f"no qube {name!r} to run in")
        path = os.pathsep.join(
            [
                str(self.qube(name) / "bin"),
                str(Path(sys.executable).parent),
                "/usr/local/bin",
                "/usr/bin",
                "/bin",
            ]
        )
        env = {
            "HOME": str(self.home(name)),
            "USER": "user",
            "PATH": path,
            "LANG": "C.UTF-8",
            "QGITCONF_QUBE_NAME": name,
            "QGITCONF_LAB": str(self.root),
            "QGITCONF_SYSCONFDIR": str(self.qube(name) / "etc" / "qgitconf"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for key in ("TERM", "COVERAGE_PROCESS_START", "QGITCONF_SOURCE_DIR"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update(extra or {})
        return env

    def run(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        input: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``cmd`` in qube ``name`` and capture its output."""
        import subprocess

        return subprocess.run(
            list(cmd),
            input=input,
            capture_output=True,
            check=False,
            cwd=self.home(name),
            env=self.env(name, extra_env),
        )

    def close(self) -> None:
        """Stop the gpg-agents the lab's keys started."""
        import subprocess

        for gnupg in self.root.glob("qubes/*/home/.gnupg"):
            subprocess.run(
                ["gpgconf", "--homedir", str(gnupg), "--kill", "all"],
                capture_output=True,
                check=False,
            )


def _shim(path: Path, module: str) -> None:
    """Install a stand-in for one of Qubes' C clients, started as cheaply as Python allows.

    ``-S`` skips ``site`` (and the ``.pth`` import hooks of the venv), ``-P`` keeps the
    qube's working directory off ``sys.path``; the shim finds qgitconf by the one path
    it is given and imports the stdlib only.
    """
    import shlex

    package_root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.insert(0, {json.dumps(package_root)}); "
    code += f"from {module} import main; sys.exit(main())"
    path.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S -P -c {shlex.quote(code)} "$@"\n'
    )
    path.chmod(0o755)


def init_lab(root: Path, src: Path | None = None) -> Lab:
    """Create a lab at ``root`` (which must not exist or be empty)."""
    import shutil

    src = src or source_root()
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"{root} exists and is not empty")
    for needed in (src / "rpc", src / "policy"):
        if not needed.is_dir():
            raise ConfigError(f"{needed} not found (set QGITCONF_SOURCE_DIR to the project tree)")
    lab = Lab(root)
    root.mkdir(parents=True, exist_ok=True)
    lab.policy_dir.mkdir(parents=True)
    for f in sorted((src / "policy").glob("*.policy")):
        shutil.copy2(f, lab.policy_dir / f.name)
    qubes = {n: dict(q, running=True) for n, q in QUBES.items()}
    lab.save_info({"qubes": qubes, "ask": "allow"})
    for name in QUBES:
        if name == "dom0":
            continue
        home = lab.home(name)
        home.mkdir(parents=True)
        (lab.qube(name) / "bin").mkdir()
        rpc = lab.rpc_dir(name)
        rpc.mkdir()
        for f in sorted((src / "rpc").iterdir()):
            if f.is_file():
                shutil.copy2(f, rpc / f.name)
        _shim(lab.qube(name) / "bin" / "qrexec-client-vm", "qgitconf.lab.qrexec")
        (home / ".gitconfig").write_text(
            f"[user]\n\tname = {name} user\n\temail = user@{name}.invalid\n"
            "[init]\n\tdefaultBranch = main\n"
        )
    _shim(lab.qube("config-mgmt") / "bin" / "qubes-gpg-client-wrapper", "qgitconf.lab.splitgpg")
    fpr = make_key(lab.vault_gnupg, "qgitconf lab vault <vault@lab.invalid>")
    public = gpg_in(lab.vault_gnupg, "--armor", "--export", fpr)
    (lab.home("vault") / KEY_FILE).write_bytes(public)
    for name in ("config-mgmt", "personal", "work"):  # as `qvm-copy` from the vault would
        incoming = lab.home(name) / "QubesIncoming" / "vault"
        incoming.mkdir(parents=True)
        (incoming / KEY_FILE).write_bytes(public)
    data = lab.info()
    data["vault_key"] = fpr
    lab.save_info(data)
    return lab
