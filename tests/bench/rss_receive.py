"""Peak RSS and time of the receive path's pack handling (DESIGN rule 5, issue 3).

Cases, each in its own child process (peak RSS from ``os.wait4``: that child's own
``ru_maxrss``, the same figure ``RUSAGE_CHILDREN`` gives for a single child):

(a) pre-scan + ``Quarantine.ingest`` of a valid bundle holding 64 MiB of random
    (incompressible) blobs, into a temporary quarantine with an empty alternate store
    - target <= 150 MiB;
(b) rejecting a pack holding a 1 GiB zero blob (~1 MB compressed) - <= 100 MiB;
(c) rejecting a delta bomb (64 KiB blob + 16,384 "copy 64 KiB" ops = 1 GiB) - <= 100 MiB.

Extra rows explain (a): the pre-scan alone, dulwich ``add_thin_pack`` alone, and an
interpreter that only imports qgitconf; and ``git index-pack`` on the same packs as a
reference with ``--with-git`` (it resolves the bomb: about 1 GiB, 30 s).  The "anon"
column is the sampled peak of anonymous memory: dulwich indexes the spooled pack
through mmap, so peak RSS of (a) grows with the pack size while anonymous memory
stays near the interpreter's baseline.

Run: ``.venv/bin/python -m tests.bench.rss_receive [--quick] [--with-git]``
(``--quick``: 16 MiB instead of 64 MiB for (a)).  Not collected by pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.hostile import packgen  # noqa: E402
from tests.hostile.measure import measure, run_measured  # noqa: E402

MiB = 1 << 20
TIME_TARGET = 5.0  # seconds: "within a few seconds"


def _record(*args: Any) -> None:
    try:
        from tests.bench.common import row
    except Exception:  # the shared bench helpers are optional here
        return
    row(*args)


def _git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }


def make_valid_bundle(work: Path, total: int, blob: int = MiB) -> Path:
    """A git repo with ``total`` bytes of random blobs in one commit, bundled by git."""
    repo = work / "repo"
    repo.mkdir()
    env = _git_env(work)
    subprocess.run(["git", "init", "-q", "-b", "personal"], cwd=repo, env=env, check=True)
    with tempfile.TemporaryFile(dir=work) as stream:
        stream.write(b"commit refs/heads/personal\ncommitter B <b@x> 1700000000 +0000\n")
        stream.write(b"data 2\nc\n")
        for i in range(total // blob):
            stream.write(b"M 100644 inline blob%03d\ndata %d\n" % (i, blob))
            stream.write(os.urandom(blob))
            stream.write(b"\n")
        stream.seek(0)
        subprocess.run(
            ["git", "fast-import", "--quiet"], cwd=repo, env=env, stdin=stream, check=True
        )
    bundle = work / "valid.bundle"
    subprocess.run(
        ["git", "bundle", "create", str(bundle), "personal"],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )
    return bundle


def pack_of(bundle: Path, out: Path) -> Path:
    """The pack inside a bundle (for the pre-scan-only and git rows)."""
    from qgitconf.gitpack.bundle import read_bundle_header
    from qgitconf.limits import Limits

    with bundle.open("rb") as f, out.open("wb") as o:
        read_bundle_header(f, Limits())
        shutil.copyfileobj(f, o, MiB)
    return out


def git_index_pack(pack: Path, work: Path) -> tuple[float, float, str]:
    """Peak RSS (MiB), wall seconds and outcome of ``git index-pack --stdin`` on ``pack``."""
    repo = Path(tempfile.mkdtemp(prefix="gitref-", dir=work))
    env = _git_env(work)
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], env=env, check=True)
    rc, rss, wall, _out, err = run_measured(
        ["git", "-C", str(repo), "index-pack", "--stdin", "--fix-thin"],
        stdin=pack,
        timeout=120,
    )
    shutil.rmtree(repo, ignore_errors=True)
    outcome = "accepted" if rc == 0 else f"exit {rc}: {err.decode(errors='replace').strip()[:40]}"
    return rss / MiB, wall, outcome


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    with_git = "--with-git" in argv and shutil.which("git") is not None
    total = (16 if quick else 64) * MiB
    work = Path(tempfile.mkdtemp(prefix="qg-rss-"))
    rows: list[tuple[str, float, float | None, float, float, str, str]] = []
    failed = False
    try:
        valid = make_valid_bundle(work, total)
        valid_pack = pack_of(valid, work / "valid.pack")
        zero, bomb = work / "zero.pack", work / "bomb.pack"
        packgen.write_zero_blob(zero)
        packgen.write_delta_bomb(bomb)
        zero_b, bomb_b = work / "zero.bundle", work / "bomb.bundle"
        packgen.write_bundle(zero, zero_b, "1" * 40)
        packgen.write_bundle(bomb, bomb_b, "1" * 40)

        label = f"{total // MiB} MiB"
        cases = [
            (f"(a) prescan+ingest valid {label} bundle", "ingest", valid, 150.0, None),
            ("(b) reject 1 GiB inflated zero blob", "ingest", zero_b, 100.0, "TooLargeError"),
            ("(c) reject delta bomb (1 GiB result)", "ingest", bomb_b, 100.0, "TooLargeError"),
            (f"    prescan alone, valid {label} pack", "prescan", valid_pack, 0.0, None),
            (f"    dulwich add_thin_pack alone, {label}", "dulwich", valid, 0.0, None),
        ]
        for name, mode, path, target, error in cases:
            m = measure(mode, path)
            outcome = m.result.get("error") or f"ok, {m.result.get('objects')} objects"
            ok = m.result.get("error") == error and (target == 0 or m.maxrss_mib <= target)
            if error:  # rejections must also be quick
                ok = ok and m.wall_seconds <= TIME_TARGET
            failed |= bool(target) and not ok
            anon = m.result.get("anon_peak_bytes", 0) / MiB
            yes = "yes" if ok else "NO"
            rows.append((name, m.maxrss_mib, anon, m.wall_seconds, target, outcome, yes))
            if target:
                scenario = f"peak RSS: {name.strip()}"
                _record(scenario, m.maxrss_mib, 0.0, "MiB", f"<={target:.0f}", ok)
        rc, rss, wall, _o, _e = run_measured(
            [sys.executable, "-c", "import qgitconf.gitpack.bundle"]
        )
        base = "    baseline: python + import qgitconf"
        rows.append((base, rss / MiB, None, wall, 0.0, f"exit {rc}", ""))
        if with_git:
            for name, pack in (("valid", valid_pack), ("zero blob", zero), ("delta bomb", bomb)):
                rss_mib, wall, outcome = git_index_pack(pack, work)
                rows.append(
                    (f"    ref: git index-pack, {name}", rss_mib, None, wall, 0.0, outcome, "")
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"| {'case':44} | {'peak RSS':>10} | {'anon':>9} | {'wall':>7} | {'target':>9} "
        f"| {'outcome':30} | ok  |"
    )
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 11}|{'-' * 9}|{'-' * 11}|{'-' * 32}|-----|")
    for name, rss_mib, anon, wall, target, outcome, ok in rows:
        tgt = f"<={target:.0f} MiB" if target else ""
        anon_s = f"{anon:5.1f} MiB" if anon is not None else ""
        print(
            f"| {name:44} | {rss_mib:6.1f} MiB | {anon_s:>9} | {wall:5.2f} s | {tgt:>9} | "
            f"{outcome[:30]:30} | {ok:3} |"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
