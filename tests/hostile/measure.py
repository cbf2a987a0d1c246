"""Run one pack pre-scan or quarantine ingestion in a child process; measure it.

Peak RSS is ``RUSAGE_CHILDREN``'s ``ru_maxrss`` read by a small trampoline whose only
child is the measured process (see ``run_measured`` for why not straight from the
caller), so it is that one child's figure, never mixed with other children of the
test run or with the caller's own size.  The child prints one JSON line: the outcome,
the error class and text, the time spent in the operation itself, its RSS before the
operation, and its sampled peak of anonymous memory (``RssAnon``: ``ru_maxrss`` also
counts file pages mapped with mmap, which is how dulwich reads the spooled pack).

Child usage: ``python -m tests.hostile.measure prescan|ingest|dulwich FILE [LIMITS-JSON]``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Measured:
    """What one child run did and cost."""

    returncode: int
    maxrss_bytes: int  # the child's peak RSS (ru_maxrss)
    wall_seconds: float  # spawn to exit, interpreter start included
    result: dict[str, Any]  # the child's JSON line

    @property
    def maxrss_mib(self) -> float:
        """Peak RSS in MiB."""
        return self.maxrss_bytes / (1 << 20)


# A tiny process between the caller and the measured command.  On Linux a child's
# ru_maxrss starts at its parent's RSS at spawn (exec keeps the old mm's high-water
# mark), so a command spawned straight from a big pytest process would report the
# pytest's size.  The trampoline is small; it forks the command, waits, and prints
# RUSAGE_CHILDREN's ru_maxrss (its only child) as the last line of stdout.
_TRAMPOLINE = """
import os, resource, signal, sys, time
limit, argv = float(sys.argv[1]), sys.argv[2:]
start = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
while True:
    got, status = os.waitpid(pid, os.WNOHANG)
    if got:
        break
    if time.monotonic() - start > limit:
        os.kill(pid, signal.SIGKILL)
        got, status = os.waitpid(pid, 0)
        break
    time.sleep(0.005)
wall = time.monotonic() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
code = os.waitstatus_to_exitcode(status)
os.write(1, b"\\nQGMEASURE %d %d %.6f\\n" % (code, rss, wall))
"""


def run_measured(
    argv: list[str], cwd: Path = ROOT, timeout: float = 300, stdin: Path | None = None
) -> tuple[int, int, float, bytes, bytes]:
    """Run ``argv`` in a child; return (exit status, peak RSS bytes, seconds, stdout, stderr).

    The peak RSS is ``RUSAGE_CHILDREN``'s ``ru_maxrss`` seen by a small trampoline
    process whose only child is ``argv``; it includes the trampoline's own small size
    (about 10 MiB) as a floor, never the caller's.
    """
    tramp = [sys.executable, "-S", "-c", _TRAMPOLINE, str(timeout), *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with stdin.open("rb") if stdin else open(os.devnull, "rb") as inp:
            subprocess.run(tramp, cwd=cwd, stdin=inp, stdout=out, stderr=err, check=False)
        out.seek(0)
        err.seek(0)
        text, _sep, last = out.read().rpartition(b"\nQGMEASURE ")
        fields = last.split()
        if len(fields) != 3:
            raise RuntimeError(f"measuring {argv[:3]} failed: {err.read()[-500:]!r}")
        return int(fields[0]), int(fields[1]), float(fields[2]), text, err.read()


def measure(
    mode: str, path: Path, limits: dict[str, int] | None = None, timeout: float = 300
) -> Measured:
    """Run ``mode`` (``prescan``, ``ingest`` or ``dulwich``) on ``path`` in a fresh interpreter."""
    argv = [
        sys.executable,
        "-m",
        "tests.hostile.measure",
        mode,
        str(path),
        json.dumps(limits or {}),
    ]
    rc, rss, wall, out, err = run_measured(argv, timeout=timeout)
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {"ok": False, "error": "no-output", "detail": err.decode()[-2000:]}
    return Measured(rc, rss, wall, result)


def _child(mode: str, path: Path, limits_json: str) -> dict[str, Any]:
    from qgitconf.errors import QgitconfError
    from qgitconf.limits import Limits

    limits = Limits(**json.loads(limits_json))
    anon = _AnonSampler()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    result: dict[str, Any] = {"ok": True, "error": None, "detail": ""}
    try:
        if mode == "prescan":
            from qgitconf.gitpack.packscan import prescan_pack

            with path.open("rb") as f:
                summary = prescan_pack(f, path.stat().st_size, limits)
            result["objects"] = summary.object_count
        elif mode == "ingest":
            from qgitconf.gitpack.bundle import Quarantine, read_bundle_header

            with tempfile.TemporaryDirectory() as tmp:
                real = Path(tmp) / "real-objects"
                (real / "pack").mkdir(parents=True)
                quarantine = Quarantine(Path(tmp) / "q", real)
                try:
                    with path.open("rb") as f:
                        read_bundle_header(f, limits)
                        quarantine.ingest(f, path.stat().st_size, limits)
                    result["objects"] = len(quarantine.new_shas)
                finally:
                    quarantine.close()
        elif mode == "dulwich":
            # dulwich alone, no pre-scan: where ingestion memory goes (benchmarks only).
            from dulwich.object_store import DiskObjectStore

            from qgitconf.gitpack.bundle import read_bundle_header

            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "pack").mkdir()
                store = DiskObjectStore(tmp)
                with path.open("rb") as f:
                    read_bundle_header(f, limits)
                    pack = store.add_thin_pack(f.read, None, max_input_size=path.stat().st_size)
                result["objects"] = len(pack.index)
                pack.close()
                store.close()
        else:
            raise SystemExit(f"unknown mode {mode}")
    except QgitconfError as e:
        result = {"ok": False, "error": type(e).__name__, "detail": str(e)}
    result["seconds"] = time.monotonic() - start
    result["rss_before_bytes"] = before * 1024
    result["anon_peak_bytes"] = anon.stop()
    return result


class _AnonSampler:
    """Samples RssAnon every few ms: ru_maxrss also counts file pages dulwich mmaps."""

    def __init__(self) -> None:
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
        except OSError:
            pass

    def _run(self) -> None:
        while not self._done.wait(0.003):
            self._sample()

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        self._sample()
        return self.peak


if __name__ == "__main__":
    print(
        json.dumps(
            _child(sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "{}")
        )
    )
