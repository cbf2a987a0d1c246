"""Managed files under real bind mounts, as custom-persist and bind-dirs make them
(qubes-core-agent-linux ``vm-systemd/bind-dirs.sh``: ``mount --bind`` of each declared
path from ``/rw``), on the real lab: root enters personal's mount namespace and
bind-mounts a file over a managed path.  A rename onto a mount point fails with EBUSY;
apply and revert must write such a file in place through the journal, and a crash at
any step must roll back to the old content."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.labkit import Lab, commit_files, publish, qg

SOURCE = "/run/qgc-persist/bashrc"  # outside the home: the "persistent" copy
TARGET = "/home/user/.bashrc"


def _ns(lab: Lab, script: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``sh -c script`` as root in personal's mount namespace."""
    pid = lab.in_root("personal").parent.name  # /proc/<holder pid>/root
    return subprocess.run(
        ["nsenter", "-t", pid, "-m", "--", "sh", "-c", script],
        capture_output=True,
        check=False,
    )


def _cat(lab: Lab, path: str) -> bytes:
    proc = _ns(lab, f"cat {path}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _mounted(lab: Lab) -> bool:
    mountinfo = lab.in_root("personal").parent / "mountinfo"  # the holder's, from the host
    return f" {TARGET} ".encode() in mountinfo.read_bytes()


@pytest.fixture
def bound(lab: Lab) -> Iterator[Lab]:
    """personal has .bashrc applied ("one") and bind-mounted from SOURCE."""
    commit_files(lab, "personal", {".bashrc": "one\n", ".config/git/config": "a\n"}, "one")
    assert publish(lab, "personal")["status"] == "staged"
    qg(lab, "personal", "apply", "--yes")
    proc = _ns(
        lab,
        f"mkdir -p /run/qgc-persist && cp -p {TARGET} {SOURCE} && mount --bind {SOURCE} {TARGET}",
    )
    assert proc.returncode == 0, proc.stderr
    assert _mounted(lab)
    try:
        yield lab
    finally:
        _ns(lab, f"umount {TARGET}; rm -rf /run/qgc-persist")


def _status(lab: Lab) -> dict[str, object]:
    st = json.loads(qg(lab, "personal", "status", "--json").stdout)
    assert isinstance(st, dict)
    return st


def test_apply_and_revert_write_through_a_bind_mounted_file(bound: Lab) -> None:
    lab = bound
    commit_files(lab, "personal", {".bashrc": "two\n", ".config/git/config": "b\n"}, "two")
    assert publish(lab, "personal")["status"] == "staged"
    qg(lab, "personal", "apply", "--yes")  # before: EBUSY from the rename, exit 6
    assert _mounted(lab)  # still the same mount point, written in place
    assert _cat(lab, TARGET) == b"two\n" and _cat(lab, SOURCE) == b"two\n"
    st = _status(lab)
    assert st["interrupted"] is False and st["drift"] == [] and not st["pending"]
    assert not (lab.home("personal") / ".local/share/qgitconf/journal").exists()
    qg(lab, "personal", "revert")
    assert _mounted(lab)
    assert _cat(lab, TARGET) == b"one\n" and _cat(lab, SOURCE) == b"one\n"
    st = _status(lab)
    assert st["interrupted"] is False and st["drift"] == []
    assert not (lab.home("personal") / ".local/share/qgitconf/journal").exists()


def test_killed_apply_over_a_bind_mount_rolls_back(bound: Lab) -> None:
    """A SIGKILL at each journaled step, the in-place write included (after it emptied
    the file): the next status recovers to the old content, the mount stays."""
    lab = bound
    commit_files(lab, "personal", {".bashrc": "two\n", ".config/git/config": "b\n"}, "two")
    assert publish(lab, "personal")["status"] == "staged"
    apply = ["qgitconf", "apply", "--yes"]
    killed = 0
    for n in range(1, 60):
        proc = lab.run("personal", apply, extra_env={"QGITCONF_FAULT_AFTER_WRITES": str(n)})
        if proc.returncode == 0:
            break
        assert proc.returncode == 128 + signal.SIGKILL, proc.stderr
        killed += 1
        st = _status(lab)  # recovers
        assert st["interrupted"] is False
        assert _mounted(lab)
        if st["applied"] == st["staged"]:  # killed after the commit point: finished
            assert _cat(lab, SOURCE) == b"two\n"
            break
        assert _cat(lab, TARGET) == b"one\n" and _cat(lab, SOURCE) == b"one\n", n
    else:
        pytest.fail("apply never finished")
    assert killed >= 3
    assert _cat(lab, TARGET) == b"two\n" and _cat(lab, SOURCE) == b"two\n"
    assert _status(lab)["drift"] == []


def test_persist_declares_directories_not_files(lab: Lab) -> None:
    """With custom-persist on (QubesDB ``/qubes-service/custom-persist`` = 1), the
    target declares the directories of its managed files, never a file (it would be a
    bind mount) and never the command that turns custom-persist on."""
    commit_files(
        lab,
        "personal",
        {".bashrc": "x\n", ".config/git/config": "a\n", ".config/git/sub/more": "b\n"},
        "files",
    )
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    lab.set_qubesdb("personal", "/qubes-service/custom-persist", "1")
    out = qg(lab, "personal", "persist").stdout.decode()
    commands = [line for line in out.splitlines() if not line.startswith("#")]
    assert commands == [
        "qvm-features personal custom-persist.qgitconf-state "
        "dir:user:user:0700:/home/user/.local/share/qgitconf",
        "qvm-features personal custom-persist.qgitconf-config "
        "dir:user:user:0700:/home/user/.config/qgitconf",
        "qvm-features personal custom-persist.qgitconf-d-config-git "
        "dir:user:user:0755:/home/user/.config/git",
    ]
    assert "qvm-service" not in out
    assert "#   /home/user/.bashrc" in out  # explained, not declared
