"""Resolve, check and index a pre-scanned pack in one pass (DESIGN rule 5).

``prescan_pack`` has already read the whole pack under the caps, inflated every entry
once, and hashed every whole object (SHA-1, and SHA-256 for blobs).  ``index_pack``
finishes the job without parsing the pack a second time and without resolving any
delta chain twice:

* whole blobs cost nothing more: their ids and digests come from the pre-scan; they
  are inflated again only when a delta needs them as a base;
* every delta is inflated once and applied to its base with dulwich's C
  ``apply_delta``; bases stay in a bounded cache until their last delta is resolved
  (an evicted base is rebuilt from the pack, never more than ``max_delta_depth`` deep);
* every commit and tag is parsed by dulwich and ``check()``-ed (dulwich does not
  fsck on ingestion); every tree is parsed once by qgitconf's strict parser (the same
  on every dulwich version: ``dulwich_compat.parse_tree_entries``) and given the
  checks of dulwich's ``Tree.check`` (``check_tree_object``), and kept raw until a
  walk needs it; blobs get their SHA-256 for the tree digest;
* the bases of a thin pack, found in the agent's store by ``lookup``, are named so
  ``write_pack`` can append them: the written pack stands on its own, as git requires.

``write_pack`` then copies the pack, completed, and writes its version 2 index.
Nothing here reads anything but the pack file and ``lookup``; only ``write_pack``
writes, and only into the directory it is given.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dulwich.errors import ObjectFormatException
from dulwich.objects import ObjectID, ShaFile

try:  # the C version itself: dulwich.pack would import far more (start-up)
    from dulwich._pack import apply_delta
except ImportError:  # a dulwich built without its extensions
    from dulwich.pack import apply_delta

from qgitconf.errors import BundleError, TooLargeError, UnsafePathError
from qgitconf.gitpack.compat import pack_object_header, parse_tree_entries
from qgitconf.gitpack.packscan import PackEntry, PackSummary
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

__all__ = ["IndexedPack", "index_pack", "write_pack"]

_READ = 1 << 20
_CACHE_BUDGET = 32 << 20  # bytes of resolved bases kept for later deltas
_TREE = 2
_BLOB = 3
_MODE_DIR = 0o040000
# The modes dulwich's Tree.check accepts (gitlinks are refused later, by the path rules).
_TREE_MODES = frozenset({0o100755, 0o100644, 0o120000, _MODE_DIR, 0o160000, 0o100664})
_TYPE_NAMES = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}
_BAD_NAMES = frozenset({b"", b".", b"..", b".git"})

# An object as the resolver hands it around: (type number, content).
Resolved = tuple[int, bytes]
Lookup = Callable[[bytes], Resolved]


class IndexedPack:
    """What a pack holds, once every entry is resolved and checked.

    Attributes:
        index: ``(raw id, offset, crc32)`` of every entry, for the pack index.
        parsed: every commit and tag, parsed and checked, by hex id (bytes).
        trees: every tree's checked raw content, by hex id (bytes).
        blob_sha256: SHA-256 of every blob's content, by hex id.
        external: raw ids of the thin pack's bases, found outside the pack.
    """

    __slots__ = ("blob_sha256", "external", "index", "parsed", "trees")

    def __init__(self) -> None:
        self.index: list[tuple[bytes, int, int]] = []
        self.parsed: dict[bytes, Any] = {}
        self.trees: dict[bytes, bytes] = {}
        self.blob_sha256: dict[str, bytes] = {}
        self.external: list[bytes] = []


class _Resolver:
    """Delta resolution over one pack file, with a bounded cache of bases."""

    def __init__(self, f: BinaryIO, start: int, summary: PackSummary, lookup: Lookup) -> None:
        self._apply_delta = apply_delta
        self._f = f
        self._start = start
        self._lookup = lookup
        self.by_offset = {e.offset: e for e in summary.entries}
        self.ids: dict[bytes, int] = {}  # raw id -> offset, once known
        # Deltas still to come for each base (by offset), so a base leaves the cache
        # as soon as its last delta is resolved.
        self.children: dict[int, int] = {}
        # REF_DELTAs whose base is not a whole object of the pack, by base id: when
        # the base turns out to be a delta of the pack, it is kept for them too.
        self.ref_children: dict[bytes, int] = {}
        whole_ids = {e.sha: e.offset for e in summary.entries if e.sha is not None}
        for e in summary.entries:
            base = self.base_offset(e, whole_ids)
            if base is not None:
                self.children[base] = self.children.get(base, 0) + 1
            elif isinstance(e.base, bytes):
                self.ref_children[e.base] = self.ref_children.get(e.base, 0) + 1
        self.depth: dict[int, int] = {}  # delta chain length by offset (whole: absent)
        self.cache: dict[int, Resolved] = {}
        self.cached_bytes = 0
        self.external: dict[bytes, None] = {}  # raw ids of bases outside the pack

    @staticmethod
    def base_offset(e: PackEntry, ids: dict[bytes, int]) -> int | None:
        """The offset of a delta's base when it is in the pack and known, else None."""
        if isinstance(e.base, int):
            return e.base
        if isinstance(e.base, bytes):
            return ids.get(e.base)
        return None

    def inflate(self, e: PackEntry) -> bytes:
        """The inflated data of one entry (the pre-scan checked its stream and size,
        and may have kept the data)."""
        if e.data is not None:
            return e.data
        self._f.seek(self._start + e.data_start)
        left = e.end - e.data_start
        d = zlib.decompressobj()
        parts = []
        while left > 0:
            chunk = self._f.read(min(_READ, left))
            if not chunk:
                raise BundleError(f"bundle pack changed while it was read (offset {e.offset})")
            left -= len(chunk)
            parts.append(d.decompress(chunk))
        data = b"".join(parts)
        if len(data) != e.size:
            raise BundleError(f"object at offset {e.offset} inflates to the wrong size")
        return data

    def resolve(self, offset: int) -> Resolved:
        """The type and content of the entry at ``offset``, from the cache or rebuilt."""
        hit = self.cache.get(offset)
        if hit is not None:
            return hit
        e = self.by_offset[offset]
        if e.kind in _TYPE_NAMES:
            obj = e.kind, self.inflate(e)
        else:
            if isinstance(e.base, int):
                kind, base = self.resolve(e.base)
            else:
                kind, base = self._ref_base(e.base or b"")
            try:
                obj = kind, b"".join(self._apply_delta(base, self.inflate(e)))
            except Exception as exc:  # dulwich's C and Python versions raise differently
                raise BundleError(
                    f"delta at offset {e.offset} does not apply to its base ({type(exc).__name__})"
                ) from exc
        if self.children.get(offset, 0) > 0:
            self.keep(offset, obj)
        return obj

    def _ref_base(self, sha: bytes) -> Resolved:
        offset = self.ids.get(sha)
        if offset is not None:
            return self.resolve(offset)
        try:
            found = self._lookup(sha)
        except KeyError:
            raise BundleError(
                f"bundle pack has a delta against {sha.hex()}, which is neither in the "
                "pack nor in this qube's repository (missing prerequisite)"
            ) from None
        self.external[sha] = None
        return found

    def keep(self, offset: int, obj: Resolved) -> None:
        """Cache a resolved object that later deltas use as their base."""
        size = len(obj[1])
        if size > _CACHE_BUDGET:
            return
        while self.cached_bytes + size > _CACHE_BUDGET and self.cache:
            old = next(iter(self.cache))
            self.cached_bytes -= len(self.cache.pop(old)[1])
        self.cache[offset] = obj
        self.cached_bytes += size

    def used(self, base: int) -> None:
        """One delta of ``base`` is resolved; drop the base after its last one."""
        left = self.children.get(base, 0) - 1
        self.children[base] = left
        if left <= 0:
            obj = self.cache.pop(base, None)
            if obj is not None:
                self.cached_bytes -= len(obj[1])


def index_pack(
    f: BinaryIO, start: int, summary: PackSummary, lookup: Lookup, limits: Limits
) -> IndexedPack:
    """Resolve every entry of a pre-scanned pack, check it, and collect its index.

    Args:
        f: the file holding the pack, which starts at offset ``start``.
        start: where the pack starts in ``f``.
        summary: what ``prescan_pack`` returned for that pack.
        lookup: finds a thin pack's base outside the pack, by raw id; raises
            ``KeyError`` when it is not there.
        limits: ``max_delta_depth`` applies to every chain, REF_DELTAs included.

    Raises:
        BundleError: a delta against a missing object, a delta that does not apply,
            an object twice, or a malformed object (``check()``).
        TooLargeError: a delta chain deeper than ``limits.max_delta_depth``.
        UnsafePathError: a tree entry git itself would refuse (a name or a mode).
    """
    r = _Resolver(f, start, summary, lookup)
    out = IndexedPack()
    for e in summary.entries:
        if e.sha is not None and e.sha256 is not None:  # a whole blob, already hashed
            sha = e.sha
            out.blob_sha256[sha.hex()] = e.sha256
        else:
            base = r.base_offset(e, r.ids)
            if e.base is not None:
                # The true chain length, REF_DELTAs through deltas of this pack included
                # (the pre-scan cannot know those ids), before anything is resolved.
                depth = r.depth.get(base, 0) + 1 if base is not None else 1
                if depth > limits.max_delta_depth:
                    raise TooLargeError(
                        f"delta chain deeper than {limits.max_delta_depth} at offset {e.offset}"
                    )
                r.depth[e.offset] = depth
            kind, data = r.resolve(e.offset)
            if base is not None:
                r.used(base)
            if e.sha is not None:
                sha = e.sha
            else:
                hasher = hashlib.sha1(  # noqa: S324 - git object ids are SHA-1
                    b"%s %d\x00" % (_TYPE_NAMES[kind], len(data))
                )
                hasher.update(data)
                sha = hasher.digest()
            later = r.ref_children.pop(sha, 0)
            if later:  # later REF_DELTAs name this delta's result as their base
                r.children[e.offset] = later
                r.keep(e.offset, (kind, data))
            hexsha = sha.hex()
            if kind == _BLOB:
                out.blob_sha256[hexsha] = hashlib.sha256(data).digest()
            else:
                _check_object(kind, data, hexsha.encode("ascii"), out)
        if sha in r.ids:
            raise BundleError(f"bundle pack holds object {sha.hex()} twice")
        r.ids[sha] = e.offset
        out.index.append((sha, e.offset, e.crc32))
    out.external = [s for s in r.external if s not in r.ids]
    return out


def _check_object(kind: int, data: bytes, hexsha: bytes, out: IndexedPack) -> None:
    """Check a commit, tree or tag and keep it in ``out``.

    Raises:
        UnsafePathError: a tree entry git itself would refuse (rule 7).
        BundleError: any other malformation.
    """
    try:
        if kind == _TREE:
            check_tree_object(data)
            out.trees[hexsha] = data
        else:
            obj = ShaFile.from_raw_string(kind, data, ObjectID(hexsha))
            obj.check()
            out.parsed[hexsha] = obj
    except ObjectFormatException as exc:
        text = sanitize(str(exc))
        if text.startswith(("invalid name", "invalid mode")):
            raise UnsafePathError(f"tree entry refused: {text}") from exc
        raise BundleError(f"bundle holds a malformed object: {text}") from exc


def check_tree_object(data: bytes) -> None:
    """Check a tree's content as dulwich's ``Tree.check`` does, parsing it once.

    The strict parser refuses malformed entries (modes with leading zeros or other
    than octal digits, short ids); then each name must be a single non-empty component
    other than ``.``, ``..`` and ``.git``, each mode one git writes, and the entries
    sorted as git sorts them (directories as if their name ended in ``/``) without
    duplicates.

    Raises:
        ObjectFormatException: the tree is malformed; the message starts with
            ``invalid name`` or ``invalid mode`` for an entry git itself would refuse.
    """
    entries = parse_tree_entries(data)
    # The common case in one sweep of C-level operations: good names and modes,
    # strictly sorted, no name twice.  Anything else takes the entry-by-entry walk
    # below, which finds the first bad entry and words the error as Tree.check does.
    names = [name for name, _, _ in entries]
    keys = [name + b"/" if mode == _MODE_DIR else name for name, mode, _ in entries]
    if (
        _TREE_MODES.issuperset([mode for _, mode, _ in entries])
        and _BAD_NAMES.isdisjoint(names)
        and b"/" not in b"\0".join(names)
        and keys == sorted(keys)
        and len(set(names)) == len(names)
    ):
        return
    last_key = last_name = None
    for name, mode, _sha in entries:
        if b"/" in name or name in _BAD_NAMES:
            raise ObjectFormatException(f"invalid name {name.decode('utf-8', 'replace')}")
        if mode not in _TREE_MODES:
            raise ObjectFormatException(f"invalid mode {mode:06o}")
        key = name + b"/" if mode == _MODE_DIR else name
        if last_key is not None:
            if last_key > key:
                raise ObjectFormatException("entries not sorted")
            if name == last_name:
                raise ObjectFormatException(f"duplicate entry {name!r}")
        last_key, last_name = key, name


def _entry_bytes(kind: int, data: bytes) -> bytes:
    """A whole object as a pack entry: type-and-size header, then zlib data."""
    return pack_object_header(kind, len(data)) + zlib.compress(data, 1)


def _copy(src: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    src.seek(start)
    while length > 0:
        chunk = src.read(min(_READ, length))
        if not chunk:
            raise BundleError("bundle pack changed while it was copied")
        length -= len(chunk)
        yield chunk


def _write_index_v2(out: BinaryIO, index: list[tuple[bytes, int, int]], checksum: bytes) -> None:
    """Write a version 2 pack index (git's ``Documentation/gitformat-pack``).

    The same bytes as dulwich's ``write_pack_index_v2`` (a test compares them), written
    here so that a receive does not import ``dulwich.pack`` for it.
    """
    entries = sorted(index)
    counts = [0] * 256
    for sha, _, _ in entries:
        counts[sha[0]] += 1
    fanout: list[int] = []
    total = 0
    for n in counts:
        total += n
        fanout.append(total)
    offsets: list[int] = []
    large: list[int] = []
    for _, offset, _ in entries:
        if offset < 1 << 31:
            offsets.append(offset)
        else:  # in the 64-bit table, flagged by the high bit
            offsets.append(1 << 31 | len(large))
            large.append(offset)
    n = len(entries)
    body = b"".join(
        [
            b"\377tOc",
            struct.pack(">L", 2),
            struct.pack(">256L", *fanout),
            b"".join(sha for sha, _, _ in entries),
            struct.pack(f">{n}L", *(crc & 0xFFFFFFFF for _, _, crc in entries)),
            struct.pack(f">{n}L", *offsets),
            struct.pack(f">{len(large)}Q", *large),
            checksum,
        ]
    )
    out.write(body)
    out.write(hashlib.sha1(body).digest())  # noqa: S324 - the index checksum is SHA-1


def write_pack(
    f: BinaryIO,
    start: int,
    summary: PackSummary,
    indexed: IndexedPack,
    lookup: Lookup,
    dest: Path,
) -> Path:
    """Write the pack, completed with its thin bases, and its index into ``dest``.

    Returns:
        The path of the written ``pack-<sha>.pack`` (its ``.idx`` beside it).
    """
    tmp = dest / f"tmp-{os.getpid()}.pack"
    index = list(indexed.index)
    body = summary.entries[-1].end if summary.entries else 12
    with tmp.open("wb") as out:
        if not indexed.external:
            for chunk in _copy(f, start, body):
                out.write(chunk)
            checksum = summary.checksum
        else:
            h = hashlib.sha1()  # noqa: S324 - git's pack checksum is SHA-1
            head = b"".join(_copy(f, start, 12))
            count = len(summary.entries) + len(indexed.external)
            head = head[:8] + count.to_bytes(4, "big")
            out.write(head)
            h.update(head)
            for chunk in _copy(f, start + 12, body - 12):
                out.write(chunk)
                h.update(chunk)
            offset = body
            for sha in indexed.external:
                entry = _entry_bytes(*lookup(sha))
                out.write(entry)
                h.update(entry)
                index.append((sha, offset, zlib.crc32(entry)))
                offset += len(entry)
            checksum = h.digest()
        out.write(checksum)
        out.flush()
        os.fsync(out.fileno())
    name = f"pack-{checksum.hex()}"
    pack = dest / f"{name}.pack"
    idx_tmp = dest / f"tmp-{os.getpid()}.idx"
    with idx_tmp.open("wb") as out:
        _write_index_v2(out, index, checksum)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, pack)
    os.replace(idx_tmp, dest / f"{name}.idx")
    return pack
