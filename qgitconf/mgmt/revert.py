"""config-mgmt revert: a new signed commit restoring an earlier tree (history only
moves forward, so targets accept it like any other change)."""

from __future__ import annotations

from qgitconf.errors import GitError, UsageError
from qgitconf.mgmt.repo import MgmtRepo


def revert_branch(repo: MgmtRepo, target: str, to: str | None) -> str:
    """Commit the tree of ``to`` (default: the tip's first parent) on top of ``target``."""
    repo.target(target)
    tip = repo.tip(target)
    if tip is None:
        raise GitError(f"branch {target} has no commits")
    spec = to or f"{tip}^"
    try:
        old = repo.git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}").strip()
    except GitError as e:
        raise UsageError(f"no commit {spec!r} on {target}") from e
    try:
        repo.git("merge-base", "--is-ancestor", old, tip)
    except GitError as e:
        raise UsageError(f"{spec} is not in the history of {target}") from e
    wt = repo.home / "qgitconf-work" / target
    has_wt = (wt / ".git").exists()
    if has_wt and repo.git("status", "--porcelain", cwd=wt).strip():
        raise UsageError(f"the worktree {wt} has uncommitted changes; commit or discard them first")
    tree = repo.git("rev-parse", f"{old}^{{tree}}").strip()
    new = repo.git(
        "commit-tree",
        f"-S{repo.signing_key()}",
        "-p",
        tip,
        "-m",
        f"Revert {target} to {old[:12]}",
        tree,
    ).strip()
    repo.git("update-ref", f"refs/heads/{target}", new, tip)
    if has_wt:  # keep the (clean) worktree in step with its branch
        repo.git("reset", "--hard", "--quiet", cwd=wt)
    return new
