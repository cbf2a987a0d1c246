"""System files (issue 15): refused at receive unless root-owned settings allow them, and
applied by the root step, which verifies the staged update again.

The updates travel the real lab (config-mgmt → dom0 policy → personal's Receive); the
root step runs here as root against a sandbox root filesystem (``Layout``), reading
personal's staged update through its unprivileged ``git cat-file`` child as personal's
uid.  The lab's own root filesystem runs are in ``test_e2e_system.py``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qgitconf.core.systemrules import SystemRules, check_system_file, denied_reason, parse_prefixes
from qgitconf.errors import (
    ConfigError,
    DriftError,
    LocalStateError,
    QgitconfError,
    RollbackError,
    SignatureError,
    SystemPathError,
    UsageError,
)
from qgitconf.system.step import apply_system, restore_system, revert_system
from qgitconf.system.trust import Layout, UserHome
from tests.labkit import Lab, commit_files, publish, qg, searchable, snapshot

SYS_KEY = "/vm-config/qgitconf-system-paths"
STATE = ".local/share/qgitconf"
GITCONFIG = b"[core]\n\teditor = vim\n"
ORIGINAL = b"# the template's /etc/gitconfig\n"


# -- pure rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    [
        "etc/shadow",
        "etc/sudoers",
        "etc/sudoers.d/90-user",
        "etc/pam.d/qrexec",
        "etc/ld.so.preload",
        "etc/ld.so.conf.d/x.conf",
        "etc/qubes/rpc-config/qgitconf.Receive",
        "etc/qubes-rpc/qgitconf.Receive",
        "etc/qubes-bind-dirs.d/x.conf",
        "etc/qgitconf/target.toml",
        "usr/local/etc/qubes-rpc/qubes.Gpg",
        "usr/local/lib/python3.11/dist-packages/x.pth",
        "usr/local/bin/gpg",
        "usr/local/sbin/git",
        "usr/local/bin/python3.11",
        "etc/python3.11/sitecustomize.py",
        "etc/environment",
        "etc/gnupg/gpgconf.conf",
        "etc/Shadow",
    ],
)
def test_denied_even_when_allowed(rel: str) -> None:
    assert denied_reason(rel) is not None
    rules = SystemRules(("etc/", "usr/local/"))
    with pytest.raises(SystemPathError) as e:
        check_system_file(["system", *rel.split("/")], 0o100644, rules)
    assert e.value.code == "system-path-denied"


def test_rules_disabled_not_allowed_and_not_a_file() -> None:
    parts = ["system", "etc", "gitconfig"]
    with pytest.raises(SystemPathError) as e:
        check_system_file(parts, 0o100644, SystemRules())
    assert e.value.code == "system-files-disabled"
    with pytest.raises(SystemPathError) as e:
        check_system_file(parts, 0o100644, SystemRules(("etc/vim/",)))
    assert e.value.code == "system-path-not-allowed"
    with pytest.raises(SystemPathError) as e:
        check_system_file(parts, 0o120000, SystemRules(("etc/gitconfig",)))
    assert e.value.code == "system-not-a-file"
    assert check_system_file(parts, 0o100644, SystemRules(("etc/gitconfig",))) == "etc/gitconfig"
    # a prefix without "/" is that file or that directory, never a longer name
    with pytest.raises(SystemPathError):
        check_system_file(
            ["system", "etc", "gitconfig2"], 0o100644, SystemRules(("etc/gitconfig",))
        )


@pytest.mark.parametrize(
    "value",
    ["etc/gitconfig", "/etc/../etc/shadow", "/boot/grub", "/etc/sudoers.d/", "/usr/local/lib/"],
)
def test_settings_cannot_name_a_bad_prefix(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_prefixes(value, "test")
    assert e.value.code == "system-paths-invalid"


def test_settings_parse() -> None:
    assert parse_prefixes("/etc/gitconfig, /etc/vim/  /usr/local/share/", "t").prefixes == (
        "etc/gitconfig",
        "etc/vim/",
        "usr/local/share/",
    )


# -- the lab: receive refuses, the root step applies ------------------------------------


def _enable(lab: Lab, value: str = "/etc/gitconfig /etc/vim/") -> None:
    lab.set_qubesdb("personal", SYS_KEY, value)


def _reader(lab: Lab, **extra: str | None) -> Callable[[str], str | None]:
    db: dict[str, str | None] = {
        "/name": "personal",
        "/vm-config/qgitconf-key": lab.fingerprint,
        SYS_KEY: "/etc/gitconfig /etc/vim/",
        "/qubes-vm-type": "AppVM",
    }
    db.update(extra)
    return db.get


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/local").mkdir(parents=True)
    (tmp_path / "rw/config").mkdir(parents=True)
    return Layout(
        sysroot=root,
        state=tmp_path / "rw/qgitconf-system",
        rw=tmp_path / "rw",
        system_config=tmp_path / "etc-qgitconf/target.toml",
    )


def _who(lab: Lab) -> UserHome:
    uid = lab.uid("personal")
    return UserHome(uid, uid, lab.home("personal"))


def _apply(lab: Lab, layout: Layout, **kw: Any) -> dict[str, Any]:
    read = kw.pop("read", None) or _reader(lab)
    with searchable(lab):
        return apply_system(who=_who(lab), layout=layout, read=read, **kw)


def _stage(lab: Lab, files: dict[str, str | bytes], message: str = "update") -> str:
    commit = commit_files(lab, "personal", files, message)
    out = publish(lab, "personal")
    assert out["status"] == "staged", out
    return commit


def _tree(root: Path) -> dict[str, Any]:
    """``snapshot``, with fifos and devices recorded by type (never opened)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                out[str(p.relative_to(root))] = ("file", st.st_mode, st.st_uid, p.read_bytes())
            elif stat.S_ISLNK(st.st_mode):
                out[str(p.relative_to(root))] = ("link", os.readlink(p))
            else:
                out[str(p.relative_to(root))] = ("other", st.st_mode, st.st_rdev)
    return out


def test_allowed_etc_file_applied_persisted_and_reverted(lab: Lab, layout: Layout) -> None:
    _enable(lab)
    commit = _stage(lab, {".bashrc": "alias ll='ls -l'\n", "system/etc/gitconfig": GITCONFIG})
    # the home apply never writes the system part into $HOME
    qg(lab, "personal", "apply", "--yes")
    assert (lab.home("personal") / ".bashrc").exists()
    assert not (lab.home("personal") / "system").exists()
    rec = _apply(lab, layout)
    assert rec["commit"] == commit and rec["generation"] == 1, rec
    f = layout.sysroot / "etc/gitconfig"
    st = f.lstat()
    assert f.read_bytes() == GITCONFIG
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)
    conf = (layout.rw / "config/qubes-bind-dirs.d/50_qgitconf.conf").read_text()
    assert "binds+=( '/etc/gitconfig' )" in conf
    assert (layout.rw / "bind-dirs/etc/gitconfig").read_bytes() == GITCONFIG
    assert stat.S_IMODE(layout.state.stat().st_mode) == 0o700
    # applied again: nothing to do, same generation
    assert _apply(lab, layout)["changes"] == []
    with searchable(lab):
        revert_system(to=0, layout=layout, read=_reader(lab))
    assert not f.exists()
    assert not (layout.rw / "bind-dirs/etc/gitconfig").exists()
    assert "binds+=" not in (layout.rw / "config/qubes-bind-dirs.d/50_qgitconf.conf").read_text()


def test_a_file_root_did_not_write_is_drift_then_kept_as_original(lab: Lab, layout: Layout) -> None:
    _enable(lab)
    (layout.sysroot / "etc/gitconfig").write_bytes(ORIGINAL)
    _stage(lab, {"system/etc/gitconfig": GITCONFIG})
    before = _tree(layout.sysroot)
    with pytest.raises(DriftError):
        _apply(lab, layout)
    assert _tree(layout.sysroot) == before
    _apply(lab, layout, overwrite=True)
    assert (layout.sysroot / "etc/gitconfig").read_bytes() == GITCONFIG
    with searchable(lab):
        revert_system(to=0, layout=layout, read=_reader(lab))
    assert (layout.sysroot / "etc/gitconfig").read_bytes() == ORIGINAL


def test_template_vm_writes_no_bind_dirs(lab: Lab, layout: Layout) -> None:
    _enable(lab)
    _stage(lab, {"system/etc/vim/vimrc.local": "set nocompatible\n"})
    rec = _apply(lab, layout, read=_reader(lab, **{"/qubes-vm-type": "TemplateVM"}))
    assert rec["bind_dirs"] == []
    assert (layout.sysroot / "etc/vim/vimrc.local").read_bytes() == b"set nocompatible\n"
    assert stat.S_IMODE((layout.sysroot / "etc/vim").stat().st_mode) == 0o755
    assert not (layout.rw / "config/qubes-bind-dirs.d").exists()


def test_restore_recreates_a_dropped_file_never_over_drift(lab: Lab, layout: Layout) -> None:
    _enable(lab)
    _stage(lab, {"system/etc/gitconfig": GITCONFIG, "system/etc/vim/vimrc.local": "x\n"})
    _apply(lab, layout)
    (layout.sysroot / "etc/gitconfig").unlink()  # a reboot without bind-dirs
    (layout.sysroot / "etc/vim/vimrc.local").write_bytes(b"changed here\n")
    with searchable(lab):
        rec = restore_system(layout=layout, read=_reader(lab))
    assert rec["restored"] == ["/etc/gitconfig"], rec
    assert (layout.sysroot / "etc/gitconfig").read_bytes() == GITCONFIG
    assert (layout.sysroot / "etc/vim/vimrc.local").read_bytes() == b"changed here\n"


# -- receive: off unless root-owned settings allow ---------------------------------------


def _refused_at_receive(lab: Lab, files: dict[str, str | bytes], code: str) -> None:
    _stage(lab, {".bashrc": "x\n"}, "first")
    before = snapshot(lab.home("personal"), skip=("rejected.log",))
    commit_files(lab, "personal", files, "with system files")
    out = publish(lab, "personal", expect=1)
    assert out["status"] == "rejected" and code in out["message"], out
    assert snapshot(lab.home("personal"), skip=("rejected.log",)) == before


def test_system_file_refused_when_not_enabled(lab: Lab) -> None:
    _refused_at_receive(lab, {"system/etc/gitconfig": GITCONFIG}, "system-files-disabled")


def test_denied_system_path_refused_even_when_enabled(lab: Lab) -> None:
    _enable(lab, "/etc/ /usr/local/")
    _refused_at_receive(
        lab, {"system/etc/sudoers.d/qgitconf": "user ALL=(ALL) ALL\n"}, "system-path-denied"
    )


def test_path_outside_the_allowed_prefixes_refused(lab: Lab) -> None:
    _enable(lab, "/etc/gitconfig")
    _refused_at_receive(lab, {"system/etc/hosts": "1.2.3.4 x\n"}, "system-path-not-allowed")


def test_user_level_config_cannot_enable_system_files(lab: Lab) -> None:
    toml = lab.home("personal") / ".config/qgitconf/target.toml"
    text = 'system_paths = ["/etc/"]\n' + toml.read_text()  # before any [table]
    lab.write("personal", ".config/qgitconf/target.toml", text.encode())
    _refused_at_receive(lab, {"system/etc/gitconfig": GITCONFIG}, "system-files-disabled")


def test_reserved_name_variant_refused(lab: Lab) -> None:
    _enable(lab)
    _refused_at_receive(lab, {"SYSTEM/etc/gitconfig": GITCONFIG}, "unsafe-path")


# -- the root step trusts nothing of the user's side ------------------------------------


def _root_state_unchanged(
    layout: Layout, call: Callable[[], object], error: type[QgitconfError], code: str | None = None
) -> None:
    before = (_tree(layout.sysroot), _tree(layout.state), _tree(layout.rw / "config"))
    with pytest.raises(error) as e:
        call()
    if code is not None:
        assert e.value.code == code, e.value
    assert (_tree(layout.sysroot), _tree(layout.state), _tree(layout.rw / "config")) == before


def test_root_step_needs_root_owned_settings(lab: Lab, layout: Layout) -> None:
    _enable(lab)
    _stage(lab, {"system/etc/gitconfig": GITCONFIG})
    for read, code in (
        (_reader(lab, **{SYS_KEY: None}), "system-files-disabled"),
        (_reader(lab, **{"/vm-config/qgitconf-key": None}), "system-no-key"),
        (_reader(lab, **{"/name": None}), "no-qubesdb"),
    ):
        _root_state_unchanged(layout, lambda r=read: _apply(lab, layout, read=r), ConfigError, code)


def test_root_step_refuses_a_forged_statement(lab: Lab, layout: Layout) -> None:
    _enable(lab)
    _stage(lab, {"system/etc/gitconfig": GITCONFIG})
    kept = lab.home("personal") / STATE / "staged.statement"
    data = kept.read_bytes().replace(b"sequence: 1\n", b"sequence: 9\n")
    assert data != kept.read_bytes()
    lab.write("personal", f"{STATE}/staged.statement", data, mode=0o600)
    _root_state_unchanged(layout, lambda: _apply(lab, layout), SignatureError)


def test_root_step_refuses_a_key_the_user_swapped(lab: Lab, layout: Layout) -> None:
    from tests.labkit import export_key, make_key_in

    _enable(lab)
    _stage(lab, {"system/etc/gitconfig": GITCONFIG})
    rogue = make_key_in(lab, "personal", "rogue <r@x.invalid>")
    key = export_key(lab, "personal", rogue)
    lab.write("personal", f".config/qgitconf/keys/{lab.fingerprint}.asc", key, mode=0o644)
    _root_state_unchanged(layout, lambda: _apply(lab, layout), ConfigError)


def test_root_step_refuses_a_rollback(lab: Lab, layout: Layout) -> None:
    _enable(lab)
    _stage(lab, {"system/etc/gitconfig": b"# one\n"}, "one")
    st_dir = lab.home("personal") / STATE
    old = {n: (st_dir / n).read_bytes() for n in ("staged.statement", "staged.statement.asc")}
    _stage(lab, {"system/etc/gitconfig": b"# two\n"}, "two")
    _apply(lab, layout)
    assert (layout.sysroot / "etc/gitconfig").read_bytes() == b"# two\n"
    for name, data in old.items():  # the user puts the older signed statement back
        lab.write("personal", f"{STATE}/{name}", data, mode=0o600)
    _root_state_unchanged(layout, lambda: _apply(lab, layout), RollbackError, "rollback")


def test_root_step_checks_every_object_hash(lab: Lab, layout: Layout) -> None:
    """personal's repo is the user's: a swapped object is caught by its hash."""
    import subprocess

    _enable(lab)
    _stage(lab, {"system/etc/gitconfig": GITCONFIG})
    repo = lab.home("personal") / STATE / "repo"
    env = {"GIT_DIR": str(repo), "PATH": "/usr/bin:/bin"}
    blob = subprocess.run(
        ["git", "rev-parse", "refs/qgitconf/staged:system/etc/gitconfig"],
        env=env, capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    # replace the object with another one, kept loose under the same name
    import zlib

    evil = b"[core]\n\tpager = sh -c id\n"
    loose = repo / "objects" / blob[:2] / blob[2:]
    loose.parent.mkdir(exist_ok=True)
    if loose.exists():
        loose.chmod(0o644)
    loose.write_bytes(zlib.compress(b"blob %d\x00" % len(evil) + evil))
    os.chown(loose, lab.uid("personal"), lab.uid("personal"))
    for pack in (repo / "objects/pack").glob("*.pack"):  # only the loose copy remains
        pack.with_suffix(".idx").unlink()
        pack.unlink()
    _root_state_unchanged(layout, lambda: _apply(lab, layout), LocalStateError)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "chardev", "dir-symlink"])
def test_root_step_never_writes_through_what_is_on_disk(
    lab: Lab, layout: Layout, tmp_path: Path, kind: str
) -> None:
    _enable(lab)
    _stage(lab, {"system/etc/vim/vimrc.local": "set nocompatible\n"})
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:hash\n")
    target = layout.sysroot / "etc/vim/vimrc.local"
    target.parent.mkdir(parents=True)
    if kind == "symlink":
        target.symlink_to(secret)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "chardev":
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        target.parent.rmdir()
        target.parent.symlink_to(tmp_path)
    _root_state_unchanged(layout, lambda: _apply(lab, layout), DriftError)
    assert secret.read_bytes() == b"root:hash\n"
    assert not (tmp_path / "vimrc.local").exists()


def test_not_root_is_refused(lab: Lab, layout: Layout) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setuid(65534)
            apply_system(who=_who(lab), layout=layout, read=_reader(lab))
        except UsageError as e:
            code = 0 if e.code == "system-needs-root" else 2
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# -- crash during the system apply: SIGKILL at every journaled step ------------------------


def _copy_tree(src: Path, dest: Path) -> None:
    import shutil

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, symlinks=True)


def test_sigkill_at_every_step_of_the_system_apply(lab: Lab, tmp_path: Path) -> None:
    """Each trial kills ``system apply`` at step N (the journal's fault hook), then runs
    what every system command runs first (recovery): the root filesystem and root's
    state are then exactly as before, or exactly as after an uninterrupted apply."""
    from qgitconf.agent.fault import Fault
    from qgitconf.agent.homefs import HomeFS
    from qgitconf.agent.journal import recover
    from qgitconf.agent.state import AgentState

    _enable(lab)
    _stage(lab, {"system/etc/gitconfig": GITCONFIG, "system/etc/vim/vimrc.local": "v1\n"}, "one")
    base = tmp_path / "base"
    layout0 = Layout(base / "root", base / "state", base / "rw", base / "etc-qgitconf/t.toml")
    (layout0.sysroot / "etc/vim").mkdir(parents=True)
    (layout0.rw / "config").mkdir(parents=True)
    _apply(lab, layout0)  # generation 1
    _stage(
        lab,
        {"system/etc/gitconfig": b"# two\n", "system/etc/vim/new.vim": "n\n"},
        "two: one file changed, one removed, one added",
    )
    (layout0.sysroot / "etc/vim/vimrc.local").write_bytes(b"v1\n")  # unchanged on disk
    before = (_tree(base / "root"), _tree(base / "rw"))
    done = tmp_path / "done"
    _copy_tree(base, done)
    layout_done = Layout(done / "root", done / "state", done / "rw", done / "etc-qgitconf/t.toml")
    _apply(lab, layout_done)
    after = (_tree(done / "root"), _tree(done / "rw"))
    assert after != before
    work = tmp_path / "work"
    layout = Layout(work / "root", work / "state", work / "rw", work / "etc-qgitconf/t.toml")
    seen = {"old": 0, "new": 0}
    n = 0
    while True:
        n += 1
        _copy_tree(base, work)
        with searchable(lab):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 0
                try:
                    apply_system(who=_who(lab), layout=layout, read=_reader(lab), fault=Fault(n))
                except BaseException:
                    code = 1
                os._exit(code)
            status = os.waitpid(pid, 0)[1]
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0
            assert (_tree(work / "root"), _tree(work / "rw")) == after
            break
        assert os.WTERMSIG(status) == 9
        state = AgentState(layout.state)
        with state.lock() as held:
            assert held
            with HomeFS(layout.sysroot) as fs:
                recover(state, fs)
        now = _tree(work / "root")
        assert now in (before[0], after[0]), n
        seen["old" if now == before[0] else "new"] += 1
        assert not list((work / "state").glob("journal*")), n
        # the next apply finishes the job, whatever the kill left
        _apply(lab, layout)
        assert (_tree(work / "root"), _tree(work / "rw")) == after, n
    print(
        f"\nsystem apply: {n - 1} SIGKILL trials, recovered to old {seen['old']}, new {seen['new']}"
    )
    assert n > 5 and seen["old"] and seen["new"]


def test_overwritten_file_gets_root_owner_and_plain_mode(lab: Lab, layout: Layout) -> None:
    """A setuid, group-writable file of another owner where a system file goes is drift;
    overwritten, the new file is root's with mode 0755 exactly (nothing carried over),
    and the kept original comes back byte for byte, mode and all, at revert."""
    _enable(lab)
    target = layout.sysroot / "etc/vim/vimrc.local"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"theirs\n")
    os.chown(target, 4242, 4242)
    target.chmod(0o6775)
    _stage(lab, {"system/etc/vim/vimrc.local": ("set nocompatible\n", 0o755)})
    with pytest.raises(DriftError):
        _apply(lab, layout)
    _apply(lab, layout, overwrite=True)
    st = target.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    with searchable(lab):
        revert_system(to=0, layout=layout, read=_reader(lab))
    assert target.read_bytes() == b"theirs\n"


def test_custom_persist_on_prints_the_dom0_declarations(lab: Lab, layout: Layout) -> None:
    """With R4.3's custom-persist on, bind-dirs.sh ignores /rw/config/qubes-bind-dirs.d:
    the root step prints the declarations dom0 must make (each file as itself)."""
    from qgitconf.ops.persist import FEATURE_KEY_MAX
    from qgitconf.system.persist import custom_persist_commands

    _enable(lab)
    _stage(lab, {"system/etc/gitconfig": GITCONFIG, "system/etc/vim/vimrc.local": "v\n"})
    rec = _apply(lab, layout, read=_reader(lab, **{"/qubes-service/custom-persist": "1"}))
    assert rec["custom_persist"] == [
        "qvm-features personal custom-persist.qgitconf-s-etc-gitconfig /etc/gitconfig",
        "qvm-features personal custom-persist.qgitconf-s-etc-vim-vimrc-local /etc/vim/vimrc.local",
    ], rec
    long = custom_persist_commands("personal", ["etc/" + "x" * 80, "usr/local/bin/t"])
    assert len(long) == 1 and len(long[0].split()[2]) <= len("custom-persist.") + FEATURE_KEY_MAX
    assert _apply(lab, layout)["custom_persist"] == []  # off: bind-dirs does it
