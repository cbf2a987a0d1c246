"""The real lab's domains as processes: the boot file of its PID 1, the requests to it,
and qubes started, halted and disposed of."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from qgitconf.errors import ConfigError, UsageError
from qgitconf.lab.build import HERE, SYS_PATH, SYSTEM_PYTHON
from qgitconf.lab.real_qubes import DISP_DOMID_BASE, atomic_write
from qgitconf.lab.real_roots import LabRoots, Overlay, cp_a_new, holder_script

STATE_FILE = "state.json"  # in a lab's root while `qgitconf lab up` keeps it running


class LabDomains(LabRoots):
    """The lab's domains run by its PID 1 (:mod:`qgitconf.lab.real_init`): booted,
    asked to start, halt, add or forget a qube, and the state another process needs to
    attach to them."""

    def _qube_config(self, name: str) -> dict[str, Any]:
        d = self._domids[name]
        return {
            "domid": d,
            "uuid": self._uuid(name),
            "running": self._running[name],
            # what qubes-qrexec-agent.service runs, minus systemd
            "agent": ["env", "-i", f"PATH={SYS_PATH}", f"VCHAN_DOMAIN={d}",
                      "/usr/lib/qubes/qrexec-agent"],
            # what qubesd runs on VM start
            "daemon": ["/usr/sbin/qrexec-daemon", "--direct", "-u", self._uuid(name), str(d),
                       name, "user"],
        }  # fmt: skip

    def _boot_config(self) -> dict[str, Any]:
        r, b = self.root, self.build_dir
        layers = r / "layers"
        holders: dict[str, list[str]] = {}
        binds0 = {
            "run/vchan": str(r / "vchan"),
            "ro:run/qgitconf-lab": str(r / "dom0/state"),
            "etc/qubes/policy.d": str(self.policy_dir),
        }
        overlays0 = [
            Overlay("usr", (f"{layers}/lab-dom0/usr", f"{b}/dom0/usr", "/usr")),
            Overlay("etc", (f"{r}/dom0/etc", f"{b}/dom0/etc", "/etc")),
        ]
        mnt = r / "mnt/dom0"
        mnt.mkdir()
        script = holder_script(mnt, "dom0", binds0, overlays0, "dom0")
        holders["dom0"] = [
            "unshare", "-m", "-u", "--propagation", "private", "--", "/bin/sh", "-c", script,
        ]  # fmt: skip
        for name in self.vms:
            holders[name] = self._holder_argv(name)
        state = "/run/qgitconf-lab"
        stand_ins = "/usr/lib/qgitconf-lab/real_dom0.py"
        dom0_services = [
            [SYSTEM_PYTHON, "-I", stand_ins, "qubesd", state],
            [SYSTEM_PYTHON, "-I", stand_ins, "ask-agent", state],
            ["/usr/bin/qrexec-policy-daemon", "--eval-socket-path=/run/qubes/policy.EvalSimple",
             "--gui-socket-path=/run/qubes/policy.EvalGUI"],
        ]  # fmt: skip
        return {
            "log_dir": str(r / "log"),
            "vchan_dir": str(r / "vchan"),
            "holders": holders,
            "dom0_services": dom0_services,
            "dom0_sockets": ["run/qubesd.internal.sock", "run/qubes/policy.sock",
                             "run/qubes/policy-agent.sock"],
            "qubes": {name: self._qube_config(name) for name in self.vms},
        }  # fmt: skip

    def _start(self) -> None:
        cfg = self.root / "boot.json"
        cfg.write_text(json.dumps(self._boot_config(), indent=1))
        errlog = (self.root / "log/init.log").open("wb")
        self._sup = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation",
             "private", "--", SYSTEM_PYTHON, "-I", str(HERE / "real_init.py"), str(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
            env={"PATH": SYS_PATH, "LANG": "C.UTF-8"},
        )  # fmt: skip
        errlog.close()
        first = self._read_answer()
        if "ready" not in first:
            raise ConfigError(
                f"real lab did not boot: {first.get('error')} (logs: {self.root}/log)"
            )
        sup_host = self._sup_host_pid()
        by_nspid = _nspid_to_host(sup_host)
        self._host_pid = {name: by_nspid[int(nspid)] for name, nspid in first["ready"].items()}

    def _sup_host_pid(self) -> int:
        if self._sup is None:
            raise ConfigError("real lab not started")
        p = self._sup.pid
        children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        if len(children) != 1:
            raise ConfigError(f"cannot find the lab's PID 1 (children of {p}: {children})")
        return int(children[0])

    def _read_answer(self) -> dict[str, Any]:
        if self._sup is None or self._sup.stdout is None:
            raise ConfigError("real lab not started")
        line = self._sup.stdout.readline()
        if not line:
            raise ConfigError(f"the real lab's PID 1 is gone (logs: {self.root}/log)")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _request(self, **req: Any) -> dict[str, Any]:
        with self._lock:
            if self._sup is None or self._sup.stdin is None:
                raise ConfigError("real lab is closed")
            self._sup.stdin.write((json.dumps(req) + "\n").encode())
            self._sup.stdin.flush()
            answer = self._read_answer()
        if "error" in answer:
            raise ConfigError(f"real lab: {req}: {answer['error']}")
        return answer

    # -- power: start, halt, reboot, disposables -----------------------------------------

    def set_running(self, name: str, running: bool) -> None:
        """Start or halt qube ``name``, as ``qvm-start`` and ``qvm-shutdown --wait`` do.

        Halting ends every process of the qube and its namespace (so its mounts),
        and dom0's qrexec-daemon for it; a template saves its root volume and a
        disposable template its private volume (what the qubes based on them get at
        their next start), a disposable is gone.  Starting lays out its root afresh
        (an AppVM's changes outside /rw are discarded), runs its boot steps
        (bind-dirs.sh among them) and starts its agent and daemon.
        """
        if name not in self.vms:
            raise UsageError(f"no qube {name!r} to start or halt")
        if running == self._running[name]:
            return
        self._running[name] = running
        if running:
            self._lay_root(name, fresh=True)
            self._domain_up(name)
            self._write_system_info()
        else:
            self._write_system_info()  # halted first: no new call is routed to it
            self._domain_down(name)
            if self.qubes[name]["class"] == "DispVM":
                self._forget(name)
            else:
                self._save_on_stop(name)

    def reboot(self, name: str) -> None:
        """Shut qube ``name`` down and start it again (``set_running`` off, then on).

        As in Qubes: an AppVM's root (``/etc``, ``/var/lib``, ``/opt``... outside
        ``/rw``, ``/home`` and ``/usr/local``) is as its template left it at the
        template's last shutdown, bind-dirs.sh puts the paths its
        ``qubes-bind-dirs.d`` files list back from ``/rw/bind-dirs``, and a template
        keeps its root.  Its agent and dom0's daemon for it run again, so ``run()``
        works as before.
        """
        if name not in self.vms or not self._running[name]:
            raise UsageError(f"qube {name!r} is not running: nothing to reboot")
        if self.qubes[name]["class"] == "DispVM":
            raise UsageError(f"{name!r} is a disposable: it is gone once halted")
        self.set_running(name, False)
        self.set_running(name, True)

    def start_disposable(self, dvm_template: str) -> str:
        """Start a new disposable from ``dvm_template`` and return its name (``dispN``).

        Its private volume (``/rw``, so ``/home/user``) is a copy of the disposable
        template's as of that qube's last shutdown (or the lab's set-up); its root
        is volatile, on the disposable template's template.  QubesDB ``/type`` is
        ``DispVM``; its user has the disposable template's uid.  ``set_running(name,
        False)`` (or reset()) ends and removes it.
        """
        if dvm_template not in self.dispvm_templates:
            raise UsageError(f"{dvm_template!r} is not a disposable template of the lab")
        self._disposables += 1
        name = f"disp{self._disposables}"
        self.qubes[name] = {
            "class": "DispVM",
            "tags": [],
            "template": self.qubes[dvm_template].get("template"),
            "dispvm_template": dvm_template,
        }
        self.vms.append(name)
        self._uids[name] = self._uids[dvm_template]
        self._domids[name] = DISP_DOMID_BASE + self._disposables
        self._running[name] = True
        self._tags[name] = []
        self._qubesdb[name] = self._initial_qubesdb(name)
        try:
            self._prepare_vm(name)
            rw = self.qube(name) / "rw"
            shutil.rmtree(rw)
            cp_a_new(self.qube(dvm_template) / "rw.saved", rw)
            self._lay_root(name, fresh=True)
            self._request(
                op="add", qube=name, holder=self._holder_argv(name), config=self._qube_config(name)
            )
            self._domain_up(name)
        except BaseException:
            self._forget(name)
            raise
        self._write_system_info()
        return name

    def _domain_up(self, name: str) -> None:
        """Boot qube ``name``'s namespace from its laid-out volumes, its agent and daemon."""
        nspid = int(self._request(op="start", qube=name)["holder"])
        self._host_pid[name] = _nspid_to_host(self._sup_host_pid())[nspid]
        self._state_changed()

    def _domain_down(self, name: str) -> None:
        self._request(op="stop", qube=name)
        self._host_pid.pop(name, None)
        self._state_changed()

    def _save_on_stop(self, name: str) -> None:
        """What Qubes keeps of a halted qube for the qubes started from it later: a
        template's root volume, a disposable template's private volume."""
        q = self.qube(name)
        if self.qubes[name]["class"] == "TemplateVM":
            shutil.rmtree(q / "root.saved", ignore_errors=True)
            cp_a_new(q / "root/upper", q / "root.saved")
        if name in self.dispvm_templates:
            shutil.rmtree(q / "rw.saved", ignore_errors=True)
            cp_a_new(q / "rw", q / "rw.saved")

    def _forget(self, name: str) -> None:
        """Remove disposable ``name`` (halted, or never booted) from the lab."""
        with contextlib.suppress(ConfigError):
            self._request(op="remove", qube=name)
        self._host_pid.pop(name, None)
        self._running.pop(name, None)
        self._tags.pop(name, None)
        self._qubesdb.pop(name, None)
        self._uids.pop(name, None)
        self._domids.pop(name, None)
        if name in self.vms:
            self.vms.remove(name)
        shutil.rmtree(self.qube(name), ignore_errors=True)
        shutil.rmtree(self.root / "mnt" / name, ignore_errors=True)
        self.qubes.pop(name, None)
        self._write_system_info()
        self._state_changed()

    def _state_changed(self) -> None:
        # a lab that `lab up` keeps: state.json has the holders' pids (attach())
        if not self._attached and (self.root / STATE_FILE).exists():
            self.save_state()

    def save_state(self) -> Path:
        """Record, in ``ROOT/state.json``, what another process needs to attach()."""
        state = {
            "pid": os.getpid(),
            "host_pid": self._host_pid,
            "build_dir": str(self.build_dir),
            "source_dir": str(self.source_dir or ""),
            "fingerprint": self.fingerprint,
            "boot_seconds": self.boot_seconds,
            "extra_targets": list(self.extra_targets),
            "templates": {t: list(b) for t, b in self.templates.items()},
            "dispvm_templates": list(self.dispvm_templates),
        }
        path = self.root / STATE_FILE
        atomic_write(path, json.dumps(state, indent=1).encode())
        path.chmod(0o600)
        return path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _nspid_to_host(sup_host: int) -> dict[int, int]:
    """Host PIDs of the supervisor's children, by their PID inside the namespace."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{sup_host}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("NSpid:"):
                        out[int(line.split()[-1])] = int(child)
    return out
