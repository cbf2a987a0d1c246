"""The real lab's root file system layer (qgitconf.lab.real): writable roots, reboots,
upstream bind-dirs.sh, templates and disposables, as issue 15's system step needs them.

One lab for the module: the default qubes plus ``app1`` and ``dvm``, both based on the
template ``tpl``; ``dvm`` is a disposable template.  Each test starts from the
baseline (``reset()``, which restarts a qube whose volumes changed).  Every command
goes through the real qrexec; as root it is ``qrexec-client -d QUBE root:CMD``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from qgitconf.lab.build import available
from qgitconf.lab.real import RealLab
from tests.labkit import exists, sh

_OK, _WHY = available()
pytestmark = pytest.mark.skipif(not _OK, reason=f"real lab: {_WHY}")

BIND_CONF = "/rw/config/qubes-bind-dirs.d/50-lab.conf"


@pytest.fixture(scope="module")
def booted() -> Iterator[RealLab]:
    lab = RealLab.boot(
        extra_targets=("app1", "dvm"),
        templates={"tpl": ["app1", "dvm"]},
        dispvm_templates=("dvm",),
    )
    try:
        print(
            f"\nreal lab with a template and a disposable template: boot {lab.boot_seconds:.2f} s"
        )
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab(booted: RealLab) -> RealLab:
    booted.reset()
    return booted


def test_root_run_is_uid_0_and_the_normal_run_the_user(lab: RealLab) -> None:
    assert sh(lab, "personal", "id -u; pwd", user="root").split() == ["0", "/root"]
    assert sh(lab, "personal", "id -u; pwd").split() == [str(lab.uid("personal")), "/home/user"]
    # only root writes the root and /rw, as in a qube
    sh(lab, "personal", "touch /etc/lab-user", rc=1)
    sh(lab, "personal", "touch /rw/config/lab-user", rc=1)
    sh(lab, "personal", "touch /etc/lab-root /rw/config/lab-root /opt/x /var/lib/x", user="root")
    assert (lab.qube("personal") / "rw/config/lab-root").exists()  # /rw is the private volume


def test_appvm_reboot_keeps_rw_home_usrlocal_and_nothing_else(lab: RealLab) -> None:
    sh(
        lab,
        "personal",
        "echo e > /etc/lab-e; echo v > /var/lib/lab-v; echo o > /opt/lab-o; echo r > /root/r; "
        "echo u > /usr/local/lab-u; echo c > /rw/config/lab-c; echo t > /usr/lab-t",
        user="root",
    )
    sh(lab, "personal", "echo h > lab-h")
    before = lab.in_root("personal")
    t0 = time.monotonic()
    lab.reboot("personal")
    print(f"\nreal lab: reboot of an AppVM {1000 * (time.monotonic() - t0):.0f} ms")
    assert lab.in_root("personal") != before  # a new namespace
    for gone in ("/etc/lab-e", "/var/lib/lab-v", "/opt/lab-o", "/root/r", "/usr/lab-t"):
        assert not exists(lab, "personal", gone), gone
    out = sh(lab, "personal", "cat /usr/local/lab-u /rw/config/lab-c /home/user/lab-h")
    assert out == "u\nc\nh\n"
    assert sh(lab, "personal", "echo ok") == "ok\n"  # qrexec works again
    # calls from other qubes reach the rebooted one (its new agent, dom0's new daemon)
    call = lab.run("config-mgmt", ["qrexec-client-vm", "personal", "qgitconf.Receive"], input=b"x")
    assert call.returncode not in (0, 126), call.stderr  # not refused: answered, rejected
    assert b'"result": "rejected"' in call.stdout


def test_upstream_bind_dirs_keeps_listed_paths_of_an_appvm(lab: RealLab) -> None:
    """A path listed in /rw/config/qubes-bind-dirs.d survives the reboot, because
    upstream bind-dirs.sh bound /rw/bind-dirs/PATH over it; the rest of /etc does not."""
    sh(
        lab,
        "personal",
        f"mkdir -p /rw/config/qubes-bind-dirs.d /rw/bind-dirs/etc && "
        f"echo \"binds+=( '/etc/lab-kept' )\" > {BIND_CONF} && "
        "echo one > /rw/bind-dirs/etc/lab-kept && echo lost > /etc/lab-lost",
        user="root",
    )
    lab.reboot("personal")
    assert sh(lab, "personal", "cat /etc/lab-kept; findmnt -n -o TARGET /etc/lab-kept") == (
        "one\n/etc/lab-kept\n"
    )
    assert not exists(lab, "personal", "/etc/lab-lost")
    sh(lab, "personal", "echo two > /etc/lab-kept; echo lost > /etc/lab-lost", user="root")
    lab.reboot("personal")
    assert sh(lab, "personal", "cat /etc/lab-kept /rw/bind-dirs/etc/lab-kept") == "two\ntwo\n"
    assert not exists(lab, "personal", "/etc/lab-lost")
    log = (lab.root / "log/ns-personal.log").read_text()
    assert "Bind mounting /rw/bind-dirs/etc/lab-kept onto /etc/lab-kept" in log


def test_custom_persist_entries_from_qubesdb(lab: RealLab) -> None:
    """R4.3's custom-persist: with the service on, upstream bind-dirs.sh reads its
    paths from QubesDB ``/persist/`` (``qvm-features Q custom-persist.NAME VALUE``),
    pre-creating a ``dir:`` entry, and ignores /rw/config/qubes-bind-dirs.d."""
    lab.set_qubesdb("personal", "/qubes-service/custom-persist", "1")
    lab.set_qubesdb("personal", "/persist/lab-dir", "dir:root:root:0755:/etc/lab-pdir")
    sh(
        lab,
        "personal",
        "mkdir -p /rw/config/qubes-bind-dirs.d && "
        f"echo \"binds+=( '/etc/lab-conf' )\" > {BIND_CONF} && "
        "mkdir -p /rw/bind-dirs/etc && touch /rw/bind-dirs/etc/lab-conf",
        user="root",
    )
    lab.reboot("personal")
    sh(lab, "personal", "echo kept > /etc/lab-pdir/f", user="root")
    lab.reboot("personal")
    assert sh(lab, "personal", "cat /etc/lab-pdir/f; ls /run/qubes-service") == (
        "kept\ncustom-persist\n"
    )
    assert not exists(lab, "personal", "/etc/lab-conf")


def test_bind_dirs_copies_the_templates_file_on_first_use(lab: RealLab) -> None:
    """bind-dirs.sh's first use: the path exists in the template's root and not below
    /rw, so it copies it there, then binds it; a change then persists in the AppVM."""
    sh(lab, "tpl", "mkdir -p /etc/lab-app && echo from-tpl > /etc/lab-app/conf", user="root")
    lab.reboot("tpl")  # Qubes saves a template's root at its shutdown
    sh(
        lab,
        "app1",
        "mkdir -p /rw/config/qubes-bind-dirs.d && "
        f"echo \"binds+=( '/etc/lab-app' )\" > {BIND_CONF}",
        user="root",
    )
    lab.reboot("app1")
    assert sh(lab, "app1", "cat /rw/bind-dirs/etc/lab-app/conf") == "from-tpl\n"
    sh(lab, "app1", "echo mine > /etc/lab-app/conf", user="root")
    lab.reboot("app1")
    assert sh(lab, "app1", "cat /etc/lab-app/conf") == "mine\n"
    # a template is fully persistent: bind-dirs.sh leaves it alone
    sh(lab, "tpl", f"mkdir -p /rw/config/qubes-bind-dirs.d && cp /dev/null {BIND_CONF}", "root")
    lab.reboot("tpl")
    assert "No TemplateBasedVM/DisposableVM detected" in (lab.root / "log/ns-tpl.log").read_text()


def test_template_root_reaches_its_appvm_at_the_appvms_next_boot(lab: RealLab) -> None:
    sh(lab, "tpl", "echo v1 > /etc/lab-tpl; echo x > /usr/local/lab-tpl-local", user="root")
    assert not exists(lab, "app1", "/etc/lab-tpl")
    lab.reboot("app1")  # the template still runs: its root is not saved yet
    assert not exists(lab, "app1", "/etc/lab-tpl")
    lab.reboot("tpl")
    assert sh(lab, "tpl", "cat /etc/lab-tpl") == "v1\n"  # a template's root persists
    assert not exists(lab, "app1", "/etc/lab-tpl")  # app1 runs on the root it booted with
    lab.reboot("app1")
    assert sh(lab, "app1", "cat /etc/lab-tpl") == "v1\n"
    assert not exists(lab, "app1", "/usr/local/lab-tpl-local")  # the template's private volume
    assert not exists(lab, "personal", "/etc/lab-tpl")  # not based on tpl
    # an AppVM's own change to that file goes at its reboot, the template's stays
    sh(lab, "app1", "echo mine > /etc/lab-tpl", user="root")
    lab.reboot("app1")
    assert sh(lab, "app1", "cat /etc/lab-tpl") == "v1\n"


def test_disposable_gets_the_disposable_templates_home(lab: RealLab) -> None:
    sh(lab, "dvm", "echo saved > lab-home-file")
    sh(lab, "dvm", "echo dvm-etc > /etc/lab-dvm", user="root")
    early = lab.start_disposable("dvm")  # dvm still runs: its volume is not saved yet
    assert not exists(lab, early, "/home/user/lab-home-file")
    lab.reboot("dvm")
    disp = lab.start_disposable("dvm")
    assert disp != early and disp in lab.vms
    assert sh(lab, disp, "cat lab-home-file; hostname; qubesdb-read /type") == (
        f"saved\n{disp}\nDispVM\n"
    )
    assert not exists(lab, disp, "/etc/lab-dvm")  # an AppVM's root change is volatile
    sh(lab, disp, "echo d > from-disp; echo d > /etc/lab-disp", user="root")
    assert not (lab.home("dvm") / "from-disp").exists()
    lab.set_running(disp, False)  # a disposable is gone once halted
    assert disp not in lab.vms
    assert lab.run("personal", ["true"]).returncode == 0


def test_qubesdb_types_and_persistence(lab: RealLab) -> None:
    read = "qubesdb-read /type /qubes-vm-type /qubes-vm-persistence /qubes-vm-updateable"
    assert sh(lab, "personal", read).split() == ["AppVM", "AppVM", "rw-only", "False"]
    assert sh(lab, "tpl", read).split() == ["TemplateVM", "TemplateVM", "full", "True"]
    assert sh(lab, "app1", "qubesdb-read /qubes-base-template") == "tpl\n"
    lab.set_qubesdb("personal", "/qubes-service/lab-svc", "1")
    lab.reboot("personal")  # qubes-sysinit's flags are set at boot
    assert exists(lab, "personal", "/run/qubes-service/lab-svc")


def test_reset_restores_roots_and_private_volumes(lab: RealLab) -> None:
    sh(lab, "personal", "echo x > /etc/lab-reset; echo y > /rw/config/lab-reset", user="root")
    sh(lab, "tpl", "echo z > /etc/lab-reset", user="root")
    lab.reboot("tpl")
    disp = lab.start_disposable("dvm")
    lab.reset()
    assert set(lab.reset_rebooted) == {"personal", "tpl"}
    assert disp not in lab.vms
    for qube in ("personal", "tpl"):
        assert not exists(lab, qube, "/etc/lab-reset")
    assert not exists(lab, "personal", "/rw/config/lab-reset")
    t0 = time.monotonic()
    lab.reset()
    assert lab.reset_rebooted == []  # nothing changed: nothing restarted
    assert time.monotonic() - t0 < 1.0
