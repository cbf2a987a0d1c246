"""config-mgmt status (labelled as reported by the target), revert TARGET --to COMMIT,
and sequence numbers that only grow even when publish dies half-way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qgitconf.core.envelope import parse_statement
from qgitconf.errors import PolicyDeniedError
from qgitconf.lab.attacks import split_update
from qgitconf.mgmt import publish as publish_mod
from qgitconf.mgmt import update as update_mod
from qgitconf.mgmt.publish import load_record
from qgitconf.qubes.qrexec import CallResult
from tests.labkit import (
    Lab,
    QubeTransport,
    as_qube_user,
    commit_files,
    in_process_publish,
    kept_update,
    mgmt,
    publish,
    qg,
    run,
    tip,
)


def rows(lab: Lab) -> dict[str, dict[str, Any]]:
    data = json.loads(qg(lab, "config-mgmt", "status", "--json").stdout)
    assert data["role"] == "config-mgmt"
    return {r["target"]: r for r in data["targets"]}


def test_status_json_labels_what_the_target_reported(lab: Lab) -> None:
    sha = commit_files(lab, "personal", {".bashrc": "x\n"}, "x")
    publish(lab, "personal")
    row = rows(lab)["personal"]
    assert row["tip"] == sha
    assert row["published"]["sequence"] == 1 and row["published"]["commit"] == sha
    reported = row["reported_by_target"]
    assert reported["result"] == "staged" and reported["accepted"] == sha
    assert reported["applied"] is None and not row["pending"]
    work = rows(lab)["work"]
    assert work["published"]["sequence"] is None and work["pending"]
    text = qg(lab, "config-mgmt", "status").stdout.decode()
    assert "target reported seq 1 at 20" in text and f"accepted {sha[:12]} (staged)" in text
    assert "work:" in text and "[pending]" in text


def test_status_text_never_prints_none(lab: Lab) -> None:
    """A target never published to, and one refused by dom0: words, not ``None``."""
    (lab.policy_dir / "20-deny.policy").write_text("qgitconf.Receive * config-mgmt work deny\n")
    commit_files(lab, "work", {".bashrc": "w\n"}, "w")
    text = qg(lab, "config-mgmt", "status").stdout.decode()
    assert "None" not in text
    assert "personal: tip " in text and "not published  target: nothing reported yet" in text
    publish(lab, "work", expect=1)
    text = qg(lab, "config-mgmt", "status").stdout.decode()
    assert "None" not in text


def test_status_says_applied_or_not_as_the_target_last_reported(lab: Lab) -> None:
    """After the target applied (or reverted), the next publish's reply says so and
    status shows it; it never calls an applied update "staged"."""
    sha = commit_files(lab, "personal", {".bashrc": "x\n"}, "x")
    publish(lab, "personal")
    assert rows(lab)["personal"]["reported_by_target"]["state"] == "accepted"
    qg(lab, "personal", "apply", "--yes")
    assert publish(lab, "personal")["status"] == "up-to-date"  # the kept update, resent
    reported = rows(lab)["personal"]["reported_by_target"]
    assert reported["state"] == "applied" and reported["applied"] == sha
    assert reported["at"] is not None and reported["sequence"] == 1
    line = qg(lab, "config-mgmt", "status").stdout.decode().splitlines()[0]
    assert line.endswith(f"target reported seq 1 at {reported['at']}: applied {sha[:12]}")
    assert "staged" not in line
    qg(lab, "personal", "revert", "--to", "0")
    publish(lab, "personal")
    reported = rows(lab)["personal"]["reported_by_target"]
    assert reported["state"] == "accepted" and reported["applied"] is None
    line = qg(lab, "config-mgmt", "status").stdout.decode().splitlines()[0]
    assert f"accepted {sha[:12]} (up-to-date), applied nothing" in line


def test_denied_publish_names_the_likely_cause_and_status_shows_it(lab: Lab) -> None:
    commit_files(lab, "work", {".bashrc": "w\n"}, "w")
    (lab.policy_dir / "20-deny.policy").write_text("qgitconf.Receive * config-mgmt work deny\n")
    result = publish(lab, "work", expect=1)
    assert result["status"] == "denied"
    for cause in ("qvm-tags work add qgitconf-target", "autostart=no", "qgitconf pull"):
        assert cause in result["message"]
    row = rows(lab)["work"]
    assert row["last_error"]["code"] == "policy-denied" and row["pending"]
    assert "qvm-tags work add qgitconf-target" in row["last_error"]["detail"]
    text = qg(lab, "config-mgmt", "status").stdout.decode()
    assert "last publish: policy-denied" in text and "qvm-tags work add qgitconf-target" in text


def test_publish_dry_run_sends_signs_and_records_nothing(lab: Lab) -> None:
    repo = mgmt(lab)
    first = commit_files(lab, "personal", {".bashrc": "x\n"}, "x")
    publish(lab, "personal")
    second = commit_files(lab, "personal", {".bashrc": "y\n"}, "y")
    record = load_record(repo, "personal")  # reading only (as root)
    kept = kept_update(lab, "personal")
    plan = json.loads(qg(lab, "config-mgmt", "publish", "personal", "-n", "--json").stdout)
    assert plan == [
        {
            "target": "personal",
            "action": "new",
            "sequence": 2,
            "commit": second,
            "base": second,
            "prerequisite": first,
            "bundle_bytes": plan[0]["bundle_bytes"],
            "merges": [],
            "too_large": [],
        }
    ]
    assert 0 < plan[0]["bundle_bytes"] < 4096
    assert load_record(repo, "personal") == record and kept_update(lab, "personal") == kept
    assert json.loads(qg(lab, "personal", "status", "--json").stdout)["staged"] == first
    text = qg(lab, "config-mgmt", "publish", "personal", "--dry-run").stdout.decode()
    assert f"personal: would send new update: seq 2, commit {second[:12]}, " in text
    assert f"prerequisite {first[:12]}" in text


def test_status_after_a_new_commit_is_pending(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "x\n"}, "x")
    publish(lab, "personal")
    commit_files(lab, "personal", {".bashrc": "y\n"}, "y")
    assert rows(lab)["personal"]["pending"]


def show(lab: Lab, rev: str, path: str) -> str:
    return run(
        lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "show", f"{rev}:{path}"
    ).stdout.decode()


def test_revert_target_to_commit_is_a_new_signed_commit_that_publishes(lab: Lab) -> None:
    first = commit_files(lab, "personal", {".bashrc": "one\n"}, "one")
    publish(lab, "personal")
    commit_files(lab, "personal", {".bashrc": "two\n", ".vimrc": "set nu\n"}, "two")
    third = commit_files(lab, "personal", {".bashrc": "three\n"}, "three")
    publish(lab, "personal")
    out = qg(lab, "config-mgmt", "revert", "personal", "--to", first[:12]).stdout.decode()
    assert "restoring an earlier tree" in out
    new = tip(lab, "personal")
    parent = run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "rev-parse", f"{new}^")
    assert parent.stdout.decode().strip() == third  # history only moves forward
    assert show(lab, new, ".bashrc") == "one\n"
    ls = run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "ls-tree", "--name-only", new)
    assert ls.stdout.decode().split() == [".bashrc"]
    verify = run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "verify-commit", new)
    assert "Good signature" in verify.stderr.decode()
    result = publish(lab, "personal")
    assert result["status"] == "staged" and result["sequence"] == 3
    status = json.loads(qg(lab, "personal", "status", "--json").stdout)
    assert status["staged"] == new


def test_revert_target_default_is_one_commit_back(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "one\n"}, "one")
    commit_files(lab, "personal", {".bashrc": "two\n"}, "two")
    qg(lab, "config-mgmt", "revert", "personal")
    assert show(lab, tip(lab, "personal"), ".bashrc") == "one\n"


@pytest.mark.parametrize(
    ("to", "message"),
    [("0" * 40, b"no commit"), ("work", b"not in the history of personal"), ("nope", b"no commit")],
)
def test_revert_target_refuses_commits_outside_its_history(
    lab: Lab, to: str, message: bytes
) -> None:
    commit_files(lab, "personal", {".bashrc": "one\n"}, "one")
    commit_files(lab, "work", {".bashrc": "w\n"}, "w")
    before = tip(lab, "personal")
    proc = qg(lab, "config-mgmt", "revert", "personal", "--to", to, expect=2)
    assert message in proc.stderr
    assert tip(lab, "personal") == before


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it)."""


def test_sequence_grows_after_a_crash_before_the_update_is_kept(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_files(lab, "personal", {".bashrc": "one\n"}, "one")
    publish(lab, "personal")
    commit_files(lab, "personal", {".bashrc": "two\n"}, "two")
    real = publish_mod.atomic_write

    def dying_write(path: Path, data: bytes, mode: int = 0o600) -> None:
        if path.suffix == ".update":
            raise Crash
        real(path, data, mode)

    monkeypatch.setattr(publish_mod, "atomic_write", dying_write)
    with in_process_publish(lab, monkeypatch) as repo:
        with pytest.raises(Crash):
            publish_mod.publish(repo, "personal", QubeTransport(lab))
        record = load_record(repo, "personal")
    assert record["sequence"] == 2 and record["published"] is None
    monkeypatch.setattr(publish_mod, "atomic_write", real)
    result = publish(lab, "personal")
    assert result["status"] == "staged" and result["sequence"] == 3
    assert parse_statement(split_update(kept_update(lab, "personal"))[0]).sequence == 3


def test_sequence_is_recorded_before_the_send(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """publish dies while sending: the update is kept and recorded, and the target gets
    the very same update next time (or by pull)."""
    commit_files(lab, "personal", {".bashrc": "one\n"}, "one")

    class DyingTransport:
        def call(self, *args: object) -> object:
            raise Crash

    with in_process_publish(lab, monkeypatch) as repo:
        with pytest.raises(Crash):
            publish_mod.publish(repo, "personal", DyingTransport())  # type: ignore[arg-type]
        assert load_record(repo, "personal")["sequence"] == 1
    kept = kept_update(lab, "personal")
    assert publish(lab, "personal")["status"] == "staged"
    assert kept_update(lab, "personal") == kept  # resent unchanged


def test_publish_table_and_exit_status(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "x\n"}, "x")
    (lab.policy_dir / "20-deny.policy").write_text("qgitconf.Receive * config-mgmt work deny\n")
    proc = qg(lab, "config-mgmt", "publish", "--all", "--jobs", "2", expect=1)
    lines = proc.stdout.decode().splitlines()
    assert lines[0].startswith("personal  staged") and lines[1].startswith("work      denied")


def test_publish_tree_digest_is_the_one_the_agent_computes(lab: Lab) -> None:
    """publish digests with git ls-tree/cat-file; the agent walks with dulwich: the same
    ``gitstore.tree_sha256`` over the same entries, so they must agree."""
    from dulwich.repo import Repo

    from qgitconf.gitpack.store import tree_sha256, walk_tree
    from qgitconf.limits import Limits

    files: dict[str, str | bytes] = {
        ".bashrc": "x\n",
        ".config/a/b/c.conf": "deep\n",
        ".config/a/z": b"\x00\xffbinary",
        ".config/a b/with space": "s\n",
        ".config/same": "x\n",  # a blob shared by two paths
    }
    sha = commit_files(lab, "personal", files, "tree")
    repo = mgmt(lab)
    dr = Repo(str(repo.path))
    try:
        store: Any = dr.object_store
        tree = store[sha.encode()].tree.decode()
        expected = tree_sha256(store, walk_tree(store, tree, Limits()))
    finally:
        dr.close()
    with as_qube_user(lab, "config-mgmt"):  # git runs in-process on config-mgmt's repo
        digest = update_mod.tree_digest(repo, sha)
    assert digest == expected


def test_signing_config_is_what_git_config_says(lab: Lab) -> None:
    repo = mgmt(lab)
    with as_qube_user(lab, "config-mgmt"):
        assert repo.signing_config() == (repo.gpg_program(), repo.signing_key())
        repo.git("config", "--add", "gpg.program", "second-program")  # the last value wins
        assert repo.signing_config() == ("second-program", repo.signing_key())


def test_transport_refused_status_is_real_qrexecs() -> None:
    """The emulator this compared with is gone; the value is real qrexec-client-vm's
    exit status for a refused call (test_reallab checks it on the real qrexec)."""
    from qgitconf.qubes.qrexec import QREXEC_REFUSED

    assert QREXEC_REFUSED == 126


class _Refusing:
    """A transport that answers as qrexec does for a refused call (exit 126)."""

    def __init__(self, stderr: bytes) -> None:
        self.stderr = stderr

    def call(self, target: str, service: str, stdin: bytes, stdout_cap: int) -> CallResult:
        return CallResult(126, b"", self.stderr)


@pytest.mark.parametrize("stderr", [b"Request refused\n", b"work is not running (autostart=no)\n"])
def test_refusal_is_denied_or_not_running_whatever_stderr_says(stderr: bytes) -> None:
    """Real qrexec-client-vm prints only ``Request refused`` for a denied call and for a
    halted target alike; no other text (the old emulator's "not running") makes a
    refusal "pending" (issue 19)."""
    with pytest.raises(PolicyDeniedError) as info:
        publish_mod.send(_Refusing(stderr), "work", b"update")
    assert type(info.value) is PolicyDeniedError and info.value.code == "policy-denied"
    assert str(info.value).startswith("refused: denied or not running: ")
    assert "autostart=no" in str(info.value) and "qgitconf pull" in str(info.value)
    assert "pending" not in publish_mod.OK_STATUSES


def test_halted_target_is_refused_denied_or_not_running(lab: Lab) -> None:
    """On the real qrexec: work halted, the policy's autostart=no; publish says
    "denied" with both causes, exits 1, and status says the same."""
    commit_files(lab, "work", {".bashrc": "w\n"}, "w")
    lab.set_running("work", False)
    result = publish(lab, "work", expect=1)
    assert result["status"] == "denied"
    assert result["message"].startswith("refused: denied or not running: ")
    assert "qgitconf pull" in result["message"]
    row = rows(lab)["work"]
    assert row["last_error"]["code"] == "policy-denied" and row["pending"]
    text = qg(lab, "config-mgmt", "status").stdout.decode()
    assert "last publish: policy-denied: refused: denied or not running: " in text
    table = qg(lab, "config-mgmt", "publish", "work", expect=1).stdout.decode()
    assert "denied" in table and "pending" not in table
