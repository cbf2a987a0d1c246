"""The lab's qrexec: dom0 policy decides, then the target's installed service runs.

``route`` evaluates the lab's copy of the project's policy files (first match wins,
no match = deny; ``ask`` answered by the lab setting) and finds the service file in
the target qube (``NAME+ARG`` first, then ``NAME``).  The ``qrexec-client-vm`` shim
(``qrexec-client-vm TARGET SERVICE[+ARG]`` runs :func:`main`) and ``LabTransport`` both
use it, and both run the service with the environment real qrexec gives it:
``QREXEC_REMOTE_DOMAIN``, ``QREXEC_SERVICE_FULL_NAME``, ``QREXEC_SERVICE_ARGUMENT``
(only when the call had ``+``) and ``QREXEC_REQUESTED_TARGET``.  A refused call exits
126, like the real client.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from qgitconf.lab.lab import Lab
from qgitconf.policy import evaluate, load_policy_dir

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the shim imports as little as it can
if TYPE_CHECKING:
    from qgitconf.transport import CallResult

# qgitconf.transport.QREXEC_REFUSED (tested equal); not imported, because the transport
# module pulls in subprocess, threading and typing, which the shim never uses.
QREXEC_REFUSED = 126
SERVICE_NOT_FOUND = 127


@dataclass(frozen=True)
class Route:
    """Where an allowed call goes: the service file and its environment."""

    target: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path


class Refused(Exception):
    """The call does not reach any service; ``status`` is what the client exits with."""

    def __init__(self, message: str, status: int = QREXEC_REFUSED) -> None:
        super().__init__(message)
        self.status = status


def route(lab: Lab, source: str, target: str, spec: str) -> Route:
    """Decide a call from ``source`` to ``target`` for ``SERVICE[+ARG]``.

    Raises:
        Refused: denied by policy, target not running with autostart=no, no service.
    """
    service, plus, argument = spec.partition("+")
    qubes = lab.qubes()
    decision = evaluate(
        load_policy_dir(lab.policy_dir),
        service=service,
        argument=argument,
        source=source,
        target=target,
        qubes=qubes,
    )
    action, dest = decision.action, decision.target
    if action == "ask":
        action = lab.info().get("ask", "deny")
        dest = decision.params.get("default_target", dest) if dest.startswith("@") else dest
    if action != "allow":
        raise Refused(f"Request refused: {spec} from {source} to {target}")
    info = lab.info()["qubes"].get(dest, {})
    if not info.get("running", True) and decision.params.get("autostart") == "no":
        raise Refused(f"Request refused: {dest} is not running (autostart=no)")
    rpc = lab.rpc_dir(dest)
    candidates = [rpc / f"{service}+{argument}", rpc / service] if plus else [rpc / service]
    path = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
    if path is None:
        raise Refused(f"service {service} not found in {dest}", SERVICE_NOT_FOUND)
    extra = {
        "QREXEC_REMOTE_DOMAIN": source,
        "QREXEC_SERVICE_FULL_NAME": spec if plus else service,
        "QREXEC_REQUESTED_TARGET": target,
    }
    if plus:
        extra["QREXEC_SERVICE_ARGUMENT"] = argument
    argv = [str(path), argument] if plus and argument else [str(path)]
    return Route(dest, argv, lab.env(dest, extra), lab.home(dest))


class LabTransport:
    """The lab adapter of the transport seam, calling ``route`` in-process."""

    def __init__(self, lab: Lab, source: str) -> None:
        self.lab = lab
        self.source = source

    def call(self, target: str, service: str, stdin: bytes, stdout_cap: int) -> CallResult:
        from qgitconf.transport import CallResult, run_capped

        try:
            r = route(self.lab, self.source, target, service)
        except Refused as e:
            return CallResult(e.status, b"", str(e).encode())
        return run_capped(r.argv, stdin, stdout_cap, r.env, cwd=str(r.cwd))


def main(argv: list[str] | None = None) -> int:
    """``qrexec-client-vm TARGET SERVICE[+ARG]`` inside a lab qube."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: qrexec-client-vm TARGET SERVICE[+ARG]", file=sys.stderr)
        return 2
    lab_root, source = os.environ.get("QGITCONF_LAB"), os.environ.get("QGITCONF_QUBE_NAME")
    if not lab_root or not source:
        print("qrexec-client-vm (lab): not inside a lab qube", file=sys.stderr)
        return 125
    try:
        r = route(Lab(Path(lab_root)), source, args[0], args[1])
    except Refused as e:
        print(str(e), file=sys.stderr)
        return e.status
    sys.stdout.flush()
    os.chdir(r.cwd)
    os.execve(r.argv[0], r.argv, r.env)


if __name__ == "__main__":
    sys.exit(main())
