"""Interop: what qgitconf writes is plain git and OpenPGP, and plain git's output is accepted.

Real ``git`` and real ``gpg`` on both sides; nothing here is mocked.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from dulwich.repo import Repo

from qgitconf.core.envelope import (
    Statement,
    format_envelope_header,
    format_statement,
    parse_statement,
)
from qgitconf.gitpack.store import tree_sha256, walk_tree
from qgitconf.lab.attacks import split_update
from qgitconf.limits import Limits
from tests.labkit import (
    Lab,
    commit_files,
    kept_update,
    publish,
    qg,
    run,
    send,
    tip,
    vault_signer,
)

AGENT_REPO = ".local/share/qgitconf/repo"


def git(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"git {' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


def plain_repo(path: Path) -> Path:
    git("init", "--quiet", str(path))
    return path


def spaced(fpr: str) -> str:
    """A fingerprint as gpg prints it: groups of four, two spaces in the middle."""
    groups = [fpr[i : i + 4] for i in range(0, len(fpr), 4)]
    return " ".join(groups[:5]) + "  " + " ".join(groups[5:])


# -- 1. publish's bundles are real git bundles ----------------------------------------------


def test_published_bundles_pass_git_bundle_verify_and_fetch(lab: Lab, tmp_path: Path) -> None:
    first = commit_files(lab, "personal", {".gitconfig.d/a": "one\n"}, "first")
    assert publish(lab, "personal")["status"] == "staged"
    b1 = tmp_path / "full.bundle"
    b1.write_bytes(split_update(kept_update(lab, "personal"))[2])
    qg(lab, "personal", "apply", "--yes")

    second = commit_files(lab, "personal", {".gitconfig.d/a": "one\ntwo\n"}, "second")
    assert publish(lab, "personal")["status"] == "staged"
    b2 = tmp_path / "incr.bundle"
    b2.write_bytes(split_update(kept_update(lab, "personal"))[2])

    # The incremental bundle really is incremental: without its prerequisite git refuses it.
    empty = plain_repo(tmp_path / "empty")
    lacking = git("bundle", "verify", str(b2), cwd=empty, check=False)
    assert lacking.returncode != 0
    assert first in lacking.stderr

    repo = plain_repo(tmp_path / "plain")
    for bundle, expected in ((b1, first), (b2, second)):
        verify = git("bundle", "verify", str(bundle), cwd=repo)
        assert "okay" in verify.stdout + verify.stderr
        heads = git("bundle", "list-heads", str(bundle), cwd=repo).stdout.splitlines()
        assert heads == [f"{expected} refs/heads/personal"]
        git("fetch", "--quiet", str(bundle), "refs/heads/personal:refs/heads/personal", cwd=repo)
        assert git("rev-parse", "refs/heads/personal", cwd=repo).stdout.strip() == expected
    assert git("rev-parse", "refs/heads/personal~1", cwd=repo).stdout.strip() == first
    assert git("show", "refs/heads/personal:.gitconfig.d/a", cwd=repo).stdout == "one\ntwo\n"
    git("fsck", "--strict", cwd=repo)


# -- 2. the agent's repo is a sound git repo ------------------------------------------------


def _stage_two(lab: Lab) -> tuple[str, str]:
    first = commit_files(lab, "personal", {".bashrc.d/x.sh": "alias ll='ls -l'\n"}, "one")
    assert publish(lab, "personal")["status"] == "staged"
    second = commit_files(lab, "personal", {".bashrc.d/y.sh": "export EDITOR=vi\n"}, "two")
    assert publish(lab, "personal")["status"] == "staged"
    return first, second


def agent_git(lab: Lab, *args: str, env: tuple[str, ...] = ()) -> tuple[str, str]:
    """Plain git on personal's agent repo, in personal (as its user): stdout, stderr."""
    proc = run(lab, "personal", "env", *env, "git", f"--git-dir={AGENT_REPO}", *args)
    return proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def test_agent_repo_passes_git_fsck_strict(lab: Lab) -> None:
    first, second = _stage_two(lab)
    _out, err = agent_git(lab, "fsck", "--strict", "--no-dangling")
    assert "error" not in err.lower()
    # fsck checked something real: both staged commits are there, connected.
    assert agent_git(lab, "rev-parse", "refs/qgitconf/staged")[0].strip() == second
    assert agent_git(lab, "rev-parse", "refs/qgitconf/staged~1")[0].strip() == first
    agent_git(lab, "cat-file", "-e", f"{second}:.bashrc.d/x.sh")


# -- 3. git log --show-signature in the target, with only the pinned key --------------------


def test_git_log_show_signature_in_agent_repo(lab: Lab) -> None:
    _first, second = _stage_two(lab)
    fpr = lab.fingerprint
    keyfile = f".config/qgitconf/keys/{fpr}.asc"
    # A GnuPG home in personal holding only the pinned key.
    gnupg = run(lab, "personal", "mktemp", "-d").stdout.decode().strip()
    env = (f"GNUPGHOME={gnupg}",)
    run(lab, "personal", "env", *env, "gpg", "--batch", "--import", keyfile)
    try:
        out, err = agent_git(lab, "log", "--show-signature", "refs/qgitconf/staged", env=env)
        text = out + err
        n = int(agent_git(lab, "rev-list", "--count", "refs/qgitconf/staged")[0])
        assert n >= 3  # the branch's root commit and the two staged ones
        assert text.count("Good signature") == n
        assert "BAD signature" not in text
        assert fpr in text or spaced(fpr) in text
        assert second in text
        fmt = agent_git(lab, "log", "--format=%G? %GF", "refs/qgitconf/staged", env=env)[0].split()
        assert fmt == ["U", fpr] * n  # good signature, key not certified; pinned fpr
    finally:
        run(lab, "personal", "gpgconf", "--homedir", gnupg, "--kill", "all", expect=None)
        run(lab, "personal", "rm", "-rf", gnupg, expect=None)


# -- 4. a bundle made by plain git is accepted when correctly signed ------------------------


def _plain_git(lab: Lab) -> Callable[..., str]:
    """Plain git in the vault (which holds the signing key), on ``~/plain``: a repo
    made and signed without qgitconf.  Returns git's stdout."""
    cfg = [
        "-c",
        "user.name=Plain Git",
        "-c",
        "user.email=plain@lab.invalid",
        "-c",
        "gpg.program=gpg",
        "-c",
        f"user.signingkey={lab.fingerprint}",
    ]
    run(lab, "vault", "git", "init", "--quiet", "plain")

    def vgit(*args: str) -> str:
        return run(lab, "vault", "git", "-C", "plain", *cfg, *args).stdout.decode()

    return vgit


def _wrap(lab: Lab, vgit: Callable[..., str], bundle: bytes, seq: int, prereq: str | None) -> bytes:
    repo = lab.home("vault") / "plain"
    commit = vgit("rev-parse", "refs/heads/personal").strip()
    dr = Repo(str(repo))
    try:
        store = dr.object_store
        tree = store[commit.encode()].tree.decode()
        digest = tree_sha256(store, walk_tree(store, tree, Limits()))
    finally:
        dr.close()
    st = Statement(
        target="personal",
        sequence=seq,
        commit=commit,
        prerequisite=prereq,
        bundle_size=len(bundle),
        bundle_sha256=hashlib.sha256(bundle).hexdigest(),
        tree_sha256=digest,
        created=datetime.now(UTC).replace(microsecond=0),
    )
    statement = format_statement(st)
    assert parse_statement(statement) == st
    return format_envelope_header(statement, vault_signer(lab)(statement)) + bundle


def test_bundle_from_plain_git_is_accepted(lab: Lab, tmp_path: Path) -> None:
    vgit = _plain_git(lab)
    vgit("checkout", "--quiet", "-b", "personal")
    conf = "plain/.config/plain/settings.conf"
    lines = [f"option_{i} = value number {i} of the plain git settings file\n" for i in range(200)]
    lab.write("vault", conf, "".join(lines).encode())
    vgit("add", "-A")
    vgit("commit", "--quiet", "-S", "-m", "from plain git")
    old = vgit("rev-parse", "HEAD").strip()
    vgit("bundle", "create", "--quiet", "/home/user/f.bundle", "personal")
    b1 = (lab.home("vault") / "f.bundle").read_bytes()
    assert b1.startswith(b"# v2 git bundle\n")

    status, reply = send(lab, "config-mgmt", "personal", _wrap(lab, vgit, b1, 5, None))
    assert (status, reply and reply["result"]) == (0, "staged"), reply
    assert reply["commit"] == old
    qg(lab, "personal", "apply", "--yes", "--overwrite")
    target_file = lab.home("personal") / ".config/plain/settings.conf"
    assert target_file.read_text() == "".join(lines)

    # A thin incremental bundle: git deltifies the changed blob against the prerequisite.
    lines[100] = "option_100 = changed\n"
    lab.write("vault", conf, "".join(lines).encode())
    vgit("commit", "--quiet", "-S", "-am", "change one line")
    new = vgit("rev-parse", "HEAD").strip()
    vgit("bundle", "create", "--quiet", "/home/user/f2.bundle", f"{old}..personal")
    b2 = (lab.home("vault") / "f2.bundle").read_bytes()
    assert f"-{old}".encode() in b2.split(b"\n\n", 1)[0]
    # The pack is thin: on its own (without the prerequisite's objects) git cannot resolve it.
    alone = subprocess.run(
        ["git", "index-pack", "--stdin"],
        cwd=plain_repo(tmp_path / "alone"),
        input=b2.split(b"\n\n", 1)[1],
        capture_output=True,
        check=False,
    )
    assert alone.returncode != 0 and b"unresolved delta" in alone.stderr

    status, reply = send(lab, "config-mgmt", "personal", _wrap(lab, vgit, b2, 6, old))
    assert (status, reply and reply["result"]) == (0, "staged"), reply
    assert reply["commit"] == new
    qg(lab, "personal", "apply", "--yes")
    assert target_file.read_text() == "".join(lines)
    agent_git(lab, "fsck", "--strict", "--no-dangling")


def test_plain_git_bundle_with_unsigned_commit_is_rejected(lab: Lab) -> None:
    """Control for the test above: the same path rejects a plain-git bundle left unsigned."""
    vgit = _plain_git(lab)
    vgit("checkout", "--quiet", "-b", "personal")
    lab.write("vault", "plain/.profile", b"one\n")
    vgit("add", "-A")
    vgit("commit", "--quiet", "-m", "unsigned")
    vgit("bundle", "create", "--quiet", "/home/user/u.bundle", "personal")
    status, reply = send(
        lab,
        "config-mgmt",
        "personal",
        _wrap(lab, vgit, (lab.home("vault") / "u.bundle").read_bytes(), 1, None),
    )
    assert status != 0
    assert reply is not None and reply["result"] == "rejected"
    assert reply["reason"] == "commit-signature-untrusted"


# -- 5. incremental updates are small and name the accepted commit --------------------------


def test_incremental_update_is_small_with_prerequisite(lab: Lab) -> None:
    big = "".join(f"line {i}: some dotfile content that takes up space\n" for i in range(400))
    files = {".config/app/big.conf": big, ".vimrc": "set number\n"}
    first = commit_files(lab, "personal", files, "first")
    r1 = publish(lab, "personal")
    assert r1["status"] == "staged"
    full = kept_update(lab, "personal")
    assert parse_statement(split_update(full)[0]).prerequisite is None
    qg(lab, "personal", "apply", "--yes")

    second = commit_files(lab, "personal", {".vimrc": "set number\nset ruler\n"}, "second")
    r2 = publish(lab, "personal")
    assert r2["status"] == "staged"
    update = kept_update(lab, "personal")
    st = parse_statement(split_update(update)[0])
    assert len(update) < 4096
    assert len(update) < len(full)
    assert r2["bytes"] == len(update)
    assert st.prerequisite == first
    assert st.commit == second == tip(lab, "personal")
    assert st.sequence == r1["sequence"] + 1
