"""Smoke tests of the real lab (qgitconf.lab.real): Qubes' own qrexec and split-GPG.

One lab is booted for the module; each test starts from its baseline (``reset()``).
Skipped, with the reason, where the lab cannot be built (not root, no sources, no
compiler or PAM headers).  Boot time and call latency are printed (``pytest -s``).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Iterator

import pytest

from qgitconf.lab.build import available
from qgitconf.lab.real import RealLab
from qgitconf.lab.real_qubes import UID
from tests.labkit import INCOMING, snapshot

_OK, _WHY = available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"real lab: {_WHY}")


@pytest.fixture(scope="module")
def booted() -> Iterator[RealLab]:
    lab = RealLab.boot()
    try:
        print(f"\nreal lab: boot {lab.boot_seconds:.2f} s (build cached in {lab.build_dir})")
        # personal and work are targets of config-mgmt, pinned to the vault's key
        for t in ("personal", "work"):
            proc = lab.run(
                t,
                ["qgitconf", "target", "init", "--source", "config-mgmt", "--key-file",
                 INCOMING, "--fingerprint", lab.fingerprint],
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr.decode()
        lab.save_baseline()
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab(booted: RealLab) -> RealLab:
    t0 = time.monotonic()
    booted.reset()
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, f"reset took {elapsed:.2f} s"
    return booted


def test_dom0_runs_a_command_as_the_qubes_own_user(lab: RealLab) -> None:
    proc = lab.run("personal", ["sh", "-c", 'echo "$(id -un) $(id -u) $(id -gn) $HOME $(pwd)"'])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split() == [
        "user",
        str(UID["personal"]),
        "user",
        "/home/user",
        "/home/user",
    ]
    assert UID["personal"] != UID["work"]
    groups = lab.run("work", ["id", "-Gn"]).stdout.decode().split()
    assert "qubes" in groups


def test_exit_status_stderr_and_extra_env(lab: RealLab) -> None:
    proc = lab.run(
        "work", ["sh", "-c", 'echo "$FOO"; echo err >&2; exit 7'], extra_env={"FOO": "bar baz"}
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, b"bar baz\n", b"err\n")


def test_qubesdb_name_in_each_qube(lab: RealLab) -> None:
    for name in UID:
        proc = lab.run(name, ["qubesdb-read", "/name"])
        assert (proc.returncode, proc.stdout) == (0, f"{name}\n".encode())
    missing = lab.run("work", ["qubesdb-read", "/no-such-key"])
    assert missing.returncode == 1
    assert b"Failed to read /no-such-key" in missing.stderr
    lab.set_qubesdb("work", "/vm-config/x", "1")
    assert lab.run("work", ["qubesdb-list", "/vm-config/"]).stdout == b"x\n"


def test_receive_reaches_the_installed_service(lab: RealLab) -> None:
    proc = lab.run(
        "config-mgmt",
        ["qrexec-client-vm", "personal", "qgitconf.Receive"],
        input=b"garbage, not an update\n",
    )
    assert proc.returncode == 3, proc.stderr
    reply = json.loads(proc.stdout.decode().strip())
    assert reply["result"] == "rejected"
    log = lab.home("personal") / ".local/share/qgitconf/rejected.log"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-1]["from"] == "config-mgmt"  # QREXEC_REMOTE_DOMAIN, as dom0 set it


def test_installed_as_the_packages_do(lab: RealLab) -> None:
    proc = lab.run(
        "personal",
        ["sh", "-c", "head -n1 /usr/bin/qgitconf-service; cat /etc/qubes-rpc/qgitconf.Receive; "
         "/usr/bin/python3 -I -c 'import qgitconf; print(qgitconf.__file__)'"],
    )  # fmt: skip
    out = proc.stdout.decode()
    assert out.startswith("#!/usr/bin/python3 -I\n")
    assert "qgitconf-service receive" in out
    assert "/usr/lib/python3/dist-packages/qgitconf/__init__.py" in out


def test_untrusted_is_refused_and_nothing_changes(lab: RealLab) -> None:
    before = snapshot(lab.home("personal"))
    proc = lab.run(
        "untrusted", ["qrexec-client-vm", "personal", "qgitconf.Receive"], input=b"x" * 1000
    )
    assert proc.returncode == 126
    assert b"Request refused" in proc.stderr
    assert snapshot(lab.home("personal"), skip=()) == before


def test_halted_target_with_autostart_no(lab: RealLab) -> None:
    lab.set_running("work", False)
    try:
        proc = lab.run("config-mgmt", ["qrexec-client-vm", "work", "qgitconf.Receive"], input=b"x")
        assert proc.returncode == 126, proc.stderr
    finally:
        lab.set_running("work", True)
    proc = lab.run("config-mgmt", ["qrexec-client-vm", "work", "qgitconf.Receive"], input=b"x")
    assert proc.returncode == 3, proc.stderr


def test_ask_prompt_answer(lab: RealLab) -> None:
    call = ["qrexec-client-vm", "personal", "qgitconf.Export"]
    # the prompt offers every tagged target; nothing preselected: "allow" alone denies
    assert lab.run("config-mgmt", call, input=b".gitconfig\n").returncode == 126
    lab.set_ask_answer("allow", "personal")
    allowed = lab.run("config-mgmt", call, input=b".gitconfig\n")
    assert allowed.returncode == 0, allowed.stderr
    assert b"personal user" in allowed.stdout
    lab.set_ask_answer("allow", "work")  # the user may pick another target than asked
    other = lab.run("config-mgmt", call, input=b".gitconfig\n")
    assert (other.returncode, b"work user" in other.stdout) == (0, True)
    lab.set_ask_answer("deny")
    assert lab.run("config-mgmt", call, input=b".gitconfig\n").returncode == 126


def test_split_gpg_lists_the_vault_key(lab: RealLab) -> None:
    proc = lab.run(
        "config-mgmt", ["qubes-gpg-client-wrapper", "--list-secret-keys", "--with-colons"]
    )
    assert proc.returncode == 0, proc.stderr
    fprs = [ln.split(":")[9] for ln in proc.stdout.decode().splitlines() if ln.startswith("fpr:")]
    assert fprs == [lab.fingerprint]
    local = lab.run("config-mgmt", ["gpg", "--batch", "--list-secret-keys", "--with-colons"])
    assert b"fpr:" not in local.stdout  # the key stays in the vault


def test_split_gpg_without_consent_fails(lab: RealLab) -> None:
    lab.grant_gpg_consent("config-mgmt", granted=False)
    proc = lab.run("config-mgmt", ["qubes-gpg-client-wrapper", "--list-secret-keys"])
    assert proc.returncode != 0


def test_reset_restores_a_home_byte_for_byte(lab: RealLab) -> None:
    home = lab.home("personal")
    before = snapshot(home, skip=())
    inode = home.stat().st_ino
    lab.write("personal", "new/dir/file", b"data")
    (home / ".gitconfig").write_bytes(b"changed")
    lab.run("personal", ["sh", "-c", "rm -rf .local; mkdir -p x/y; echo z > x/y/z"])
    assert snapshot(home, skip=()) != before
    t0 = time.monotonic()
    lab.reset()
    print(f"\nreal lab: reset {1000 * (time.monotonic() - t0):.0f} ms")
    assert snapshot(home, skip=()) == before
    assert home.stat().st_ino == inode
    assert lab.run("personal", ["ls", "-a"]).returncode == 0


def test_reset_ends_leftover_user_processes(lab: RealLab) -> None:
    lab.run("vault", ["gpg", "--batch", "--list-secret-keys"])  # starts a gpg-agent
    lab.reset()
    ps = lab.dom0(["sh", "-c", "ps -eo uid= | sort -u"]).stdout.decode().split()
    assert not {str(u) for u in UID.values()} & set(ps)


def test_64_mib_through_a_call(lab: RealLab) -> None:
    data = os.urandom(64 << 20)
    t0 = time.monotonic()
    proc = lab.run("personal", ["sha256sum"], input=data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    print(f"\nreal lab: 64 MiB dom0 -> personal in {time.monotonic() - t0:.2f} s")


def test_latency(lab: RealLab) -> None:
    times = []
    for _ in range(10):
        t0 = time.monotonic()
        assert lab.run("personal", ["true"]).returncode == 0
        times.append(time.monotonic() - t0)
    vm_to_vm = lab.run(
        "config-mgmt",
        ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do "
         "echo x | qrexec-client-vm personal qgitconf.Receive >/dev/null; done"],
    )  # fmt: skip
    assert vm_to_vm.returncode == 3
    t0 = time.monotonic()
    lab.run(
        "config-mgmt",
        ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do "
         "echo x | qrexec-client-vm personal qgitconf.Receive >/dev/null; done"],
    )  # fmt: skip
    per_call = (time.monotonic() - t0) / 10
    print(
        f"\nreal lab: dom0 -> qube call median {1000 * statistics.median(times):.1f} ms; "
        f"config-mgmt -> personal qgitconf.Receive {1000 * per_call:.1f} ms per call"
    )
