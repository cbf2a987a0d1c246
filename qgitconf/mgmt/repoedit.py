"""Setting up the config-mgmt repository (its public key found, hooks) and copying files
into a branch (``qgitconf init``, ``qgitconf add``).

Apart from repo.py, which the publish rows of ``make bench`` import: publish loads
neither the hooks' module (dataclasses, the signature check), the key file reader nor
shutil.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from qgitconf.errors import ConfigError, LargeFileError, UsageError
from qgitconf.fsutil import atomic_write, write_json
from qgitconf.gpg.keys import inspect_key_file
from qgitconf.limits import MAX_KEY_FILE_BYTES
from qgitconf.mgmt import sizes
from qgitconf.mgmt.hooks import install_hooks
from qgitconf.mgmt.repo import PUBLIC_KEY, MgmtRepo

_FPR = re.compile(r"[0-9A-F]{40}")


def find_public_key(home: Path, fingerprint: str) -> bytes | None:
    """Look for a key file holding exactly ``fingerprint`` in ``~/QubesIncoming/*/``.

    That is where ``qvm-copy`` from the vault delivers the exported public key.  Only a
    file whose sole key is the given full fingerprint counts, so a stray or planted
    file cannot substitute another key.
    """
    fpr = fingerprint.replace(" ", "").upper()
    if not _FPR.fullmatch(fpr):
        return None
    for path in sorted((home / "QubesIncoming").glob("*/*.asc")):
        try:
            if not path.is_file() or path.stat().st_size > MAX_KEY_FILE_BYTES:
                continue
            keys = inspect_key_file(path.read_bytes())
        except OSError:
            continue
        if len(keys) == 1 and keys[0].fingerprint == fpr:
            return keys[0].armored
    return None


def init_repo(
    repo: MgmtRepo, signing_key: str, gpg_program: str, public_key: bytes | None = None
) -> bool:
    """Create ``repo``'s bare repository (``qgitconf init``): signing
    (``commit.gpgsign``, ``gpg.program``), hooks.

    Args:
        signing_key: the key (full fingerprint) commits and updates are signed with.
        gpg_program: what git and publish sign through (split-GPG in Qubes).
        public_key: the key's public half; when None it is looked for in
            ``~/QubesIncoming/*/`` (see :func:`find_public_key`).

    Returns:
        True if the public key was stored (the pre-receive hook refuses every push
        until it is).

    Raises:
        ConfigError: the repo exists, or ``public_key`` is not exactly the signing key.
    """
    if public_key is not None:
        public_key = _checked_public_key(public_key, signing_key)
    else:
        public_key = find_public_key(repo.home, signing_key)
    if repo.exists():
        raise ConfigError(f"{repo.path} already holds a qgitconf repository")
    repo.path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "--bare", "--quiet", str(repo.path)],
        check=True,
        env=dict(repo.env),
        capture_output=True,
    )
    repo.git("config", "commit.gpgsign", "true")
    repo.git("config", "tag.gpgsign", "true")
    repo.git("config", "gpg.program", gpg_program)
    repo.git("config", "user.signingkey", signing_key)
    if repo.config("user.name") is None:
        repo.git("config", "user.name", "qgitconf")
    if repo.config("user.email") is None:
        repo.git("config", "user.email", "qgitconf@config-mgmt.invalid")
    repo.meta.mkdir(mode=0o700)
    write_json(repo.meta / "targets.json", {})
    write_json(repo.meta / "layers.json", {})
    if public_key is not None:
        atomic_write(repo.meta / PUBLIC_KEY, public_key, 0o644)
    install_hooks(repo.path)
    return public_key is not None


def add_files(
    repo: MgmtRepo,
    branch: str,
    files: Sequence[Path],
    dest: str | None = None,
    allow_large: bool = False,
) -> list[str]:
    """Copy ``files`` into ``repo``'s branch worktree (at their $HOME-relative path);
    stage them.

    Args:
        branch: a target or layer.
        files: regular files to copy.
        dest: the path in the branch for a single file (default: relative to $HOME).
        allow_large: also take files larger than a target accepts by default (for a
            target whose ``target.toml`` raises ``max_object_bytes``).

    Raises:
        LargeFileError: a file is larger than :data:`sizes.MAX_FILE_BYTES` and
            ``allow_large`` is false; nothing was copied or staged.
        UsageError: a file is not a regular file, or ``dest`` with several files.
    """
    wt = repo.worktree(branch)
    if dest is not None and len(files) != 1:
        raise UsageError("--as takes exactly one FILE")
    for f in files:
        if not f.absolute().is_file():
            raise UsageError(f"{f} is not a regular file")
    if not allow_large:
        big = sizes.too_large([sizes.SizedFile(str(f), f.stat().st_size) for f in files])
        if big:
            raise LargeFileError(
                "not added: a target refuses every update holding a file larger than "
                f"{sizes.human(sizes.MAX_FILE_BYTES)} (max_object_bytes):\n"
                + sizes.describe(big)
                + "\nonly if the target's target.toml raises that limit: add --allow-large"
            )
    added: list[str] = []
    for f in files:
        src = f.absolute()
        if dest is not None:
            rel = dest
        else:
            try:
                rel = str(src.relative_to(repo.home))
            except ValueError:
                rel = src.name
        target = wt / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        os.chmod(target, 0o755 if os.access(src, os.X_OK) else 0o644)
        repo.git("add", "--", rel, cwd=wt)
        added.append(rel)
    return added


def _checked_public_key(data: bytes, fingerprint: str) -> bytes:
    keys = inspect_key_file(data)
    fpr = fingerprint.replace(" ", "").upper()
    if len(keys) != 1 or keys[0].fingerprint != fpr:
        found = ", ".join(k.fingerprint for k in keys) or "no key"
        raise ConfigError(f"the key file must hold exactly {fpr} (found {found})")
    return keys[0].armored
