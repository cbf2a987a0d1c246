"""PID 1 of the real lab's private PID namespace (started by :mod:`qgitconf.lab.real_domains`).

Run as ``unshare --pid --fork --kill-child --mount-proc -- /usr/bin/python3 -I
real_init.py BOOT.json``.  It starts one namespace holder per domain (a process in its
own mount namespace whose root is the domain's file view), then the domain's daemons
inside it, and answers the harness's requests, one JSON line each way:

* ``{"op": "start", "qube": NAME}``: boot a qube: a fresh namespace holder (which lays
  out its root and runs its boot steps, bind-dirs among them), its ``qrexec-agent``,
  then dom0's ``qrexec-daemon`` for it, as qubesd does on VM start; the answer names
  the holder's pid;
* ``{"op": "stop", "qube": NAME}``: halt it (every process of the qube, its holder, so
  its mounts, and its daemon);
* ``{"op": "add", "qube": NAME, "holder": ARGV, "config": {...}}``: learn a qube that
  was not in the boot file (a disposable), ``{"op": "remove", "qube": NAME}`` forget it;
* ``{"op": "killusers", "uids": [...]}``: end the qube users' leftover processes
  (``gpg-agent`` and the like) between tests.

When its stdin reaches EOF (the harness closed the lab or died) it returns; the kernel
then kills every process of the namespace, so nothing outlives the harness.  Standard
library only: it runs on the system Python, outside the project's venv.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_WAIT = 15.0  # seconds for a daemon to open its socket (a loaded 2-core CI machine)


def _reap(_signum: int, _frame: object) -> None:
    # PID 1 inherits every orphan (gpg-agent, the agent's children of a halted qube):
    # reap them all, or they stay zombies that still look alive in /proc.
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _wait_for(paths: list[Path], what: str) -> None:
    deadline = time.monotonic() + _WAIT
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            missing = [str(p) for p in paths if not p.exists()]
            raise RuntimeError(f"{what}: no {', '.join(missing)} after {_WAIT:.0f} s")
        time.sleep(0.01)


def _mnt_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != 1]


def _kill_and_wait(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _reap(0, None)
        # a reaped process leaves /proc; a zombie of someone else's keeps state Z
        alive = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if not alive:
            return
        time.sleep(0.005)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


class Supervisor:
    """The domains' holders and daemons, as the boot file describes them."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.log_dir = Path(cfg["log_dir"])
        self.vchan = Path(cfg["vchan_dir"])
        self.holders: dict[str, int] = {}
        self.daemons: dict[str, int] = {}
        self._keep: list[subprocess.Popen[bytes]] = []

    def _spawn(
        self, argv: list[str], log: str, stdout: int | None = None
    ) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{log}.log", "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out if stdout is None else stdout,
                stderr=out,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        self._keep.append(proc)  # never waited on: the SIGCHLD handler reaps
        return proc

    def _in(self, domain: str, argv: list[str], log: str) -> int:
        """Start ``argv`` inside ``domain`` (its mount namespace, root and cwd)."""
        holder = self.holders[domain]
        enter = ["nsenter", "-t", str(holder), "-m", "-u", "-r", "-w", "--"]
        return self._spawn(enter + argv, log).pid

    def root(self, domain: str) -> Path:
        return Path(f"/proc/{self.holders[domain]}/root")

    def _holders(self, names: list[str]) -> None:
        """Start the namespace holders of ``names`` together; wait until each is ready
        (its root laid out and its boot steps run)."""
        started = {
            name: self._spawn(self.cfg["holders"][name], f"ns-{name}", stdout=subprocess.PIPE)
            for name in names
        }
        for name, proc in started.items():
            out = proc.stdout
            line = out.readline() if out is not None else b""
            if out is not None:
                out.close()
            if line.strip() != b"ready":
                raise RuntimeError(f"namespace {name} did not come up (see ns-{name}.log)")
            self.holders[name] = proc.pid

    def boot(self) -> None:
        running = [n for n, q in self.cfg["qubes"].items() if q["running"]]
        self._holders(["dom0", *running])
        for i, argv in enumerate(self.cfg["dom0_services"]):
            self._in("dom0", argv, f"dom0-service-{i}")
        _wait_for([self.root("dom0") / p for p in self.cfg["dom0_sockets"]], "dom0 services")
        for name in running:
            self._start_agent(name)
        for name in running:
            self._start_daemon(name)
        for name in running:
            self._wait_daemon(name)

    def _start_agent(self, name: str) -> None:
        q = self.cfg["qubes"][name]
        self._in(name, q["agent"], f"agent-{name}")

    def _start_daemon(self, name: str) -> None:
        q = self.cfg["qubes"][name]
        _wait_for([self.vchan / f"vchan.{q['domid']}.0.512.sock"], f"qrexec-agent of {name}")
        self.daemons[name] = self._in("dom0", q["daemon"], f"daemon-{name}")

    def _wait_daemon(self, name: str) -> None:
        sock = self.root("dom0") / "run/qubes" / f"qrexec.{name}"
        _wait_for([sock], f"qrexec-daemon for {name}")

    def start(self, name: str) -> int:
        if name not in self.holders:
            self._holders([name])
        if name not in self.daemons:
            self._start_agent(name)
            self._start_daemon(name)
            self._wait_daemon(name)
        return self.holders[name]

    def stop(self, name: str) -> None:
        q = self.cfg["qubes"][name]
        holder = self.holders.pop(name, None)
        ns = _mnt_ns(holder) if holder is not None else None
        # the holder and everything in its mount namespace: the namespace, and with it
        # every mount of the qube's root, goes with its last process
        victims = [p for p in _pids() if ns is not None and _mnt_ns(p) == ns]
        daemon = self.daemons.pop(name, None)
        if daemon is not None:
            victims.append(daemon)
        _kill_and_wait(victims)
        # a killed qrexec-daemon leaves its sockets; a fresh one would unlink them, but a
        # caller in between must find no daemon (as for a halted qube), not a dead socket
        run_qubes = self.root("dom0") / "run/qubes"
        for stale in (f"qrexec.{name}", f"qrexec.{q['domid']}", f"qrexec.uuid:{q['uuid']}"):
            with contextlib.suppress(FileNotFoundError):
                (run_qubes / stale).unlink()
        domid = q["domid"]
        for sock in self.vchan.glob("vchan.*.sock"):
            parts = sock.name.split(".")
            if str(domid) in (parts[1], parts[2]):
                with contextlib.suppress(FileNotFoundError):
                    sock.unlink()

    def killusers(self, uids: list[int]) -> int:
        # Again until none is left: a daemon caught between its forks (gpg-agent
        # detaching) has a child the first look did not see.
        killed = 0
        for _round in range(20):
            victims = [p for p in _pids() if _uid(p) in uids and not _zombie(p)]
            if not victims:
                break
            _kill_and_wait(victims)
            killed += len(victims)
        return killed

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "start":
            return {"ok": True, "holder": self.start(str(req["qube"]))}
        if op == "stop":
            self.stop(str(req["qube"]))
            return {"ok": True}
        if op == "add":
            name = str(req["qube"])
            if name in self.cfg["qubes"]:
                return {"error": f"qube {name!r} exists"}
            self.cfg["holders"][name] = [str(a) for a in req["holder"]]
            self.cfg["qubes"][name] = dict(req["config"])
            return {"ok": True}
        if op == "remove":
            name = str(req["qube"])
            self.stop(name)
            self.cfg["holders"].pop(name, None)
            self.cfg["qubes"].pop(name, None)
            return {"ok": True}
        if op == "killusers":
            return {"ok": True, "killed": self.killusers([int(u) for u in req["uids"]])}
        return {"error": f"unknown op {op!r}"}


def main() -> int:
    signal.signal(signal.SIGCHLD, _reap)
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    sup = Supervisor(cfg)
    try:
        sup.boot()
    except (RuntimeError, OSError) as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 1
    print(json.dumps({"ready": sup.holders}), flush=True)
    for line in sys.stdin:
        try:
            answer = sup.handle(json.loads(line))
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            answer = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)
    return 0  # EOF: PID 1 ends, the kernel kills the rest of the namespace


if __name__ == "__main__":
    sys.exit(main())
