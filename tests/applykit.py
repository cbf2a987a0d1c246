"""Helpers for the apply tests: stage exact trees for personal, snapshot a home."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.labkit import Lab, publish, qg, run, snapshot

STATE = ".local/share/qgitconf"

# path -> content (str/bytes, mode 0644), (content, mode), or ("link", target)
Tree = dict[str, Any]


def worktree(lab: Lab) -> Path:
    return Path(qg(lab, "config-mgmt", "edit", "personal").stdout.decode().strip())


def stage(lab: Lab, tree: Tree, message: str = "update") -> str:
    """Make personal's branch hold exactly ``tree``, commit (signed), publish; the commit."""
    wt = worktree(lab)
    for p in wt.iterdir():
        if p.name == ".git":
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    for rel, spec in tree.items():
        dest = wt / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, tuple) and spec[0] == "link":
            dest.symlink_to(spec[1])
            continue
        data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        dest.write_bytes(data.encode() if isinstance(data, str) else data)
        dest.chmod(mode)
    run(lab, "config-mgmt", "git", "-C", str(wt), "add", "-A")
    qg(lab, "config-mgmt", "commit", "personal", "-m", message)
    result = publish(lab, "personal")
    assert result["status"] == "staged", result
    return str(result["commit"])


def home_view(home: Path) -> dict[str, Any]:
    """Everything in ``home`` except the agent state: modes, bytes, link targets."""
    return {k: v for k, v in snapshot(home).items() if not k.startswith(STATE.split("/")[0])}


def status(lab: Lab) -> dict[str, Any]:
    return dict(json.loads(qg(lab, "personal", "status", "--json").stdout))


def state_path(lab: Lab) -> Path:
    return lab.home("personal") / STATE
