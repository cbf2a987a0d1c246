"""Publishing to several targets at once (``publish NAME NAME...``, ``--all``, ``--jobs``).

Apart from publish.py, which the "publish -> staged" row of ``make bench`` (``qgitconf
publish NAME``, one target) imports: concurrent.futures (about 6 ms) loads only here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime

from qgitconf.mgmt.publish import Progress, PublishResult, in_turn, publish_each
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.mgmt.update import Note
from qgitconf.qubes.qrexec import Transport


def publish_targets(
    repo: MgmtRepo,
    targets: Sequence[str],
    transport: Transport,
    *,
    jobs: int = 4,
    progress: Progress | None = None,
    now: datetime | None = None,
    note: Note | None = None,
) -> list[PublishResult]:
    """:func:`qgitconf.mgmt.publish.publish_each` with the targets published in parallel,
    at most ``jobs`` at once (merges, failures and errors as there)."""

    def run(
        one: Callable[[str], PublishResult],
        names: list[str],
        done: Callable[[PublishResult], None],
    ) -> None:
        if jobs == 1 or len(names) == 1:
            in_turn(one, names, done)
            return
        with ThreadPoolExecutor(max_workers=min(jobs, len(names))) as pool:
            for fut in as_completed([pool.submit(one, n) for n in names]):
                done(fut.result())

    return publish_each(repo, targets, transport, run=run, progress=progress, now=now, note=note)
