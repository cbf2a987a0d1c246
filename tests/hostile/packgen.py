"""Generator of well-formed and hostile git packs for the pack pre-scan (DESIGN rule 5).

Nothing here is a hand-edited binary: ``PackWriter`` streams a pack entry by entry to
a file, hashing as it goes, and the ``write_*`` helpers build the attacks the
pre-scan must refuse (a 1 GiB zero blob, a delta bomb, 200,000 objects, deep delta
chains).  Large inflated sizes never exist in memory: ``zlib_repeat`` builds the
zlib stream of a repeated chunk from one compressed copy (full-flush blocks are
byte-aligned and identical), so the 1 GiB blob's ~1 MB pack is written in
milliseconds.

Run as a script to write the attack packs into a directory (for a fuzzing corpus or
for inspection): ``python -m tests.hostile.packgen DIR``.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

COMMIT, TREE, BLOB, TAG, OFS_DELTA, REF_DELTA = 1, 2, 3, 4, 6, 7
_NAMES = {COMMIT: b"commit", TREE: b"tree", BLOB: b"blob", TAG: b"tag"}
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def object_id(kind: int, data: bytes) -> bytes:
    """Return the raw 20-byte git id of a whole object."""
    return hashlib.sha1(b"%s %d\x00" % (_NAMES[kind], len(data)) + data).digest()


def entry_header(kind: int, size: int) -> bytes:
    """Encode a pack entry's type and size header."""
    out = bytearray()
    c = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(c | 0x80)
        c = size & 0x7F
        size >>= 7
    out.append(c)
    return bytes(out)


def ofs_encoding(distance: int) -> bytes:
    """Encode an OFS_DELTA base distance the way git does."""
    out = [distance & 0x7F]
    distance >>= 7
    while distance:
        distance -= 1
        out.insert(0, 0x80 | (distance & 0x7F))
        distance >>= 7
    return bytes(out)


def delta_varint(n: int) -> bytes:
    """Encode a delta source/target size."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def delta_copy(offset: int, size: int) -> bytes:
    """One delta "copy from the base" instruction (size 0x10000 is written as 0)."""
    cmd = 0x80
    args = bytearray()
    for i in range(4):
        byte = (offset >> (8 * i)) & 0xFF
        if byte:
            cmd |= 1 << i
            args.append(byte)
    size = 0 if size == 0x10000 else size
    for i in range(3):
        byte = (size >> (8 * i)) & 0xFF
        if byte:
            cmd |= 1 << (4 + i)
            args.append(byte)
    return bytes([cmd]) + bytes(args)


def delta_insert(data: bytes) -> bytes:
    """Delta "insert literal" instructions for ``data``."""
    out = bytearray()
    for i in range(0, len(data), 127):
        part = data[i : i + 127]
        out.append(len(part))
        out += part
    return bytes(out)


def make_delta(source_size: int, target_size: int, ops: bytes) -> bytes:
    """A delta: its two size varints followed by the instructions."""
    return delta_varint(source_size) + delta_varint(target_size) + ops


def zlib_repeat(chunk: bytes, times: int) -> Iterator[bytes]:
    """Yield a zlib stream of ``chunk * times`` without ever compressing it whole."""
    c = zlib.compressobj(9)
    first = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    assert block == again, "zlib full-flush blocks are not repeatable here"
    adler = 1
    for _ in range(times):
        adler = zlib.adler32(chunk, adler)
    if times == 0:
        yield zlib.compress(b"")
        return
    yield first
    for _ in range(times - 1):
        yield block
    # A final empty block with fixed Huffman codes, then the Adler-32 of everything.
    yield b"\x03\x00" + struct.pack(">I", adler)


class PackWriter:
    """Write a pack to ``f`` one entry at a time, then its SHA-1 trailer."""

    def __init__(self, f: BinaryIO, count: int, version: int = 2) -> None:
        self.f = f
        self.sha = hashlib.sha1()
        self.offset = 0
        self.raw(b"PACK" + struct.pack(">II", version, count))

    def raw(self, data: bytes) -> None:
        """Write bytes as they are (hashed like the rest of the pack)."""
        self.f.write(data)
        self.sha.update(data)
        self.offset += len(data)

    def _entry(self, header: bytes, compressed: Iterable[bytes]) -> int:
        start = self.offset
        self.raw(header)
        for part in compressed:
            self.raw(part)
        return start

    def whole(self, kind: int, data: bytes, declared: int | None = None) -> int:
        """Add a whole object; ``declared`` lies about its size when given."""
        size = len(data) if declared is None else declared
        return self._entry(entry_header(kind, size), [zlib.compress(data)])

    def whole_stream(self, kind: int, declared: int, compressed: Iterable[bytes]) -> int:
        """Add a whole object from an already compressed stream of parts."""
        return self._entry(entry_header(kind, declared), compressed)

    def ofs_delta(self, base: int, delta: bytes, declared: int | None = None) -> int:
        """Add an OFS_DELTA entry against the entry at offset ``base``."""
        size = len(delta) if declared is None else declared
        start = self.offset
        header = entry_header(OFS_DELTA, size) + ofs_encoding(start - base)
        return self._entry(header, [zlib.compress(delta)])

    def ref_delta(self, base_id: bytes, delta: bytes) -> int:
        """Add a REF_DELTA entry against the object with raw id ``base_id``."""
        return self._entry(entry_header(REF_DELTA, len(delta)) + base_id, [zlib.compress(delta)])

    def finish(self, trailer: bytes | None = None) -> bytes:
        """Write the checksum (or ``trailer`` instead) and return the true checksum."""
        digest = self.sha.digest()
        self.f.write(digest if trailer is None else trailer)
        return digest


# --- the attacks ----------------------------------------------------------------------


def write_zero_blob(path: Path, size: int = GiB, declared: int | None = None) -> None:
    """A pack holding one blob of ``size`` zero bytes (declared as ``declared``)."""
    with path.open("wb") as f:
        w = PackWriter(f, 1)
        w.whole_stream(
            BLOB, size if declared is None else declared, zlib_repeat(bytes(MiB), size // MiB)
        )
        w.finish()


def write_delta_bomb(path: Path, copies: int = 16_384, *, ref: bool = False) -> None:
    """A 64 KiB zero blob and a delta of ``copies`` "copy 64 KiB" instructions (1 GiB)."""
    base = bytes(64 * KiB)
    delta = make_delta(len(base), copies * len(base), delta_copy(0, 0x10000) * copies)
    with path.open("wb") as f:
        w = PackWriter(f, 2)
        at = w.whole(BLOB, base)
        if ref:
            w.ref_delta(object_id(BLOB, base), delta)
        else:
            w.ofs_delta(at, delta)
        w.finish()


def write_many_objects(path: Path, count: int = 200_000) -> None:
    """A pack of ``count`` distinct tiny blobs."""
    with path.open("wb") as f:
        w = PackWriter(f, count)
        for i in range(count):
            data = b"%d" % i
            w.raw(entry_header(BLOB, len(data)) + zlib.compress(data))
        w.finish()


def chain_blobs(depth: int) -> list[bytes]:
    """The contents of a base blob and ``depth`` distinct blobs deltified on each other."""
    return [b"level %d of a delta chain\n" % i for i in range(depth + 1)]


def write_delta_chain(path: Path, depth: int) -> None:
    """A blob followed by ``depth`` OFS deltas, each against the previous entry."""
    blobs = chain_blobs(depth)
    with path.open("wb") as f:
        w = PackWriter(f, depth + 1)
        at = w.whole(BLOB, blobs[0])
        for prev, cur in itertools.pairwise(blobs):
            at = w.ofs_delta(at, make_delta(len(prev), len(cur), delta_insert(cur)))
        w.finish()


def write_ref_delta_chain(path: Path, depth: int) -> None:
    """A blob followed by ``depth`` REF deltas, each naming the previous result by id.

    The pre-scan cannot know the id of a delta's result, so it counts each link as
    depth 1; ``packindex`` measures the real chain.
    """
    blobs = chain_blobs(depth)
    with path.open("wb") as f:
        w = PackWriter(f, depth + 1)
        w.whole(BLOB, blobs[0])
        for prev, cur in itertools.pairwise(blobs):
            w.ref_delta(object_id(BLOB, prev), make_delta(len(prev), len(cur), delta_insert(cur)))
        w.finish()


def write_deep_ref_delta_chain(path: Path) -> None:
    """A REF_DELTA chain of 60 links through the pack's own deltas (the cap is 50)."""
    write_ref_delta_chain(path, 60)


def write_bundle(pack: Path, bundle: Path, ref_sha: str, ref: str = "refs/heads/personal") -> None:
    """Wrap a pack file into a v2 bundle advertising ``ref`` at ``ref_sha``."""
    with bundle.open("wb") as out, pack.open("rb") as src:
        out.write(b"# v2 git bundle\n%s %s\n\n" % (ref_sha.encode(), ref.encode()))
        while chunk := src.read(MiB):
            out.write(chunk)


def main(argv: list[str]) -> int:
    """Write the attack packs into the directory named by ``argv[0]``."""
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    write_zero_blob(out / "zero-1gib.pack")
    write_zero_blob(out / "zero-1gib-declared-small.pack", declared=10)
    write_delta_bomb(out / "delta-bomb-ofs.pack")
    write_delta_bomb(out / "delta-bomb-ref.pack", ref=True)
    write_many_objects(out / "many-objects.pack")
    write_delta_chain(out / "chain-50.pack", 50)
    write_delta_chain(out / "chain-51.pack", 51)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
