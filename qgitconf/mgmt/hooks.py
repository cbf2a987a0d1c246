"""Git hooks of the config-mgmt repository (installed by ``qgitconf init``).

- ``pre-receive`` (bare repo): every commit a push brings in must carry one valid
  OpenPGP signature by the repository's signing key (its public half is kept in
  ``qgitconf/signing-key.asc``), checked with the same isolated :class:`Verifier` the
  agent uses.  Deleting a target or layer branch, or pushing to ``refs/qgitconf/``
  (import quarantine), is refused too.  Without a stored public key every push is
  refused (fail closed).
- ``pre-commit`` (worktrees share the bare repo's hooks): refuses staged files that
  look like private keys or tokens, unless allowed with
  ``git config --add qgitconf.allowSecret PATH`` or ``QGITCONF_ALLOW_SECRETS=1``, and
  files larger than a target accepts (:mod:`qgitconf.mgmt.sizes`), unless allowed with
  ``git config --add qgitconf.allowLarge PATH`` or ``QGITCONF_ALLOW_LARGE=1``.  All
  staged blobs are read by one ``git cat-file --batch``.

The scripts in ``hooks/`` are two-line shell wrappers that run this module, so the
logic stays typed and tested; :data:`HOOKS` holds the same text ``init`` installs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from qgitconf.errors import CommitSignatureError, GitError, QgitconfError
from qgitconf.gitpack.compat import split_commit_signature
from qgitconf.gitpack.objects import parse_commit
from qgitconf.gpg.signing import Verifier
from qgitconf.limits import MAX_SECRET_SCAN_BYTES
from qgitconf.mgmt import sizes
from qgitconf.mgmt.catfile import iter_blobs
from qgitconf.sanitize import sanitize

ZERO = "0" * 40
HOOKS = {
    name: (
        "#!/bin/sh\n"
        f"# qgitconf {name} hook (installed by `qgitconf init`); logic in qgitconf.mgmt.hooks.\n"
        f'exec python3 -m qgitconf.mgmt.hooks {name} "$@"\n'
    )
    for name in ("pre-receive", "pre-commit")
}

_SECRET_PATTERNS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("OpenPGP private key", re.compile(rb"-----BEGIN PGP PRIVATE KEY BLOCK-----")),
    (
        "private key (PEM/OpenSSH)",
        re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
    ),
    ("AWS access key id", re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(rb"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("GitLab token", re.compile(rb"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("Slack token", re.compile(rb"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("OpenAI-style API key", re.compile(rb"\bsk-[A-Za-z0-9_-]{32,}")),
)
_SECRET_NAMES = re.compile(
    r"(?:^|/)(?:id_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?|\.netrc|\.pgpass|credentials"
    r"|secring\.gpg|private-keys-v1\.d/.*)$"
)


@dataclass(frozen=True)
class Finding:
    """One reason to refuse a staged file: it looks like a secret, or it is too large."""

    path: str
    what: str
    kind: str = "secret"  # secret | large


def scan_secrets(path: str, content: bytes) -> list[Finding]:
    """Return why ``path`` with ``content`` looks like a private key or a token."""
    found = [Finding(path, "file name of a private key or credentials")] * bool(
        _SECRET_NAMES.search(path)
    )
    head = content[:MAX_SECRET_SCAN_BYTES]
    found += [Finding(path, what) for what, rx in _SECRET_PATTERNS if rx.search(head)]
    return found


def install_hooks(repo: Path) -> None:
    """Write the hooks into the bare repo ``repo`` (overwriting git's samples)."""
    hooks = repo / "hooks"
    hooks.mkdir(exist_ok=True)
    for name, text in HOOKS.items():
        (hooks / name).write_text(text)
        (hooks / name).chmod(0o755)


def _git(args: Sequence[str], env: Mapping[str, str], input: bytes | None = None) -> bytes:
    proc = subprocess.run(["git", *args], capture_output=True, input=input, env=dict(env))
    if proc.returncode != 0:
        raise GitError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace')[-200:]}")
    return proc.stdout


# -- pre-receive ---------------------------------------------------------------------------


def _protected(repo: Path) -> set[str]:
    names: set[str] = set()
    for f in ("targets.json", "layers.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            names.update(json.loads((repo / "qgitconf" / f).read_text()))
    return {f"refs/heads/{n}" for n in names}


def check_push(
    repo: Path, updates: Sequence[tuple[str, str, str]], env: Mapping[str, str]
) -> list[str]:
    """Check a push; return the reasons to refuse it (empty: accept).

    Args:
        repo: the bare repository (``GIT_DIR``).
        updates: ``(old, new, ref)`` per ref, as git gives them to pre-receive.
        env: git's environment (it carries the quarantine object directories).
    """
    key = None
    with contextlib.suppress(OSError):
        key = (repo / "qgitconf" / "signing-key.asc").read_bytes()
    fpr = _git(["config", "--get", "user.signingkey"], env).decode().strip().upper()
    if key is None or not fpr:
        return ["no public signing key in qgitconf/signing-key.asc: every push is refused"]
    protected = _protected(repo)
    problems: list[str] = []
    new_tips: list[str] = []
    for _old, new, ref in updates:
        if ref.startswith("refs/qgitconf/"):
            problems.append(f"{ref}: qgitconf's own refs cannot be pushed")
        elif new == ZERO:
            if ref in protected:
                problems.append(f"{ref}: deleting a target or layer branch is not allowed")
        else:
            new_tips.append(new)
    if not new_tips:
        return problems
    commits = _git(["rev-list", *new_tips, "--not", "--all"], env).decode().split()
    try:
        with Verifier({fpr: key}) as verifier:
            for sha in commits:
                raw = _git(["cat-file", "commit", sha], env)
                parse_commit(raw)  # dulwich's errors for a malformed commit, as before
                payload, signature = split_commit_signature(raw)  # as git verify-commit
                try:
                    if signature is None:
                        raise CommitSignatureError("unsigned")
                    verifier.verify(payload, signature, CommitSignatureError)
                except CommitSignatureError as e:
                    problems.append(f"commit {sha}: {sanitize(e.detail)}")
    except QgitconfError as e:
        problems.append(f"cannot verify: {sanitize(e.detail)}")
    return problems


def pre_receive(env: Mapping[str, str], stdin: bytes) -> int:
    repo = Path(env.get("GIT_DIR", ".")).resolve()
    updates = []
    for line in stdin.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3:
            updates.append((parts[0], parts[1], parts[2]))
    problems = check_push(repo, updates, env)
    for p in problems:
        print(f"qgitconf pre-receive: refused: {p}", file=sys.stderr)
    return 1 if problems else 0


# -- pre-commit ----------------------------------------------------------------------------


def _read_blobs(
    env: Mapping[str, str], shas: Sequence[str], keep: int
) -> Iterator[tuple[str, int, bytes]]:
    """Yield ``(id, size, first keep bytes)`` of each blob (one ``git cat-file --batch``)."""
    for sha, size, chunks in iter_blobs(["git"], env, shas):
        head = b""
        for chunk in chunks:
            head += chunk[: keep - len(head)]
            if len(head) >= keep:
                break
        yield sha, size, head


def check_staged(env: Mapping[str, str]) -> list[Finding]:
    """Scan what is staged in the current worktree: private keys and tokens, and files
    larger than a target accepts (:mod:`qgitconf.mgmt.sizes`).

    Secrets are allowed by ``qgitconf.allowSecret PATH`` or ``QGITCONF_ALLOW_SECRETS=1``,
    large files by ``qgitconf.allowLarge PATH`` or ``QGITCONF_ALLOW_LARGE=1``.
    """
    secrets = env.get("QGITCONF_ALLOW_SECRETS") != "1"
    large = env.get(sizes.ALLOW_ENV) != "1"
    if not (secrets or large):
        return []
    proc = subprocess.run(
        ["git", "config", "--get-all", "qgitconf.allowSecret"], capture_output=True, env=dict(env)
    )
    allowed_secret = set(proc.stdout.decode("utf-8", "surrogateescape").splitlines())
    allowed_large = sizes.allowed_paths(env) if large else set()
    blobs = sizes.staged_blobs(env)
    paths: dict[str, list[str]] = {}
    for path, sha in blobs:
        paths.setdefault(sha, []).append(path)
    found: list[Finding] = []
    for sha, size, head in _read_blobs(env, list(paths), MAX_SECRET_SCAN_BYTES if secrets else 0):
        for path in paths[sha]:
            shown = sanitize(path)
            if large and size > sizes.MAX_FILE_BYTES and path not in allowed_large:
                found.append(
                    Finding(
                        shown,
                        f"{sizes.human(size)} ({size} bytes), larger than the "
                        f"{sizes.human(sizes.MAX_FILE_BYTES)} a target accepts per file "
                        "(max_object_bytes)",
                        "large",
                    )
                )
            if secrets and path not in allowed_secret:
                found += scan_secrets(shown, head)
    return found


def pre_commit(env: Mapping[str, str]) -> int:
    found = check_staged(env)
    for f in found:
        print(f"qgitconf pre-commit: refused: {f.path}: {f.what}", file=sys.stderr)
    if any(f.kind == "secret" for f in found):
        print(
            "qgitconf pre-commit: secrets do not belong in the config repo; if this one does, "
            "allow it with: git config --add qgitconf.allowSecret PATH",
            file=sys.stderr,
        )
    if any(f.kind == "large" for f in found):
        print(
            "qgitconf pre-commit: a target refuses every update that holds a file this "
            "large, and the file stays in the history it has not accepted yet; leave it "
            "out (git rm --cached PATH). Only if the target's target.toml raises "
            "max_object_bytes: allow it with git config --add qgitconf.allowLarge PATH, "
            "or commit with qgitconf commit --allow-large",
            file=sys.stderr,
        )
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    try:
        if args[:1] == ["pre-receive"]:
            return pre_receive(env, sys.stdin.buffer.read())
        if args[:1] == ["pre-commit"]:
            return pre_commit(env)
    except QgitconfError as e:  # fail closed: git refuses the push or commit
        print(f"qgitconf {args[0]}: refused: {sanitize(e.detail)}", file=sys.stderr)
        return 1
    print("usage: python -m qgitconf.mgmt.hooks pre-receive|pre-commit", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
