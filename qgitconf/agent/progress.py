"""Progress lines for long work on big trees (review, apply, revert).

The commands report progress through a :data:`Emit` callable that the click layer
gives them only when stderr is a terminal or ``--progress`` was given; it writes to
stderr, never to stdout (which carries the result, or the JSON).  Nothing is reported
for trees smaller than :data:`MIN_FILES`: a small apply is over before a line would
help.  While counting, a line is emitted every :data:`EVERY_FILES` files or every
:data:`EVERY_SECONDS`, whichever comes first, and once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qgitconf.agent.fault import Fault
from qgitconf.agent.plan import is_direct

Emit = Callable[[str], None]
"""Shows one progress line (without the ``qgitconf:`` prefix or a newline)."""

MIN_FILES = 2000
"""Trees (or plans) smaller than this report no progress."""
EVERY_FILES = 1000
EVERY_SECONDS = 1.0


class Counter:
    """Counts the files of one phase (``what``, out of ``total``) and emits a line
    every :data:`EVERY_FILES` files or :data:`EVERY_SECONDS`; silent when ``emit`` is
    None or ``total`` is below :data:`MIN_FILES`."""

    def __init__(self, emit: Emit | None, what: str, total: int) -> None:
        self.emit = emit if total >= MIN_FILES else None
        self.what = what
        self.total = total
        self.done = 0
        self._shown = 0
        self._when = time.monotonic()

    def step(self, n: int = 1) -> None:
        """``n`` more files done; a line if enough files or time passed since the last."""
        if self.emit is None:
            return
        self.done += n
        now = time.monotonic()
        if self.done - self._shown >= EVERY_FILES or now - self._when >= EVERY_SECONDS:
            self._show(now)

    def finish(self) -> None:
        """The last line of the phase (if any line is shown at all)."""
        if self.emit is not None and self._shown != self.done:
            self._show(time.monotonic())

    def _show(self, now: float) -> None:
        if self.emit is not None:
            self.emit(f"{self.what}: {self.done}/{self.total} files")
        self._shown, self._when = self.done, now


def note(emit: Emit | None, total: int, text: str) -> None:
    """One line (a phase starting) when ``emit`` is given and ``total`` is big enough."""
    if emit is not None and total >= MIN_FILES:
        emit(text)


# The labels the journaled apply reports per file (HomeFS's hook and the journal's fault
# hook are the same callable while it runs): phase name for each.
_PHASES = {
    "kept": "keeping copies of what is overwritten",
    "undo-linked": "checking what is replaced",
    "temp-written": "writing",
    "direct-written": "writing",
    "done-write": "moving into place",
    "done-restore": "moving into place",
    "done-delete": "removing",
}


class ApplyProgress(Fault):
    """The fault-injection hook of an apply, wrapped to count the files of each phase.

    It passes every call on to ``inner`` (so fault injection works as before) and
    emits a progress line per phase, as :class:`Counter` does; ``totals`` gives the
    number of files of each phase, keyed by its first label (see :func:`apply_totals`).
    """

    def __init__(self, inner: Fault, emit: Emit, kind: str, totals: Mapping[str, int]) -> None:
        super().__init__(inner.after, inner.kind)
        self.inner = inner
        self.emit = emit
        self.label = kind
        self.totals = dict(totals)
        self._counter: Counter | None = None
        self._phase = ""

    def __call__(self, label: str) -> None:
        self.inner(label)
        phase = _PHASES.get(label)
        if phase is None:
            return
        if phase != self._phase:
            if self._counter is not None:
                self._counter.finish()
            self._phase = phase
            total = self.totals.get(label, 0)
            self._counter = Counter(self.emit, f"{self.label}: {phase}", total)
        if self._counter is not None:
            self._counter.step()

    def finish(self) -> None:
        """The last line of the last phase."""
        if self._counter is not None:
            self._counter.finish()


def apply_totals(actions: Sequence[Any]) -> dict[str, int]:
    """The number of files of each phase of an apply of ``actions`` (the plan's
    ``touches_disk``), keyed by the label the phase reports per file."""
    made = {a.path for a in actions if a.op == "mkdir"}
    writes = sum(a.op in ("write", "restore") for a in actions)
    direct = sum(is_direct(a, made) for a in actions)
    return {
        "kept": sum(a.keep is not None for a in actions),
        "undo-linked": sum(
            a.op not in ("mkdir", "rmdir", "adopt") and a.old.kind != "missing" for a in actions
        ),
        "temp-written": writes,
        "direct-written": writes,
        "done-write": writes - direct,
        "done-restore": writes - direct,
        "done-delete": sum(a.op == "delete" for a in actions),
    }
