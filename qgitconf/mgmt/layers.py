"""Layers: shared branches (e.g. ``common``) merged into every target that names them.

At publish time each layer a target names is merged into the target branch by a
signed merge commit (``git merge-tree --write-tree``, then ``git commit-tree -S``
through ``gpg.program``), so one commit on ``common`` reaches every qube.  All merges of
a publish run are computed first; if any conflicts, no ref moves and nothing is
published (:class:`MergeConflictError` lists every conflict).  No worktree is touched
during the merge, so no hook, filter or attribute of the repo runs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import NamedTuple

from qgitconf.errors import ConfigError, GitError, MergeConflictError, UsageError
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.sanitize import sanitize


class MergePlan(NamedTuple):
    """The new tip of one target branch after merging its layers (``new == old``: none)."""

    target: str
    old: str
    new: str
    merged: tuple[str, ...] = ()


def merge_tree(repo: MgmtRepo, ours: str, theirs: str) -> tuple[str | None, list[str]]:
    """Merge two commits without a worktree; return (tree, []) or (None, conflicted paths)."""
    proc = subprocess.run(
        [
            "git",
            f"--git-dir={repo.path}",
            "merge-tree",
            "--write-tree",
            "--allow-unrelated-histories",
            "--name-only",
            "--no-messages",
            ours,
            theirs,
        ],
        capture_output=True,
        env=dict(repo.env),
        check=False,
    )
    lines = proc.stdout.decode("utf-8", "replace").splitlines()
    if proc.returncode == 0 and lines:
        return lines[0].strip(), []
    if proc.returncode == 1 and lines:
        return None, sorted({sanitize(p) for p in lines[1:] if p})
    err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    raise GitError(f"git merge-tree failed: {err[-1] if err else proc.returncode}")


def plan_merges(repo: MgmtRepo, targets: Sequence[str], sign: bool = True) -> list[MergePlan]:
    """Create the signed merge commits each target needs; move no ref yet.

    With ``sign`` false (``publish --dry-run``) the merge commits are unsigned objects
    that no ref ever points to: they only measure what would be sent.

    Raises:
        MergeConflictError: some layer does not merge cleanly (all conflicts listed).
        UsageError: a target that needs a merge has uncommitted changes in its worktree.
    """
    plans: list[MergePlan] = []
    conflicts: list[str] = []
    dirty: list[str] = []
    for target in targets:
        old = repo.tip(target)
        if old is None:
            raise GitError(f"branch {target} has no commits")
        cur, merged = old, []
        for layer in repo.target_layers(target):
            theirs = repo.tip(layer)
            if theirs is None or layer not in repo.layers():
                raise ConfigError(f"target {target} names layer {layer!r}, which does not exist")
            if repo.is_ancestor(theirs, cur):
                continue  # already merged
            tree, conflicted = merge_tree(repo, cur, theirs)
            if tree is None:
                conflicts.append(f"{target} <- {layer}: {', '.join(conflicted)}")
                break
            message = f"Merge layer {layer} into {target}"
            if sign:
                cur = repo.signed_commit(tree, [cur, theirs], message)
            else:
                cur = repo.git(
                    "-c", "commit.gpgsign=false", "commit-tree", "-p", cur, "-p", theirs,
                    "-m", message, tree,
                ).strip()  # fmt: skip
            merged.append(layer)
        if cur != old and repo.worktree_dirty(target):
            dirty.append(target)
        plans.append(MergePlan(target, old, cur, tuple(merged)))
    if conflicts:
        raise MergeConflictError(
            "layers do not merge cleanly; nothing was published.\n"
            + "\n".join(f"  conflict: {c}" for c in conflicts)
            + "\nresolve it on the target or layer branch (qgitconf edit NAME), then publish again"
        )
    if dirty:
        raise UsageError(
            "uncommitted changes in the worktree of " + ", ".join(dirty) + "; commit or discard "
            "them first (a layer merge moves that branch)"
        )
    return plans


def apply_merges(repo: MgmtRepo, plans: Sequence[MergePlan]) -> None:
    """Move each target branch to its merge commit (compare-and-swap on the old tip)."""
    for plan in plans:
        if plan.new == plan.old:
            continue
        repo.move_branch(plan.target, plan.new, plan.old)  # clean: plan_merges checked


def merge_layers(repo: MgmtRepo, targets: Sequence[str]) -> list[MergePlan]:
    """Plan, then apply, the layer merges of ``targets``."""
    plans = plan_merges(repo, targets)
    apply_merges(repo, plans)
    return plans
