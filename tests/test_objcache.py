"""The agent's per-pack cache of blob SHA-256s and trees (``qgitconf.gitpack.objcache``).

It must be read (an incremental update's digest and walk use it), it must never let a
wrong answer through (a corrupted cache can only refuse an update, and a known id
with other content is refused as a SHA-1 collision), and losing it must only cost
time (the store is read instead).
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from qgitconf.agent.receive import accept_update
from qgitconf.errors import UntrustedInputError
from qgitconf.gitpack.objcache import (
    KNOWN_DIR,
    MAGIC,
    format_sidecar,
    load_known,
    parse_sidecar,
)
from tests.hostile.corpus import SOURCE, TARGET, Objects, World, _simple, build_world
from tests.labkit import snapshot

BASHRC = b"PS1='$ '\n"  # the files of the world's accepted commit
GITCONFIG = b"[alias]\n\tst = status\n"
MODE_FILE = 0o100644


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield build_world(tmp_path_factory.mktemp("objcache"))


def _home(world: World, tmp_path: Path) -> Path:
    home = tmp_path / "target"
    shutil.copytree(world.home, home, symlinks=True)
    return home


def _known_dir(home: Path) -> Path:
    return home / ".local/share/qgitconf/repo" / KNOWN_DIR


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _tamper(home: Path, blob: bytes) -> None:
    """Give ``blob`` a wrong SHA-256 in the agent's cache."""
    sha = _blob_id(blob)
    for path in _known_dir(home).iterdir():
        known = parse_sidecar(path.read_bytes())
        if sha in known.blob_sha256:
            known.blob_sha256[sha] = bytes(32)
            path.chmod(0o644)
            path.write_bytes(format_sidecar(known.blob_sha256, known.trees))
            return
    raise AssertionError("blob not in the cache")


def _reject(world: World, home: Path, update: bytes) -> str:
    before = snapshot(home)
    with pytest.raises(UntrustedInputError) as info:
        accept_update(io.BytesIO(update), SOURCE, home, world.env(home), name=TARGET)
    assert snapshot(home) == before
    return info.value.code


def test_format_round_trip() -> None:
    blobs = {"ab" * 20: bytes(range(32))}
    trees = {b"cd" * 20: b"100644 a\0" + bytes(20), b"ef" * 20: b""}
    known = parse_sidecar(format_sidecar(blobs, trees))
    assert known.blob_sha256 == blobs and known.trees == trees


@pytest.mark.parametrize(
    "data",
    [b"", b"something else", MAGIC + b"B" + bytes(20) + bytes(31), MAGIC + b"X" + bytes(52)],
    ids=["empty", "no magic", "truncated", "unknown record"],
)
def test_malformed_sidecar_is_refused_and_skipped(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        parse_sidecar(data)
    (tmp_path / "pack-bad.qgc").write_bytes(data)
    good = format_sidecar({"ab" * 20: bytes(32)}, {})
    (tmp_path / "pack-good.qgc").write_bytes(good)
    assert load_known(tmp_path).blob_sha256 == {"ab" * 20: bytes(32)}


def test_accepted_update_leaves_its_sidecar(world: World, tmp_path: Path) -> None:
    home = _home(world, tmp_path)
    known = load_known(_known_dir(home))
    assert known.blob_sha256[_blob_id(BASHRC)] == hashlib.sha256(BASHRC).digest()
    assert known.trees  # the accepted commit's trees
    outcome = accept_update(io.BytesIO(_simple(world)), SOURCE, home, world.env(home), name=TARGET)
    assert outcome.result == "staged"
    assert len(list(_known_dir(home).iterdir())) == 2


def _keep_gitconfig(world: World) -> bytes:
    """An update that changes .bashrc and keeps .gitconfig, whose blob it does not carry."""

    def tree(o: Objects) -> str:
        bashrc = o.blob(b"PS1='# '\n")
        return o.tree(
            [(MODE_FILE, b".bashrc", bashrc), (MODE_FILE, b".gitconfig", _blob_id(GITCONFIG))]
        )

    return world.update(*world.child(tree))


def test_incremental_update_reads_the_cache(world: World, tmp_path: Path) -> None:
    home = _home(world, tmp_path)
    outcome = accept_update(
        io.BytesIO(_keep_gitconfig(world)), SOURCE, home, world.env(home), name=TARGET
    )
    assert outcome.result == "staged"  # the control: the same update, the cache intact
    home = _home(world, tmp_path / "again")
    _tamper(home, GITCONFIG)  # the unchanged file's digest now comes from the cache
    assert _reject(world, home, _keep_gitconfig(world)) == "tree-digest-mismatch"


def test_without_the_cache_the_store_is_read(world: World, tmp_path: Path) -> None:
    home = _home(world, tmp_path)
    shutil.rmtree(_known_dir(home))
    outcome = accept_update(
        io.BytesIO(_keep_gitconfig(world)), SOURCE, home, world.env(home), name=TARGET
    )
    assert outcome.result == "staged"


def test_known_id_with_other_content_is_a_collision(world: World, tmp_path: Path) -> None:
    # A full bundle brings .bashrc's blob again; the cache says it had other content.
    home = _home(world, tmp_path)
    _tamper(home, BASHRC)
    full = Objects(dict(world.base.items))
    update = world.update(full, world.c1, prereq=None, sequence=2)
    assert _reject(world, home, update) == "sha1-collision"


def test_known_tree_with_other_content_is_a_collision(world: World, tmp_path: Path) -> None:
    home = _home(world, tmp_path)
    for path in _known_dir(home).iterdir():
        known = parse_sidecar(path.read_bytes())
        tree = next(iter(known.trees))
        known.trees[tree] += b"100644 x\0" + bytes(20)
        path.chmod(0o644)
        path.write_bytes(format_sidecar(known.blob_sha256, known.trees))
    full = Objects(dict(world.base.items))
    update = world.update(full, world.c1, prereq=None, sequence=2)
    assert _reject(world, home, update) == "sha1-collision"
