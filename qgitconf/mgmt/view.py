"""The text ``qgitconf publish`` prints in the config-mgmt qube.

Plain functions from publish's results to lines, without click: the click layer
(``qgitconf.cli``) and the click-free entry point (``qgitconf.entry``) print the same
lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.mgmt.publish import PublishResult


def publish_lines(results: Sequence[PublishResult], as_json: bool) -> list[str]:
    """What ``qgitconf publish`` prints on stdout for ``results``."""
    if as_json:
        value = [
            {
                "target": r.target,
                "status": r.status,
                "sequence": r.sequence,
                "commit": r.commit,
                "bytes": r.size,
                "message": r.message,
                "largest": [{"path": f.path, "size": f.size} for f in r.largest],
            }
            for r in results
        ]
        return [json.dumps(value, indent=2, sort_keys=True)]
    width = max(len(r.target) for r in results)
    lines = []
    for r in results:
        extra = f"  {sanitize(r.message)}" if r.message else ""
        lines.append(
            f"{r.target:<{width}}  {r.status:<10}  seq {r.sequence:<4} {r.commit[:12]:<12}  "
            f"{r.size:>8} bytes{extra}"
        )
    return lines


def progress_line(done: int, total: int, r: PublishResult) -> str | None:
    """The stderr line for one finished target of several (None for a single one)."""
    return f"[{done}/{total}] {r.target}: {r.status}" if total > 1 else None


def note_line(text: str) -> str:
    """The stderr line for a step of long work (``publish.Note``)."""
    return f"qgitconf: {sanitize(text)}"
