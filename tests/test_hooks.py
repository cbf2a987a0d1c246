"""The config-mgmt repo's hooks: pre-receive refuses pushes with commits not signed by
the repo's key; pre-commit refuses private keys and tokens unless allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from qgitconf.mgmt.hooks import HOOKS, scan_secrets
from tests.labkit import (
    Lab,
    as_qube_user,
    commit_files,
    host_env,
    host_path,
    make_key_in,
    qg,
    run,
    tip,
)

ROOT = Path(__file__).resolve().parent.parent
PEM = (
    "-----BEGIN OPENSSH "
    + "PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
)


def clone(lab: Lab) -> str:
    run(lab, "config-mgmt", "git", "clone", "-q", "qgitconf.git", "clone")
    wt = "/home/user/clone"  # as config-mgmt sees it
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
    # A key of config-mgmt's own (its ~/.gnupg), not the vault's.
    fpr = make_key_in(lab, "config-mgmt", "Rogue <rogue@lab.invalid>")
    wt = clone(lab)
    before = tip(lab, "personal")
    run(
        lab,
        "config-mgmt",
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
    lab.write("config-mgmt", "id_ed25519", PEM.encode(), mode=0o600)
    qg(lab, "config-mgmt", "add", "personal", "/home/user/id_ed25519", "--as", ".ssh/id_ed25519")
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


def _big(lab: Lab) -> str:
    """A sparse file one byte over the limit in config-mgmt's home; its path there."""
    from qgitconf.mgmt.sizes import MAX_FILE_BYTES

    run(lab, "config-mgmt", "truncate", "-s", str(MAX_FILE_BYTES + 1), "big.bin")
    return "/home/user/big.bin"


def test_add_refuses_a_file_over_the_limit_naming_it(lab: Lab) -> None:
    proc = qg(lab, "config-mgmt", "add", "personal", _big(lab), "--as", "big.bin", expect=1)
    err = proc.stderr.decode()
    assert "file-too-large" in err and "big.bin" in err and "64.0 MiB" in err
    assert "67108865 bytes" in err and "--allow-large" in err
    wt = qg(lab, "config-mgmt", "edit", "personal").stdout.decode().strip()
    assert not (host_path(lab, "config-mgmt", wt) / "big.bin").exists()


def test_commit_and_the_pre_commit_hook_refuse_a_file_over_the_limit(lab: Lab) -> None:
    before = tip(lab, "personal")
    qg(lab, "config-mgmt", "add", "personal", _big(lab), "--as", "big.bin", "--allow-large")
    proc = qg(lab, "config-mgmt", "commit", "personal", "-m", "big", expect=1)
    assert b"file-too-large" in proc.stderr and b"big.bin: 64.0 MiB" in proc.stderr
    wt = qg(lab, "config-mgmt", "edit", "personal").stdout.decode().strip()
    hook = run(lab, "config-mgmt", "git", "-C", wt, "commit", "-qm", "big", expect=1)
    err = hook.stderr.decode()
    assert "pre-commit: refused: big.bin: 64.0 MiB (67108865 bytes)" in err
    assert "max_object_bytes" in err
    assert tip(lab, "personal") == before
    run(lab, "config-mgmt", "git", "-C", wt, "config", "--add", "qgitconf.allowLarge", "big.bin")
    run(lab, "config-mgmt", "git", "-C", wt, "commit", "-qm", "big, deliberately")
    assert tip(lab, "personal") != before


def test_commit_allow_large_lets_it_through(lab: Lab) -> None:
    before = tip(lab, "personal")
    qg(lab, "config-mgmt", "add", "personal", _big(lab), "--as", "big.bin", "--allow-large")
    qg(lab, "config-mgmt", "commit", "personal", "-m", "big", "--allow-large")
    assert tip(lab, "personal") != before


def test_pre_commit_reads_all_staged_files_with_one_cat_file(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook scans every staged file (a secret among many is found) and starts one
    ``git cat-file`` for all of them, not one per file."""
    import subprocess

    from qgitconf.mgmt import hooks

    wt = qg(lab, "config-mgmt", "edit", "personal").stdout.decode().strip()
    assert wt == "/home/user/qgitconf-work/personal"
    for i in range(200):
        lab.write("config-mgmt", f"qgitconf-work/personal/f{i:03}", f"file {i}\n".encode())
    lab.write("config-mgmt", "qgitconf-work/personal/f150", PEM.encode())
    run(lab, "config-mgmt", "git", "-C", wt, "add", ".")
    # In process, from the host: the worktree's .git names its git dir by the qube's
    # path, so the host's view of both is given explicitly.
    home = lab.home("config-mgmt")
    env = host_env(
        lab,
        "config-mgmt",
        {
            "GIT_DIR": str(home / "qgitconf.git/worktrees/personal"),
            "GIT_WORK_TREE": str(home / "qgitconf-work/personal"),
        },
    )
    started: list[list[str]] = []
    real = subprocess.Popen

    def counting(args: list[str], *a: object, **kw: object) -> object:
        started.append(list(args))
        return real(args, *a, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "Popen", counting)
    monkeypatch.chdir(home / "qgitconf-work/personal")
    with as_qube_user(lab, "config-mgmt"):
        found = hooks.check_staged(env)
    assert [f.path for f in found] == ["f150"]
    assert sum(1 for a in started if "cat-file" in a) == 1
