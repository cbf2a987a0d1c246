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
    if not repo.is_ancestor(old, tip):
        raise UsageError(f"{spec} is not in the history of {target}")
    if repo.worktree_dirty(target):
        raise UsageError(
            f"the worktree {repo.worktree_path(target)} has uncommitted changes; "
            "commit or discard them first"
        )
    tree = repo.git("rev-parse", f"{old}^{{tree}}").strip()
    new = repo.signed_commit(tree, [tip], f"Revert {target} to {old[:12]}")
    repo.move_branch(target, new, tip)
    return new
