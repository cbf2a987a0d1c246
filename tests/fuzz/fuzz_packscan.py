"""Fuzz harness for the pack pre-scan, ``qgitconf.gitpack.packscan.prescan_pack`` (DESIGN rule 5).

The property: whatever bytes arrive, the pre-scan ends with a summary, a
``BundleError`` or a ``TooLargeError`` - never another exception, never unbounded
memory or time (libFuzzer's ``-rss_limit_mb`` and ``-timeout`` catch those).

With atheris installed (``.venv/bin/pip install atheris``) this is a libFuzzer
harness and takes libFuzzer's options and corpus directories.  Without atheris, or
with ``--hypothesis``, it runs a Hypothesis-driven loop (random bytes and mutated
seed packs) for ``-max_total_time`` seconds.  See tests/fuzz/README.md.

The first input byte picks how the rest is used: 0 = the raw pack; 1 = a v2 pack
header with a small object count followed by the rest; 2 = the raw pack with its
trailing SHA-1 recomputed (so mutations reach the end-of-pack checks).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

try:
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None

if atheris is not None and "--hypothesis" not in sys.argv:
    with atheris.instrument_imports():
        from qgitconf.errors import BundleError, TooLargeError
        from qgitconf.gitpack.packscan import prescan_pack
        from qgitconf.limits import Limits
else:
    from qgitconf.errors import BundleError, TooLargeError
    from qgitconf.gitpack.packscan import prescan_pack
    from qgitconf.limits import Limits

MiB = 1 << 20
# Small caps keep every input fast; the logic under test is the same.
LIMITS = Limits(max_objects=1000, max_object_bytes=1 * MiB, max_inflated_bytes=8 * MiB)


def one_input(data: bytes) -> None:
    """Run the pre-scan on one fuzz input; only the named rejections may escape."""
    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    if mode == 1:
        count = body[0] % 16 if body else 0
        body = b"PACK" + struct.pack(">II", 2, count) + body[1:]
    if mode in (1, 2) and len(body) >= 32:
        body = body[:-20] + hashlib.sha1(body[:-20]).digest()
    with contextlib.suppress(BundleError, TooLargeError):
        prescan_pack(io.BytesIO(body), len(body), LIMITS)


def seeds() -> list[bytes]:
    """Small valid packs (mode byte 2 in front): generated ones, and git's if git is here."""
    from tests.hostile import packgen

    out: list[bytes] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        packgen.write_delta_chain(d / "chain.pack", 5)
        packgen.write_delta_bomb(d / "bomb-ofs.pack", copies=4)
        packgen.write_delta_bomb(d / "bomb-ref.pack", copies=4, ref=True)
        packgen.write_many_objects(d / "many.pack", 20)
        out += [p.read_bytes() for p in sorted(d.glob("*.pack"))]
        out += _git_packs(d)
    return [b"\x02" + s for s in out]


def _git_packs(d: Path) -> list[bytes]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(d),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    repo = d / "repo"
    stream = bytearray()
    text = b"".join(b"line %d\n" % i for i in range(60))
    for c in range(1, 6):
        text = text.replace(b"line %d\n" % (c * 9), b"changed %d\n" % c)
        stream += b"commit refs/heads/main\ncommitter A <a@b> %d +0000\n" % (1_700_000_000 + c)
        stream += b"data 2\nc\n"
        stream += b"M 100644 inline f\ndata %d\n%s\n" % (len(text), text)

    def git(*args: str, data: bytes | None = None) -> bytes:
        return subprocess.run(
            ["git", *args], cwd=repo, env=env, input=data, check=True, capture_output=True
        ).stdout

    try:
        repo.mkdir()
        git("init", "-q", "-b", "main")
        git("fast-import", "--quiet", data=bytes(stream))
        revs = b"main\n^main~2\n"
        return [
            git("pack-objects", "--stdout", "--revs", "--delta-base-offset", data=b"main\n"),
            git("pack-objects", "--stdout", "--revs", data=b"main\n"),
            git("pack-objects", "--stdout", "--revs", "--thin", "--delta-base-offset", data=revs),
        ]
    except (OSError, subprocess.CalledProcessError):
        return []


def write_seeds(directory: Path) -> None:
    """Write the seed inputs into a corpus directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for data in seeds():
        (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, where, blob in edits:
        if len(buf) < 2:
            break
        i = 1 + where % (len(buf) - 1)
        if op == 0:
            buf[i] ^= 1 << (blob[0] % 8)
        elif op == 1:
            buf[i : i + len(blob)] = blob
        elif op == 2:
            buf[i:i] = blob
        elif op == 3:
            del buf[i : i + 1 + blob[0] % 16]
        else:
            del buf[i:]
    return bytes(buf)


def hypothesis_loop(seconds: float) -> int:
    """Run random and mutated inputs through ``one_input`` for ``seconds``."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    corpus = seeds()
    edit = st.tuples(st.integers(0, 4), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8))
    inputs = st.one_of(
        st.binary(max_size=4096),
        st.builds(_mutate, st.sampled_from(corpus), st.lists(edit, min_size=1, max_size=4)),
    )

    @settings(max_examples=2000, deadline=None, database=None)
    @given(inputs)
    def run(data: bytes) -> None:
        one_input(data)

    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        run()
        rounds += 1
    print(f"hypothesis loop: {rounds * 2000} inputs in {seconds:.0f} s, no crash")
    return 0


def main(argv: list[str]) -> int:
    """Entry point: ``--seed-corpus DIR``, ``--hypothesis``, or libFuzzer options."""
    if len(argv) > 2 and argv[1] == "--seed-corpus":
        write_seeds(Path(argv[2]))
        return 0
    total = 60.0
    for arg in argv[1:]:
        if arg.startswith("-max_total_time="):
            total = float(arg.split("=", 1)[1])
    if atheris is None or "--hypothesis" in argv:
        if atheris is None:
            print("atheris is not installed: running the Hypothesis loop instead")
        return hypothesis_loop(total)
    atheris.Setup([a for a in argv if a != "--hypothesis"], one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
