"""config-mgmt squash: one signed commit for the part of a branch its target has not
accepted yet.

The way out when a commit the target refuses (a file over its ``max_object_bytes``)
sits in that part of the history: ``revert`` cannot help, since the blob stays in every
later update.  Squash replaces the commits after the last one the target reported as
accepted by a single commit signed through ``gpg.program`` (like every commit qgitconf
makes) whose parent is that accepted commit (a new root commit if it never accepted
any) and whose tree is the current tip's.  The target therefore still receives a
descendant of what it accepted (DESIGN rule 6): no re-enrolment.

It refuses when that is not safe or would not help:

- a commit published after the accepted one was never answered for (the target was
  off, dom0 refused, the call failed): the target may have pulled it, and an update
  that does not descend from it would be a rollback there;
- the branch does not descend from the accepted commit;
- the tip's tree itself still holds a file over the limit (remove it first);
- a layer merged since brings such a file with its own history (the layer commits are
  kept as parents, so the next publish does not merge them again);
- the worktree has uncommitted changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qgitconf.errors import GitError, SquashUnsafeError, UsageError
from qgitconf.mgmt import sizes
from qgitconf.mgmt.publish import load_record
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.mgmt.records import PublishRecord, ReplyRecord, SquashJson


@dataclass(frozen=True)
class SquashPlan:
    """What squash replaces, and by what."""

    target: str
    tip: str
    base: str | None
    """The last commit the target reported as accepted (the new commit's parent)."""
    dropped: tuple[tuple[str, str], ...]
    """``(commit, subject)`` of each commit replaced, newest first."""
    layers: tuple[tuple[str, str], ...] = field(default=())
    """``(layer, commit)`` merged since ``base``, kept as further parents."""
    removed: tuple[sizes.SizedFile, ...] = field(default=())
    """The largest files that leave the unaccepted history, largest first."""
    new: str | None = None
    """The new tip (None: dry run, or nothing to squash)."""

    def as_json(self) -> SquashJson:
        return {
            "target": self.target,
            "tip": self.tip,
            "base": self.base,
            "new": self.new,
            "dropped": [{"commit": c, "subject": s} for c, s in self.dropped],
            "layers": [{"layer": n, "commit": c} for n, c in self.layers],
            "removed_files": [{"path": f.path, "size": f.size} for f in self.removed],
        }


def _unconfirmed(record: PublishRecord) -> list[str]:
    """Published commits the target never answered for (it may have pulled them)."""
    if isinstance(record.get("unconfirmed"), list):
        return [c for c in record["unconfirmed"] if isinstance(c, str)]
    # A record written before ``unconfirmed`` existed: only the last one is known.
    published = record.get("published")
    reply: ReplyRecord = record.get("reply") or {}
    answered = "error" not in record and (
        reply.get("result") in ("rejected", "error") or reply.get("commit") == published
    )
    return [published] if isinstance(published, str) and not answered else []


def _dropped(repo: MgmtRepo, tip: str, base: str | None) -> list[tuple[str, str]]:
    out = repo.git("log", "--format=%H %s", tip, *([f"^{base}"] if base else []), "--")
    rows = []
    for line in out.splitlines():
        sha, _, subject = line.partition(" ")
        rows.append((sha, sanitize(subject)))
    return rows


def _layer_points(repo: MgmtRepo, target: str, tip: str, base: str | None) -> list[tuple[str, str]]:
    """Per layer, its newest commit in ``tip``'s history when that is not in ``base``'s."""
    points: list[tuple[str, str]] = []
    for layer in repo.target_layers(target):
        layer_tip = repo.tip(layer)
        if layer_tip is None:
            continue
        try:
            point = repo.git("merge-base", layer_tip, tip).split()[0]
        except (GitError, IndexError):
            continue  # never merged: unrelated histories
        if base is None or not repo.is_ancestor(point, base):
            points.append((layer, point))
    return points


def _tree_blobs(repo: MgmtRepo, tip: str) -> dict[str, sizes.SizedFile]:
    """Every file of ``tip``'s tree: blob id -> (path, size)."""
    out = repo.git("ls-tree", "-r", "-l", "-z", "--full-tree", tip)
    files: dict[str, sizes.SizedFile] = {}
    for record in out.split("\0"):
        meta, _, path = record.partition("\t")
        parts = meta.split()
        if len(parts) == 4 and parts[1] == "blob" and parts[3].isdigit():
            files.setdefault(parts[2], sizes.SizedFile(path, int(parts[3])))
    return files


def _too_large_in_tree(repo: MgmtRepo, tree: dict[str, sizes.SizedFile]) -> list[sizes.SizedFile]:
    allowed = sizes.allowed_paths({**repo.env, "GIT_DIR": str(repo.path)})
    return sizes.too_large([f for f in tree.values() if f.path not in allowed])


def plan_squash(repo: MgmtRepo, target: str) -> SquashPlan:
    """Check that squashing ``target`` is safe and worth it; return what it would do.

    Raises:
        SquashUnsafeError: it would drop a commit the target may hold, the branch does
            not descend from the accepted commit, or a file over the limit would stay.
        UsageError: an unknown target.
    """
    repo.require().target(target)
    tip = repo.tip(target)
    if tip is None:
        raise GitError(f"branch {target} has no commits")
    record = load_record(repo, target)
    accepted = record.get("accepted")
    base = accepted if isinstance(accepted, str) else None
    if base is not None and not repo.is_ancestor(base, tip):
        raise SquashUnsafeError(
            f"{target}'s branch does not descend from {base[:12]}, the last commit {target} "
            "accepted; squash keeps that commit as the parent and cannot do it here"
        )
    for commit in _unconfirmed(record):
        if base is None or not repo.is_ancestor(commit, base):
            raise SquashUnsafeError(
                f"{commit[:12]} was published to {target} and {target} never answered (it was "
                "not running, dom0 refused, or the call failed): it may have pulled it, and a "
                "squashed history would be a rollback there. Start "
                f"{target} and run `qgitconf publish {target}` so it answers, then squash again"
            )
    dropped = _dropped(repo, tip, base)
    if not dropped:
        return SquashPlan(target, tip, base, ())
    tree = _tree_blobs(repo, tip)
    still = _too_large_in_tree(repo, tree)
    if still:
        raise SquashUnsafeError(
            f"the tip of {target} still holds files over the "
            f"{sizes.human(sizes.MAX_FILE_BYTES)} limit; remove them first "
            f"(git rm in `qgitconf edit {target}`, then `qgitconf commit {target}`):\n"
            + sizes.describe(still)
        )
    layers = _layer_points(repo, target, tip, base)
    for layer, point in layers:
        big = sizes.too_large(list(sizes.range_blobs(repo.path, repo.env, [point], base).values()))
        if big:
            raise SquashUnsafeError(
                f"layer {layer} brings files over the {sizes.human(sizes.MAX_FILE_BYTES)} "
                f"limit with its own history (merged at {point[:12]}); squash keeps a "
                "layer's history, so it cannot take them out:\n" + sizes.describe(big)
            )
    parents = [*([base] if base else []), *(p for _, p in layers)]
    if len(dropped) == 1 and repo.git("rev-list", "--parents", "-n1", tip).split()[1:] == parents:
        return SquashPlan(target, tip, base, ())  # already one commit on the base
    kept = set(tree)
    for _, point in layers:
        kept |= set(sizes.range_blobs(repo.path, repo.env, [point], base))
    gone = {
        sha: f
        for sha, f in sizes.range_blobs(repo.path, repo.env, [tip], base).items()
        if sha not in kept
    }
    return SquashPlan(
        target, tip, base, tuple(dropped), tuple(layers), tuple(sizes.largest(gone, 5))
    )


def squash(repo: MgmtRepo, target: str, dry_run: bool = False) -> SquashPlan:
    """Replace the commits ``target`` has not accepted by one signed commit.

    Under the repo lock (no publish runs meanwhile); the branch moves by
    compare-and-swap and its clean worktree follows.

    Raises:
        SquashUnsafeError: see :func:`plan_squash`.
        UsageError: the worktree has uncommitted changes.
    """
    with repo.lock():
        plan = plan_squash(repo, target)
        if dry_run or not plan.dropped:
            return plan
        if repo.worktree_dirty(target):
            raise UsageError(
                f"the worktree {repo.worktree_path(target)} has uncommitted changes; "
                "commit or discard them first"
            )
        tree = repo.git("rev-parse", f"{plan.tip}^{{tree}}").strip()
        parents = [*([plan.base] if plan.base else []), *(p for _, p in plan.layers)]
        since = f"since {plan.base[:12]}" if plan.base else "(it accepted none yet)"
        message = (
            f"Squash {len(plan.dropped)} commits {target} has not accepted {since}\n\n"
            + "\n".join(f"{c[:12]} {s}" for c, s in plan.dropped)
        )
        new = repo.signed_commit(tree, parents, message)
        repo.move_branch(target, new, plan.tip)
    return SquashPlan(
        plan.target, plan.tip, plan.base, plan.dropped, plan.layers, plan.removed, new
    )
