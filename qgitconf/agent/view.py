"""The text ``qgitconf status`` and ``qgitconf apply`` print in a target qube.

Plain functions from a command's result to lines, without click: the click layer
(``qgitconf.cli``) and the click-free entry point (``qgitconf.entry``) print the same
lines.  Everything in the results is sanitised already (rule 11).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:  # the no-drift status imports this module (agent/statusfast.py)
    from typing import Literal

    from qgitconf.agent.records import ApplyResult, Generation, Status

SHOWN_SKIPPED = 5  # files left out by --keep/--only that apply names without --verbose


def status_lines(out: Status) -> list[str]:
    """The lines of ``qgitconf status`` for the target result ``out`` (without the
    recovery note, which goes to stderr)."""
    lines = [
        f"source: {out['source']}   sequence: {out['sequence']}   generation: {out['generation']}",
        f"staged:  {out['staged'] or '-'}",
        f"applied: {out['applied'] or '-'}",
    ]
    if out["last_update"]:
        age = int(out["last_update_age"] or 0)
        lines.append(
            f"last update: {out['last_update']} "
            f"({age // 86400} d {age % 86400 // 3600} h {age % 3600 // 60} min ago)"
        )
    lines.append(f"managed files: {out['managed']}")
    if out["pending"]:
        lines.append("an update is staged: run `qgitconf review`, then `qgitconf apply`")
    lines += [f"changed locally ({d['state']}): {d['path']}" for d in out["drift_detail"]]
    lines += [f"left out of the last apply: {p}" for p in out["skipped"]]
    if out["busy"]:
        lines.append("an apply, revert or restore is running right now")
    elif out["interrupted"]:
        lines.append("an apply was interrupted and could not be recovered; see the journal")
    return lines


def counts(rec: Generation | ApplyResult) -> str:
    """``N written, N removed, N restored[, N adopted]`` of a generation's record."""
    keys: tuple[Literal["written", "removed", "restored"], ...] = ("written", "removed", "restored")
    parts = [f"{len(rec.get(k) or [])} {k}" for k in keys]
    if rec.get("adopted"):  # already as wanted; the user's copy is kept for revert
        parts.append(f"{len(rec['adopted'])} adopted")
    return ", ".join(parts)


def kept_lines(rec: ApplyResult) -> list[str]:
    """Where --overwrite kept what it wrote over (`qgitconf revert` puts it back)."""
    return [
        f"  overwritten {k['path']}: the previous one is kept in {k['at']}"
        for k in rec.get("kept") or []
    ]


def skipped_lines(skipped: list[str], *, verbose: bool) -> list[str]:
    """The files --keep/--only left out: all with --verbose, else a count and the first few."""
    if verbose or len(skipped) <= SHOWN_SKIPPED:
        return [f"  left out this time: {path}" for path in skipped]
    return [
        f"  left out this time: {len(skipped)} files, the first {SHOWN_SKIPPED}:",
        *(f"    {path}" for path in skipped[:SHOWN_SKIPPED]),
        f"  ... and {len(skipped) - SHOWN_SKIPPED} more (--verbose lists them all)",
    ]


def apply_lines(rec: ApplyResult, *, verbose: bool) -> list[str]:
    """The lines of ``qgitconf apply`` for the generation's record ``rec`` (without
    the recovery note, which goes to stderr)."""
    if rec["number"] is None:
        lines = [f"already applied: {rec['commit']}"]
    else:
        lines = [f"generation {rec['number']}: applied {rec['commit']} ({counts(rec)})"]
    lines += [f"  {line}" for line in rec.get("left", [])]
    lines += kept_lines(rec)
    lines += skipped_lines(list(rec.get("skipped") or []), verbose=verbose)
    return lines
