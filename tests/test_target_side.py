"""The target side of issue 16, on the real lab: adopted files and revert (item 1),
commands of the wrong side (item 5), SIGINT/SIGTERM mid-apply (item 6) and
``apply --only`` (item 7's target half)."""

from __future__ import annotations

import json
from typing import Any

from tests.labkit import INCOMING, Lab, commit_files, publish, qg, run, snapshot

STATE_PREFIX = ".local/share/qgitconf"


def _home(lab: Lab, qube: str = "personal") -> dict[str, Any]:
    """The qube's home byte for byte, without the agent's own state."""
    return {
        k: v
        for k, v in snapshot(lab.home(qube)).items()
        if k != STATE_PREFIX and not k.startswith(STATE_PREFIX + "/")
    }


def _generations(lab: Lab) -> list[dict[str, Any]]:
    return list(json.loads(qg(lab, "personal", "log", "--json").stdout))


# -- item 1: a file that already matched is the user's; revert puts it back -----------------


MINE = b"[user]\n\tname = Me, by hand\n"


def _adopt(lab: Lab) -> dict[str, Any]:
    """personal holds its own ~/.config/tool.conf; the first update has the same bytes
    (plus a new .bashrc).  Returns the home before qgitconf."""
    lab.write("personal", ".config/tool.conf", MINE, mode=0o644)
    before = _home(lab)
    commit_files(lab, "personal", {".config/tool.conf": MINE, ".bashrc": "x\n"}, "one")
    publish(lab, "personal")
    out = qg(lab, "personal", "apply", "--yes").stdout.decode()
    assert "generation 1" in out and "1 written" in out, out
    return before


def test_revert_to_0_keeps_a_file_that_already_matched(lab: Lab) -> None:
    before = _adopt(lab)
    out = qg(lab, "personal", "revert", "--to", "0").stdout.decode()
    assert _home(lab) == before  # the user's file is still there, byte for byte
    assert "1 restored" in out, out
    gens = _generations(lab)
    assert gens[0]["adopted"] == [".config/tool.conf"], gens


def test_plain_revert_keeps_a_file_that_already_matched(lab: Lab) -> None:
    before = _adopt(lab)
    qg(lab, "personal", "revert")
    assert _home(lab) == before


def test_revert_to_0_after_an_update_changed_an_adopted_file(lab: Lab) -> None:
    before = _adopt(lab)
    commit_files(lab, "personal", {".config/tool.conf": "[user]\n\tname = Managed\n"}, "two")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    assert (lab.home("personal") / ".config/tool.conf").read_bytes() != MINE
    qg(lab, "personal", "revert", "--to", "0")
    assert _home(lab) == before


# -- item 5: commands of the wrong side ------------------------------------------------------


TARGET_COMMANDS: list[list[str]] = [
    ["apply", "--yes"],
    ["review"],
    ["restore"],
    ["pull"],
    ["log"],
    ["git", "log"],
    ["revert"],
]

MGMT_COMMANDS: list[list[str]] = [
    ["publish", "personal"],
    ["target", "add", "other"],
    ["target", "list"],
    ["layer", "add", "common"],
    ["layer", "list"],
    ["edit", "personal"],
    ["add", "personal", ".gitconfig"],
    ["commit", "personal", "-m", "x"],
    ["squash", "personal"],
    ["import", "work", ".bashrc", "--into", "personal"],
    ["revert", "personal"],
]


def test_target_commands_in_config_mgmt_say_where_they_run(lab: Lab) -> None:
    for cmd in TARGET_COMMANDS:
        err = qg(lab, "config-mgmt", *cmd, expect=2).stderr.decode()
        assert "[wrong-side]" in err, (cmd, err)
        assert "this is the config-mgmt qube" in err, (cmd, err)
        assert f"`{cmd[0]}` runs in a target qube" in err, (cmd, err)
        assert "target init" not in err, (cmd, err)


def test_target_init_in_config_mgmt_needs_force(lab: Lab) -> None:
    init = ["target", "init", "--source", "config-mgmt", "--key-file", INCOMING]
    before = snapshot(lab.home("config-mgmt"))
    err = qg(lab, "config-mgmt", *init, expect=2).stderr.decode()
    assert "[wrong-side]" in err and "config-mgmt qube" in err and "--force" in err, err
    assert snapshot(lab.home("config-mgmt")) == before
    qg(lab, "config-mgmt", *init, "--force")
    # now both: target commands run (nothing staged yet), config-mgmt ones still do
    err = qg(lab, "config-mgmt", "apply", "--yes", expect=1).stderr.decode()
    assert "[nothing-staged]" in err, err
    qg(lab, "config-mgmt", "target", "list")


def test_config_mgmt_commands_in_a_target_say_where_they_run(lab: Lab) -> None:
    before = snapshot(lab.home("personal"))
    for cmd in MGMT_COMMANDS:
        err = qg(lab, "personal", *cmd, expect=2).stderr.decode()
        assert "[wrong-side]" in err, (cmd, err)
        name = " ".join(cmd[:2]) if cmd[0] in ("target", "layer") else cmd[0]
        assert f"`{name}` runs in the config-mgmt qube" in err, (cmd, err)
        assert "qgitconf init" not in err, (cmd, err)
    err = qg(lab, "personal", "init", "--signing-key", lab.fingerprint, expect=2).stderr.decode()
    assert "[wrong-side]" in err and "target qube" in err and "--force" in err, err
    assert snapshot(lab.home("personal")) == before


# -- item 6: SIGINT / SIGTERM mid-apply roll back and exit 130 / 143 -------------------------

# Runs in the qube: start `qgitconf ARGS` with the fault hook set to SIGSTOP itself at
# journaled step N, wait until it is stopped, send it the real signal, let it go on
# (SIGCONT), and print the CLI's exit status and how many files of ~/.many existed at
# that moment.  Without N (""), it waits for the journal's plan.json instead.
LAUNCHER = r"""
import os, signal, subprocess, sys, time
sig, n, args = getattr(signal, sys.argv[1]), sys.argv[2], sys.argv[3:]
env = dict(os.environ)
if n:
    env.update(QGITCONF_FAULT_AFTER_WRITES=n, QGITCONF_FAULT_KIND="stop")
plan = os.path.expanduser("~/.local/share/qgitconf/journal/plan.json")
p = subprocess.Popen(["qgitconf", *args], env=env, stderr=subprocess.PIPE)
while p.poll() is None:
    if n:
        with open(f"/proc/{p.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                break
    elif os.path.exists(plan):
        break
    time.sleep(0.002)
many = os.path.expanduser("~/.many")
names = os.listdir(many) if os.path.isdir(many) else []
present = len([f for f in names if not f.startswith(".qgc-")])
if p.poll() is None:
    os.kill(p.pid, sig)
    if n:
        os.kill(p.pid, signal.SIGCONT)
err = p.stderr.read()
sys.stderr.buffer.write(err)
print(p.wait(), present)
"""


def _signal(lab: Lab, sig: str, step: int | None, *args: str) -> tuple[int, int, str]:
    proc = run(lab, "personal", "python3", "-c", LAUNCHER, sig, str(step or ""), *args)
    rc, present = proc.stdout.decode().split()
    return int(rc), int(present), proc.stderr.decode()


MANY = {f".many/f{i:03}": f"file {i}\n" for i in range(40)}
# Journaled steps of applying MANY into an empty home (docs/apply.md, section 6): the
# journal (1), one mkdir (1; the undo sync is step 2), then two per file, each created
# in place in the new directory (``partial-direct``, ``direct-written``): step 43 is
# the 20th file written.
MID_WRITES = 43


def test_sigint_mid_apply_rolls_back_and_exits_130(lab: Lab) -> None:
    commit_files(lab, "personal", MANY, "many")
    publish(lab, "personal")
    before = _home(lab)
    rc, present, err = _signal(lab, "SIGINT", MID_WRITES, "apply", "--yes")
    assert present > 0, (present, err)  # the signal came while files were being written
    assert rc == 130, (rc, err)
    assert "[interrupted]" in err and "SIGINT" in err and "rolled back" in err, err
    assert _home(lab) == before
    assert _generations(lab) == []
    st = json.loads(qg(lab, "personal", "status", "--json").stdout)
    assert st["interrupted"] is False and st["pending"] is True
    qg(lab, "personal", "apply", "--yes")  # nothing is wedged
    assert len(list((lab.home("personal") / ".many").iterdir())) == 40


def test_sigterm_mid_revert_rolls_back_and_exits_143(lab: Lab) -> None:
    commit_files(lab, "personal", MANY, "many")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    applied = _home(lab)
    rc, _present, err = _signal(lab, "SIGTERM", 5, "revert")
    assert rc == 143, (rc, err)
    assert "[terminated]" in err and "SIGTERM" in err and "rolled back" in err, err
    assert _home(lab) == applied
    assert [g["number"] for g in _generations(lab)] == [1]


def test_sigint_from_outside_once_the_journal_exists(lab: Lab) -> None:
    """No fault hook: a plain SIGINT as soon as plan.json exists, on a large apply.
    It lands before the commit point (rolled back) or, rarely, after it (finished);
    either way the CLI exits 130 and says which."""
    files = {f".many/d{i // 100:02}/f{i:04}": f"file {i}\n" for i in range(2000)}
    commit_files_at_once(lab, files)
    publish(lab, "personal")
    before = _home(lab)
    rc, _present, err = _signal(lab, "SIGINT", None, "apply", "--yes")
    assert rc == 130, (rc, err)
    if "rolled back" in err:
        assert _home(lab) == before
        assert _generations(lab) == []
    else:
        assert "was finished" in err, err
        assert [g["number"] for g in _generations(lab)] == [1]


def commit_files_at_once(lab: Lab, files: dict[str, str]) -> None:
    """Many files in one `add` (commit_files adds them one by one)."""
    for rel, text in files.items():
        lab.write("config-mgmt", f"src/personal/{rel}", text.encode())
    run(
        lab,
        "config-mgmt",
        "sh",
        "-c",
        "cd src/personal && qgitconf add personal $(find . -type f | sed 's|^./||') "
        "&& qgitconf commit personal -m many",
    )


# -- item 7: apply --only --------------------------------------------------------------------


def test_apply_only_summarises_the_files_left_out(lab: Lab) -> None:
    files: dict[str, str | bytes] = {
        **MANY,
        ".config/app/a.conf": "a\n",
        ".config/app/b.conf": "b\n",
    }
    commit_files(lab, "personal", files, "many and app")
    publish(lab, "personal")
    out = qg(lab, "personal", "apply", "--yes", "--only", "~/.config/app/a.conf")
    lines = out.stdout.decode().splitlines()
    assert len(lines) <= 10, lines
    assert any("41 files" in line for line in lines), lines
    assert any("--verbose" in line for line in lines), lines
    out = qg(lab, "personal", "apply", "--yes", "--only", ".config/app/", "--verbose")
    lines = out.stdout.decode().splitlines()
    assert sum("left out this time: " in line for line in lines) == 40, lines
    assert (lab.home("personal") / ".config/app/b.conf").read_text() == "b\n"
    assert not (lab.home("personal") / ".many").exists()


def test_apply_only_a_path_that_matches_nothing_is_a_usage_error(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "x\n"}, "one")
    publish(lab, "personal")
    before = snapshot(lab.home("personal"))
    proc = qg(lab, "personal", "apply", "--yes", "--only", ".nonexistent", expect=2)
    err = proc.stderr.decode()
    assert "[usage]" in err and ".nonexistent" in err and "matches no file" in err, err
    assert "already applied" not in proc.stdout.decode()
    assert snapshot(lab.home("personal")) == before
    qg(lab, "personal", "apply", "--yes")  # applied, then the same again
    proc = qg(lab, "personal", "apply", "--yes", "--only", ".bashrc/x", expect=2)
    assert "'.bashrc/x'" in proc.stderr.decode()


# -- should fix: where --overwrite kept the copy; revert --json ------------------------------


def test_overwrite_says_where_the_kept_copy_went_and_revert_json(lab: Lab) -> None:
    from qgitconf.agent.plan import kept_name

    lab.write("personal", ".bashrc", b"mine\n")
    commit_files(lab, "personal", {".bashrc": "managed\n"}, "one")
    publish(lab, "personal")
    out = qg(lab, "personal", "apply", "--yes", "--overwrite").stdout.decode()
    at = f"/home/user/{STATE_PREFIX}/originals/{kept_name('.bashrc')}"
    assert f"overwritten .bashrc: the previous one is kept in {at}" in out, out
    assert (
        lab.home("personal") / STATE_PREFIX / "originals" / kept_name(".bashrc")
    ).read_bytes() == (b"mine\n")
    rec = json.loads(qg(lab, "personal", "revert", "--json").stdout)
    assert rec["number"] == 2 and rec["restored"] == [".bashrc"], rec
    assert (lab.home("personal") / ".bashrc").read_bytes() == b"mine\n"
