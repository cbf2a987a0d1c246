"""Shared pieces of the benchmarks: realistic dotfile trees, timing, result rows.

Every benchmark script prints its own table and, when ``QGITCONF_BENCH_OUT`` names a
file, appends one JSON line per row to it so ``tests/bench/run.py`` can print the
combined table of ``make bench``.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "b@x",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "b@x",
}


def compile_package() -> None:
    """Byte-compile qgitconf first, as an installed package is.

    With ``PYTHONDONTWRITEBYTECODE`` set (CI images often set it) and no ``.pyc`` in a
    fresh clone, every Python process would compile every module it imports again, and
    the start-up rows would measure the compiler.
    """
    import compileall

    import qgitconf

    compileall.compile_dir(Path(qgitconf.__file__).parent, quiet=1)


def paired_medians(
    runs: int,
    ours: tuple[Callable[[], object], Callable[[], object]],
    ref: tuple[Callable[[], object], Callable[[], object]],
) -> tuple[float, float]:
    """Medians of ``runs`` timings of each ``(setup, fn)``, taken alternately (so a
    change in the machine's load hits both sides), each from a clean page cache state:
    ``sync`` (untimed) after the setup, so neither side pays for the other's writeback."""
    t_ours: list[float] = []
    t_ref: list[float] = []
    for _ in range(runs):
        for (setup, fn), out in ((ours, t_ours), (ref, t_ref)):
            setup()
            os.sync()
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(t_ours), statistics.median(t_ref)


def run(
    cmd: list[str], env: Mapping[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    full = dict(os.environ)
    full.update(env or {})
    proc = subprocess.run(cmd, env=full, check=False, capture_output=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr.decode(errors='replace')[-500:]}")
    return proc


def row(
    scenario: str, ours: float, reference: float, unit: str, target: str, ok: bool, note: str = ""
) -> dict[str, Any]:
    """Record one table row (printed by the caller, collected by run.py)."""
    r = {
        "scenario": scenario,
        "qgitconf": ours,
        "reference": reference,
        "unit": unit,
        "ratio": (ours / reference) if reference else None,
        "target": target,
        "ok": ok,
        "note": note,
    }
    out = os.environ.get("QGITCONF_BENCH_OUT")
    if out:
        with Path(out).open("a") as f:
            f.write(json.dumps(r) + "\n")
    return r


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        f"| {'scenario':58} | {'qgitconf':>10} | {'reference':>10} | {'ratio':>6} | target | ok |"
    )
    print(f"|{'-' * 60}|{'-' * 12}|{'-' * 12}|{'-' * 8}|--------|----|")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(
            f"| {r['scenario']:58} | {fmt(r['qgitconf'], r['unit']):>10} | "
            f"{fmt(r['reference'], r['unit']):>10} | {ratio:>6} | {r['target']:6} | "
            f"{'yes' if r['ok'] else 'NO':2} |"
        )


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "B":
        return f"{value:.0f} B"
    return f"{value:.1f} {unit}"


def vault(root: Path) -> tuple[Path, str, bytes]:
    """A GnuPG home with a signing key: (home, fingerprint, public key)."""
    home = root / "gnupg"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    uid = "bench vault <vault@bench.invalid>"
    gpg = ["gpg", "--homedir", str(home), "--batch", "--no-tty"]
    run([*gpg, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"])
    listed = run([*gpg, "--with-colons", "--list-secret-keys", uid]).stdout.decode()
    fpr = next(ln.split(":")[9] for ln in listed.splitlines() if ln.startswith("fpr:"))
    pub = run([*gpg, "--armor", "--export", fpr]).stdout
    return home, fpr, pub


def write_tree(work: Path, n_files: int, total_bytes: int, seed: int = 1) -> list[str]:
    """Write ``n_files`` dotfile-like files (~``total_bytes``; 5 % binary) under ``work``."""
    rng = random.Random(seed)
    words = [
        b"alias",
        b"export",
        b"set",
        b"color",
        b"true",
        b"false",
        b"PATH",
        b"bind",
        b"[core]",
        b"editor",
        b"=",
        b"vim",
        b"if",
        b"then",
        b"fi",
        b"#",
    ]
    avg = total_bytes // n_files
    paths = []
    for i in range(n_files):
        d = f".config/app{i % 97}/sub{i % 7}"
        name = f"{d}/file{i:05d}" + (".bin" if i % 20 == 0 else ".conf")
        size = max(16, int(rng.expovariate(1 / avg)))
        if name.endswith(".bin"):
            data = rng.randbytes(size)
        else:
            lines = []
            n = 0
            while n < size:
                line = b" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) + b"\n"
                lines.append(line)
                n += len(line)
            data = b"".join(lines)[:size]
        p = work / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        paths.append(name)
    return paths


def git(work: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    e = dict(GIT_ENV)
    e.update(env or {})
    return run(["git", "-C", str(work), *args], env=e).stdout.decode().strip()
