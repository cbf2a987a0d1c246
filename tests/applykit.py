"""Helpers for the apply tests: stage exact trees for personal, snapshot a home."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.labkit import Lab, as_qube_user, host_path, publish, qg, qube_path, run, snapshot

STATE = ".local/share/qgitconf"


# With a qube user's uid, this process may not reach its interpreter's standard library
# (under /root, 0700): the modules the agent imports lazily are imported up front.
as_user = as_qube_user  # kept name for this module's callers


# path -> content (str/bytes, mode 0644), (content, mode), or ("link", target)
Tree = dict[str, Any]


def worktree(lab: Lab) -> Path:
    """The host path of personal's work tree in config-mgmt (``edit`` prints the qube's view)."""
    inside = qg(lab, "config-mgmt", "edit", "personal").stdout.decode().strip()
    return host_path(lab, "config-mgmt", inside)


def stage(lab: Lab, tree: Tree, message: str = "update") -> str:
    """Make personal's branch hold exactly ``tree``, commit (signed), publish; the commit."""
    wt = worktree(lab)
    with as_user(lab, "config-mgmt"):  # what is written belongs to config-mgmt's user
        _fill(wt, tree)
    run(lab, "config-mgmt", "git", "-C", qube_path(lab, "config-mgmt", wt), "add", "-A")
    qg(lab, "config-mgmt", "commit", "personal", "-m", message)
    result = publish(lab, "personal")
    assert result["status"] == "staged", result
    return str(result["commit"])


def _fill(wt: Path, tree: Tree) -> None:
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


def home_view(home: Path) -> dict[str, Any]:
    """Everything in ``home`` except the agent state: modes, bytes, link targets."""
    return {k: v for k, v in snapshot(home).items() if not k.startswith(STATE.split("/")[0])}


def status(lab: Lab) -> dict[str, Any]:
    return dict(json.loads(qg(lab, "personal", "status", "--json").stdout))


def state_path(lab: Lab) -> Path:
    return lab.home("personal") / STATE
