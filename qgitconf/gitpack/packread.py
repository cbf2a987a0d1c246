"""Read the agent repository's objects in bulk, straight from its packs (apply).

Apply reads the whole tree it applies: every tree and every blob.  Through dulwich
that is one lookup per object (each a ``stat`` of ``multi-pack-index``, an index
search, a header parse, an inflate: about 1 s for 10,000 files).  Here each pack's
index is read once into a dict, and the blobs are inflated in one pass over each
pack in offset order (mmap; every delta applied once, its base kept while it is
small enough to be met again).

The packs are the agent's own: Receive wrote them (``packindex.write_pack``) after
every check of DESIGN rule 5, under the state directory, which no update can write
(rule 7).  Nothing here runs a program or reads anything else (rule 12: no ``git``
reads the agent repository on the apply path).  A pack that does not parse as Receive
writes it raises :class:`~qgitconf.errors.LocalStateError`; an object that is in no
pack (a loose object from another git) is left to the caller's dulwich store.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

try:  # dulwich's C version (0.3 ms beside what apply loads anyway)
    from dulwich._pack import apply_delta
except ImportError:  # dulwich without its C extension (Debian 13's): the pure one
    from dulwich.pack import apply_delta

from qgitconf.errors import LocalStateError
from qgitconf.limits import MAX_DELTA_CHAIN

_IDX_MAGIC = b"\377tOc\x00\x00\x00\x02"
_OFS_DELTA = 6
_REF_DELTA = 7
_CACHE_BUDGET = 32 << 20  # bytes of resolved delta bases kept for later deltas


class _Pack:
    """One pack mapped into memory, and the end of each of its entries (None: not
    listed, a lazy reader's; an entry then ends at the latest where the pack does)."""

    def __init__(self, pack: Path, offsets: list[int] | None) -> None:
        fd = os.open(pack, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            size = os.fstat(fd).st_size
            self.map = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
        finally:
            os.close(fd)
        if self.map is None or size < 32 or self.map[:4] != b"PACK":
            raise _bad(pack, "not a pack")
        self.size = size
        self.end: dict[int, int] | None = None
        if offsets is not None:
            ends = sorted(offsets)
            self.end = dict(zip(ends, [*ends[1:], size - 20], strict=True))
        self.path = pack

    def entry_end(self, off: int) -> int:
        return self.end[off] if self.end is not None else self.size - 20

    def is_entry(self, off: int) -> bool:
        return off in self.end if self.end is not None else 12 <= off < self.size - 20

    def close(self) -> None:
        if self.map is not None:
            self.map.close()


def _bad(path: Path, what: str) -> LocalStateError:
    return LocalStateError(f"{path} is damaged ({what}); run `qgitconf doctor`")


class PackReader:
    """The objects of every pack under ``objects/pack``, by binary SHA-1.

    Each index is read whole into a dict (apply reads every object of a tree), or,
    with ``lazy``, searched by bisection for each object asked for: Receive looks up
    a thin pack's few bases and one prerequisite, whatever the repository's size.
    """

    def __init__(self, objects: Path, *, lazy: bool = False) -> None:
        self._packs: list[_Pack] = []
        self._where: dict[bytes, tuple[_Pack, int]] = {}
        self._lazy = lazy
        self._indexes: list[tuple[bytes, int, _Pack]] = []  # lazy: idx, count, pack
        self._cache: dict[tuple[int, int], tuple[int, bytes]] = {}
        self._cached = 0
        try:
            names = sorted(os.listdir(objects / "pack"))
        except FileNotFoundError:
            names = []
        try:
            for name in names:
                if name.startswith("pack-") and name.endswith(".idx"):
                    self._add(objects / "pack" / name)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in self._packs:
            p.close()
        self._packs.clear()
        self._where.clear()
        self._cache.clear()

    def _add(self, idx_path: Path) -> None:
        pack_path = idx_path.with_suffix(".pack")
        if not pack_path.exists():
            return  # an index without its pack: not a pack git would read either
        idx = idx_path.read_bytes()
        if len(idx) < 8 + 1024 + 40 or idx[:8] != _IDX_MAGIC:
            raise _bad(idx_path, "not a version 2 pack index")
        n = int.from_bytes(idx[8 + 1020 : 8 + 1024], "big")
        shas_at = 8 + 1024
        offs_at = shas_at + 24 * n
        large_at = offs_at + 4 * n
        if len(idx) < large_at + 40:
            raise _bad(idx_path, "truncated")
        if self._lazy:
            lazy = _Pack(pack_path, None)
            self._packs.append(lazy)
            self._indexes.append((idx, n, lazy))
            return
        offsets = []
        for i in range(n):
            off = int.from_bytes(idx[offs_at + 4 * i : offs_at + 4 * i + 4], "big")
            if off & 0x80000000:
                at = large_at + 8 * (off & 0x7FFFFFFF)
                if at + 8 > len(idx) - 40:
                    raise _bad(idx_path, "offset out of range")
                off = int.from_bytes(idx[at : at + 8], "big")
            offsets.append(off)
        pack = _Pack(pack_path, offsets)
        self._packs.append(pack)
        limit = len(pack.map or b"") - 20
        for i, off in enumerate(offsets):
            if not 12 <= off < limit:
                raise _bad(idx_path, "offset out of range")
            self._where.setdefault(idx[shas_at + 20 * i : shas_at + 20 * i + 20], (pack, off))

    def _find(self, sha: bytes) -> tuple[_Pack, int] | None:
        """Pack and offset of binary ``sha``; lazy: bisected in each index in turn."""
        where = self._where.get(sha)
        if where is not None or not self._lazy:
            return where
        for idx, n, pack in self._indexes:
            fan = 8 + 4 * sha[0]
            lo = int.from_bytes(idx[fan - 4 : fan], "big") if sha[0] else 0
            hi = int.from_bytes(idx[fan : fan + 4], "big")
            if not 0 <= lo <= hi <= n:
                raise _bad(pack.path.with_suffix(".idx"), "fan-out table")
            while lo < hi:
                mid = (lo + hi) // 2
                at = 8 + 1024 + 20 * mid
                got = idx[at : at + 20]
                if got == sha:
                    break
                lo, hi = (mid + 1, hi) if got < sha else (lo, mid)
            else:
                continue
            at = 8 + 1024 + 24 * n + 4 * mid
            off = int.from_bytes(idx[at : at + 4], "big")
            if off & 0x80000000:
                at = 8 + 1024 + 28 * n + 8 * (off & 0x7FFFFFFF)
                if at + 8 > len(idx) - 40:
                    raise _bad(pack.path.with_suffix(".idx"), "offset out of range")
                off = int.from_bytes(idx[at : at + 8], "big")
            if not pack.is_entry(off):
                raise _bad(pack.path.with_suffix(".idx"), "offset out of range")
            self._where[sha] = (pack, off)
            return pack, off
        return None

    def __contains__(self, hexsha: str) -> bool:
        return self._find(bytes.fromhex(hexsha)) is not None

    def get_raw(self, hexsha: str) -> tuple[int, bytes]:
        """``(type number, content)`` of object ``hexsha``.

        Raises:
            KeyError: it is in no pack.
            LocalStateError: the pack does not parse.
        """
        where = self._find(bytes.fromhex(hexsha))
        if where is None:
            raise KeyError(hexsha)
        return self._resolve(*where)

    def raw_tree(self, hexsha: bytes) -> bytes | None:
        """The content of tree ``hexsha`` (for ``gitstore.walk_tree``); None if it is
        in no pack or not a tree (the caller's store then says what it is)."""
        try:
            kind, data = self.get_raw(hexsha.decode("ascii"))
        except KeyError:
            return None
        return data if kind == 2 else None

    def bulk(self, hexshas: Iterable[str]) -> dict[str, tuple[int, bytes]]:
        """``(type, content)`` of each object of ``hexshas`` found in a pack, read in
        pack and offset order (one pass over each pack); the others are left out."""
        found = []
        for h in set(hexshas):
            where = self._find(bytes.fromhex(h))
            if where is not None:
                found.append((id(where[0]), where[1], h, where[0]))
        found.sort()
        return {h: self._resolve(pack, off) for _, off, h, pack in found}

    # -- reading entries -------------------------------------------------------------

    def _header(self, pack: _Pack, off: int) -> tuple[int, int, int, int | bytes | None]:
        """Type, inflated size, start of the zlib data, and the delta base (offset
        for an offset delta, binary SHA-1 for a ref delta, None for a whole object)."""
        m = pack.map
        if m is None:
            raise _bad(pack.path, "empty")
        end = pack.entry_end(off)
        at = off
        c = m[at]
        kind, size, shift = (c >> 4) & 7, c & 15, 4
        while c & 0x80:
            at += 1
            if at >= end:
                raise _bad(pack.path, "entry header")
            c = m[at]
            size |= (c & 0x7F) << shift
            shift += 7
        at += 1
        base: int | bytes | None = None
        if kind == _OFS_DELTA:
            c = m[at]
            rel = c & 0x7F
            while c & 0x80:
                at += 1
                if at >= end:
                    raise _bad(pack.path, "delta offset")
                c = m[at]
                rel = ((rel + 1) << 7) | (c & 0x7F)
            at += 1
            base = off - rel
            if not pack.is_entry(base):
                raise _bad(pack.path, "delta base offset")
        elif kind == _REF_DELTA:
            base = bytes(m[at : at + 20])
            at += 20
        elif kind not in (1, 2, 3, 4):
            raise _bad(pack.path, f"entry type {kind}")
        return kind, size, at, base

    def _inflate(self, pack: _Pack, off: int, size: int, at: int) -> bytes:
        m = pack.map
        if m is None:
            raise _bad(pack.path, "empty")
        d = zlib.decompressobj()
        try:
            data = d.decompress(m[at : pack.entry_end(off)], size + 1)
        except zlib.error as e:
            raise _bad(pack.path, f"zlib: {e}") from e
        if len(data) != size or not d.eof:
            raise _bad(pack.path, "inflated size")
        return data

    def _resolve(self, pack: _Pack, off: int) -> tuple[int, bytes]:
        """The object at ``off``: its delta chain followed down to a whole object (or
        a cached one), then every delta applied on the way back up."""
        chain: list[tuple[_Pack, int, int, int]] = []  # deltas: pack, offset, size, data at
        while True:
            cached = self._cache.get((id(pack), off))
            if cached is not None:
                kind, data = cached
                break
            kind, size, at, base = self._header(pack, off)
            if base is None:
                data = self._inflate(pack, off, size, at)
                break
            chain.append((pack, off, size, at))
            if len(chain) > MAX_DELTA_CHAIN:
                raise _bad(pack.path, "delta chain too long")
            if isinstance(base, bytes):
                where = self._find(base)
                if where is None:
                    raise _bad(pack.path, "delta base missing")
                pack, off = where
            else:
                off = base
        base_key = (id(pack), off)
        for p, o, size, at in reversed(chain):
            self._keep(base_key, (kind, data))  # other deltas may stand on it too
            data = b"".join(apply_delta(data, self._inflate(p, o, size, at)))
            base_key = (id(p), o)
        return kind, data

    def _keep(self, key: tuple[int, int], obj: tuple[int, bytes]) -> None:
        if key in self._cache:
            return
        if self._cached + len(obj[1]) > _CACHE_BUDGET:
            self._cache.clear()
            self._cached = 0
        self._cache[key] = obj
        self._cached += len(obj[1])
