"""Apply, revert and restore in a target qube: rules 9 and 10, issue 4's cases.

Each test drives the real CLI in the lab's ``personal`` qube (through the real qrexec,
as its user); what a test itself changes in that home, it changes as that user
(``as_qube_user``).  The crash-consistency trials are in ``test_crash.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from qgitconf.agent import commands
from qgitconf.agent import journal as journal_module
from qgitconf.agent.homefs import HomeFS
from qgitconf.agent.plan import kept_name
from qgitconf.agent.receive import accept_update
from qgitconf.agent.statcache import stat_entry
from qgitconf.agent.state import AgentState
from qgitconf.agent.vouch import RACY_NS
from qgitconf.errors import ApplyError, DriftError
from qgitconf.limits import MAX_HOME_PATH_BYTES, NAME_MAX
from tests.applykit import STATE, as_user, home_view, stage, state_path, status
from tests.hostile.corpus import (
    MODE_EXEC,
    MODE_FILE,
    SOURCE,
    TARGET,
    World,
    build_world,
    entries_tree,
)
from tests.labkit import Lab, qg, run, snapshot


def apply(lab: Lab, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[bytes]:
    return qg(lab, "personal", "apply", "--yes", *args, expect=expect)


def test_symlinked_config_dir_is_refused_never_followed(lab: Lab) -> None:
    home = lab.home("personal")
    # outside the home: the qube's own /tmp (read from the host through its root)
    elsewhere = lab.in_root("personal") / "tmp/elsewhere-config"
    run(lab, "personal", "mv", ".config", "/tmp/elsewhere-config")  # the agent's config too
    run(lab, "personal", "ln", "-s", "/tmp/elsewhere-config", ".config")
    try:
        stage(lab, {".config/git/config": "[user]\n", ".bashrc": "PS1='$ '\n"})
        outside, before = home_view(elsewhere), home_view(home)
        proc = apply(lab, "--overwrite", expect=1)
        err = proc.stderr.decode()
        assert "[drift]" in err and "'.config' is a symlink" in err and "never follows" in err
        assert home_view(home) == before and home_view(elsewhere) == outside
        apply(lab, "--keep", ".config")  # the rest can go ahead, explicitly
        assert (home / ".bashrc").read_text() == "PS1='$ '\n"
        assert home_view(elsewhere) == outside and not (elsewhere / "git").exists()
    finally:
        run(lab, "personal", "rm", "-rf", "/tmp/elsewhere-config")


def test_hard_linked_bashrc_is_replaced_other_link_untouched(lab: Lab) -> None:
    home = lab.home("personal")
    with as_user(lab, "personal"):
        (home / ".bashrc").write_text("mine\n")
        (home / "other").mkdir()
        os.link(home / ".bashrc", home / "other" / "bashrc")
    stage(lab, {".bashrc": "managed\n"})
    apply(lab, expect=1)  # a file qgitconf never wrote
    apply(lab, "--overwrite")
    assert (home / ".bashrc").read_text() == "managed\n"
    assert (home / "other" / "bashrc").read_text() == "mine\n"
    assert (home / ".bashrc").stat().st_ino != (home / "other" / "bashrc").stat().st_ino
    assert (state_path(lab) / "originals" / kept_name(".bashrc")).read_text() == "mine\n"
    qg(lab, "personal", "revert", "--to", "0")
    assert (home / ".bashrc").read_text() == "mine\n"


def test_file_becomes_directory_and_back(lab: Lab) -> None:
    home = lab.home("personal")
    stage(lab, {".config/foo": "a file\n", ".local/bin/tool": ("#!/bin/sh\n", 0o755)})
    apply(lab)
    stage(lab, {".config/foo/bar": "in a dir\n", ".local/bin/tool": "plain\n"})
    apply(lab)
    assert (home / ".config/foo/bar").read_text() == "in a dir\n"
    assert (home / ".local/bin/tool").stat().st_mode & 0o777 == 0o644
    stage(lab, {".config/foo": "a file again\n"})
    apply(lab)
    assert (home / ".config/foo").is_file()
    assert (home / ".config/foo").read_text() == "a file again\n"
    qg(lab, "personal", "revert")
    assert (home / ".config/foo/bar").read_text() == "in a dir\n"
    assert status(lab)["drift"] == []


def test_directory_or_file_in_the_way_on_disk(lab: Lab) -> None:
    home = lab.home("personal")
    stage(lab, {".bashrc": "x\n", ".local/bin/tool": "t\n"})
    apply(lab)
    # The user replaces a managed file by a directory, and a directory by a file.
    with as_user(lab, "personal"):
        (home / ".bashrc").unlink()
        (home / ".bashrc").mkdir()
        (home / ".bashrc" / "notes").write_text("mine\n")
        shutil.rmtree(home / ".local/bin")
        (home / ".local/bin").write_text("a file now\n")
    st = status(lab)
    assert {d["path"]: d["state"] for d in st["drift_detail"]} == {
        ".bashrc": "type",
        ".local/bin/tool": "blocked",
    }
    stage(lab, {".bashrc": "y\n", ".local/bin/tool": "u\n"})
    before = home_view(home)
    proc = apply(lab, "--overwrite", expect=1)
    err = proc.stderr.decode()
    assert "directory holding files" in err and "'.local/bin' is a symlink or a file" in err
    assert home_view(home) == before


def test_executable_bit_change(lab: Lab) -> None:
    home = lab.home("personal")
    stage(lab, {"bin/x": "#!/bin/sh\necho hi\n"})
    apply(lab)
    assert (home / "bin/x").stat().st_mode & 0o777 == 0o644
    stage(lab, {"bin/x": ("#!/bin/sh\necho hi\n", 0o755)})
    apply(lab)
    assert (home / "bin/x").stat().st_mode & 0o777 == 0o755
    with as_user(lab, "personal"):
        (home / "bin/x").chmod(0o700)  # a local mode change is drift too
    assert status(lab)["drift_detail"] == [{"path": "bin/x", "state": "mode"}]


def test_read_only_file_is_replaced_and_restored_read_only(lab: Lab) -> None:
    home = lab.home("personal")
    with as_user(lab, "personal"):
        (home / ".editorconfig").write_text("root = true\n")
        (home / ".editorconfig").chmod(0o400)
    stage(lab, {".editorconfig": "indent = 4\n"})
    apply(lab, "--overwrite")
    assert (home / ".editorconfig").read_text() == "indent = 4\n"
    assert (home / ".editorconfig").stat().st_mode & 0o777 == 0o644
    qg(lab, "personal", "revert", "--to", "0")
    assert (home / ".editorconfig").read_text() == "root = true\n"
    assert (home / ".editorconfig").stat().st_mode & 0o777 == 0o400


def test_revert_to_zero_restores_exact_bytes_and_modes(lab: Lab) -> None:
    home = lab.home("personal")
    with as_user(lab, "personal"):
        (home / ".gitconfig").chmod(0o600)
        (home / ".inputrc").write_bytes(b"\x00binary\xff\n")
        (home / ".inputrc").chmod(0o444)
        (home / ".vimrc").symlink_to(".config/nvim/init.vim")
        (home / "run.sh").write_text("#!/bin/sh\n")
        (home / "run.sh").chmod(0o750)
    before = home_view(home)
    stage(
        lab,
        {
            ".gitconfig": "[alias]\n\tst = status\n",
            ".inputrc": "set bell-style none\n",
            ".vimrc": "set nu\n",
            "run.sh": ("#!/bin/sh\necho managed\n", 0o755),
            ".bashrc": "new file\n",
            ".config/qgitconf-extra": "new in an existing dir\n",
        },
    )
    apply(lab, expect=1)
    apply(lab, "--overwrite")
    stage(lab, {".gitconfig": "[alias]\n\tco = checkout\n", ".bashrc": "second\n"})
    apply(lab)
    out = qg(lab, "personal", "revert", "--to", "0").stdout.decode()
    assert "restored" in out
    assert home_view(home) == before
    gens = json.loads(qg(lab, "personal", "log", "--json").stdout)
    assert [g["kind"] for g in gens] == ["apply", "apply", "revert"]
    qg(lab, "personal", "revert")  # and the revert can be reverted
    assert (home / ".gitconfig").read_text() == "[alias]\n\tco = checkout\n"


def test_deletes_only_unchanged_files_it_wrote(lab: Lab) -> None:
    home = lab.home("personal")
    stage(lab, {"a": "a\n", "b": "b\n", "keep": "k\n"})
    apply(lab)
    with as_user(lab, "personal"):
        (home / "b").write_text("edited\n")
        (home / "mine").write_text("never managed\n")
    stage(lab, {"keep": "k\n"})
    out = apply(lab).stdout.decode()
    assert not (home / "a").exists()
    assert (home / "b").read_text() == "edited\n"
    assert "changed locally, left in place: b" in out
    assert (home / "mine").read_text() == "never managed\n"


def test_drift_needs_a_choice_keep_and_only(lab: Lab) -> None:
    home = lab.home("personal")
    # .profile is shell: the login shell qrexec starts every command with reads it
    stage(lab, {".bashrc": "1\n", ".profile": "# 1\n", ".inputrc": "1\n"})
    apply(lab)
    with as_user(lab, "personal"):
        (home / ".bashrc").write_text("local\n")
    stage(lab, {".bashrc": "2\n", ".profile": "# 2\n", ".inputrc": "2\n"})
    before = home_view(home)
    proc = apply(lab, expect=1)  # non-interactive: no prompt, code drift
    assert proc.stderr.decode().startswith("qgitconf: error [drift]")
    assert home_view(home) == before
    out = apply(lab, "--keep", "~/.bashrc", "--only", ".profile").stdout.decode()
    assert "left out this time: .bashrc" in out and "left out this time: .inputrc" in out
    assert (home / ".profile").read_text() == "# 2\n" and (home / ".inputrc").read_text() == "1\n"
    assert (home / ".bashrc").read_text() == "local\n"
    apply(lab, "--keep", ".bashrc")
    assert (home / ".inputrc").read_text() == "2\n"
    apply(lab, expect=1)  # .bashrc still needs a choice
    apply(lab, "--overwrite")
    assert (home / ".bashrc").read_text() == "2\n"
    kept = list((state_path(lab) / "backups").rglob(".bashrc"))
    assert [p.read_text() for p in kept] == ["local\n"]
    assert apply(lab).stdout.decode().startswith("already applied")


def test_restore_recreates_missing_files_never_over_drift(lab: Lab) -> None:
    home = lab.home("personal")
    stage(lab, {".bashrc": "b\n", ".config/app/conf": "c\n", ".vimrc": ("link", ".bashrc")})
    apply(lab)
    with as_user(lab, "personal"):
        (home / ".bashrc").write_text("changed\n")
        shutil.rmtree(home / ".config/app")
        (home / ".vimrc").unlink()
    out = qg(lab, "personal", "restore").stdout.decode()
    assert "restored 2 missing file(s)" in out and "changed locally" in out
    assert (home / ".config/app/conf").read_text() == "c\n"
    assert os.readlink(home / ".vimrc") == ".bashrc"
    assert (home / ".bashrc").read_text() == "changed\n"
    assert status(lab)["drift"] == [".bashrc"]
    assert len(json.loads(qg(lab, "personal", "log", "--json").stdout)) == 1


def _fault(lab: Lab, n: int, kind: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {"QGITCONF_FAULT_AFTER_WRITES": str(n), "QGITCONF_FAULT_KIND": kind}
    return lab.run("personal", ["qgitconf", *args], extra_env=env)


@pytest.mark.parametrize("kind", ["enospc", "eacces"])
def test_disk_full_and_permission_errors_roll_back(lab: Lab, kind: str) -> None:
    """The fault hook fails one journaled step with ENOSPC/EACCES, at several points."""
    home = lab.home("personal")
    stage(lab, {".bashrc": "1\n", ".config/a/b": "1\n"})
    apply(lab)
    with as_user(lab, "personal"):
        (home / ".gitconfig").chmod(0o600)
    stage(lab, {".bashrc": "2\n", ".config/a/c/d": "2\n", ".gitconfig": "[x]\n"})
    before = home_view(home)
    for n in (1, 3, 6, 9, 14):
        proc = _fault(lab, n, kind, "apply", "--yes", "--overwrite")
        err = proc.stderr.decode()
        assert proc.returncode == 6, err
        assert err.startswith("qgitconf: error [apply-failed]: apply failed: ")
        assert ("No space left" if kind == "enospc" else "Permission denied") in err
        assert "rolled back: $HOME is as it was before" in err
        assert home_view(home) == before
        assert not (state_path(lab) / "journal").exists()
    assert status(lab)["generation"] == 1
    apply(lab, "--overwrite")  # and once there is room, it goes through
    assert (home / ".config/a/c/d").read_text() == "2\n"


def _in_mount_ns(lab: Lab, qube: str, *cmd: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` as root in ``qube``'s mount namespace (a mount made on the host does
    not reach it: each qube's namespace is private)."""
    pid = lab.in_root(qube).parent.name  # /proc/PID/root
    enter = ["nsenter", "-t", pid, "-m", "-r", "--"]
    return subprocess.run([*enter, *cmd], capture_output=True, check=False)


def _mount_tmpfs(lab: Lab, qube: str, inside: str, size: str) -> bool:
    uid = lab.uid(qube)
    opts = f"size={size},mode=0755,uid={uid},gid={uid}"
    proc = _in_mount_ns(lab, qube, "mount", "-t", "tmpfs", "-o", opts, "tmpfs", inside)
    return proc.returncode == 0


def test_real_disk_full_rolls_back(lab: Lab) -> None:
    # the home as the qube sees it (with the tmpfs), read from the host
    home = lab.in_root("personal") / "home/user"
    run(lab, "personal", "mkdir", ".cache")
    if os.geteuid() != 0 or not _mount_tmpfs(lab, "personal", "/home/user/.cache", "256k"):
        pytest.skip("needs to mount a small tmpfs")
    try:
        stage(lab, {".bashrc": "1\n", ".cache/big": os.urandom(512 * 1024)})
        before = home_view(home)
        proc = apply(lab, expect=6)
        assert b"No space left on device" in proc.stderr and b"rolled back" in proc.stderr
        assert home_view(home) == before
        assert list((home / ".cache").iterdir()) == []  # no temp file left
    finally:
        _in_mount_ns(lab, "personal", "umount", "/home/user/.cache")


def test_real_permission_error_rolls_back(lab: Lab) -> None:
    home = lab.home("personal")
    with as_user(lab, "personal"):
        (home / ".config/locked").mkdir()
    proc = subprocess.run(
        ["chattr", "+i", str(home / ".config/locked")], capture_output=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        stage(lab, {".bashrc": "1\n", ".config/locked/x": "1\n"})
        before = home_view(home)
        proc = apply(lab, expect=6)
        assert b"Operation not permitted" in proc.stderr and b"rolled back" in proc.stderr
        assert home_view(home) == before
    finally:
        subprocess.run(["chattr", "-i", str(home / ".config/locked")], check=False)


def test_interrupted_apply_is_recovered_by_the_next_command(lab: Lab) -> None:
    home = lab.home("personal")
    stage(lab, {".bashrc": "1\n", "a": "1\n", "b": "1\n"})
    apply(lab)
    stage(lab, {".bashrc": "2\n", "a": "2\n", "b": "2\n"})
    proc = _fault(lab, 6, "kill", "apply", "--yes")
    assert proc.returncode == 128 + signal.SIGKILL  # qrexec's exit code for a killed command
    assert (state_path(lab) / "journal" / "plan.json").exists()
    # While another process holds the lock, status only reports the journal.
    state = AgentState(state_path(lab))
    with state.lock() as held:
        assert held
        st = status(lab)
    assert st["busy"] and st["interrupted"] and st["journal"]["steps"] == 3
    # The next apply rolls it back, says so, then applies.
    proc = apply(lab)
    assert b"was rolled back" in proc.stderr
    assert [(home / p).read_text() for p in (".bashrc", "a", "b")] == ["2\n"] * 3
    # A revert killed past its commit point is finished by the next status.
    for n in range(1, 40):
        proc = _fault(lab, n, "kill", "revert")
        if proc.returncode == 0:
            break
        st_proc = qg(lab, "personal", "status", "--json")
        st = json.loads(st_proc.stdout)
        assert st["recovered"] and not st["interrupted"]
        if "was finished" in st["recovered"]:
            assert (home / "a").read_text() == "1\n"
            return
    raise AssertionError("no kill point past the commit point")


def test_status_json_age_and_stat_cache(lab: Lab) -> None:
    home = lab.home("personal")
    stage(lab, {".bashrc": "12345\n"})
    apply(lab)
    st = status(lab)
    assert st["last_update_age"] is not None and 0 <= st["last_update_age"] < 600
    assert st["managed"] == 1 and st["drift"] == [] and not st["interrupted"]
    fs = HomeFS(home)
    rec = json.loads((state_path(lab) / "manifest.json").read_text())[".bashrc"]
    assert len(rec["stat"]) == 5
    # A trusted cache entry answers without reading the file ...
    rec["stat"] = stat_entry(os.lstat(home / ".bashrc"))
    rec["stat"][4] += RACY_NS + 1
    assert not fs.probe(".bashrc", rec).hashed
    # ... and an edit that keeps the size and mtime is still seen (ctime moved on).
    st0 = os.lstat(home / ".bashrc")
    time.sleep(0.02)
    with as_user(lab, "personal"):
        (home / ".bashrc").write_text("54321\n")
        os.utime(home / ".bashrc", ns=(st0.st_atime_ns, st0.st_mtime_ns))
    disk = fs.probe(".bashrc", rec)
    assert disk.hashed and disk.record()["sha256"] != rec["sha256"]
    assert status(lab)["drift_detail"] == [{"path": ".bashrc", "state": "modified"}]


def test_no_temp_or_journal_left_after_apply(lab: Lab) -> None:
    home = lab.home("personal")
    stage(lab, {f".dots/f{i}": f"{i}\n" for i in range(20)})
    apply(lab)
    names = [p.name for p in home.rglob("*")]
    assert not [n for n in names if ".qgc-" in n]
    assert not (home / STATE / "journal").exists()


# -- in-process: the agent's own functions on a copy of the hostile corpus's target --------
#
# No lab: ``accept_update`` and the agent commands run in this process, on a copy of a
# home that accepted and applied one genuine update (tests/hostile/corpus.py).


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("apply-world"))


class Target:
    """A copy of the corpus target's home, updated and applied in-process."""

    def __init__(self, world: World, home: Path) -> None:
        shutil.copytree(world.home, home, symlinks=True)
        self.world = world
        self.home = home
        self.env = world.env(home)
        self.tip = world.c1
        self.sequence = 1

    def stage(self, entries: dict[str, tuple[int, bytes]]) -> str:
        """Sign, receive and stage a commit whose tree holds exactly ``entries``."""
        w = self.world
        objs, sha = w.child(lambda o: entries_tree(o, entries), parent=self.tip)
        self.sequence += 1
        data = w.update(objs, sha, prereq=self.tip, sequence=self.sequence)
        outcome = accept_update(io.BytesIO(data), SOURCE, self.home, self.env, name=TARGET)
        assert outcome.result == "staged"
        self.tip = sha
        return sha

    def apply(self, *, overwrite: bool = False) -> dict[str, Any]:
        return commands.apply(self.home, self.env, overwrite=overwrite)

    def revert(self, to: int | None = None) -> dict[str, Any]:
        return commands.revert(self.home, self.env, to=to, overwrite=False)

    def status(self) -> dict[str, Any]:
        return commands.status(self.home, self.env)


def test_a_kept_symlink_original_is_never_written_through(world: World, tmp_path: Path) -> None:
    """Issue 14 §4: the user's ``~/.config/nvim -> <outside>`` is kept as an original;
    a later --overwrite below that path must not write or delete in ``<outside>``."""
    t = Target(world, tmp_path / "target")
    outside = tmp_path / "outside" / "nvim"
    outside.mkdir(parents=True)
    (outside / "init.lua").write_text("-- the user's real config, outside $HOME\n")
    (outside / "plugins.lua").write_text("return {}\n")
    nvim = t.home / ".config/nvim"
    nvim.symlink_to(outside)
    seen = snapshot(outside.parent)
    t.stage({".config/nvim": (MODE_FILE, b"managed\n")})
    with pytest.raises(DriftError):
        t.apply()
    t.apply(overwrite=True)
    assert not nvim.is_symlink() and nvim.read_bytes() == b"managed\n"
    # The user makes it a directory of their own again; the next update writes below it.
    nvim.unlink()
    nvim.mkdir()
    (nvim / "init.lua").write_text("-- mine, in $HOME\n")
    t.stage({".config/nvim/init.lua": (MODE_FILE, b"-- managed\n")})
    t.apply(overwrite=True)
    assert (nvim / "init.lua").read_bytes() == b"-- managed\n"
    assert snapshot(outside.parent) == seen
    t.revert(to=0)
    assert (nvim / "init.lua").read_bytes() == b"-- mine, in $HOME\n"
    assert snapshot(outside.parent) == seen
    shutil.rmtree(nvim)  # once the directory is gone, revert brings the symlink back
    t.revert(to=0)
    assert nvim.is_symlink() and os.readlink(nvim) == str(outside)
    assert snapshot(outside.parent) == seen
    assert t.status()["drift"] == []


def test_kept_copies_are_named_by_path_hash_and_never_followed(
    world: World, tmp_path: Path
) -> None:
    """A kept original of a link is a link in a flat directory; a planted symlink
    directory in the state is not written through either."""
    t = Target(world, tmp_path / "target")
    (t.home / ".vimrc").symlink_to(".config/vim/vimrc")
    t.stage({".vimrc": (MODE_FILE, b"set nu\n")})
    t.apply(overwrite=True)
    originals = t.home / STATE / "originals"
    assert sorted(p.name for p in originals.iterdir()) == [kept_name(".vimrc")]
    assert os.readlink(originals / kept_name(".vimrc")) == ".config/vim/vimrc"
    record = AgentState(t.home / STATE).originals()[".vimrc"]
    assert record == {"type": "link", "target": ".config/vim/vimrc"}
    # A backups/<N> planted as a symlink to elsewhere: the keep stops, nothing is written.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    gens = AgentState(t.home / STATE).generations()
    (t.home / STATE / "backups").mkdir(exist_ok=True)
    (t.home / STATE / "backups" / str(gens[-1]["number"] + 1)).symlink_to(elsewhere)
    (t.home / ".vimrc").write_text("set nonu\n")  # drift: kept as a backup
    t.stage({".vimrc": (MODE_FILE, b"set rnu\n")})
    before = home_view(t.home)
    with pytest.raises(ApplyError, match="rolled back"):
        t.apply(overwrite=True)
    assert list(elsewhere.iterdir()) == []
    assert home_view(t.home) == before


# Names of NAME_MAX bytes (and a deep path of MAX_HOME_PATH_BYTES): applied with their
# temp names, kept as originals and backups, reverted (issue 14 §4).
LONG_NAMES = {
    "ascii-255": "n" * 255,
    "utf8-240": "\u00e9" * 120,
    "utf8-255": "\u65e5" * 85,
    "deep-3839": "/".join(["d" * 255] * 14 + ["f" * 255])[2:],
}


@pytest.mark.parametrize("name", LONG_NAMES.values(), ids=LONG_NAMES.keys())
def test_longest_accepted_names_apply_keep_and_revert(
    world: World, tmp_path: Path, name: str
) -> None:
    t = Target(world, tmp_path / "target")
    path = f"x/{name}"
    assert len(path.encode()) <= MAX_HOME_PATH_BYTES
    assert max(len(p.encode()) for p in path.split("/")) <= NAME_MAX
    file = t.home / path
    file.parent.mkdir(parents=True)
    file.write_bytes(b"the user's own\n")  # kept as an original when overwritten
    t.stage({path: (MODE_FILE, b"v1\n")})
    t.apply(overwrite=True)
    assert file.read_bytes() == b"v1\n"
    file.write_bytes(b"changed locally\n")  # drift: kept as a backup when overwritten
    t.stage({path: (MODE_EXEC, b"v2\n")})
    t.apply(overwrite=True)
    assert file.read_bytes() == b"v2\n" and file.stat().st_mode & 0o777 == 0o755
    assert t.status()["drift"] == []
    t.revert()
    assert file.read_bytes() == b"v1\n"
    t.revert(to=0)
    assert file.read_bytes() == b"the user's own\n"
    assert not (t.home / STATE / "journal").exists()
    assert not list(t.home.rglob(".qgc-*"))


def test_a_journal_with_an_unwritable_temp_name_does_not_wedge_the_agent(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temp names of an older qgitconf (``.<name>.qgc-<id>-<i>``) exceed NAME_MAX
    for a 240-byte name: the write fails, and the rollback must still finish (the
    temp file can never have existed) instead of leaving a journal that makes every
    later apply, status, revert and restore fail.  The file is in a directory that
    exists (~/.config): one in a directory the apply creates is written in place,
    without a temp name."""

    def old_temp_name(path: str, jid: str, i: int) -> str:
        return f".{path.rsplit('/', 1)[-1][:200]}.qgc-{jid}-{i}"

    t = Target(world, tmp_path / "target")
    path = ".config/" + "\u00e9" * 120
    t.stage({path: (MODE_FILE, b"v1\n"), ".bashrc": (MODE_FILE, b"PS1='> '\n")})
    before = home_view(t.home)
    monkeypatch.setattr(journal_module, "temp_name", old_temp_name)
    with pytest.raises(ApplyError) as info:
        t.apply()
    assert "rolled back: $HOME is as it was before" in info.value.detail
    assert home_view(t.home) == before
    assert not (t.home / STATE / "journal").exists()
    monkeypatch.undo()
    assert t.status()["drift"] == []
    t.apply()
    assert (t.home / path).read_bytes() == b"v1\n"


def test_files_in_new_directories_are_created_in_place(world: World, tmp_path: Path) -> None:
    """A file whose path was absent, in a directory the apply creates, is written in
    place (no temp name, no rename): exact content and mode, the manifest's SHA-256 and
    stat cache right, nothing else left; a file in a directory that exists still goes
    through a temp name."""
    t = Target(world, tmp_path / "target")
    entries = {
        ".config/newapp/sub/a.conf": (MODE_FILE, b"a\n"),
        ".config/newapp/run.sh": (MODE_EXEC, b"#!/bin/sh\n"),
        ".config/newapp/empty": (MODE_FILE, b""),
        ".config/top.conf": (MODE_FILE, b"top\n"),
    }
    t.stage(entries)
    seen: list[str] = []
    real_create, real_temp = HomeFS.create, HomeFS.write_temp

    def create(fs: HomeFS, path: str, data: bytes, mode: int) -> os.stat_result:
        seen.append(f"direct {path}")
        return real_create(fs, path, data, mode)

    def write_temp(fs: HomeFS, path: str, *args: Any, **kw: Any) -> None:
        seen.append(f"temp {path}")
        real_temp(fs, path, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HomeFS, "create", create)
        mp.setattr(HomeFS, "write_temp", write_temp)
        t.apply()
    assert sorted(seen) == [
        "direct .config/newapp/empty",
        "direct .config/newapp/run.sh",
        "direct .config/newapp/sub/a.conf",
        "temp .config/top.conf",
    ]
    manifest = AgentState(t.home / STATE).manifest()
    for path, (mode, data) in entries.items():
        st = os.lstat(t.home / path)
        assert (t.home / path).read_bytes() == data
        assert st.st_mode & 0o7777 == (0o755 if mode == MODE_EXEC else 0o644)
        assert manifest[path]["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest[path]["stat"][:4] == [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    assert not [p for p in t.home.rglob("*") if ".qgc-" in p.name]
    assert t.status()["drift"] == []


def test_a_file_appearing_in_a_new_directory_is_never_written_through(
    world: World, tmp_path: Path
) -> None:
    """Something that appears, after the plan, where a file is to be created in place
    is neither written through nor replaced (``O_EXCL``): the apply stops and rolls
    back, and the file that appeared stays as it is."""
    t = Target(world, tmp_path / "target")
    t.stage(
        {".config/newapp/a.conf": (MODE_FILE, b"a\n"), ".config/newapp/b.conf": (MODE_FILE, b"b\n")}
    )
    before = home_view(t.home)
    real_create = HomeFS.create

    def create(fs: HomeFS, path: str, data: bytes, mode: int) -> os.stat_result:
        if path.endswith("b.conf"):
            (t.home / path).write_bytes(b"the user's, just made\n")
        return real_create(fs, path, data, mode)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HomeFS, "create", create)
        with pytest.raises(DriftError) as info:
            t.apply()
    assert "appeared while applying: .config/newapp/b.conf" in info.value.detail
    assert "rolled back" in info.value.detail
    assert (t.home / ".config/newapp/b.conf").read_bytes() == b"the user's, just made\n"
    assert not (t.home / ".config/newapp/a.conf").exists()
    (t.home / ".config/newapp/b.conf").unlink()
    (t.home / ".config/newapp").rmdir()
    assert home_view(t.home) == before
    assert not (t.home / STATE / "journal").exists()


def test_a_damaged_sidecar_means_hashing(world: World, tmp_path: Path) -> None:
    """The apply takes each blob's SHA-256 from Receive's sidecars (objcache); a
    sidecar that does not parse is skipped and the blobs are hashed instead: the
    manifest is the same either way."""
    t = Target(world, tmp_path / "target")
    entries = {".config/side/a.conf": (MODE_FILE, b"a\n" * 100), ".config/b": (MODE_FILE, b"b\n")}
    t.stage(entries)
    sidecars = list((t.home / STATE / "repo" / "qgitconf-objects").glob("pack-*.qgc"))
    assert sidecars
    for s in sidecars:
        s.write_bytes(s.read_bytes()[:30])  # truncated: does not parse
    t.apply()
    manifest = AgentState(t.home / STATE).manifest()
    for path, (_mode, data) in entries.items():
        assert manifest[path]["sha256"] == hashlib.sha256(data).hexdigest()
    assert t.status()["drift"] == []
