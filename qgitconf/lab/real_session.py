"""``qgitconf lab up / run / shell / down``: a real lab that stays up between commands.

``up`` starts a keeper process (``python -m qgitconf.lab.real_session keep``, in its
own session, detached from the terminal) that boots a :class:`RealLab` and holds it:
the lab lives exactly as long as the keeper (its PID 1 reads a pipe from the keeper).
The keeper writes ``ROOT/state.json`` (its pid and the host pids of the domains'
namespace holders, see :meth:`RealLab.save_state`) and ``up`` records ROOT in
``LAB_BASE/current``.  ``run`` and ``shell`` attach to that state and run through the
real qrexec (``qrexec-client -d QUBE user:CMD`` in dom0, as ``qvm-run`` does); ``down``
sends the keeper SIGTERM and waits: it closes the lab and removes its run tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from qgitconf.errors import ConfigError, LocalStateError, QgitconfError, UsageError
from qgitconf.lab.build import LAB_BASE, PROJECT, SYS_PATH, available, source_dir
from qgitconf.lab.real import RealLab, claim_root
from qgitconf.lab.real_domains import pid_alive
from qgitconf.lab.real_qubes import VMS

Echo = Callable[[str], None]
POINTER = LAB_BASE / "current"
KEEPER_MODULE = "qgitconf.lab.real_session"
_BOOT_TIMEOUT = 300.0  # a first build plus boot on a loaded 2-core machine
_DOWN_TIMEOUT = 30.0


def unavailable_text(why: str) -> str:
    """Why the real lab cannot run here, and what gets it (for ``lab demo`` and ``lab up``)."""
    return (
        f"The lab cannot run here: {why}.\n"
        "The lab is Qubes' own qrexec and split-GPG, built from pinned upstream sources\n"
        "and booted in Linux namespaces; there is no simulated fallback. To get it:\n"
        "  - run as root, on Linux (Debian 12 is what CI uses);\n"
        "  - the sources: $QUBES_SRC_DIR or ../shared/qubes-src, or `make qubes-src`\n"
        "    (downloads the pinned tarballs from GitHub and checks their SHA-256);\n"
        "  - apt-get install build-essential pkg-config libpam0g-dev python3-pyinotify\n"
        "    util-linux gnupg git\n"
        "See docs/lab.md."
    )


def backend_text(lab: RealLab) -> str:
    """One line saying what the lab runs on."""
    return (
        "real Qubes qrexec and split-GPG (qrexec-daemon, qrexec-agent, qrexec-policy-daemon,"
        f" qubes-gpg-client-wrapper, gpg-server) built from the pinned sources in"
        f" {lab.source_dir or source_dir()}"
    )


def _require_available() -> None:
    ok, why = available()
    if not ok:
        raise ConfigError(unavailable_text(why))


# -- which lab ---------------------------------------------------------------------------


def _current() -> Path | None:
    try:
        return Path(POINTER.read_text().strip())
    except OSError:
        return None


def lab_root(directory: str | None) -> Path:
    """The root of the lab a command means: DIRECTORY, else the one ``up`` recorded."""
    if directory:
        return Path(directory).resolve()
    cur = _current()
    if cur is None:
        raise LocalStateError("no lab is up (start one with: qgitconf lab up)")
    return cur


def attach(directory: str | None) -> RealLab:
    return RealLab.attach(lab_root(directory))


# -- up / down ---------------------------------------------------------------------------


def up(directory: str | None) -> dict[str, Any]:
    """Boot a lab kept running by a detached keeper process; return its state."""
    _require_available()
    root = Path(directory).resolve() if directory else None
    cur = _current()
    cur_running = cur is not None and _running(cur)
    if root is None and cur_running:
        raise UsageError(
            f"a lab is already up in {cur} (qgitconf lab down first, or give a DIRECTORY)"
        )
    if root is not None:
        root = claim_root(root)  # refused here, with its own exit status, not in the keeper
    LAB_BASE.mkdir(parents=True, exist_ok=True)
    log_path = LAB_BASE / "keeper.log"
    r, w = os.pipe()
    with log_path.open("wb") as log:
        keeper = subprocess.Popen(
            [sys.executable, "-m", KEEPER_MODULE, "keep", str(w), str(root or "")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(w,),
            start_new_session=True,
            cwd="/",
            env={**_host_env(), "PYTHONPATH": str(PROJECT)},
        )
    os.close(w)
    with os.fdopen(r, "rb") as ready:
        line = ready.readline()  # EOF when the keeper dies before it is ready
    if not line:
        keeper.wait(timeout=_BOOT_TIMEOUT)
        tail = log_path.read_text(errors="replace")[-2000:]
        raise ConfigError(f"the lab's keeper process died while booting:\n{tail}")
    answer: dict[str, Any] = json.loads(line)
    if "error" in answer:
        keeper.wait(timeout=_BOOT_TIMEOUT)
        raise ConfigError(f"lab up failed: {answer['error']}")
    if not cur_running:
        POINTER.write_text(f"{answer['root']}\n")
    answer["current"] = not cur_running
    return answer


def _running(root: Path) -> bool:
    try:
        RealLab.attach(root)
    except QgitconfError:
        return False
    return True


def _host_env() -> dict[str, str]:
    keep = ("QUBES_SRC_DIR", "QGITCONF_REAL_LAB_DIR", "QGITCONF_REAL_LAB_KEEP")
    env = {"PATH": f"{Path(sys.executable).parent}:{SYS_PATH}", "LANG": "C.UTF-8"}
    env.update({k: os.environ[k] for k in keep if k in os.environ})
    return env


def down(directory: str | None) -> Path:
    """Stop the lab (its keeper closes it and removes its run tree); return its root."""
    root = lab_root(directory)
    lab = RealLab.attach(root)
    pid = lab.keeper_pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        cmdline = []
    if KEEPER_MODULE.encode() not in cmdline:
        raise LocalStateError(f"process {pid} is not the keeper of the lab in {root}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _DOWN_TIMEOUT
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise LocalStateError(f"the lab's keeper (process {pid}) did not stop")
        time.sleep(0.05)
    return root


def keep(ready_fd: int, root_arg: str) -> int:
    """The keeper: boot the lab, say so on ``ready_fd``, hold it until SIGTERM/SIGINT/SIGHUP."""
    stop = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # a `down` during boot waits for it
    ready = os.fdopen(ready_fd, "w")
    try:
        lab = RealLab.boot(Path(root_arg) if root_arg else None)
        lab.save_state()
    except QgitconfError as e:
        ready.write(json.dumps({"error": e.detail}) + "\n")
        ready.close()
        return 1
    ready.write(
        json.dumps(
            {
                "root": str(lab.root),
                "pid": os.getpid(),
                "fingerprint": lab.fingerprint,
                "boot_seconds": lab.boot_seconds,
                "backend": backend_text(lab),
            }
        )
        + "\n"
    )
    ready.close()
    try:
        while lab.alive():
            if signal.sigtimedwait(stop, 1.0) is not None:
                break
    finally:
        lab.close()
        if _current() == lab.root:
            POINTER.unlink(missing_ok=True)
    return 0


# -- run / shell -------------------------------------------------------------------------


def exec_in_qube(
    directory: str | None, qube: str, command: list[str], user: str = "user"
) -> NoReturn:
    """Become ``qrexec-client -d QUBE USER:'cd && exec COMMAND'`` in the running lab
    (``user`` is the qube's user, or ``root`` as ``qvm-run -u root`` does).

    COMMAND's words reach the qube as they are: nothing on the host (or in between)
    expands ``~``, ``$VAR`` or globs in them; ``sh -c '…'`` gives the qube's shell.
    stdin, stdout, stderr and the exit status are the remote command's.
    """
    lab = attach(directory)
    argv = lab.qrexec_argv(qube, "cd && exec " + shlex.join(command), user=user)
    os.execve(_which("nsenter"), argv, _host_env())


def _which(prog: str) -> str:
    for d in SYS_PATH.split(":"):
        if os.access(f"{d}/{prog}", os.X_OK):
            return f"{d}/{prog}"
    raise ConfigError(f"{prog} not found on {SYS_PATH}")


def shell(directory: str | None, qube: str) -> int:
    """An interactive bash in QUBE through qrexec; return its exit status.

    The qube's hostname is its name, so the prompt (``\\u@\\h:\\w\\$``, unless the
    qube's own ``~/.bashrc`` sets another) names it.  On a terminal the remote bash
    gets a pseudo-terminal (``script`` in the qube) and the local terminal is raw
    for the session, as with ssh; otherwise bash reads commands from stdin.
    """
    lab = attach(directory)
    prompt = shlex.quote(r"\u@\h:\w\$ ")
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not interactive:
        argv = lab.qrexec_argv(qube, f"cd && exec env PS1={prompt} bash -i")
        return subprocess.run(argv, env=_host_env(), check=False).returncode
    cols, rows = os.get_terminal_size()
    term = shlex.quote(os.environ.get("TERM", "xterm"))
    inner = f"stty rows {rows} cols {cols}; exec bash -i"
    line = f"cd && exec env TERM={term} PS1={prompt} script -qfec {shlex.quote(inner)} /dev/null"
    argv = lab.qrexec_argv(qube, line)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        return subprocess.run(argv, env=_host_env(), check=False).returncode
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def status_lines(lab: RealLab) -> list[str]:
    return [
        f"lab up in {lab.root} (kept by process {lab.keeper_pid})",
        f"backend: {backend_text(lab)}",
        f"qubes: dom0 {' '.join(VMS)}; vault key {lab.fingerprint}",
    ]


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "keep":
        return keep(int(argv[1]), argv[2])
    sys.stderr.write("usage: python -m qgitconf.lab.real_session keep FD ROOT\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
