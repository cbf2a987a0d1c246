"""Layers in the lab: one commit on ``common`` reaches every target in one publish --all;
a conflict stops the whole run with nothing published."""

from __future__ import annotations

import json
from typing import Any

from tests.labkit import Lab, commit_files, qg, run, target_snapshot, tip

ALIAS = "[alias]\n\tco = checkout\n"


def publish_all(lab: Lab, expect: int = 0) -> list[dict[str, Any]]:
    out = qg(lab, "config-mgmt", "publish", "--all", "--json", expect=expect).stdout
    return list(json.loads(out)) if out.strip() else []


def staged_file(lab: Lab, qube: str, path: str) -> str | None:
    """A file of the update staged in ``qube`` (read from its agent repo, not applied)."""
    proc = qg(lab, qube, "git", "show", f"refs/qgitconf/staged:{path}", expect=None)
    return proc.stdout.decode() if proc.returncode == 0 else None


def git_mgmt(lab: Lab, *args: str) -> str:
    return run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", *args).stdout.decode()


def add_common(lab: Lab) -> None:
    qg(lab, "config-mgmt", "layer", "add", "common")
    qg(lab, "config-mgmt", "layer", "add", "common", "--to", "personal", "--to", "work")


def test_layer_change_reaches_every_target_in_one_publish(lab: Lab) -> None:
    add_common(lab)
    commit_files(lab, "personal", {".bashrc": "PS1='p$ '\n"}, "personal prompt")
    commit_files(lab, "common", {".gitconfig": ALIAS}, "common alias")
    results = publish_all(lab)
    assert {r["target"]: r["status"] for r in results} == {"personal": "staged", "work": "staged"}
    for qube in ("personal", "work"):
        assert staged_file(lab, qube, ".gitconfig") == ALIAS
    assert staged_file(lab, "personal", ".bashrc") == "PS1='p$ '\n"
    assert staged_file(lab, "work", ".bashrc") is None
    # The merge commit is signed, has the layer as second parent, and git agrees.
    head = tip(lab, "work")
    parents = git_mgmt(lab, "log", "-1", "--format=%P", head).split()
    assert parents[1] == tip(lab, "common")
    assert "Good signature" in run(
        lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "verify-commit", head
    ).stderr.decode("utf-8", "replace")

    # A second change to the layer: one more commit, one more publish, both targets.
    commit_files(lab, "common", {".gitconfig": ALIAS + "\tst = status\n"}, "more")
    results = publish_all(lab)
    assert [r["status"] for r in results] == ["staged", "staged"]
    assert [r["sequence"] for r in results] == [2, 2]
    # Nothing new: both up to date, no new merge commit.
    before = tip(lab, "work")
    assert [r["status"] for r in publish_all(lab)] == ["up-to-date", "up-to-date"]
    assert tip(lab, "work") == before


def test_merge_conflict_stops_publish_and_lists_it(lab: Lab) -> None:
    add_common(lab)
    commit_files(lab, "personal", {".gitconfig": "[user]\n\tname = me\n"}, "own gitconfig")
    commit_files(lab, "common", {".gitconfig": ALIAS}, "common alias")
    tips = {b: tip(lab, b) for b in ("personal", "work", "common")}
    meta = lab.home("config-mgmt") / "qgitconf.git" / "qgitconf"
    before = {q: target_snapshot(lab, q) for q in ("personal", "work")}
    proc = qg(lab, "config-mgmt", "publish", "--all", expect=1)
    err = proc.stderr.decode()
    assert "[merge-conflict]" in err and "personal <- common: .gitconfig" in err
    assert "nothing was published" in err
    # Nothing moved, nothing was sent, no update was kept: not even for work, which
    # would have merged cleanly.
    assert {b: tip(lab, b) for b in tips} == tips
    assert not (meta / "updates").exists() and not (meta / "targets").exists()
    assert {q: target_snapshot(lab, q) for q in ("personal", "work")} == before


def test_edit_and_commit_work_on_a_layer(lab: Lab) -> None:
    qg(lab, "config-mgmt", "layer", "add", "common")
    wt = qg(lab, "config-mgmt", "edit", "common").stdout.decode().strip()
    assert wt.endswith("qgitconf-work/common")
    run(lab, "config-mgmt", "sh", "-c", f"cd {wt} && printf 'set -o vi\\n' > .inputrc")
    run(lab, "config-mgmt", "git", "-C", wt, "add", ".inputrc")
    run(lab, "config-mgmt", "git", "-C", wt, "commit", "-q", "-m", "vi mode")
    assert "vi mode" in git_mgmt(lab, "log", "-1", "--format=%s", "common")
    out = qg(lab, "config-mgmt", "layer", "list").stdout.decode()
    assert out.strip() == "common (used by: -)"


def test_layer_names_are_checked(lab: Lab) -> None:
    proc = qg(lab, "config-mgmt", "target", "add", "extra", "--layer", "nope", expect=2)
    assert b"no layer 'nope'" in proc.stderr
    proc = qg(lab, "config-mgmt", "layer", "add", "personal", expect=2)
    assert b"already exists" in proc.stderr
    qg(lab, "config-mgmt", "layer", "add", "common")
    qg(lab, "config-mgmt", "target", "add", "extra", "--layer", "common")
    data = json.loads((lab.home("config-mgmt") / "qgitconf.git/qgitconf/targets.json").read_text())
    assert data["extra"]["layers"] == ["common"]


def test_dirty_worktree_of_a_target_blocks_the_merge(lab: Lab) -> None:
    add_common(lab)
    commit_files(lab, "common", {".gitconfig": ALIAS}, "common alias")
    wt = qg(lab, "config-mgmt", "edit", "personal").stdout.decode().strip()
    assert wt == "/home/user/qgitconf-work/personal"
    lab.write("config-mgmt", "qgitconf-work/personal/wip", b"half done\n")
    run(lab, "config-mgmt", "git", "-C", wt, "add", "wip")
    proc = qg(lab, "config-mgmt", "publish", "--all", expect=2)
    assert b"uncommitted changes in the worktree of personal" in proc.stderr
