"""The config-mgmt repo's hooks: pre-receive refuses pushes with commits not signed by
the repo's key; pre-commit refuses private keys and tokens unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from qgitconf.lab.lab import make_key
from qgitconf.mgmt.hooks import HOOKS, scan_secrets
from tests.labkit import Lab, commit_files, qg, run, tip

ROOT = Path(__file__).resolve().parent.parent
PEM = (
    "-----BEGIN OPENSSH "
    + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
)


def clone(lab: Lab) -> str:
    run(lab, "config-mgmt", "git", "clone", "-q", "qgitconf.git", "clone")
    wt = str(lab.home("config-mgmt") / "clone")
    run(lab, "config-mgmt", "git", "-C", wt, "checkout", "-q", "personal")
    run(lab, "config-mgmt", "sh", "-c", f"echo changed > {wt}/.bashrc")
    run(lab, "config-mgmt", "git", "-C", wt, "add", ".bashrc")
    return wt


def push(lab: Lab, wt: str, expect: int) -> str:
    proc = run(
        lab, "config-mgmt", "git", "-C", wt, "push", "-q", "origin", "personal", expect=expect
    )
    return proc.stderr.decode("utf-8", "replace")


def test_init_installs_the_shipped_hooks_and_the_public_key(lab: Lab) -> None:
    repo = lab.home("config-mgmt") / "qgitconf.git"
    for name, text in HOOKS.items():
        assert (repo / "hooks" / name).read_text() == text == (ROOT / "hooks" / name).read_text()
        assert (repo / "hooks" / name).stat().st_mode & 0o111
    assert b"BEGIN PGP PUBLIC KEY BLOCK" in (repo / "qgitconf/signing-key.asc").read_bytes()


def test_unsigned_push_is_refused(lab: Lab) -> None:
    wt = clone(lab)
    before = tip(lab, "personal")
    run(lab, "config-mgmt", "git", "-C", wt, "-c", "commit.gpgsign=false", "commit", "-qm", "u")
    err = push(lab, wt, expect=1)
    assert "pre-receive: refused: commit" in err and "unsigned" in err
    assert tip(lab, "personal") == before


def test_push_signed_by_another_key_is_refused(lab: Lab) -> None:
    gnupg = lab.home("config-mgmt") / ".rogue"
    fpr = make_key(gnupg, "Rogue <rogue@lab.invalid>")
    wt = clone(lab)
    before = tip(lab, "personal")
    run(
        lab,
        "config-mgmt",
        "env",
        f"GNUPGHOME={gnupg}",
        "git",
        "-C",
        wt,
        "-c",
        "gpg.program=gpg",
        "-c",
        f"user.signingkey={fpr}",
        "commit",
        "-S",
        "-qm",
        "rogue",
    )
    err = push(lab, wt, expect=1)
    assert "pre-receive: refused: commit" in err and "signature does not count" in err
    assert tip(lab, "personal") == before


def test_push_signed_by_the_vault_key_is_accepted(lab: Lab) -> None:
    wt = clone(lab)
    run(
        lab,
        "config-mgmt",
        "git",
        "-C",
        wt,
        "-c",
        "gpg.program=qubes-gpg-client-wrapper",
        "-c",
        f"user.signingkey={lab.fingerprint}",
        "commit",
        "-S",
        "-qm",
        "good",
    )
    push(lab, wt, expect=0)
    head = run(lab, "config-mgmt", "git", "-C", wt, "rev-parse", "HEAD").stdout.decode().strip()
    assert tip(lab, "personal") == head


def test_deleting_a_target_branch_is_refused(lab: Lab) -> None:
    wt = clone(lab)
    proc = run(lab, "config-mgmt", "git", "-C", wt, "push", "origin", ":work", expect=1)
    assert b"deleting a target or layer branch" in proc.stderr


def test_private_key_commit_is_refused_then_allowed_explicitly(lab: Lab) -> None:
    before = tip(lab, "personal")
    src = lab.home("config-mgmt") / "id_ed25519"
    src.write_text(PEM)
    qg(lab, "config-mgmt", "add", "personal", str(src), "--as", ".ssh/id_ed25519")
    proc = qg(lab, "config-mgmt", "commit", "personal", "-m", "oops", expect=6)
    assert b"secrets do not belong" in proc.stderr
    assert tip(lab, "personal") == before
    run(
        lab,
        "config-mgmt",
        "git",
        "--git-dir=qgitconf.git",
        "config",
        "--add",
        "qgitconf.allowSecret",
        ".ssh/id_ed25519",
    )
    qg(lab, "config-mgmt", "commit", "personal", "-m", "deliberate")
    assert tip(lab, "personal") != before


def test_token_in_an_ordinary_file_is_refused(lab: Lab) -> None:
    with pytest.raises(AssertionError, match="secrets do not belong"):
        commit_files(
            lab, "personal", {".config/gh/hosts.yml": "token: ghp_" + "A" * 36 + "\n"}, "gh"
        )


@pytest.mark.parametrize(
    ("path", "content", "found"),
    [
        (".bashrc", b"PS1='$ '\n", False),
        (".ssh/id_ed25519.pub", b"ssh-ed25519 AAAA me\n", False),
        (".ssh/id_rsa", b"whatever", True),
        (".key.asc", b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n", True),
        ("k.pem", b"-----BEGIN EC PRIVATE KEY-----\n", True),
        ("k.pem", b"-----BEGIN PRIVATE KEY-----\n", True),
        (".aws/config", b"aws_access_key_id = AKIA" + b"ABCDEFGHIJKLMNOP\n", True),
        (".gitconfig", b"[url]\n\tinsteadOf = glpat-" + b"x" * 20 + b"\n", True),
        (".netrc", b"machine x login y password z\n", True),
    ],
)
def test_scan_secrets_table(path: str, content: bytes, found: bool) -> None:
    assert bool(scan_secrets(path, content)) is found
