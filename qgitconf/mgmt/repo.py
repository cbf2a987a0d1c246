"""The config-mgmt repository: a bare git repo, one branch per target qube.

Authoring uses the user's own git (``git commit -S`` through ``gpg.program``, which
is ``qubes-gpg-client-wrapper`` in Qubes), so every commit here is what
``git log --show-signature`` shows.  qgitconf's own records live in ``<repo>/qgitconf/``
inside the bare repo, where git ignores them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qgitconf.core.envelope import QUBE_NAME
from qgitconf.errors import ConfigError, GitError, LargeFileError, UsageError
from qgitconf.fsutil import read_json, write_json
from qgitconf.gitpack.store import EMPTY_TREE
from qgitconf.mgmt import default_repo_path as default_repo_path  # re-exported
from qgitconf.mgmt import sizes

if TYPE_CHECKING:
    from qgitconf.mgmt.records import LayerInfo, TargetInfo

PUBLIC_KEY = "signing-key.asc"
"""The signing key's public half, in the repo meta; the pre-receive hook verifies with it."""


class MgmtRepo:
    """A config-mgmt repository at ``path``; ``env`` is the environment git runs in.

    A plain class, not a dataclass: ``dataclasses`` (with ``inspect``) cost the publish
    process several ms of imports (the "publish -> staged" row of ``make bench``).
    """

    def __init__(self, path: Path, home: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.home = home
        self.env = env

    def __repr__(self) -> str:
        return f"MgmtRepo(path={self.path!r})"

    @property
    def meta(self) -> Path:
        return self.path / "qgitconf"

    def exists(self) -> bool:
        return (self.path / "HEAD").is_file() and self.meta.is_dir()

    def require(self) -> MgmtRepo:
        if not self.exists():
            raise ConfigError(f"no qgitconf repository at {self.path} (run: qgitconf init)")
        return self

    def git(
        self,
        *args: str,
        cwd: Path | None = None,
        input: bytes | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> str:
        """Run git on this repo (or in ``cwd``, a worktree); return stdout.

        Args:
            args: git's arguments.
            cwd: a worktree to run in (else ``--git-dir`` is this repo).
            input: bytes for git's stdin.
            extra_env: variables added to :attr:`env` for this run only.

        Raises:
            GitError: git failed; its last stderr line is in the message.
        """
        cmd = ["git", *args] if cwd is not None else ["git", f"--git-dir={self.path}", *args]
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, env=env, check=False)
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

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the repo's publish lock (one publish, import or layer merge at a time)."""
        self.meta.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.meta / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- targets -------------------------------------------------------------------------

    def targets(self) -> dict[str, TargetInfo]:
        data = read_json(self.meta / "targets.json", {})
        if not isinstance(data, dict):
            raise ConfigError("targets.json is corrupt")
        return data

    def target(self, name: str) -> TargetInfo:
        targets = self.targets()
        if name not in targets:
            raise UsageError(f"unknown target {name!r} (see: qgitconf target add)")
        return targets[name].copy()

    def layers(self) -> dict[str, LayerInfo]:
        data = read_json(self.meta / "layers.json", {})
        if not isinstance(data, dict):
            raise ConfigError("layers.json is corrupt")
        return data

    def target_layers(self, name: str) -> list[str]:
        layers = self.target(name).get("layers", [])
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ConfigError(f"targets.json: layers of {name!r} are corrupt")
        return layers

    def branch(self, name: str) -> str:
        """Check that ``name`` is a target or a layer (both are branches you edit)."""
        if name not in self.targets() and name not in self.layers():
            raise UsageError(f"no target or layer {name!r} (see: qgitconf target add / layer add)")
        return name

    def public_key(self) -> bytes | None:
        try:
            return (self.meta / PUBLIC_KEY).read_bytes()
        except FileNotFoundError:
            return None

    def _root_commit(self, name: str) -> str:
        """A signed empty root commit for a new branch ``name``; returns its id."""
        # git knows the empty tree without storing it; bundles need the object.
        self.git("hash-object", "-t", "tree", "-w", "--stdin", input=b"")
        tip = self.signed_commit(EMPTY_TREE, [], f"qgitconf: start {name}")
        self.git("update-ref", f"refs/heads/{name}", tip, "0" * 40)
        return tip

    def layer_add(self, name: str) -> str:
        """Create the shared branch ``refs/heads/<name>``; returns its root commit id."""
        if not QUBE_NAME.fullmatch(name):
            raise UsageError(f"{name!r} is not a valid layer name (same rules as qube names)")
        layers = self.layers()
        if name in layers or name in self.targets():
            raise UsageError(f"{name!r} already exists as a layer or target")
        tip = self.tip(name) or self._root_commit(name)
        layers[name] = {}
        write_json(self.meta / "layers.json", layers)
        return tip

    def signing_key(self) -> str:
        key = self.config("user.signingkey")
        if key is None:
            raise ConfigError("user.signingkey is not set in the qgitconf repository")
        return key

    def gpg_program(self) -> str:
        return self.config("gpg.program") or "gpg"

    def signing_config(self) -> tuple[str, str]:
        """``(gpg_program(), signing_key())`` read by one ``git config`` run.

        Raises:
            ConfigError: ``user.signingkey`` is not set.
        """
        return self.finish_signing_config(self.start_signing_config())

    def start_signing_config(self) -> subprocess.Popen[bytes]:
        """Start the ``git config`` run :meth:`signing_config` reads (publish starts it
        beside ``pack-objects``, so that it costs no time of its own)."""
        return subprocess.Popen(
            [
                "git",
                f"--git-dir={self.path}",
                *("config", "-z", "--get-regexp", r"^(gpg\.program|user\.signingkey)$"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(self.env),
        )

    def finish_signing_config(self, proc: subprocess.Popen[bytes]) -> tuple[str, str]:
        """:meth:`signing_config` from the run :meth:`start_signing_config` started.

        Raises:
            ConfigError: ``user.signingkey`` is not set.
        """
        raw, _ = proc.communicate()
        # exit 1: neither key is set (any failure reads as no setting, as before)
        out = raw.decode("utf-8", "replace") if proc.returncode == 0 else ""
        values: dict[str, str] = {}
        for item in out.split("\0"):
            name, _, value = item.partition("\n")
            values[name] = value.strip()  # the last one wins, as with ``git config --get``
        key = values.get("user.signingkey")
        if not key:
            raise ConfigError("user.signingkey is not set in the qgitconf repository")
        return values.get("gpg.program") or "gpg", key

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
        known = self.layers()
        if name in known:
            raise UsageError(f"{name!r} is a layer; a target needs another name")
        for layer in layers:
            if layer not in known:
                raise UsageError(f"no layer {layer!r} (see: qgitconf layer add)")
        tip = self.tip(name) or self._root_commit(name)
        targets[name] = {"layers": list(dict.fromkeys(layers))}
        write_json(self.meta / "targets.json", targets)
        return tip

    def attach_layer(self, layer: str, target: str) -> None:
        """Add ``layer`` to the layers merged into ``target`` (no-op if already there)."""
        if layer not in self.layers():
            raise UsageError(f"no layer {layer!r} (see: qgitconf layer add)")
        targets = self.targets()
        if target not in targets:
            raise UsageError(f"unknown target {target!r} (see: qgitconf target add)")
        layers = list(targets[target].get("layers", []))
        if layer not in layers:
            targets[target] = {**targets[target], "layers": [*layers, layer]}
            write_json(self.meta / "targets.json", targets)

    # -- moving branches -----------------------------------------------------------------

    def worktree_path(self, branch: str) -> Path:
        return self.home / "qgitconf-work" / branch

    def worktree_dirty(self, branch: str) -> bool:
        """True when ``branch`` has a worktree with uncommitted changes."""
        wt = self.worktree_path(branch)
        return (wt / ".git").exists() and bool(self.git("status", "--porcelain", cwd=wt).strip())

    def is_ancestor(self, ancestor: str, tip: str) -> bool:
        """True when ``ancestor`` is ``tip`` or in its history."""
        try:
            self.git("merge-base", "--is-ancestor", ancestor, tip)
        except GitError:
            return False
        return True

    def signed_commit(self, tree: str, parents: Sequence[str], message: str) -> str:
        """Make a commit of ``tree`` signed through ``gpg.program``; move no ref."""
        args = [a for p in parents for a in ("-p", p)]
        return self.git(
            "commit-tree", f"-S{self.signing_key()}", *args, "-m", message, tree
        ).strip()

    def move_branch(self, branch: str, new: str, old: str) -> None:
        """Compare-and-swap ``refs/heads/<branch>`` from ``old`` to ``new`` and keep its
        (clean: callers check ``worktree_dirty`` first) worktree in step."""
        self.git("update-ref", f"refs/heads/{branch}", new, old)
        wt = self.worktree_path(branch)
        if (wt / ".git").exists():
            self.git("reset", "--hard", "--quiet", cwd=wt)

    # -- authoring -----------------------------------------------------------------------

    def worktree(self, branch: str) -> Path:
        """The worktree of ``branch`` (a target or a layer, created on first use) under
        ``~/qgitconf-work/``."""
        self.branch(branch)
        wt = self.worktree_path(branch)
        if not (wt / ".git").exists():
            wt.parent.mkdir(parents=True, exist_ok=True)
            self.git("worktree", "prune")
            self.git("worktree", "add", "--quiet", str(wt), branch)
        return wt

    def commit(self, branch: str, message: str, allow_large: bool = False) -> str:
        """Commit what is staged in the branch's worktree, signed; returns the commit id.

        Args:
            branch: a target or layer.
            message: the commit message.
            allow_large: let files larger than a target accepts by default through (here
                and in the ``pre-commit`` hook, by ``QGITCONF_ALLOW_LARGE=1``).

        Raises:
            LargeFileError: a staged file is too large (checked before git runs the hook,
                with the same rule); nothing was committed.
            GitError: git or the ``pre-commit`` hook refused.
        """
        wt = self.worktree(branch)
        extra = {sizes.ALLOW_ENV: "1"} if allow_large else None
        if not allow_large:
            big = sizes.staged_too_large(self.env, wt)
            if big:
                raise LargeFileError(
                    "nothing committed: a target refuses every update holding a file larger "
                    f"than {sizes.human(sizes.MAX_FILE_BYTES)} (max_object_bytes), and once "
                    "committed it stays in the history the target has not accepted:\n"
                    + sizes.describe(big)
                    + f"\nunstage it: git -C {wt} rm --cached -q PATH (only if the target's "
                    "target.toml raises that limit: commit --allow-large)"
                )
        self.git("commit", "--quiet", "-S", "-m", message, cwd=wt, extra_env=extra)
        return self.git("rev-parse", "HEAD", cwd=wt).strip()
