"""One file over a target's size limit must not block that target for good (issue 16,
item 2): publish names the file, and `qgitconf squash TARGET` replaces the commits the
target has not accepted by one signed commit on top of what it accepted, which the
target takes without a rollback error and without re-enrolment."""

from __future__ import annotations

import json

from qgitconf.core.envelope import parse_statement
from qgitconf.lab.attacks import split_update
from qgitconf.mgmt.sizes import MAX_FILE_BYTES
from tests.labkit import (
    Lab,
    commit_files,
    kept_update,
    publish,
    qg,
    rejected_log,
    run,
    target_snapshot,
    tip,
)


def big_file(lab: Lab) -> str:
    """A sparse file one byte over the limit a target accepts by default, made in
    config-mgmt's home; its path as config-mgmt sees it."""
    run(lab, "config-mgmt", "truncate", "-s", str(MAX_FILE_BYTES + 1), "big.bin")
    return "/home/user/big.bin"


def commit_big(lab: Lab, target: str) -> str:
    """Add and commit the big file with the explicit override."""
    qg(lab, "config-mgmt", "add", target, big_file(lab), "--as", "big.bin", "--allow-large")
    qg(lab, "config-mgmt", "commit", target, "-m", "big", "--allow-large")
    return tip(lab, target)


def worktree(lab: Lab, target: str) -> str:
    return qg(lab, "config-mgmt", "edit", target).stdout.decode().strip()


def remove_big(lab: Lab, target: str) -> None:
    run(lab, "config-mgmt", "git", "-C", worktree(lab, target), "rm", "-q", "big.bin")
    qg(lab, "config-mgmt", "commit", target, "-m", "drop big.bin")


def parents(lab: Lab, commit: str) -> list[str]:
    out = run(
        lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "rev-list", "--parents", "-n1", commit
    )
    return out.stdout.decode().split()[1:]


def test_big_file_names_itself_then_squash_lets_the_target_move_on(lab: Lab) -> None:
    accepted = commit_files(lab, "personal", {".bashrc": "one\n"}, "one")
    assert publish(lab, "personal")["status"] == "staged"
    qg(lab, "personal", "apply", "--yes")
    big = commit_big(lab, "personal")

    before = target_snapshot(lab, "personal")
    refused = publish(lab, "personal", expect=1)
    assert refused["status"] == "rejected" and refused["message"].startswith("too-large")
    assert "big.bin" in refused["message"] and "qgitconf squash personal" in refused["message"]
    assert refused["largest"][0] == {"path": "big.bin", "size": MAX_FILE_BYTES + 1}
    assert target_snapshot(lab, "personal") == before
    status = qg(lab, "config-mgmt", "status").stdout.decode()
    assert "rejected (too-large)" in status and "big.bin" in status

    # revert cannot help: the blob stays in the unaccepted history.
    qg(lab, "config-mgmt", "revert", "personal")
    assert "big.bin" in publish(lab, "personal", expect=1)["message"]

    # squash refuses while the tip still holds the file ... (the revert removed it;
    # put it back to see that refusal, then remove it for good)
    qg(lab, "config-mgmt", "revert", "personal", "--to", big)
    refused_squash = qg(lab, "config-mgmt", "squash", "personal", expect=1)
    assert b"squash-unsafe" in refused_squash.stderr and b"big.bin" in refused_squash.stderr
    remove_big(lab, "personal")
    commit_files(lab, "personal", {".vimrc": "set nu\n"}, "vim")
    old_tip = tip(lab, "personal")

    dry = json.loads(qg(lab, "config-mgmt", "squash", "personal", "--dry-run", "--json").stdout)
    assert dry["new"] is None and dry["base"] == accepted and len(dry["dropped"]) == 5
    assert tip(lab, "personal") == old_tip
    out = qg(lab, "config-mgmt", "squash", "personal").stdout.decode()
    assert "replaced 5 commits" in out and "drops big.bin" in out
    new = tip(lab, "personal")
    assert parents(lab, new) == [accepted]
    verify = run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "verify-commit", new)
    assert "Good signature" in verify.stderr.decode()
    trees = run(
        lab,
        "config-mgmt",
        "git",
        "--git-dir=qgitconf.git",
        "rev-parse",
        f"{new}^{{tree}}",
        f"{old_tip}^{{tree}}",
    )
    first, second = trees.stdout.decode().split()
    assert first == second

    plan = json.loads(qg(lab, "config-mgmt", "publish", "personal", "--dry-run", "--json").stdout)[
        0
    ]
    assert plan["commit"] == new and plan["prerequisite"] == accepted and plan["too_large"] == []
    result = publish(lab, "personal")
    assert result["status"] == "staged"
    st = parse_statement(split_update(kept_update(lab, "personal"))[0])
    assert st.commit == new and st.prerequisite == accepted
    qg(lab, "personal", "apply", "--yes")
    home = lab.home("personal")
    assert (home / ".vimrc").read_text() == "set nu\n" and not (home / "big.bin").exists()
    assert json.loads(qg(lab, "personal", "status", "--json").stdout)["applied"] == new
    assert [r for r in rejected_log(lab, "personal") if r.get("reason") == "rollback"] == []
    assert all("rollback" not in json.dumps(r) for r in rejected_log(lab, "personal"))


def test_squash_of_a_target_that_accepted_nothing_makes_a_root_commit(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "one\n"}, "one")
    commit_big(lab, "personal")
    assert publish(lab, "personal", expect=1)["status"] == "rejected"
    remove_big(lab, "personal")
    qg(lab, "config-mgmt", "squash", "personal")
    assert parents(lab, tip(lab, "personal")) == []
    assert publish(lab, "personal")["status"] == "staged"
    qg(lab, "personal", "apply", "--yes")
    assert (lab.home("personal") / ".bashrc").read_text() == "one\n"


def test_squash_refuses_to_drop_an_update_the_target_never_answered(lab: Lab) -> None:
    commit_files(lab, "work", {".bashrc": "w\n"}, "w")
    (lab.policy_dir / "20-deny.policy").write_text("qgitconf.Receive * config-mgmt work deny\n")
    result = publish(lab, "work", expect=1)
    assert result["status"] == "denied" and "qvm-tags work add qgitconf-target" in result["message"]
    commit_files(lab, "work", {".vimrc": "x\n"}, "x")
    before = tip(lab, "work")
    proc = qg(lab, "config-mgmt", "squash", "work", expect=1)
    assert b"squash-unsafe" in proc.stderr and b"never answered" in proc.stderr
    assert tip(lab, "work") == before


def test_squash_with_nothing_unaccepted_changes_nothing(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "one\n"}, "one")
    publish(lab, "personal")
    before = tip(lab, "personal")
    out = qg(lab, "config-mgmt", "squash", "personal").stdout.decode()
    assert "nothing to squash" in out and tip(lab, "personal") == before


def test_squash_keeps_a_layer_merged_since_as_a_parent(lab: Lab) -> None:
    qg(lab, "config-mgmt", "layer", "add", "common", "--to", "personal")
    commit_files(lab, "personal", {".bashrc": "one\n"}, "one")
    publish(lab, "personal")
    accepted = tip(lab, "personal")  # the layer merge commit
    layer = commit_files(
        lab, "common", {".config/git/aliases": "[alias]\n\tst = status\n"}, "alias"
    )
    commit_big(lab, "personal")
    assert publish(lab, "personal", expect=1)["status"] == "rejected"  # merged common too
    remove_big(lab, "personal")
    qg(lab, "config-mgmt", "squash", "personal")
    assert parents(lab, tip(lab, "personal")) == [accepted, layer]
    result = publish(lab, "personal")
    assert result["status"] == "staged" and result["commit"] == tip(lab, "personal")  # no re-merge
    qg(lab, "personal", "apply", "--yes")
    assert (lab.home("personal") / ".config/git/aliases").read_text().startswith("[alias]")
