"""`qgitconf lab up / run / shell / down` on the real lab, as a user types them.

Subprocesses of the `qgitconf` entry point, in a relative lab directory; every
command names it with `--lab`, so a lab the developer has up is left alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qgitconf.lab.build import available
from qgitconf.lab.install import source_copy_ignore
from qgitconf.lab.real_domains import pid_alive
from qgitconf.lab.real_qubes import UID

_OK, _WHY = available()
needs_real_lab = pytest.mark.skipif(not _OK, reason=f"real lab: {_WHY}")
QGITCONF = Path(sys.executable).parent / "qgitconf"


def qgitconf(cwd: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [str(QGITCONF)] if QGITCONF.exists() else [sys.executable, "-m", "qgitconf.cli"]
    return subprocess.run(
        [*argv, *args], cwd=cwd, input=input, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def lab_up(tmp_path: Path) -> Iterator[Path]:
    proc = qgitconf(tmp_path, "lab", "up", "lab")  # relative to the cwd
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"lab up in {tmp_path / 'lab'}" in proc.stdout
    assert "backend: real Qubes qrexec and split-GPG" in proc.stdout
    try:
        yield tmp_path
    finally:
        if (tmp_path / "lab/state.json").exists():
            qgitconf(tmp_path, "lab", "down", "--lab", "lab")


@needs_real_lab
def test_up_run_shell_down(lab_up: Path) -> None:
    cwd = lab_up
    state = (cwd / "lab/state.json").read_text()
    assert '"host_pid"' in state

    proc = qgitconf(cwd, "lab", "run", "--lab", "lab", "personal", "--", "id", "-un")
    assert (proc.returncode, proc.stdout) == (0, "user\n"), proc.stderr
    proc = qgitconf(cwd, "lab", "run", "--lab", "lab", "personal", "--", "id", "-u")
    assert proc.stdout == f"{UID['personal']}\n"
    proc = qgitconf(cwd, "lab", "run", "--lab", "lab", "-u", "root", "personal", "--", "id", "-u")
    assert (proc.returncode, proc.stdout) == (0, "0\n"), proc.stderr  # qvm-run -u root

    # the words reach the qube as typed: nothing on the host expands ~ or $HOME ...
    proc = qgitconf(cwd, "lab", "run", "--lab", "lab", "work", "--", "echo", "~", "$HOME")
    assert proc.stdout == "~ $HOME\n"
    # ... and the qube's own shell expands them to the qube's home, not the host's
    proc = qgitconf(
        cwd, "lab", "run", "--lab", "lab", "work", "--", "sh", "-c", 'echo ~ "$HOME" "$PWD"'
    )
    assert proc.stdout == "/home/user /home/user /home/user\n"

    # stdin, stdout, stderr and the exit status are the remote command's
    proc = qgitconf(
        cwd, "lab", "run", "--lab", "lab", "personal", "--", "sh", "-c", "cat; echo e >&2; exit 7",
        input="in\n",
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "in\n", "e\n")

    # a call between qubes through the real policy: untrusted is refused
    proc = qgitconf(
        cwd, "lab", "run", "--lab", "lab", "untrusted", "--",
        "qrexec-client-vm", "personal", "qgitconf.Receive", input="",
    )  # fmt: skip
    assert proc.returncode == 126
    assert "Request refused" in proc.stderr

    # the shell's prompt names the qube (its hostname is its name, as in Qubes)
    proc = qgitconf(cwd, "lab", "shell", "--lab", "lab", "work", input="hostname\nexit 5\n")
    assert proc.returncode == 5
    assert proc.stdout == "work\n"
    assert "user@work:~$ " in proc.stderr

    proc = qgitconf(cwd, "lab", "run", "--lab", "lab", "nosuch", "--", "true")
    assert proc.returncode == 2
    assert "no qube 'nosuch'" in proc.stderr

    keeper = int(state.split('"pid": ')[1].split(",")[0])
    proc = qgitconf(cwd, "lab", "down", "--lab", "lab")
    assert proc.returncode == 0, proc.stderr
    assert not pid_alive(keeper)
    assert (cwd / "lab").is_dir() and not any((cwd / "lab").iterdir())

    proc = qgitconf(cwd, "lab", "run", "--lab", "lab", "personal", "--", "true")
    assert proc.returncode != 0
    assert "no lab is running in" in proc.stderr


@needs_real_lab
def test_up_refuses_a_directory_that_holds_something_else(tmp_path: Path) -> None:
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab/notes.txt").write_text("mine\n")
    proc = qgitconf(tmp_path, "lab", "up", "lab")
    assert proc.returncode == 2
    assert "is not empty and holds no lab" in proc.stderr
    assert (tmp_path / "lab/notes.txt").read_text() == "mine\n"


def test_a_lab_directory_inside_the_checkout_is_not_copied_into_itself(tmp_path: Path) -> None:
    # `qgitconf lab up ./lab` in the checkout: each boot copies the checkout to
    # ./lab/layers/qgitconf-src; the lab directory must stay out of that copy
    project = tmp_path / "project"
    (project / "qgitconf").mkdir(parents=True)
    (project / "qgitconf/x.py").write_text("")
    (project / "lab/layers").mkdir(parents=True)
    (project / "lab/boot.json").write_text("{}")
    (project / "labels").mkdir()  # a sibling whose name starts the same is copied
    dest = project / "lab/layers/qgitconf-src"
    shutil.copytree(project, dest, ignore=source_copy_ignore(dest))
    assert sorted(p.name for p in dest.iterdir()) == ["labels", "qgitconf"]
