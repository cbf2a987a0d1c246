"""End to end in the lab: publish, review, apply, revert, and the attacks of the demo.

Every attack asserts its specific reason and that personal's home, agent repo and
state are byte-identical afterwards (rejected.log excepted, which must name it).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from qgitconf.core.envelope import parse_statement
from qgitconf.lab.attacks import restate, split_update
from tests.labkit import (
    Lab,
    commit_files,
    kept_update,
    publish,
    qg,
    rejected_log,
    rogue_signer,
    run,
    send,
    target_snapshot,
    tip,
    vault_signer,
)

GITCONFIG = "[alias]\n\tst = status\n"
BASHRC = "PS1='$ '\n"


def first_publish(lab: Lab) -> str:
    sha = commit_files(lab, "personal", {".gitconfig": GITCONFIG, ".bashrc": BASHRC}, "first")
    assert publish(lab, "personal")["status"] == "staged"
    return sha


def applied(lab: Lab) -> str:
    qg(lab, "personal", "apply", "--yes", "--overwrite")
    return (lab.home("personal") / ".bashrc").read_text()


def test_first_publish_stages_and_apply_writes(lab: Lab) -> None:
    sha = first_publish(lab)
    status = json.loads(qg(lab, "personal", "status", "--json").stdout)
    assert status["staged"] == sha and status["applied"] is None and status["pending"]
    assert not (lab.home("personal") / ".bashrc").exists()  # staged, not applied
    assert applied(lab) == BASHRC
    assert (lab.home("personal") / ".gitconfig").read_text() == GITCONFIG
    assert (lab.home("personal") / ".bashrc").stat().st_mode & 0o777 == 0o644
    status = json.loads(qg(lab, "personal", "status", "--json").stdout)
    assert status["applied"] == sha and not status["pending"] and status["drift"] == []


def test_incremental_publish_uses_last_accepted_as_prerequisite(lab: Lab) -> None:
    first = first_publish(lab)
    applied(lab)
    second = commit_files(lab, "personal", {".bashrc": "PS1='# '\n"}, "root prompt")
    result = publish(lab, "personal")
    assert result["status"] == "staged"
    update = kept_update(lab, "personal")
    st = parse_statement(split_update(update)[0])
    assert st.prerequisite == first and st.commit == second and st.sequence == 2
    assert len(update) < 4096, len(update)
    assert applied(lab) == "PS1='# '\n"


def test_republish_without_change_is_up_to_date(lab: Lab) -> None:
    first_publish(lab)
    before = target_snapshot(lab, "personal")
    result = publish(lab, "personal")
    assert result["status"] == "up-to-date" and result["sequence"] == 1
    assert target_snapshot(lab, "personal") == before


def test_review_shows_signer_changes_and_diff(lab: Lab) -> None:
    sha = first_publish(lab)
    out = qg(lab, "personal", "review").stdout.decode()
    assert f"signed by: {lab.fingerprint}" in out
    assert "qgitconf lab vault" in out  # user id from the pinned key file
    assert f"commit {sha}" in out
    assert "+\tst = status" in out and "b/.bashrc" in out
    data = json.loads(qg(lab, "personal", "review", "--json").stdout)
    assert data["signer"]["fingerprint"] == lab.fingerprint
    assert {c["path"] for c in data["changes"]} == {".bashrc", ".gitconfig"}


def test_review_status_and_log_escape_hostile_text(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "x\n"}, "msg \x1b[31mred\x1b[0m \u202e")
    publish(lab, "personal")
    out = qg(lab, "personal", "review").stdout.decode()
    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[31mred" in out and "\\u202e" in out


def test_hostile_file_name_is_rejected_and_shown_escaped(lab: Lab) -> None:
    commit_files(lab, "personal", {".evil\u202ertl": "x\n"}, "bidi name")
    before = target_snapshot(lab, "personal")
    result = publish(lab, "personal", expect=1)
    assert result["status"] == "rejected" and result["message"].startswith("unsafe-path")
    assert "\\u202e" in result["message"] and "\u202e" not in result["message"]
    assert target_snapshot(lab, "personal") == before


def test_pre_existing_file_stops_apply_until_overwrite(lab: Lab) -> None:
    first_publish(lab)
    original = (lab.home("personal") / ".gitconfig").read_bytes()  # the lab's own
    before = target_snapshot(lab, "personal")
    proc = qg(lab, "personal", "apply", "--yes", expect=1)
    assert b"[drift]" in proc.stderr and b".gitconfig" in proc.stderr
    assert target_snapshot(lab, "personal") == before
    applied(lab)
    qg(lab, "personal", "revert", "--to", "0")
    assert (lab.home("personal") / ".gitconfig").read_bytes() == original
    assert not (lab.home("personal") / ".bashrc").exists()


def test_revert_goes_back_one_generation_and_can_be_reverted(lab: Lab) -> None:
    first_publish(lab)
    applied(lab)
    commit_files(lab, "personal", {".bashrc": "PS1='> '\n"}, "second")
    publish(lab, "personal")
    assert applied(lab) == "PS1='> '\n"
    qg(lab, "personal", "revert")
    assert (lab.home("personal") / ".bashrc").read_text() == BASHRC
    qg(lab, "personal", "revert")
    assert (lab.home("personal") / ".bashrc").read_text() == "PS1='> '\n"
    gens = json.loads(qg(lab, "personal", "log", "--json").stdout)
    assert [g["kind"] for g in gens] == ["apply", "apply", "revert", "revert"]


def test_drift_is_not_overwritten_silently(lab: Lab) -> None:
    first_publish(lab)
    applied(lab)
    (lab.home("personal") / ".bashrc").write_text("my local edit\n")
    status = json.loads(qg(lab, "personal", "status", "--json").stdout)
    assert status["drift"] == [".bashrc"]
    commit_files(lab, "personal", {".bashrc": "PS1='> '\n"}, "second")
    publish(lab, "personal")
    proc = qg(lab, "personal", "apply", "--yes", expect=1)
    assert b"changed locally" in proc.stderr
    assert (lab.home("personal") / ".bashrc").read_text() == "my local edit\n"
    qg(lab, "personal", "apply", "--yes", "--overwrite")
    backups = list((lab.home("personal") / ".local/share/qgitconf/backups").rglob(".bashrc"))
    assert [b.read_text() for b in backups] == ["my local edit\n"]


# -- attacks ------------------------------------------------------------------------------


def expect_rejection(lab: Lab, source: str, data: bytes, reason: str) -> None:
    before = target_snapshot(lab, "personal")
    n_logged = len(rejected_log(lab, "personal"))
    status, reply = send(lab, source, "personal", data)
    assert status == 3, (status, reply)
    assert reply is not None and reply["result"] == "rejected"
    assert reply["reason"] == reason, reply
    assert target_snapshot(lab, "personal") == before
    log = rejected_log(lab, "personal")
    assert len(log) == n_logged + 1 and log[-1]["reason"] == reason


def test_untrusted_qube_denied_by_policy(lab: Lab) -> None:
    first_publish(lab)
    before = target_snapshot(lab, "personal")
    status, reply = send(lab, "untrusted", "personal", kept_update(lab, "personal"))
    assert status == 126 and reply is None
    assert target_snapshot(lab, "personal") == before
    assert rejected_log(lab, "personal") == []  # the service never ran


def test_wrong_source_rejected(lab: Lab) -> None:
    """A misconfigured policy lets untrusted through: the agent still refuses (rule 3)."""
    first_publish(lab)
    (lab.policy_dir / "20-misconfigured.policy").write_text(
        "qgitconf.Receive * untrusted personal allow\n"
    )
    commit_files(lab, "personal", {".bashrc": "x\n"}, "second")
    publish(lab, "personal")
    expect_rejection(lab, "untrusted", kept_update(lab, "personal"), "wrong-source")


def test_unpinned_key_rejected(lab: Lab) -> None:
    """config-mgmt is compromised but has no vault: it signs with a key of its own."""
    first_publish(lab)
    rogue = rogue_signer(lab)
    forged = restate(kept_update(lab, "personal"), rogue, sequence=2)
    expect_rejection(lab, "config-mgmt", forged, "signature-untrusted")


def test_replay_rejected(lab: Lab) -> None:
    first_publish(lab)
    old = kept_update(lab, "personal")
    commit_files(lab, "personal", {".bashrc": "new\n"}, "second")
    publish(lab, "personal")
    expect_rejection(lab, "config-mgmt", old, "rollback")


def test_update_for_other_qube_rejected(lab: Lab) -> None:
    commit_files(lab, "work", {".gitconfig": "[user]\n\temail = me@work\n"}, "work")
    assert publish(lab, "work")["status"] == "staged"
    expect_rejection(lab, "config-mgmt", kept_update(lab, "work"), "wrong-target")


def test_tampered_bundle_rejected(lab: Lab) -> None:
    first_publish(lab)
    commit_files(lab, "personal", {".bashrc": "new\n"}, "second")
    publish(lab, "personal")
    update = bytearray(kept_update(lab, "personal"))
    update[-30] ^= 0x01  # inside the pack, covered by bundle-sha256
    # The same sequence again would be "up to date": raise it, genuinely signed.
    forged = restate(bytes(update), vault_signer(lab), sequence=3)
    expect_rejection(lab, "config-mgmt", forged, "bundle-hash-mismatch")


def test_unsigned_tip_commit_rejected(lab: Lab) -> None:
    """The statement is genuinely signed but the tip commit is not (rule 6)."""
    first_publish(lab)
    parent = tip(lab, "personal")
    tree = (
        run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "rev-parse", f"{parent}^{{tree}}")
        .stdout.decode()
        .strip()
    )
    unsigned = (
        run(
            lab,
            "config-mgmt",
            "git",
            "--git-dir=qgitconf.git",
            "-c",
            "commit.gpgsign=false",
            "commit-tree",
            "-p",
            parent,
            "-m",
            "unsigned",
            tree,
        )
        .stdout.decode()
        .strip()
    )
    run(
        lab,
        "config-mgmt",
        "git",
        "--git-dir=qgitconf.git",
        "update-ref",
        "refs/heads/personal",
        unsigned,
    )
    before = target_snapshot(lab, "personal")
    result = publish(lab, "personal", expect=1)
    assert result["status"] == "rejected"
    assert result["message"].startswith("commit-signature-untrusted")
    assert target_snapshot(lab, "personal") == before


@pytest.mark.parametrize("garbage", [b"", b"QGITCONF-UPDATE 1\n", b"\x00" * 100])
def test_garbage_rejected_as_malformed(lab: Lab, garbage: bytes) -> None:
    expect_rejection(lab, "config-mgmt", garbage, "malformed")


def test_reset_target_gets_a_full_update_again(lab: Lab) -> None:
    """A target whose state was wiped and re-enrolled answers missing-prerequisite once;
    publish then sends a full bundle (the sequence still only grows)."""
    first_publish(lab)
    applied(lab)
    state = lab.home("personal") / ".local/share/qgitconf"
    subprocess.run(["rm", "-rf", str(state)], check=True)
    qg(
        lab,
        "personal",
        "target",
        "init",
        "--source",
        "config-mgmt",
        "--key-file",
        "QubesIncoming/vault/qgitconf-signing-key.asc",
    )
    commit_files(lab, "personal", {".bashrc": "again\n"}, "second")
    result = publish(lab, "personal")
    assert result["status"] == "staged" and result["sequence"] == 3
    st = parse_statement(split_update(kept_update(lab, "personal"))[0])
    assert st.prerequisite is None
    log = [r["reason"] for r in json_lines(state / "rejected.log")]
    assert log == ["missing-prerequisite"]


def json_lines(path):  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_qgitconf_git_log_shows_applied_history(lab: Lab) -> None:
    sha = first_publish(lab)
    applied(lab)
    out = qg(lab, "personal", "git", "log", "--format=%H %s").stdout.decode()
    assert out.split()[0] == sha and "first" in out


def test_directory_in_the_way_blocks_even_overwrite(lab: Lab) -> None:
    first_publish(lab)
    (lab.home("personal") / ".bashrc").mkdir()
    (lab.home("personal") / ".bashrc" / "keep").write_text("mine")
    before = target_snapshot(lab, "personal")
    proc = qg(lab, "personal", "apply", "--yes", "--overwrite", expect=1)
    assert b"is a dir" in proc.stderr
    assert target_snapshot(lab, "personal") == before


def test_revert_to_zero_reports_restored_originals(lab: Lab) -> None:
    first_publish(lab)
    applied(lab)
    out = qg(lab, "personal", "revert", "--to", "0").stdout.decode()
    assert "0 written, 1 removed, 1 restored" in out


def test_git_log_shows_the_pinned_keys_verdict(lab: Lab) -> None:
    """`qgitconf git log --show-signature` in a target checks against the pinned key
    (issue 16 item 4): the vault's signature is good, and no ~/.gnupg appears."""
    first_publish(lab)
    applied(lab)
    out = qg(lab, "personal", "git", "log", "--show-signature", "-1", "refs/qgitconf/applied")
    text = out.stdout.decode() + out.stderr.decode()
    assert "Good signature" in text, text
    assert lab.fingerprint[-16:] in text.replace(" ", ""), text
    assert "No public key" not in text
    assert not (lab.home("personal") / ".gnupg").exists()


# -- what the real qrexec does, that the emulator this lab replaced did not show ---------


def test_service_reads_little_while_the_caller_still_writes(lab: Lab) -> None:
    """Receive refuses after the envelope header and stops reading while config-mgmt
    still pushes 64 MiB: the caller gets the one-line reply and the exit status, and
    nothing hangs or is staged."""
    first_publish(lab)
    data = b"QGITCONF-UPDATE 1\nstatement-length: 99999\n" + b"\0" * (64 << 20)
    expect_rejection(lab, "config-mgmt", data, "too-large")


def test_reply_on_stdout_diagnostics_on_stderr(lab: Lab) -> None:
    """The JSON reply travels on stdout alone; the human line on stderr reaches the
    caller through qrexec too."""
    proc = run(
        lab,
        "config-mgmt",
        "qrexec-client-vm",
        "personal",
        "qgitconf.Receive",
        input=b"garbage",
        expect=3,
    )
    reply = json.loads(proc.stdout)
    assert reply["result"] == "rejected" and reply["reason"] == "malformed"
    assert proc.stdout.count(b"\n") == 1
    assert b"qgitconf: rejected: malformed" in proc.stderr


@pytest.mark.parametrize("argument", ["--help", "receive", "../x", "-I"])
def test_service_argument_never_becomes_an_option(lab: Lab, argument: str) -> None:
    """qrexec hands `SERVICE+ARG`'s argument to the rpc file as $1; the rpc file's argv
    is fixed, so the update is judged the same whatever the caller appends.  The shipped
    policy takes no argument (`+`, issue 19.8): dom0 refuses such a call first; a
    permissive rule of the user's lets it through to show the rpc file's fixed argv."""
    before = target_snapshot(lab, "personal")
    spec = f"qgitconf.Receive+{argument}"
    refused = run(lab, "config-mgmt", "qrexec-client-vm", "personal", spec, expect=None)
    assert refused.returncode == 126 and refused.stdout == b""
    (lab.policy_dir / "20-arguments.policy").write_text(
        "qgitconf.Receive * config-mgmt personal allow\n"
    )
    proc = run(
        lab,
        "config-mgmt",
        "qrexec-client-vm",
        "personal",
        f"qgitconf.Receive+{argument}",
        input=b"garbage",
        expect=None,
    )
    assert proc.returncode == 3, proc
    assert json.loads(proc.stdout)["reason"] == "malformed"
    assert target_snapshot(lab, "personal") == before


def test_without_a_qubesdb_name_the_agent_refuses(lab: Lab) -> None:
    """No `/name` in QubesDB (qubesdb-read fails): the agent does not know who it is
    and refuses everything, with a stable code; nothing is staged."""
    commit_files(lab, "personal", {".gitconfig": GITCONFIG}, "first")
    lab.set_qubesdb("personal", "/name", None)
    before = target_snapshot(lab, "personal")
    out = publish(lab, "personal", expect=1)
    assert out["status"] == "rejected" and "no-qubesdb" in out["message"], out
    assert target_snapshot(lab, "personal") == before
    lab.set_qubesdb("personal", "/name", "personal")
    assert publish(lab, "personal")["status"] == "staged"


def test_a_large_update_goes_through_the_real_qrexec(lab: Lab) -> None:
    """A 48 MiB file (incompressible) travels as one update of more than 48 MiB through
    qrexec-client-vm, qrexec-daemon and qrexec-agent, and is staged and applied intact."""
    import hashlib
    import os

    blob = os.urandom(48 << 20)
    commit_files(lab, "personal", {"big/data.bin": blob}, "big")
    assert publish(lab, "personal")["status"] == "staged"
    assert len(kept_update(lab, "personal")) > 48 << 20
    qg(lab, "personal", "apply", "--yes")
    got = (lab.home("personal") / "big/data.bin").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
