"""System files end to end on the real lab (issue 15's acceptance): the root step run as
root inside the qube through the real qrexec, an AppVM reboot that resets /etc except
what upstream bind-dirs.sh binds back, revert, and a template target whose system file
reaches a qube based on it, and a disposable template whose home reaches a disposable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from qgitconf.lab.real import RealLab
from tests.labkit import INCOMING, Lab, commit_files, exists, publish, qg, run, sh, snapshot

SYS_KEY = "/vm-config/qgitconf-system-paths"
GITCONFIG = b"[core]\n\teditor = vim\n"
BIND_CONF = "/rw/config/qubes-bind-dirs.d/50_qgitconf.conf"


def _enable(lab: Lab, qube: str, prefixes: str = "/etc/gitconfig /etc/vim/") -> None:
    lab.set_qubesdb(qube, SYS_KEY, prefixes)
    lab.set_qubesdb(qube, "/vm-config/qgitconf-key", lab.fingerprint)


def _system(lab: Lab, qube: str, *args: str, rc: int = 0) -> dict[str, object]:
    proc = lab.run(qube, ["qgitconf", "system", *args, "--json"], user="root")
    assert proc.returncode == rc, (args, proc.stdout, proc.stderr)
    return dict(json.loads(proc.stdout)) if rc == 0 else {"stderr": proc.stderr.decode()}


def test_allowed_etc_file_applied_survives_reboot_and_is_reverted(lab: Lab) -> None:
    _enable(lab, "personal")
    commit_files(lab, "personal", {".bashrc": "x\n", "system/etc/gitconfig": GITCONFIG}, "one")
    assert publish(lab, "personal")["status"] == "staged"
    qg(lab, "personal", "apply", "--yes")
    # the template ships its own /etc/gitconfig: a file root did not write is drift
    template = sh(lab, "personal", "cat /etc/gitconfig")
    assert "drift" in str(_system(lab, "personal", "apply", "--yes", rc=1)["stderr"])
    assert sh(lab, "personal", "cat /etc/gitconfig") == template
    rec = _system(lab, "personal", "apply", "--yes", "--overwrite")
    assert rec["generation"] == 1 and rec["bind_dirs"] == ["/etc/gitconfig"], rec
    assert sh(lab, "personal", "cat /etc/gitconfig; stat -c '%u %a' /etc/gitconfig") == (
        GITCONFIG.decode() + "0 644\n"
    )
    # git as the user reads it (what the user wanted)
    assert sh(lab, "personal", "git config --system core.editor") == "vim\n"
    sh(lab, "personal", "echo control > /etc/lab-control", user="root")
    lab.reboot("personal")
    assert not exists(lab, "personal", "/etc/lab-control")  # /etc was reset ...
    assert sh(lab, "personal", "cat /etc/gitconfig") == GITCONFIG.decode()  # ... but bind-dirs
    assert "/etc/gitconfig" in sh(lab, "personal", "grep ' /etc/gitconfig ' /proc/self/mountinfo")
    _system(lab, "personal", "revert", "--to", "0")
    assert sh(lab, "personal", "cat /etc/gitconfig") == template  # the original is back
    assert not exists(lab, "personal", "/rw/bind-dirs/etc/gitconfig")
    assert "binds+=" not in sh(lab, "personal", f"cat {BIND_CONF}")
    lab.reboot("personal")
    assert sh(lab, "personal", "cat /etc/gitconfig") == template


def test_a_second_apply_after_reboot_writes_the_bind_mounted_file(lab: Lab) -> None:
    _enable(lab, "personal")
    commit_files(lab, "personal", {"system/etc/gitconfig": b"# one\n"}, "one")
    publish(lab, "personal")
    _system(lab, "personal", "apply", "--yes", "--overwrite")
    lab.reboot("personal")
    commit_files(lab, "personal", {"system/etc/gitconfig": b"# two\n"}, "two")
    assert publish(lab, "personal")["status"] == "staged"
    _system(lab, "personal", "apply", "--yes")
    assert sh(lab, "personal", "cat /etc/gitconfig") == "# two\n"
    lab.reboot("personal")
    assert sh(lab, "personal", "cat /etc/gitconfig") == "# two\n"


def test_not_enabled_refused_at_receive_nothing_changed(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "x\n"}, "first")
    publish(lab, "personal")
    before = snapshot(lab.home("personal"))
    commit_files(lab, "personal", {"system/etc/gitconfig": GITCONFIG}, "system")
    out = publish(lab, "personal", expect=1)
    assert out["status"] == "rejected" and "system-files-disabled" in out["message"], out
    assert snapshot(lab.home("personal")) == before
    # and the root step, enabled only now, refuses the staged update it never saw signed
    # for it: nothing about system files is staged, so nothing happens
    _enable(lab, "personal")
    etc = sh(lab, "personal", "cat /etc/gitconfig")
    rec = _system(lab, "personal", "apply", "--yes")
    assert rec["changes"] == [], rec
    assert sh(lab, "personal", "cat /etc/gitconfig") == etc


def test_denied_path_refused_even_when_enabled(lab: Lab) -> None:
    _enable(lab, "personal", "/etc/ /usr/local/")
    commit_files(
        lab, "personal", {"system/etc/sudoers.d/me": "user ALL=(ALL) NOPASSWD: ALL\n"}, "x"
    )
    out = publish(lab, "personal", expect=1)
    assert out["status"] == "rejected" and "system-path-denied" in out["message"], out


def test_user_level_config_has_no_effect(lab: Lab) -> None:
    toml = lab.home("personal") / ".config/qgitconf/target.toml"
    text = 'system_paths = ["/etc/"]\n' + toml.read_text()
    lab.write("personal", ".config/qgitconf/target.toml", text.encode())
    commit_files(lab, "personal", {"system/etc/gitconfig": GITCONFIG}, "x")
    out = publish(lab, "personal", expect=1)
    assert out["status"] == "rejected" and "system-files-disabled" in out["message"], out
    # nor can the user run the root step
    proc = run(lab, "personal", "qgitconf", "system", "apply", "--yes", expect=2)
    assert b"system-needs-root" in proc.stderr, proc.stderr


# -- templates and disposable templates as targets ---------------------------------------


@pytest.fixture(scope="module")
def tlab() -> Iterator[RealLab]:
    """A lab with the template ``tpl`` (a target), ``app1`` based on it, and the
    disposable template ``dvm`` (a target) based on it too."""
    lab = RealLab.boot(
        extra_targets=("app1", "dvm"), templates={"tpl": ["app1", "dvm"]}, dispvm_templates=("dvm",)
    )
    try:
        qg(lab, "config-mgmt", "init", "--signing-key", lab.fingerprint)
        for t in ("tpl", "dvm"):
            qg(lab, "config-mgmt", "target", "add", t)
            qg(lab, t, "target", "init", "--source", "config-mgmt", "--key-file", INCOMING,
               "--fingerprint", lab.fingerprint)  # fmt: skip
        lab.save_baseline()
        yield lab
    finally:
        lab.close()


def test_template_target_system_file_reaches_a_qube_based_on_it(tlab: RealLab) -> None:
    tlab.reset()
    _enable(tlab, "tpl")
    commit_files(tlab, "tpl", {"system/etc/vim/vimrc.local": "set nocompatible\n"}, "tpl")
    assert publish(tlab, "tpl")["status"] == "staged"
    rec = _system(tlab, "tpl", "apply", "--yes")
    assert rec["bind_dirs"] == [], rec  # a template keeps its root: no bind-dirs
    assert not exists(tlab, "app1", "/etc/vim/vimrc.local")
    tlab.reboot("tpl")  # the template's root is saved at its shutdown
    assert sh(tlab, "tpl", "cat /etc/vim/vimrc.local") == "set nocompatible\n"
    tlab.reboot("app1")
    assert sh(tlab, "app1", "cat /etc/vim/vimrc.local") == "set nocompatible\n"


def test_disposable_template_home_reaches_each_disposable(tlab: RealLab) -> None:
    tlab.reset()
    commit_files(tlab, "dvm", {".bashrc": "alias ll='ls -l'\n"}, "dvm")
    assert publish(tlab, "dvm")["status"] == "staged"
    qg(tlab, "dvm", "apply", "--yes")
    tlab.reboot("dvm")  # its private volume is saved at its shutdown
    disp = tlab.start_disposable("dvm")
    try:
        assert sh(tlab, disp, "cat .bashrc") == "alias ll='ls -l'\n"
    finally:
        tlab.set_running(disp, False)


def test_a_bind_mounted_file_no_longer_managed_is_removed(lab: Lab) -> None:
    """After a reboot the applied file is a bind mount of its /rw copy; an update (or a
    revert) that no longer holds it takes it away now and at the next boot."""
    _enable(lab, "personal")
    commit_files(lab, "personal", {"system/etc/vim/vimrc.local": "set nocompatible\n"}, "one")
    publish(lab, "personal")
    _system(lab, "personal", "apply", "--yes")
    lab.reboot("personal")
    assert " /etc/vim/vimrc.local " in sh(lab, "personal", "cat /proc/self/mountinfo")
    _system(lab, "personal", "revert", "--to", "0")
    assert not exists(lab, "personal", "/etc/vim/vimrc.local")
    assert not exists(lab, "personal", "/rw/bind-dirs/etc/vim/vimrc.local")
    lab.reboot("personal")
    assert not exists(lab, "personal", "/etc/vim/vimrc.local")


def test_the_boot_script_restores_a_dropped_file(lab: Lab) -> None:
    """While system files are managed, /rw/config/rc.local.d/50_qgitconf.rc (run as root
    by Qubes' misc-post at each boot) re-creates one a reboot dropped, never over drift."""
    _enable(lab, "personal")
    files = {"system/etc/vim/vimrc.local": "v\n", "system/etc/vim/other.vim": "o\n"}
    commit_files(lab, "personal", files, "one")
    publish(lab, "personal")
    _system(lab, "personal", "apply", "--yes")
    rc = "/rw/config/rc.local.d/50_qgitconf.rc"
    assert sh(lab, "personal", f"stat -c '%u %a' {rc}") == "0 755\n"
    sh(lab, "personal", "rm /etc/vim/vimrc.local; echo mine > /etc/vim/other.vim", user="root")
    out = sh(lab, "personal", rc, user="root")
    assert "restored 1 missing system file(s)" in out, out
    assert sh(lab, "personal", "cat /etc/vim/vimrc.local /etc/vim/other.vim") == "v\nmine\n"
    sh(lab, "personal", "echo o > /etc/vim/other.vim", user="root")  # as applied again
    _system(lab, "personal", "revert", "--to", "0")
    assert not exists(lab, "personal", rc)  # nothing managed: no boot script
