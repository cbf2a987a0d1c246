"""``agent/packread`` (issue 21): the agent's packs read in bulk give exactly what
dulwich gives, deltas (offset and ref) included; a damaged pack is a LocalStateError,
an object in no pack a KeyError (apply then asks dulwich)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from dulwich.repo import Repo

from qgitconf.errors import LocalStateError
from qgitconf.gitpack.packread import PackReader

GIT_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@x",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@x",
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=GIT_ENV, check=True, capture_output=True
    ).stdout.decode()


def _repo(tmp_path: Path, *config: str) -> Path:
    """A repository whose one pack holds chains of deltas (20 versions of files)."""
    repo = tmp_path / "r"
    _git(tmp_path, "init", "-q", str(repo))
    base = "".join(f"line {i} of a config file that changes a little\n" for i in range(300))
    for n in range(20):
        (repo / "a.conf").write_text(base + f"version {n}\n" * (n + 1))
        (repo / "sub").mkdir(exist_ok=True)
        (repo / "sub" / f"f{n}").write_text(base[n:] + "x" * n)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", f"c{n}")
    _git(repo, *config, "repack", "-adq", "--depth=50", "--window=50")
    return repo / ".git"


@pytest.mark.parametrize("lazy", [False, True], ids=["indexed", "lazy"])
@pytest.mark.parametrize(
    "config", [(), ("-c", "repack.useDeltaBaseOffset=false")], ids=["ofs-delta", "ref-delta"]
)
def test_bulk_equals_dulwich(tmp_path: Path, config: tuple[str, ...], lazy: bool) -> None:
    git_dir = _repo(tmp_path, *config)
    verify = _git(
        git_dir, "verify-pack", "-v", *(str(p) for p in (git_dir / "objects/pack").glob("*.idx"))
    )
    assert " delta" in verify or "chain length" in verify  # deltas are there to resolve
    store = Repo(str(git_dir.parent)).object_store
    shas = [s.decode() for s in store]
    with PackReader(git_dir / "objects", lazy=lazy) as packs:
        # lazy (Receive's thin bases): each object looked up alone, before any bulk read
        assert all(sha in packs for sha in shas) or not lazy
        got = packs.bulk(shas)
        assert set(got) == set(shas)
        for sha in shas:
            kind, raw = store.get_raw(sha.encode())
            assert got[sha] == (kind, bytes(raw))
            assert packs.get_raw(sha) == got[sha]
        for missing in ("0" * 40, "f" * 40, shas[0][:39] + ("0" if shas[0][39] != "0" else "1")):
            with pytest.raises(KeyError):
                packs.get_raw(missing)
            assert missing not in packs
        assert packs.raw_tree(b"0" * 40) is None


def test_lazy_reader_refuses_a_damaged_index(tmp_path: Path) -> None:
    """Lazy lookups bisect the index as they go: a fan-out table or an offset out of
    range is a LocalStateError when met, never a read elsewhere."""
    git_dir = _repo(tmp_path)
    store = Repo(str(git_dir.parent)).object_store
    sha = next(s.decode() for s in store)
    idx = next((git_dir / "objects/pack").glob("*.idx"))
    idx.chmod(0o644)
    good = idx.read_bytes()
    n = int.from_bytes(good[8 + 1020 : 8 + 1024], "big")
    damaged = bytearray(good)
    damaged[8 : 8 + 1020] = b"\xff" * 1020  # counts past the number of objects
    idx.write_bytes(bytes(damaged))
    with PackReader(git_dir / "objects", lazy=True) as packs, pytest.raises(LocalStateError):
        _ = sha in packs
    damaged = bytearray(good)
    offs_at = 8 + 1024 + 24 * n
    damaged[offs_at : offs_at + 4 * n] = (0x7FFFFFFF).to_bytes(4, "big") * n
    idx.write_bytes(bytes(damaged))
    with PackReader(git_dir / "objects", lazy=True) as packs, pytest.raises(LocalStateError):
        packs.get_raw(sha)


def test_damaged_pack_is_a_local_state_error(tmp_path: Path) -> None:
    git_dir = _repo(tmp_path)
    pack = next((git_dir / "objects/pack").glob("*.pack"))
    store = Repo(str(git_dir.parent)).object_store
    shas = [s.decode() for s in store]
    data = bytearray(pack.read_bytes())
    data[12:] = bytes(len(data) - 12)  # every entry zeroed
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    with PackReader(git_dir / "objects") as packs, pytest.raises(LocalStateError):
        packs.bulk(shas)
    idx = next((git_dir / "objects/pack").glob("*.idx"))
    idx.chmod(0o644)
    idx.write_bytes(idx.read_bytes()[:100])
    with pytest.raises(LocalStateError):
        PackReader(git_dir / "objects")
