"""SIGINT and SIGTERM during an apply, revert or restore: roll back, then say so.

While :func:`qgitconf.agent.apply.execute` changes $HOME, a :class:`SignalGuard`
turns the first SIGINT (Ctrl-C) or SIGTERM into :class:`Signalled`, a
``BaseException`` that no ``except Exception`` on the way swallows; ``execute`` then
rolls the journal back and raises :class:`qgitconf.errors.InterruptError` (exit 130)
or :class:`qgitconf.errors.TerminatedError` (exit 143).  Any further signal, and any
signal once the commit point is passed (``defer``), is only recorded: a rollback or
the last state records are never cut short by a second Ctrl-C.

A signal the process was started with ignored (``nohup``, a background job of a
shell without job control) stays ignored.  Outside the main thread the guard does
nothing (Python delivers signals to the main thread only).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from qgitconf.errors import InterruptError, TerminatedError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Signalled(BaseException):
    """A SIGINT or SIGTERM arrived before the commit point (roll back)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def signal_name(signum: int) -> str:
    """``SIGINT`` or ``SIGTERM`` (or the number of another signal)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def error_for(signum: int, detail: str) -> InterruptError:
    """The error a command ends with after ``signum``: exit 130 (SIGINT) or 143 (SIGTERM)."""
    if signum == signal.SIGTERM:
        return TerminatedError(detail)
    return InterruptError(detail)


class SignalGuard:
    """Catch SIGINT and SIGTERM for the duration of a ``with`` block.

    Attributes:
        pending: the first signal that arrived, or None.
        deferring: True once signals are only recorded (after the first one was
            raised, or after :meth:`defer`).
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.deferring = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in SIGNALS:
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:
                continue
            self._old[sig] = old
            signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.pending is None:
            self.pending = signum
        if not self.deferring:
            self.deferring = True  # raised once; the rollback then runs undisturbed
            raise Signalled(signum)

    def defer(self) -> None:
        """From now on only record signals (the commit point is passed)."""
        self.deferring = True
