"""DESIGN rule 12: nothing an update writes changes how the next update is verified.

Unit level: the environment a service keeps, the programs the agent runs, the rpc
files as installed.  The same rule on the real qrexec (an update that places
``~/bin/gpg``, a ``.pth`` file and a ``~/.profile`` PATH, then the next update) is in
tests/test_e2e_lab.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from qgitconf import sysprog
from qgitconf.service import KEPT, service_env

ROOT = Path(__file__).resolve().parent.parent

# What ~/.profile (written by an earlier update) could export before the service starts.
HOSTILE_ENV = {
    "PATH": "/home/user/bin:/home/user/.local/bin:/usr/bin:/bin",
    "HOME": "/tmp/elsewhere",
    "LD_PRELOAD": "/home/user/.x.so",
    "LD_LIBRARY_PATH": "/home/user/lib",
    "PYTHONPATH": "/home/user/py",
    "PYTHONSTARTUP": "/home/user/py/start.py",
    "PYTHONHOME": "/home/user/pyhome",
    "GNUPGHOME": "/home/user/.fake-gnupg",
    "GIT_CONFIG_GLOBAL": "/home/user/.evil-gitconfig",
    "GIT_CONFIG_PARAMETERS": "'core.fsmonitor'='/home/user/x'",
    "GIT_EXEC_PATH": "/home/user/git-core",
    "GIT_EXTERNAL_DIFF": "/home/user/x",
    "GIT_PAGER": "/home/user/x",
    "QGITCONF_QUBE_NAME": "work",
    "QGITCONF_SYSCONFDIR": "/tmp/etc",
    "BASH_ENV": "/home/user/x",
    "ENV": "/home/user/x",
    "QREXEC_REMOTE_DOMAIN": "config-mgmt",
    "QREXEC_SERVICE_FULL_NAME": "qgitconf.Receive",
    "DISPLAY": ":0",
}


def test_service_env_keeps_only_what_it_names() -> None:
    env = service_env(HOSTILE_ENV, Path("/home/user"))
    assert env == {
        "PATH": sysprog.SYSTEM_PATH,
        "HOME": "/home/user",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "QREXEC_REMOTE_DOMAIN": "config-mgmt",
        "QREXEC_SERVICE_FULL_NAME": "qgitconf.Receive",
        "DISPLAY": ":0",
    }
    assert set(KEPT) >= {"QREXEC_REMOTE_DOMAIN", "QREXEC_SERVICE_FULL_NAME"}


def test_system_path_has_no_user_directory() -> None:
    for entry in sysprog.SYSTEM_PATH.split(":"):
        assert entry.startswith("/") and not entry.startswith(("/home", "/root", "/tmp"))
        st = os.stat(entry) if os.path.isdir(entry) else None
        assert st is None or st.st_uid == 0


@pytest.mark.parametrize("name", ["gpg", "git", "env", "sh"])
def test_programs_resolve_on_the_system_path_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A program of the same name earlier on the caller's PATH is never chosen."""
    fake = tmp_path / "bin" / name
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    sysprog.find.cache_clear()
    found = sysprog.program(name)
    assert found != str(fake)
    assert os.path.dirname(found) in sysprog.SYSTEM_PATH.split(":")


def test_git_env_isolates_config_and_attributes(tmp_path: Path) -> None:
    """git run the agent's way reads neither ~/.gitconfig nor ~/.config/git/attributes."""
    home = tmp_path / "home"
    (home / ".config/git").mkdir(parents=True)
    (home / ".gitconfig").write_text("[core]\n\tbigFileThreshold = 1\n[diff]\n\tnoprefix = true\n")
    (home / ".config/git/attributes").write_text("* binary\n")
    repo = tmp_path / "repo.git"
    git = sysprog.program("git")
    env = sysprog.git_env(home, repo)
    subprocess.run([git, "init", "-q", "--bare", str(repo)], env=env, check=True)
    out = subprocess.run(
        [git, *sysprog.GIT_ISOLATION, "config", "--get", "core.bigFileThreshold"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stdout.strip() == "512m"
    listed = subprocess.run(
        [git, "config", "--list", "--show-origin"], env=env, capture_output=True, text=True
    ).stdout
    assert ".gitconfig" not in listed and "attributes" not in listed


RPC = sorted((ROOT / "rpc").glob("qgitconf.*"))


@pytest.mark.parametrize("rpc", RPC, ids=[p.name for p in RPC])
def test_rpc_file_starts_from_an_empty_environment(tmp_path: Path, rpc: Path) -> None:
    """Run the rpc file with the hostile environment and `env` in place of the service:
    what reaches the service is the allowlist, whatever ~/.profile exported."""
    script = rpc.read_text().replace(
        f"/usr/bin/qgitconf-service {rpc.name.split('.')[1].lower()}", "/usr/bin/env"
    )
    assert script != rpc.read_text()
    (tmp_path / "rpc").write_text(script)
    out = subprocess.run(
        ["/bin/sh", str(tmp_path / "rpc")],
        env=HOSTILE_ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert set(got) == {"HOME", "QREXEC_REMOTE_DOMAIN", "QREXEC_SERVICE_FULL_NAME", "DISPLAY"}
    for line in rpc.read_text().splitlines():
        if line.startswith("exec "):
            assert line.split()[1].startswith("/"), line
