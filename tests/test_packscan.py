"""The pack pre-scan (DESIGN rule 5): real git packs pass, hostile packs are refused.

Real packs come from real git in temporary repositories (plain, OFS-deltified,
REF-deltified, full and thin bundles) and are compared with ``git verify-pack -v``.
Hostile packs come from ``tests/hostile/packgen.py``.  The bombs run in a child
process so their peak RSS can be asserted.  Hypothesis checks that random and
mutated packs never raise anything but ``BundleError`` or ``TooLargeError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import re
import struct
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qgitconf.errors import BundleError, TooLargeError
from qgitconf.gitpack.bundle import Quarantine, read_bundle_header
from qgitconf.gitpack.packscan import PackSummary, prescan_pack
from qgitconf.limits import Limits
from tests.hostile import packgen
from tests.hostile.measure import measure
from tests.hostile.packgen import BLOB, GiB, KiB, MiB, PackWriter

MAX_RSS = 100 * MiB
FAST = 3.0  # seconds: every rejection must be well under a few seconds


def scan(path: Path, limits: Limits | None = None) -> PackSummary:
    with path.open("rb") as f:
        return prescan_pack(f, path.stat().st_size, limits or Limits())


def scan_bytes(data: bytes, limits: Limits | None = None) -> PackSummary:
    return prescan_pack(io.BytesIO(data), len(data), limits or Limits())


def pack_bytes(build: Callable[[PackWriter], object], count: int) -> bytes:
    """Run ``build(writer)`` on a fresh PackWriter and return the finished pack."""
    buf = io.BytesIO()
    w = PackWriter(buf, count)
    build(w)
    w.finish()
    return buf.getvalue()


# --- real git ------------------------------------------------------------------------


@dataclass
class GitRepo:
    path: Path
    env: dict[str, str]

    def run(self, *args: str, input: bytes | None = None) -> bytes:
        return subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=self.env,
            input=input,
            check=True,
            capture_output=True,
        ).stdout

    def ids(self, *revs: str) -> list[str]:
        """The ids ``git rev-list --objects`` lists for ``revs``."""
        out = self.run("rev-list", "--objects", *revs).decode()
        return [line.split()[0] for line in out.splitlines()]

    def verify_pack(self, pack: Path) -> tuple[int, int, int]:
        """(objects, sum of sizes, longest chain) as ``git verify-pack -v`` reports them."""
        idx = pack.with_suffix(".idx")
        self.run("index-pack", "-o", str(idx), str(pack))
        out = self.run("verify-pack", "-v", str(idx)).decode()
        objects = [line.split() for line in out.splitlines() if re.match(r"[0-9a-f]{40} ", line)]
        chains = [int(m) for m in re.findall(r"^chain length = (\d+):", out, re.M)]
        return len(objects), sum(int(o[2]) for o in objects), max(chains, default=0)


def _fast_import(n: int) -> bytes:
    """A fast-import stream: ``n`` commits, each changing one more line of f.txt."""
    lines = [
        b"line %d: %s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest().encode()) for i in range(400)
    ]
    out = bytearray()
    for c in range(1, n + 1):
        lines[(c * 7) % 400] = b"changed in commit %d\n" % c
        content = b"".join(lines)
        other = b"other file, version %d\n" % (c // 5)
        msg = b"commit %d\n" % c
        out += b"commit refs/heads/main\nmark :%d\n" % c
        out += b"committer A U Thor <a@example.org> %d +0000\n" % (1_700_000_000 + c)
        out += b"data %d\n%s" % (len(msg), msg)
        if c > 1:
            out += b"from :%d\n" % (c - 1)
        out += b"M 100644 inline f.txt\ndata %d\n%s\n" % (len(content), content)
        out += b"M 100644 inline g.txt\ndata %d\n%s\n" % (len(other), other)
    return bytes(out)


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    """A repository of 60 commits of slowly changing files (so git deltifies)."""
    path = tmp_path_factory.mktemp("packscan") / "repo"
    path.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(path.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    r = GitRepo(path, env)
    r.run("init", "-q", "-b", "main")
    r.run("fast-import", "--quiet", input=_fast_import(60))
    return r


def _pack(repo: GitRepo, name: str, revs: str, *opts: str) -> Path:
    out = repo.path.parent / f"{name}.pack"
    out.write_bytes(
        repo.run("pack-objects", "--stdout", "--revs", *opts, input=revs.encode() + b"\n")
    )
    return out


def test_ofs_deltified_pack_matches_git_verify_pack(repo: GitRepo) -> None:
    pack = _pack(repo, "ofs", "main", "--delta-base-offset", "--window=50", "--depth=50")
    summary = scan(pack)
    count, inflated, chain = repo.verify_pack(pack)
    assert summary.object_count == count == len(repo.ids("main"))
    assert summary.inflated_bytes == inflated
    assert summary.max_depth == chain
    assert chain > 1, "the fixture must produce delta chains"
    assert summary.ref_delta_bases == frozenset()


def test_ref_deltified_pack_passes(repo: GitRepo) -> None:
    # Without --delta-base-offset git writes REF_DELTA entries against in-pack bases.
    pack = _pack(repo, "ref", "main", "--window=50", "--depth=50")
    summary = scan(pack)
    count, inflated, _chain = repo.verify_pack(pack)
    assert summary.object_count == count
    assert summary.inflated_bytes == inflated
    assert summary.ref_delta_bases <= set(repo.ids("main"))  # only in-pack (deltified) bases
    assert summary.max_depth == 1  # REF deltas count as depth 1


def test_pack_limits_are_met_exactly(repo: GitRepo) -> None:
    pack = _pack(repo, "exact", "main", "--delta-base-offset", "--depth=50")
    s = scan(pack)
    exact = Limits(max_objects=s.object_count, max_delta_depth=s.max_depth)
    assert scan(pack, exact) == s
    with pytest.raises(TooLargeError, match="declares"):
        scan(pack, Limits(max_objects=s.object_count - 1))
    with pytest.raises(TooLargeError, match="deeper than"):
        scan(pack, Limits(max_delta_depth=s.max_depth - 1))
    with pytest.raises(TooLargeError):
        scan(pack, Limits(max_inflated_bytes=s.inflated_bytes - 1))


def _bundle_pack(bundle: Path) -> tuple[io.BufferedReader, int]:
    f = bundle.open("rb")
    read_bundle_header(f, Limits())
    return f, bundle.stat().st_size - f.tell()


def test_git_bundles_full_and_thin(repo: GitRepo) -> None:
    full = repo.path.parent / "full.bundle"
    thin = repo.path.parent / "thin.bundle"
    repo.run("bundle", "create", str(full), "main")
    repo.run("bundle", "create", str(thin), "main~5..main")
    f, size = _bundle_pack(full)
    with f:
        s = prescan_pack(f, size, Limits())
    assert s.object_count == len(repo.ids("main"))
    assert s.ref_delta_bases == frozenset()
    f, size = _bundle_pack(thin)
    with f:
        s = prescan_pack(f, size, Limits())
    new = repo.ids("main~5..main")
    old = set(repo.ids("main~5"))
    assert s.object_count == len(new)
    assert s.ref_delta_bases, "git should make a thin pack against the prerequisite"
    assert s.ref_delta_bases <= old
    assert not s.ref_delta_bases & set(new)


def test_thin_pack_from_pack_objects(repo: GitRepo) -> None:
    pack = _pack(repo, "thin", "main\n^main~3", "--thin", "--delta-base-offset")
    s = scan(pack)
    assert s.ref_delta_bases
    assert s.ref_delta_bases <= set(repo.ids("main~3"))


def test_quarantine_ingest_runs_the_prescan(repo: GitRepo, tmp_path: Path) -> None:
    thin = tmp_path / "thin.bundle"
    repo.run("bundle", "create", str(thin), "main~5..main")
    q = Quarantine(tmp_path / "q1", repo.path / ".git" / "objects")
    try:
        with thin.open("rb") as f:
            read_bundle_header(f, Limits())
            q.ingest(f, thin.stat().st_size, Limits())
        # dulwich completes the thin pack with copies of its external bases.
        assert set(repo.ids("main~5..main")) <= {sha.decode() for sha in q.new_shas}
    finally:
        q.store.close()
        q.close()

    bomb, bundle = tmp_path / "bomb.pack", tmp_path / "bomb.bundle"
    packgen.write_delta_bomb(bomb)
    packgen.write_bundle(bomb, bundle, "0" * 40)
    empty = tmp_path / "empty-objects"
    empty.mkdir()
    q = Quarantine(tmp_path / "q2", empty)
    try:
        with bundle.open("rb") as f:
            read_bundle_header(f, Limits())
            start = f.tell()
            with pytest.raises(TooLargeError, match="would make a 1073741824-byte object"):
                q.ingest(f, bundle.stat().st_size, Limits())
        assert start == len(b"# v2 git bundle\n") + 41 + len("refs/heads/personal\n") + 1
        assert os.listdir(q.objects / "pack") == []  # dulwich never saw it
    finally:
        q.store.close()
        q.close()


# --- hostile packs: the bombs, measured in a child process -------------------------------


@pytest.fixture(scope="session")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bombs")
    packgen.write_zero_blob(d / "zero.pack")
    packgen.write_zero_blob(d / "zero-lying.pack", declared=10)
    packgen.write_delta_bomb(d / "bomb-ofs.pack")
    packgen.write_delta_bomb(d / "bomb-ref.pack", ref=True)
    return d


@pytest.mark.parametrize(
    ("name", "limits", "error", "match"),
    [
        ("zero.pack", {}, "TooLargeError", "declares 1073741824 bytes"),
        ("zero-lying.pack", {}, "BundleError", "inflates to more than its declared 10 bytes"),
        ("bomb-ofs.pack", {}, "TooLargeError", "would make a 1073741824-byte object"),
        ("bomb-ref.pack", {}, "TooLargeError", "would make a 1073741824-byte object"),
        # With the per-object cap raised, the totals still stop them before inflating.
        (
            "zero.pack",
            {"max_object_bytes": 2 * GiB, "max_inflated_bytes": 512 * MiB},
            "TooLargeError",
            "inflates to more than",
        ),
        (
            "bomb-ofs.pack",
            {"max_object_bytes": 2 * GiB, "max_inflated_bytes": 512 * MiB},
            "TooLargeError",
            "add up to more than",
        ),
    ],
)
def test_bombs_are_rejected_fast_in_little_memory(
    bombs: Path, name: str, limits: dict[str, int], error: str, match: str
) -> None:
    m = measure("prescan", bombs / name, limits)
    assert m.returncode == 0, m.result
    assert m.result["error"] == error, m.result
    assert match in m.result["detail"]
    assert m.result["seconds"] < FAST
    assert m.maxrss_bytes <= MAX_RSS, f"{m.maxrss_mib:.1f} MiB"
    assert m.maxrss_bytes - m.result["rss_before_bytes"] < 8 * MiB


def test_bombs_are_rejected_by_quarantine_ingest_in_little_memory(
    bombs: Path, tmp_path: Path
) -> None:
    for name in ("zero.pack", "bomb-ofs.pack"):
        bundle = tmp_path / f"{name}.bundle"
        packgen.write_bundle(bombs / name, bundle, "1" * 40)
        m = measure("ingest", bundle)
        assert m.result["error"] == "TooLargeError", m.result
        assert m.result["seconds"] < FAST
        assert m.maxrss_bytes <= MAX_RSS, f"{name}: {m.maxrss_mib:.1f} MiB"


def test_lying_blob_stops_one_byte_past_its_declared_size(bombs: Path) -> None:
    start = time.monotonic()
    with pytest.raises(BundleError, match="inflates to more than its declared 10 bytes"):
        scan(bombs / "zero-lying.pack")
    assert time.monotonic() - start < 0.5


def test_blob_smaller_than_declared() -> None:
    data = pack_bytes(lambda w: w.whole(BLOB, b"x" * 50, declared=100), 1)
    with pytest.raises(BundleError, match="inflates to 50 bytes, it declares 100"):
        scan_bytes(data)


def test_many_objects_refused_before_reading_entries(tmp_path: Path) -> None:
    pack = tmp_path / "many.pack"
    packgen.write_many_objects(pack, 200_000)

    class CountingFile(io.FileIO):
        read_bytes = 0

        def read(self, n: int = -1) -> bytes:  # type: ignore[override]
            data = super().read(n)
            CountingFile.read_bytes += len(data)
            return data

    start = time.monotonic()
    with CountingFile(pack) as f, pytest.raises(TooLargeError, match="declares 200000 objects"):
        prescan_pack(f, pack.stat().st_size, Limits())
    assert time.monotonic() - start < 0.1
    assert CountingFile.read_bytes <= 64 * KiB
    # The same pack is well formed: with a higher cap it scans.
    assert scan(pack, Limits(max_objects=200_000)).object_count == 200_000


def test_delta_chain_depth_cap(tmp_path: Path) -> None:
    ok, deep = tmp_path / "50.pack", tmp_path / "51.pack"
    packgen.write_delta_chain(ok, 50)
    packgen.write_delta_chain(deep, 51)
    assert scan(ok).max_depth == 50
    with pytest.raises(TooLargeError, match="delta chain deeper than 50"):
        scan(deep)
    with pytest.raises(TooLargeError, match="deeper than 10"):
        scan(ok, Limits(max_delta_depth=10))


def test_generated_chain_is_a_valid_pack_for_git(repo: GitRepo, tmp_path: Path) -> None:
    pack = tmp_path / "chain.pack"
    packgen.write_delta_chain(pack, 50)
    count, _inflated, chain = repo.verify_pack(pack)
    assert (count, chain) == (51, 50)


def _small_pack() -> bytes:
    blobs = packgen.chain_blobs(3)

    def build(w: PackWriter) -> None:
        at = w.whole(BLOB, blobs[0])
        for prev, cur in itertools.pairwise(blobs):
            at = w.ofs_delta(at, packgen.make_delta(len(prev), len(cur), packgen.delta_insert(cur)))

    return pack_bytes(build, 4)


def test_bad_checksum() -> None:
    data = bytearray(_small_pack())
    data[-1] ^= 1
    with pytest.raises(BundleError, match="checksum mismatch"):
        scan_bytes(bytes(data))


def test_trailing_garbage() -> None:
    data = _small_pack()
    with pytest.raises(BundleError, match="5 bytes after its checksum"):
        scan_bytes(data + b"extra")
    # Bytes between the last object and the checksum.
    body = data[:-20] + b"junk"
    fixed = body + hashlib.sha1(body).digest()
    with pytest.raises(BundleError, match="4 unexpected bytes after its last object"):
        scan_bytes(fixed)


def test_every_truncation_is_refused() -> None:
    data = _small_pack()
    for cut in range(len(data)):
        with pytest.raises(BundleError, match=r"truncated|corrupt|checksum|unexpected"):
            scan_bytes(data[:cut])


def test_file_shorter_than_announced() -> None:
    data = _small_pack()
    with pytest.raises(BundleError, match="ends 10 bytes early"):
        prescan_pack(io.BytesIO(data), len(data) + 10, Limits())


@pytest.mark.parametrize("kind", [0, 5])
def test_unknown_object_type(kind: int) -> None:
    data = pack_bytes(lambda w: w.raw(packgen.entry_header(kind, 1) + zlib.compress(b"x")), 1)
    with pytest.raises(BundleError, match=f"unknown type {kind}"):
        scan_bytes(data)


def test_not_a_pack_and_bad_version() -> None:
    with pytest.raises(BundleError, match="no PACK signature"):
        scan_bytes(b"KCAP" + bytes(28))
    with pytest.raises(BundleError, match="unsupported version 4"):
        scan_bytes(b"PACK" + struct.pack(">II", 4, 0) + bytes(20))
    empty = b"PACK" + struct.pack(">II", 2, 0)
    assert scan_bytes(empty + hashlib.sha1(empty).digest()).object_count == 0


def test_ofs_base_must_be_an_earlier_entry() -> None:
    delta = packgen.make_delta(1, 1, packgen.delta_insert(b"y"))

    def inside(w: PackWriter) -> None:
        at = w.whole(BLOB, b"x")
        w.ofs_delta(at + 1, delta)  # the middle of the blob's entry

    with pytest.raises(BundleError, match="where no earlier object starts"):
        scan_bytes(pack_bytes(inside, 2))

    def before_pack(w: PackWriter) -> None:
        w.raw(packgen.entry_header(packgen.OFS_DELTA, len(delta)) + packgen.ofs_encoding(5000))
        w.raw(zlib.compress(delta))

    with pytest.raises(BundleError, match="outside the pack"):
        scan_bytes(pack_bytes(before_pack, 1))


def test_delta_source_size_must_match_its_base() -> None:
    def build(w: PackWriter) -> None:
        at = w.whole(BLOB, b"xyz")
        w.ofs_delta(at, packgen.make_delta(4, 1, packgen.delta_insert(b"y")))

    with pytest.raises(BundleError, match="expects a 4-byte base, its base has 3 bytes"):
        scan_bytes(pack_bytes(build, 2))


def test_delta_too_short_for_its_header() -> None:
    data = pack_bytes(lambda w: w.ofs_delta(w.whole(BLOB, b"x"), b"\x81"), 2)
    with pytest.raises(BundleError, match="too short for its size header"):
        scan_bytes(data)


def test_corrupt_zlib() -> None:
    data = pack_bytes(lambda w: w.raw(packgen.entry_header(BLOB, 5) + b"\x78\x9c\xff\xff\xff"), 1)
    with pytest.raises(BundleError, match="corrupt zlib"):
        scan_bytes(data + bytes(40))


def test_ref_delta_bases_inside_and_outside() -> None:
    inside = packgen.object_id(BLOB, b"abc")
    outside = hashlib.sha1(b"elsewhere").digest()

    def build(w: PackWriter) -> None:
        w.whole(BLOB, b"abc")
        w.ref_delta(inside, packgen.make_delta(3, 1, packgen.delta_insert(b"a")))
        w.ref_delta(outside, packgen.make_delta(9, 1, packgen.delta_insert(b"b")))

    s = scan_bytes(pack_bytes(build, 3))
    assert s.ref_delta_bases == frozenset({outside.hex()})
    assert s.max_depth == 1


def test_objects_spanning_read_chunks(tmp_path: Path) -> None:
    # Random (incompressible) blobs much larger than the 64 KiB read chunk, then more.
    sizes = [0, 1, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 3 * MiB + 17, 5]
    blobs = [os.urandom(n) for n in sizes]

    def build(w: PackWriter) -> None:
        for b in blobs:
            w.whole(BLOB, b)

    s = scan_bytes(pack_bytes(build, len(blobs)))
    assert (s.object_count, s.inflated_bytes) == (len(blobs), sum(sizes))


# --- Hypothesis ------------------------------------------------------------------------

SMALL = Limits(max_objects=1000, max_object_bytes=1 * MiB, max_inflated_bytes=4 * MiB)
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _only_named_errors(data: bytes, limits: Limits = SMALL) -> None:
    with contextlib.suppress(BundleError, TooLargeError):
        scan_bytes(data, limits)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_named_errors(data: bytes) -> None:
    _only_named_errors(data)


@FUZZ
@given(st.integers(0, 10), st.binary(max_size=2048), st.booleans())
def test_random_entries_behind_a_valid_header(count: int, body: bytes, fix: bool) -> None:
    data = b"PACK" + struct.pack(">II", 2, count) + body
    if fix:
        data += hashlib.sha1(data).digest()
    _only_named_errors(data)


@pytest.fixture(scope="session")
def real_packs(repo: GitRepo) -> list[bytes]:
    return [
        _pack(repo, "h-ofs", "main~50..main~44", "--delta-base-offset").read_bytes(),
        _pack(repo, "h-ref", "main~50..main~44").read_bytes(),
        _pack(repo, "h-thin", "main~45..main~43", "--thin", "--delta-base-offset").read_bytes(),
        _small_pack(),
    ]


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, int, bytes]]:
    ops = st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
        st.integers(0, 1 << 20),
        st.binary(min_size=1, max_size=8),
    )
    return draw(st.lists(ops, min_size=1, max_size=4))


def _mutate(data: bytes, ops: list[tuple[str, int, bytes]], fix: bool) -> bytes:
    buf = bytearray(data)
    for op, where, blob in ops:
        if not buf:
            break
        i = where % len(buf)
        if op == "flip":
            buf[i] ^= 1 << (blob[0] % 8)
        elif op == "set":
            buf[i : i + len(blob)] = blob
        elif op == "insert":
            buf[i:i] = blob
        elif op == "delete":
            del buf[i : i + 1 + blob[0] % 16]
        else:
            del buf[i:]
    if fix and len(buf) >= 20:
        buf[-20:] = hashlib.sha1(bytes(buf[:-20])).digest()
    return bytes(buf)


@FUZZ
@given(st.integers(0, 3), mutations(), st.booleans())
def test_mutated_real_packs_raise_only_named_errors(
    real_packs: list[bytes], which: int, ops: list[tuple[str, int, bytes]], fix: bool
) -> None:
    _only_named_errors(_mutate(real_packs[which], ops, fix))


@FUZZ
@given(st.lists(st.binary(max_size=300_000), max_size=6))
def test_generated_packs_round_trip(blobs: list[bytes]) -> None:
    def build(w: PackWriter) -> None:
        for b in blobs:
            w.whole(BLOB, b)

    s = scan_bytes(pack_bytes(build, len(blobs)))
    assert (s.object_count, s.inflated_bytes) == (len(blobs), sum(map(len, blobs)))
