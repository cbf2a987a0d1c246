"""File sizes against what a target accepts: one file over the limit blocks a target.

A target refuses an update holding an object larger than its ``max_object_bytes``
(DESIGN rule 5), and history only moves forward (rule 6): once such a blob is in the
part of a branch the target has not accepted yet, every later update carries it too.
So config-mgmt refuses it at the door (``qgitconf add``/``commit`` and the
``pre-commit`` hook, unless allowed explicitly), names it when a publish is refused as
``too-large``, and ``qgitconf squash`` takes it out of the unaccepted history.

The limit is the target's default (:class:`qgitconf.limits.Limits`); a target whose
``target.toml`` raises it accepts more, which is what the explicit override is for.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from qgitconf.errors import GitError
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

MAX_FILE_BYTES = Limits().max_object_bytes
"""The largest file a target accepts with its default limits (``max_object_bytes``)."""
ALLOW_ENV = "QGITCONF_ALLOW_LARGE"
"""Set to ``1`` to let the pre-commit hook (and ``qgitconf commit``) pass large files."""
ALLOW_CONFIG = "qgitconf.allowLarge"
"""A multi-valued git config key: paths that may be larger than :data:`MAX_FILE_BYTES`."""


class SizedFile(NamedTuple):
    """A file (a blob at ``path``) and its size in bytes."""

    path: str
    size: int


def human(size: int) -> str:
    """``size`` bytes for people: ``70.0 MiB``, ``512 bytes``."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover - the loop always returns


def describe(files: Sequence[SizedFile], limit: int = MAX_FILE_BYTES) -> str:
    """One line per file: ``path: 70.0 MiB (73400320 bytes), over the 64.0 MiB limit``."""
    return "\n".join(
        f"  {sanitize(f.path)}: {human(f.size)} ({f.size} bytes)"
        + (f", over the {human(limit)} per-file limit" if f.size > limit else "")
        for f in files
    )


def too_large(files: Sequence[SizedFile], limit: int = MAX_FILE_BYTES) -> list[SizedFile]:
    """The files of ``files`` larger than ``limit``, largest first."""
    return sorted((f for f in files if f.size > limit), key=lambda f: (-f.size, f.path))


def _run(
    args: Sequence[str], env: Mapping[str, str], cwd: Path | None, input: bytes | None = None
) -> bytes:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, input=input, capture_output=True, env=dict(env), check=False
    )
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed: {err[-1] if err else proc.returncode}")
    return proc.stdout


def staged_blobs(env: Mapping[str, str], cwd: Path | None = None) -> list[tuple[str, str]]:
    """``(path, blob id)`` of every file added or changed in the index of a worktree.

    One ``git diff --cached --raw`` (gitlinks and deletions left out); the paths are
    NUL-separated, so any byte in a name is fine.
    """
    out = _run(
        [
            "diff",
            "--cached",
            "--raw",
            "-z",
            "--no-renames",
            "--no-abbrev",
            "--diff-filter=ACM",
        ],
        env,
        cwd,
    )
    fields = out.split(b"\0")
    blobs: list[tuple[str, str]] = []
    for i in range(0, len(fields) - 1, 2):
        meta, raw = fields[i], fields[i + 1]
        parts = meta.split()
        if len(parts) < 5 or not parts[0].startswith(b":"):
            raise GitError("git diff --raw: unexpected output")
        if parts[1] == b"160000":  # a gitlink: no content here
            continue
        blobs.append((raw.decode("utf-8", "surrogateescape"), parts[3].decode("ascii")))
    return blobs


def blob_sizes(
    env: Mapping[str, str], shas: Sequence[str], cwd: Path | None = None
) -> dict[str, int]:
    """The size of each blob in ``shas``, from one ``git cat-file --batch-check``."""
    if not shas:
        return {}
    unique = list(dict.fromkeys(shas))
    out = _run(
        ["cat-file", "--batch-check=%(objectname) %(objectsize)"],
        env,
        cwd,
        input="".join(f"{s}\n" for s in unique).encode("ascii"),
    )
    sizes: dict[str, int] = {}
    for line in out.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def allowed_paths(env: Mapping[str, str], cwd: Path | None = None) -> set[str]:
    """The paths ``git config --get-all qgitconf.allowLarge`` lets through."""
    proc = subprocess.run(
        ["git", "config", "--get-all", ALLOW_CONFIG],
        cwd=cwd,
        capture_output=True,
        env=dict(env),
        check=False,
    )
    return set(proc.stdout.decode("utf-8", "surrogateescape").splitlines())


def staged_too_large(
    env: Mapping[str, str], cwd: Path | None = None, limit: int = MAX_FILE_BYTES
) -> list[SizedFile]:
    """Staged files of the worktree at ``cwd`` over ``limit`` that no allowance covers.

    ``QGITCONF_ALLOW_LARGE=1`` in ``env`` allows all; ``qgitconf.allowLarge`` paths are
    allowed one by one.
    """
    if env.get(ALLOW_ENV) == "1":
        return []
    blobs = staged_blobs(env, cwd)
    sizes = blob_sizes(env, [sha for _, sha in blobs], cwd)
    allowed = allowed_paths(env, cwd)
    return too_large(
        [SizedFile(p, sizes.get(sha, 0)) for p, sha in blobs if p not in allowed], limit
    )


def range_blobs(
    repo_path: Path, env: Mapping[str, str], tips: Sequence[str], base: str | None
) -> dict[str, SizedFile]:
    """Every blob reachable from ``tips`` but not from ``base``: id -> (path, size).

    ``git rev-list --objects`` names each blob by the first path it was seen at, so a
    file removed again since is named too: that is what a target refuses.
    """
    git = [f"--git-dir={repo_path}"]
    listing = _run(
        [*git, "rev-list", "--objects", *tips, *([f"^{base}"] if base else [])], env, None
    )
    named: list[tuple[str, str]] = []
    for line in listing.decode("utf-8", "surrogateescape").splitlines():
        sha, sep, path = line.partition(" ")
        if sep and path:
            named.append((sha, path))
    out = _run(
        [*git, "cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)"],
        env,
        None,
        input="".join(f"{sha}\n" for sha, _ in named).encode("ascii"),
    )
    blobs: dict[str, int] = {}
    for line in out.decode("ascii", "replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "blob" and parts[2].isdigit():
            blobs[parts[0]] = int(parts[2])
    return {sha: SizedFile(path, blobs[sha]) for sha, path in named if sha in blobs}


def largest(files: Mapping[str, SizedFile] | Sequence[SizedFile], count: int) -> list[SizedFile]:
    """The ``count`` largest of ``files``, largest first."""
    values = list(files.values()) if isinstance(files, Mapping) else list(files)
    return sorted(values, key=lambda f: (-f.size, f.path))[:count]


def largest_in_range(
    repo_path: Path, env: Mapping[str, str], tip: str, base: str | None, count: int = 3
) -> list[SizedFile]:
    """The ``count`` largest files an update from ``base`` (exclusive) to ``tip`` carries."""
    return largest(range_blobs(repo_path, env, [tip], base), count)
