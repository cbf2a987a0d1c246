"""The fault hook of the crash trials: stop this process at a named step, as a crash
could (``QGITCONF_FAULT_AFTER_WRITES``, ``QGITCONF_FAULT_KIND``); read from the
environment once, by the command's entry."""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Mapping

FAULT_ENV = "QGITCONF_FAULT_AFTER_WRITES"


FAULT_KIND_ENV = "QGITCONF_FAULT_KIND"


class Fault:
    """The fault-injection hook: a no-op unless ``QGITCONF_FAULT_AFTER_WRITES`` is set."""

    def __init__(self, after: int | None = None, kind: str = "kill") -> None:
        self.after = after
        self.kind = kind
        self.count = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Fault:
        raw = env.get(FAULT_ENV, "")
        if not raw.isdigit() or int(raw) <= 0:
            return cls()
        kind = env.get(FAULT_KIND_ENV, "kill")
        return cls(int(raw), kind if kind in ("kill", "enospc", "eacces", "stop") else "kill")

    def __call__(self, label: str) -> None:
        if self.after is None:
            return
        self.count += 1
        if self.count != self.after:
            return
        if self.kind == "enospc":
            raise OSError(errno.ENOSPC, f"No space left on device (injected at {label})")
        if self.kind == "eacces":
            raise PermissionError(errno.EACCES, f"Permission denied (injected at {label})")
        if self.kind == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
            return
        os.kill(os.getpid(), signal.SIGKILL)
