"""One check of ``qgitconf doctor`` and the helpers every group of checks shares."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from qgitconf import sysprog
from qgitconf.sanitize import sanitize

RESULTS = ("ok", "warn", "fail", "skip")


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table.

    Attributes:
        name: A short stable identifier (``gpg``, ``pinned-key``…).
        result: ``ok``, ``warn``, ``fail`` or ``skip``.
        message: What was found, sanitised for display (rule 11).
    """

    name: str
    result: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The check as a JSON-ready mapping."""
        return asdict(self)


def version_of(text: str) -> tuple[int, ...] | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        return None
    return tuple(int(g) for g in m.groups(default="0"))


def dotted(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


def git_fsck(name: str, git_dir: Path, env: Mapping[str, str]) -> Check:
    try:
        proc = subprocess.run(
            [
                sysprog.program("git"),
                *sysprog.GIT_ISOLATION,
                "fsck",
                "--strict",
                "--no-dangling",
                "--no-progress",
            ],
            capture_output=True,
            check=False,
            timeout=600,
            env=sysprog.git_env(env.get("HOME", "/"), git_dir),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check(name, "fail", f"cannot run git fsck: {sanitize(str(e))}")
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()
        return Check(name, "fail", f"git fsck failed: {sanitize(out[0] if out else '?')}")
    return Check(name, "ok", f"git fsck clean: {sanitize(str(git_dir))}")
