"""Import with quarantine: a file out of a qube (qgitconf.Export, policy ask) lands on
refs/qgitconf/import/ID, is reviewed, and enters a branch only as a signed commit."""

from __future__ import annotations

import json

import pytest

from qgitconf.core.exportfmt import MAGIC, MAGIC_V1, format_export, parse_export
from qgitconf.errors import ConfigError, MalformedError
from qgitconf.limits import MAX_EXPORT_BYTES
from tests.labkit import Lab, qg, run, tip

ALIAS = "[alias]\n\tlg = !git log --graph\n"


def git_mgmt(lab: Lab, *args: str, expect: int | None = 0) -> str:
    proc = run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", *args, expect=expect)
    return proc.stdout.decode("utf-8", "replace")


def allow(lab: Lab, qube: str) -> None:
    """The user picks ``qube`` in dom0's ask prompt for the next Export call (the
    real prompt is not told which target the caller named: the user picks one)."""
    lab.set_ask_answer("allow", qube)


def export(lab: Lab, request: bytes, pick: str = "personal") -> tuple[int, bytes, str]:
    """Call personal's qgitconf.Export from config-mgmt with a raw request (the user
    picks ``pick`` at the prompt)."""
    allow(lab, pick)
    proc = run(
        lab,
        "config-mgmt",
        "qrexec-client-vm",
        "personal",
        "qgitconf.Export",
        input=request,
        expect=None,
    )
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace")


def test_import_review_accept(lab: Lab) -> None:
    lab.write("personal", ".gitconfig", (ALIAS + "\x1b[31m\n").encode())
    before = tip(lab, "personal")
    allow(lab, "personal")
    out = qg(lab, "config-mgmt", "import", "personal", ".gitconfig", "--into", "personal")
    assert b"import 1: in quarantine" in out.stdout
    # Quarantine: on its own ref, not on the branch, and unsigned.
    assert tip(lab, "personal") == before
    qref = git_mgmt(lab, "rev-parse", "refs/qgitconf/import/1").strip()
    assert git_mgmt(lab, "show", f"{qref}:.gitconfig") == ALIAS + "\x1b[31m\n"
    assert "personal" not in git_mgmt(lab, "branch", "--contains", qref)

    listing = qg(lab, "config-mgmt", "import", "--list").stdout.decode()
    assert listing.startswith("1: .gitconfig from personal for personal")
    [entry] = json.loads(qg(lab, "config-mgmt", "import", "--list", "--json").stdout)
    assert (entry["id"], entry["path"], entry["qube"], entry["into"]) == (
        "1",
        ".gitconfig",
        "personal",
        "personal",
    )
    assert qg(lab, "config-mgmt", "import", "--review", "1", "--json", expect=2).returncode == 2
    review = qg(lab, "config-mgmt", "import", "--review", "1").stdout.decode()
    assert "from personal (untrusted)" in review
    assert "RISK: HIGH   git-alias-shell  .gitconfig:2" in review
    assert "RISK: HIGH   hidden-characters" in review
    assert "+\tlg = !git log --graph" in review
    assert "\x1b" not in review and "\\x1b[31m" in review

    out = qg(lab, "config-mgmt", "import", "--accept", "1").stdout.decode()
    assert "committed" in out
    new = tip(lab, "personal")
    assert git_mgmt(lab, "rev-parse", f"{new}^").strip() == before
    assert git_mgmt(lab, "show", f"{new}:.gitconfig") == ALIAS + "\x1b[31m\n"
    assert (
        "Good signature"
        in run(
            lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "verify-commit", new
        ).stderr.decode()
    )
    git_mgmt(lab, "rev-parse", "--verify", "--quiet", "refs/qgitconf/import/1", expect=1)
    assert qg(lab, "config-mgmt", "import", "--list").stdout == b""


def test_import_drop(lab: Lab) -> None:
    lab.write("work", ".vimrc", b"set nu\n")
    before = tip(lab, "work")
    allow(lab, "work")
    qg(lab, "config-mgmt", "import", "work", "~/.vimrc", "--into", "work")
    qg(lab, "config-mgmt", "import", "--drop", "1")
    assert tip(lab, "work") == before
    git_mgmt(lab, "rev-parse", "--verify", "--quiet", "refs/qgitconf/import/1", expect=1)
    proc = qg(lab, "config-mgmt", "import", "--accept", "1", expect=2)
    assert b"no import '1'" in proc.stderr


def test_import_of_a_private_key_needs_allow_secret(lab: Lab) -> None:
    key = "-----BEGIN OPENSSH " + "PRIVATE KEY-----\nAAAA\n"
    lab.write("personal", ".ssh/id_ed25519", key.encode(), mode=0o600)
    allow(lab, "personal")
    qg(lab, "config-mgmt", "import", "personal", ".ssh/id_ed25519", "--into", "personal")
    review = qg(lab, "config-mgmt", "import", "--review", "1").stdout.decode()
    assert "RISK: HIGH   secret  .ssh/id_ed25519" in review
    proc = qg(lab, "config-mgmt", "import", "--accept", "1", expect=2)
    assert b"--allow-secret" in proc.stderr


def test_import_refuses_the_wrong_qube_picked_at_the_prompt(lab: Lab) -> None:
    """Issue 19.10: dom0's ask dialog lets the user pick another tagged qube than the
    one config-mgmt named; the answer names the qube that answered (QubesDB /name)
    and import refuses it: nothing enters the repository."""
    lab.write("personal", ".vimrc", b"set nu\n")
    lab.write("work", ".vimrc", b"set work\n")
    before = tip(lab, "personal")
    lab.set_ask_answer("allow", "work")
    proc = qg(lab, "config-mgmt", "import", "personal", ".vimrc", "--into", "personal", expect=3)
    err = proc.stderr.decode()
    assert "[export-wrong-qube]" in err and "work answered" in err, err
    assert tip(lab, "personal") == before
    assert git_mgmt(lab, "for-each-ref", "refs/qgitconf/") == ""
    assert qg(lab, "config-mgmt", "import", "--list").stdout == b""
    # the answer itself names work
    status, out, _err = export(lab, b".vimrc\n", pick="work")
    assert status == 0 and parse_export(out).qube == "work"


def test_export_does_not_start_a_halted_target(lab: Lab) -> None:
    """autostart=no on the Export rule: a halted target is refused, not started."""
    lab.write("work", ".vimrc", b"set nu\n")
    lab.set_running("work", False)
    allow(lab, "work")
    proc = qg(lab, "config-mgmt", "import", "work", ".vimrc", "--into", "work", expect=5)
    assert b"[policy-denied]" in proc.stderr
    assert git_mgmt(lab, "for-each-ref", "refs/qgitconf/") == ""


def test_import_denied_at_the_prompt(lab: Lab) -> None:
    lab.set_ask_answer("deny")
    lab.write("personal", ".vimrc", b"set nu\n")
    proc = qg(lab, "config-mgmt", "import", "personal", ".vimrc", "--into", "personal", expect=5)
    assert b"[policy-denied]" in proc.stderr


def test_only_config_mgmt_may_export(lab: Lab) -> None:
    lab.write("personal", ".vimrc", b"set nu\n")
    allow(lab, "personal")  # an ask would be answered: the policy must not even ask
    proc = run(
        lab,
        "untrusted",
        "qrexec-client-vm",
        "personal",
        "qgitconf.Export",
        input=b".vimrc\n",
        expect=None,
    )
    assert proc.returncode == 126 and proc.stdout == b""


def test_export_refuses_a_symlink(lab: Lab) -> None:
    run(lab, "personal", "sh", "-c", "echo 'top secret' > /tmp/outside-secret")
    run(lab, "personal", "ln", "-s", "/tmp/outside-secret", ".bashrc")
    lab.write("personal", "real/f", b"x\n")
    run(lab, "personal", "ln", "-s", "real", "linkdir")
    for request, why in ((b".bashrc\n", "is a symlink"), (b"linkdir/f\n", "a symlink or a file")):
        status, out, err = export(lab, request)
        assert status == 3 and out == b"" and why in err, (request, err)
    allow(lab, "personal")
    proc = qg(lab, "config-mgmt", "import", "personal", ".bashrc", "--into", "personal", expect=5)
    assert b"[export-refused]" in proc.stderr and b"symlink" in proc.stderr
    assert git_mgmt(lab, "for-each-ref", "refs/qgitconf/") == ""


def test_export_refuses_an_oversized_file(lab: Lab) -> None:
    run(lab, "personal", "truncate", "-s", str(MAX_EXPORT_BYTES + 1), "big")
    status, out, err = export(lab, b"big\n")
    assert status == 3 and out == b"" and "too-large" in err


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (b"../../../config-mgmt/home/qgitconf.git/config\n", "'..' component"),
        (b"/etc/passwd\n", "absolute path"),
        (b".gnupg/pubring.kbx\n", "never writes"),
        (b".config/qgitconf/target.toml\n", "never writes"),
        (b".local/share/qgitconf/state.json\n", "never writes"),
        (b"a/./b\n", "'.' component"),
        (b".git/config\n", "'.git' component"),
        (b"x\x1by\n", "control character"),
        (b".bashrc\n.profile\n", "one line"),
        (b".bashrc", "one line"),
        (b"a" * 5000 + b"\n", "one line"),
        (b"\xff\n", "not UTF-8"),
        (b"\n", "empty path"),
        (b"nonexistent\n", "No such file"),
        (b".\n", "'.' component"),
    ],
)
def test_export_refuses_paths_outside_home_and_bad_requests(
    lab: Lab, request_: bytes, why: str
) -> None:
    status, out, err = export(lab, request_)
    assert status != 0 and out == b"", err
    assert why in err, err


def test_export_refuses_a_fifo_and_a_hard_link(lab: Lab) -> None:
    run(lab, "personal", "mkfifo", "fifo")
    lab.write("personal", "a", b"x\n")
    run(lab, "personal", "ln", "a", "b")
    assert "not a regular file" in export(lab, b"fifo\n")[2]
    assert "hard links" in export(lab, b"a\n")[2]


BAD_EXPORTS = [
    ("empty", b""),
    ("wrong magic", b"QGITCONF-EXPORT 9\nqube: work\nmode: 100644\nsize: 0\n\n"),
    ("version 1: no qube", MAGIC_V1 + b"mode: 100644\nsize: 0\n\n"),
    ("no qube line", MAGIC + b"mode: 100644\nsize: 0\n\n"),
    ("qube line last", MAGIC + b"mode: 100644\nsize: 0\nqube: work\n\n"),
    ("bad qube name", MAGIC + b"qube: ../work\nmode: 100644\nsize: 0\n\n"),
    ("long qube name", MAGIC + b"qube: " + b"w" * 32 + b"\nmode: 100644\nsize: 0\n\n"),
    ("two qube lines", MAGIC + b"qube: a\nqube: b\nmode: 100644\nsize: 0\n\n"),
    ("symlink mode", MAGIC + b"qube: w\nmode: 120000\nsize: 1\n\nx"),
    ("size lies short", MAGIC + b"qube: w\nmode: 100644\nsize: 1\n\nxy"),
    ("size lies long", MAGIC + b"qube: w\nmode: 100644\nsize: 3\n\nxy"),
    ("leading zero", MAGIC + b"qube: w\nmode: 100644\nsize: 01\n\nx"),
    ("extra header", MAGIC + b"qube: w\nmode: 100644\nsize: 1\npath: ../x\n\nx"),
    ("no blank line", MAGIC + b"qube: w\nmode: 100644\nsize: 1\nx"),
    ("over the cap", MAGIC + b"qube: w\nmode: 100644\nsize: 2000000\n\n" + b"x" * 2_000_000),
    ("header bomb", MAGIC + b"qube: w\nmode: 100644" + b" " * 10_000 + b"\nsize: 0\n\n"),
]


@pytest.mark.parametrize("data", [d for _, d in BAD_EXPORTS], ids=[n for n, _ in BAD_EXPORTS])
def test_parse_export_refuses(data: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_export(data)


def test_parse_export_roundtrip() -> None:
    got = parse_export(format_export("personal", 0o100755, b"#!/bin/sh\n"))
    assert (got.qube, got.mode, got.content) == ("personal", 0o100755, b"#!/bin/sh\n")
    longest = "p" * 31
    assert parse_export(format_export(longest, 0o100644, b"")).qube == longest


def test_format_export_refuses_a_bad_own_name() -> None:
    with pytest.raises(ConfigError):
        format_export("../x", 0o100644, b"")


def test_import_record_is_json(lab: Lab) -> None:
    lab.write("personal", ".vimrc", b"set nu\n")
    allow(lab, "personal")
    qg(lab, "config-mgmt", "import", "personal", ".vimrc", "--into", "personal")
    data = json.loads((lab.home("config-mgmt") / "qgitconf.git/qgitconf/imports.json").read_text())
    assert data["1"]["qube"] == "personal" and data["1"]["path"] == ".vimrc"
