"""Stand-ins for the two dom0 parts the real lab cannot run: qubesd and the ask prompt.

Installed into the lab's dom0 by :mod:`qgitconf.lab.real_roots` and run there by its PID 1
(:mod:`qgitconf.lab.real_domains`) on the system Python (standard library, plus the
upstream ``qrexec`` package of the lab's dom0 layer):

``real_dom0.py qubesd STATE_DIR``
    qubesd (qubes-core-admin) needs Xen and libvirt.  The qrexec stack asks it two
    things: ``internal.GetSystemInfo`` (the policy daemon, on every evaluation: names,
    types, tags, power state, GUI qube) and ``admin.vm.Start`` (a call to a halted
    target whose rule allows autostart).  The first is answered from
    ``STATE_DIR/system-info.json``, which the harness rewrites when a qube's tags or
    power state change; the second is refused (the lab does not boot qubes behind
    the harness's back), with qubesd's wire format (``0\\0DATA`` or
    ``2\\0EXC_TYPE\\0TRACEBACK\\0MESSAGE\\0``).

``real_dom0.py ask-agent STATE_DIR``
    dom0's ``qrexec-policy-agent`` (GTK) answers the policy daemon's ``policy.Ask``
    socket service with the user's click.  This one is the upstream agent minus the
    window: the upstream :class:`qrexec.server.SocketService` on the agent's socket,
    answering ``allow:TARGET`` or ``deny`` as ``STATE_DIR/ask`` says (see
    :func:`ask_answer`).
    ``policy.Notify`` (the tray notification) is accepted and dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

# the upstream python3-qrexec in the lab's dom0 layer (this file runs only there)
from qrexec.server import SocketService  # type: ignore[import-not-found]

QUBESD_SOCKETS = ("/run/qubesd.internal.sock", "/run/qubesd.sock")
POLICY_AGENT_SOCKET = "/run/qubes/policy-agent.sock"


def _qubesd_answer(state: Path, header: str) -> bytes:
    method = header.split(" ", 1)[0].split("+", 1)[0]
    if method == "internal.GetSystemInfo":
        return b"0\0" + (state / "system-info.json").read_bytes()
    if method == "admin.vm.Start":
        dest = header.split(" ")[-1] if " " in header else ""
        info = json.loads((state / "system-info.json").read_text())
        power = info["domains"].get(dest, {}).get("power_state")
        if power == "Running":
            return b"2\0QubesVMNotHaltedError\0\0Domain is running: %s\0" % dest.encode()
        return b"2\0QubesVMError\0\0the lab starts no qube on demand: %s\0" % dest.encode()
    return b"2\0QubesException\0\0not served by the lab's qubesd: %s\0" % method.encode()


async def _serve_qubesd(state: Path) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.read()
            header = data.split(b"\0", 1)[0].decode("ascii", "replace")
            writer.write(_qubesd_answer(state, header))
            await writer.drain()
        finally:
            writer.close()

    servers = []
    for path in QUBESD_SOCKETS:
        if os.path.exists(path):
            os.unlink(path)
        servers.append(await asyncio.start_unix_server(handle, path=path))
        os.chmod(path, 0o660)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def ask_answer(state: Path, params: dict[str, Any]) -> str:
    """What the user clicks in the prompt for ``params`` (the policy daemon's request).

    The prompt lists the targets the rule allows (every tagged qube, for a
    ``@tag:`` rule) and preselects the rule's ``default_target=`` if any; it is not
    told which target the caller named, so the user picks.  ``STATE_DIR/ask`` holds
    ``deny``, ``allow:TARGET`` (the user picks TARGET) or ``allow`` (the user accepts
    the preselected target, or the only one offered; with neither, nothing is
    selected and the click cannot allow: deny).
    """
    try:
        answer = (state / "ask").read_text().strip()
    except OSError:
        answer = "deny"
    targets = [str(t) for t in params.get("targets", [])]
    if answer.startswith("allow:"):
        return answer  # qrexec-policy-daemon checks the choice is among the targets
    target = str(params.get("default_target") or "") or (targets[0] if len(targets) == 1 else "")
    if answer == "allow" and target:
        return f"allow:{target}"
    if answer == "allow":
        print(f"ask: no target preselected among {targets}: deny", file=sys.stderr, flush=True)
    return "deny"


async def _serve_ask(state: Path) -> None:
    class LabPolicyAgent(SocketService):  # type: ignore[misc]
        async def handle_request(self, params: Any, service: str, source_domain: str) -> str:
            if service == "policy.Ask":
                return ask_answer(state, params)
            return ""  # policy.Notify: a notification nobody sees

    await LabPolicyAgent(POLICY_AGENT_SOCKET).run()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("qubesd", "ask-agent"):
        print("usage: real_dom0.py qubesd|ask-agent STATE_DIR", file=sys.stderr)
        return 2
    state = Path(argv[1])
    serve = _serve_qubesd if argv[0] == "qubesd" else _serve_ask
    asyncio.run(serve(state))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
