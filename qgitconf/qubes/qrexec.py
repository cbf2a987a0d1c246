"""The one transport seam: ``call(target, service, stdin) -> CallResult``.

The adapter here, ``QrexecClient``, runs the system's ``qrexec-client-vm`` (in the lab,
Qubes' own client built from source).  Tests that publish in-process use an adapter
that runs the same client inside the source qube of the lab.  Callers choose one
explicitly.

Whatever comes back is untrusted: stdout is read up to a cap and the call fails with
``TooLargeError`` beyond it.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Mapping
from typing import IO, NamedTuple, Protocol

from qgitconf import sysprog
from qgitconf.errors import TooLargeError, TransportError
from qgitconf.limits import MAX_QREXEC_STDERR_BYTES

QREXEC_REFUSED = 126
QREXEC_FAILED = 125


class CallResult(NamedTuple):
    """Exit status of the remote service and its (capped) output."""

    status: int
    stdout: bytes
    stderr: bytes


class Transport(Protocol):
    def call(self, target: str, service: str, stdin: bytes, stdout_cap: int) -> CallResult:
        """Run ``service`` in ``target`` with ``stdin``; return its status and output."""
        ...


def _drain(stream: IO[bytes], cap: int, out: list[bytes]) -> None:
    total = 0
    while chunk := stream.read(65536):
        if total < cap:
            out.append(chunk[: cap - total])
        total += len(chunk)


def run_capped(
    cmd: list[str],
    stdin: bytes,
    stdout_cap: int,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> CallResult:
    """Run ``cmd`` feeding ``stdin``; read at most ``stdout_cap`` bytes of its stdout.

    Raises:
        TooLargeError: the command printed more than ``stdout_cap`` bytes.
        TransportError: the command could not be started.
    """
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except OSError as e:
        raise TransportError(f"cannot run {cmd[0]}: {e}") from e
    if proc.stdin is None or proc.stdout is None or proc.stderr is None:
        raise TransportError("pipes missing")

    def feed() -> None:
        try:
            proc.stdin.write(stdin)  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            pass  # the service stopped reading (e.g. it rejected the update early)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]

    err: list[bytes] = []
    writer = threading.Thread(target=feed, daemon=True)
    err_reader = threading.Thread(
        target=_drain, args=(proc.stderr, MAX_QREXEC_STDERR_BYTES, err), daemon=True
    )
    writer.start()
    err_reader.start()
    out = bytearray()
    too_large = False
    while chunk := proc.stdout.read(65536):
        out += chunk
        if len(out) > stdout_cap:
            too_large = True
            proc.kill()
            break
    status = proc.wait()
    writer.join()
    err_reader.join()
    if too_large:
        raise TooLargeError(f"{cmd[0]} answered more than {stdout_cap} bytes")
    return CallResult(status, bytes(out), b"".join(err))


class QrexecClient:
    """The real adapter: ``qrexec-client-vm TARGET SERVICE``, found on the system PATH
    (never ``~/bin``: DESIGN rule 12)."""

    def __init__(self, program: str | None = None, env: Mapping[str, str] | None = None):
        self.program = program or sysprog.program("qrexec-client-vm")
        self.env = env

    def call(self, target: str, service: str, stdin: bytes, stdout_cap: int) -> CallResult:
        return run_capped([self.program, target, service], stdin, stdout_cap, self.env)
