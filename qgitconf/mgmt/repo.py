"""The config-mgmt repository: a bare git repo, one branch per target qube.

Authoring uses the user's own git (``git commit -S`` through ``gpg.program``, which
is ``qubes-gpg-client-wrapper`` in Qubes), so every commit here is what
``git log --show-signature`` shows.  qgitconf's own records live in ``<repo>/qgitconf/``
inside the bare repo, where git ignores them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgitconf.envelope import QUBE_NAME
from qgitconf.errors import ConfigError, GitError, UsageError
from qgitconf.fsutil import read_json, write_json
from qgitconf.gitstore import EMPTY_TREE


def default_repo_path(home: Path, env: Mapping[str, str]) -> Path:
    return Path(env.get("QGITCONF_REPO") or home / "qgitconf.git")


@dataclass
class MgmtRepo:
    """A config-mgmt repository at ``path``; ``env`` is the environment git runs in."""

    path: Path
    home: Path
    env: Mapping[str, str]

    @property
    def meta(self) -> Path:
        return self.path / "qgitconf"

    def exists(self) -> bool:
        return (self.path / "HEAD").is_file() and self.meta.is_dir()

    def require(self) -> MgmtRepo:
        if not self.exists():
            raise ConfigError(f"no qgitconf repository at {self.path} (run: qgitconf init)")
        return self

    def git(self, *args: str, cwd: Path | None = None, input: bytes | None = None) -> str:
        """Run git on this repo (or in ``cwd``, a worktree); return stdout.

        Raises:
            GitError: git failed; its last stderr line is in the message.
        """
        cmd = ["git", *args] if cwd is not None else ["git", f"--git-dir={self.path}", *args]
        proc = subprocess.run(
            cmd, cwd=cwd, input=input, capture_output=True, env=dict(self.env), check=False
        )
        if proc.returncode != 0:
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise GitError(f"git {args[0]} failed: {msg[-1] if msg else proc.returncode}")
        return proc.stdout.decode("utf-8", "replace")

    def config(self, key: str) -> str | None:
        try:
            value = self.git("config", "--get", key).strip()
        except GitError:
            return None
        return value or None

    # -- setup ---------------------------------------------------------------------------

    def init(self, signing_key: str, gpg_program: str) -> None:
        """Create the bare repo and set signing up (``commit.gpgsign``, ``gpg.program``)."""
        if self.exists():
            raise ConfigError(f"{self.path} already holds a qgitconf repository")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "--bare", "--quiet", str(self.path)],
            check=True,
            env=dict(self.env),
            capture_output=True,
        )
        self.git("config", "commit.gpgsign", "true")
        self.git("config", "tag.gpgsign", "true")
        self.git("config", "gpg.program", gpg_program)
        self.git("config", "user.signingkey", signing_key)
        if self.config("user.name") is None:
            self.git("config", "user.name", "qgitconf")
        if self.config("user.email") is None:
            self.git("config", "user.email", "qgitconf@config-mgmt.invalid")
        self.meta.mkdir(mode=0o700)
        write_json(self.meta / "targets.json", {})

    # -- targets -------------------------------------------------------------------------

    def targets(self) -> dict[str, dict[str, Any]]:
        data = read_json(self.meta / "targets.json", {})
        if not isinstance(data, dict):
            raise ConfigError("targets.json is corrupt")
        return data

    def target(self, name: str) -> dict[str, Any]:
        targets = self.targets()
        if name not in targets:
            raise UsageError(f"unknown target {name!r} (see: qgitconf target add)")
        return dict(targets[name])

    def signing_key(self) -> str:
        key = self.config("user.signingkey")
        if key is None:
            raise ConfigError("user.signingkey is not set in the qgitconf repository")
        return key

    def gpg_program(self) -> str:
        return self.config("gpg.program") or "gpg"

    def tip(self, branch: str) -> str | None:
        try:
            return self.git(
                "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"
            ).strip()
        except GitError:
            return None

    def target_add(self, name: str, layers: Sequence[str] = ()) -> str:
        """Create ``refs/heads/<name>`` with a signed empty root commit; returns its id."""
        if not QUBE_NAME.fullmatch(name):
            raise UsageError(f"{name!r} is not a valid qube name")
        targets = self.targets()
        if name in targets:
            raise UsageError(f"target {name!r} already exists")
        tip = self.tip(name)
        if tip is None:
            # git knows the empty tree without storing it; bundles need the object.
            self.git("hash-object", "-t", "tree", "-w", "--stdin", input=b"")
            tip = self.git(
                "commit-tree",
                f"-S{self.signing_key()}",
                "-m",
                f"qgitconf: start {name}",
                EMPTY_TREE,
            ).strip()
            self.git("update-ref", f"refs/heads/{name}", tip, "0" * 40)
        targets[name] = {"layers": list(layers)}
        write_json(self.meta / "targets.json", targets)
        return tip

    # -- authoring -----------------------------------------------------------------------

    def worktree(self, branch: str) -> Path:
        """The worktree of ``branch`` (created on first use) under ``~/qgitconf-work/``."""
        self.target(branch)
        wt = self.home / "qgitconf-work" / branch
        if not (wt / ".git").exists():
            wt.parent.mkdir(parents=True, exist_ok=True)
            self.git("worktree", "prune")
            self.git("worktree", "add", "--quiet", str(wt), branch)
        return wt

    def add(self, branch: str, files: Sequence[Path], dest: str | None = None) -> list[str]:
        """Copy ``files`` into the branch worktree (at their $HOME-relative path); stage them."""
        wt = self.worktree(branch)
        if dest is not None and len(files) != 1:
            raise UsageError("--as takes exactly one FILE")
        added: list[str] = []
        for f in files:
            src = f.absolute()
            if not src.is_file():
                raise UsageError(f"{f} is not a regular file")
            if dest is not None:
                rel = dest
            else:
                try:
                    rel = str(src.relative_to(self.home))
                except ValueError:
                    rel = src.name
            target = wt / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            os.chmod(target, 0o755 if os.access(src, os.X_OK) else 0o644)
            self.git("add", "--", rel, cwd=wt)
            added.append(rel)
        return added

    def commit(self, branch: str, message: str) -> str:
        """Commit what is staged in the branch's worktree, signed; returns the commit id."""
        wt = self.worktree(branch)
        self.git("commit", "--quiet", "-S", "-m", message, cwd=wt)
        return self.git("rev-parse", "HEAD", cwd=wt).strip()
