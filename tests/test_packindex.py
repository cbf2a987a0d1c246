"""``packindex``: one pass resolves, checks and indexes a pre-scanned pack.

Real git makes the packs and judges the result: every written pack and index must
pass ``git verify-pack``, hold exactly the objects git put in, and give each blob the
SHA-256 of the content ``git cat-file`` prints.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import pytest

from qgitconf import packindex
from qgitconf.errors import BundleError
from qgitconf.limits import Limits
from qgitconf.packindex import IndexedPack, index_pack, write_pack
from qgitconf.packscan import prescan_pack
from tests.hostile import packgen
from tests.hostile.packgen import BLOB, PackWriter
from tests.test_packscan import GitRepo, _pack, pack_bytes
from tests.test_packscan import repo as repo  # the session fixture

TREE = 2


def _no_external(sha: bytes) -> tuple[int, bytes]:
    raise KeyError(sha)


def _index(data: bytes, lookup: packindex.Lookup = _no_external) -> IndexedPack:
    summary = prescan_pack(io.BytesIO(data), len(data), Limits())
    return index_pack(io.BytesIO(data), 0, summary, lookup)


def _write(data: bytes, dest: Path, lookup: packindex.Lookup = _no_external) -> Path:
    f = io.BytesIO(data)
    summary = prescan_pack(f, len(data), Limits())
    indexed = index_pack(f, 0, summary, lookup)
    dest.mkdir(exist_ok=True)
    return write_pack(f, 0, summary, indexed, lookup, dest)


def _git_objects(repo: GitRepo, pack: Path) -> set[str]:
    out = repo.run("verify-pack", "-v", str(pack.with_suffix(".idx"))).decode()
    return {line.split()[0] for line in out.splitlines() if line[:40].isalnum() and " " in line}


def _sha256_of_blobs(repo: GitRepo, ids: set[str]) -> dict[str, bytes]:
    out = {}
    for sha in ids:
        if repo.run("cat-file", "-t", sha).strip() == b"blob":
            out[sha] = hashlib.sha256(repo.run("cat-file", "blob", sha)).digest()
    return out


def test_deltified_pack_matches_git(repo: GitRepo, tmp_path: Path) -> None:
    pack = _pack(repo, "full", "main", "--delta-base-offset", "--window=50", "--depth=50")
    data = pack.read_bytes()
    written = _write(data, tmp_path / "out")
    ids = set(repo.ids("main"))
    assert _git_objects(repo, written) == ids  # git verify-pack accepts pack and index
    indexed = _index(data)
    assert {sha.hex() for sha, _, _ in indexed.index} == ids
    assert indexed.blob_sha256 == _sha256_of_blobs(repo, ids)
    assert {k.decode() for k in indexed.parsed} == ids - set(indexed.blob_sha256)
    assert indexed.external == []
    assert written.read_bytes() == data  # a pack that is not thin is kept as it came


def test_ref_deltas_inside_the_pack(repo: GitRepo, tmp_path: Path) -> None:
    pack = _pack(repo, "ref", "main", "--window=50", "--depth=50")  # REF_DELTA, no offsets
    written = _write(pack.read_bytes(), tmp_path / "out")
    assert _git_objects(repo, written) == set(repo.ids("main"))


def test_thin_pack_is_completed_with_its_bases(repo: GitRepo, tmp_path: Path) -> None:
    old = set(repo.ids("main~10"))
    pack = _pack(repo, "thin", "main\n^main~10", "--thin", "--delta-base-offset")

    def lookup(sha: bytes) -> tuple[int, bytes]:
        hexsha = sha.hex()
        if hexsha not in old:
            raise KeyError(sha)
        kind = repo.run("cat-file", "-t", hexsha).strip().decode()
        return {"commit": 1, "tree": 2, "blob": 3}[kind], repo.run("cat-file", kind, hexsha)

    data = pack.read_bytes()
    indexed = _index(data, lookup)
    assert indexed.external, "git should have made a thin pack"
    assert {s.hex() for s in indexed.external} <= old
    written = _write(data, tmp_path / "out", lookup)
    got = _git_objects(repo, written)  # self-contained: git resolves every delta
    assert got == set(repo.ids("main", "^main~10")) | {s.hex() for s in indexed.external}


def test_thin_pack_without_its_base_is_refused(repo: GitRepo) -> None:
    pack = _pack(repo, "thin2", "main\n^main~10", "--thin", "--delta-base-offset")
    with pytest.raises(BundleError, match="missing prerequisite"):
        _index(pack.read_bytes())


def test_evicted_bases_are_rebuilt(
    repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = _pack(repo, "evict", "main", "--delta-base-offset", "--window=50", "--depth=50")
    data = pack.read_bytes()
    expected = _index(data)
    monkeypatch.setattr(packindex, "_CACHE_BUDGET", 0)  # nothing stays cached
    again = _index(data)
    assert sorted(again.index) == sorted(expected.index)
    assert again.blob_sha256 == expected.blob_sha256


def test_delta_that_does_not_apply_is_refused() -> None:
    base = b"0123456789"
    bad = packgen.make_delta(len(base), 5, packgen.delta_copy(8, 5))  # copies past the end

    def build(w: PackWriter) -> None:
        at = w.whole(BLOB, base)
        w.ofs_delta(at, bad)

    with pytest.raises(BundleError, match="does not apply"):
        _index(pack_bytes(build, 2))


def test_the_same_object_twice_is_refused() -> None:
    def build(w: PackWriter) -> None:
        w.whole(BLOB, b"same")
        w.whole(BLOB, b"same")

    with pytest.raises(BundleError, match="twice"):
        _index(pack_bytes(build, 2))


def test_malformed_tree_is_refused() -> None:
    def build(w: PackWriter) -> None:
        w.whole(TREE, b"100644 no-nul-and-no-id")

    with pytest.raises(BundleError, match="malformed object"):
        _index(pack_bytes(build, 1))


def test_written_pack_name_is_its_checksum(repo: GitRepo, tmp_path: Path) -> None:
    pack = _pack(repo, "name", "main~50", "--delta-base-offset")
    written = _write(pack.read_bytes(), tmp_path / "out")
    assert written.name == f"pack-{pack.read_bytes()[-20:].hex()}.pack"
    assert written.with_suffix(".idx").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [written.name, written.with_suffix(".idx").name]
    )
    subprocess.run(["git", "verify-pack", str(written.with_suffix(".idx"))], check=True)
