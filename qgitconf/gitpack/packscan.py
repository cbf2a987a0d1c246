"""Streaming pre-scan of an untrusted git pack, before dulwich sees it (DESIGN rule 5).

Rule 5 says a bundle is parsed into quarantine "with limits on objects, inflated sizes
and delta results (dulwich does not cap these itself)".  dulwich's ``add_thin_pack``
caps only the compressed input: a 243-byte pack holding a 64 KiB blob and a delta of
16,384 "copy 64 KiB" instructions inflates to a 1 GiB object, and a few MB of zlib
inflate to a 1 GiB blob.  ``prescan_pack`` reads the pack once, in chunks of at most
64 KiB, holding no blob whole (and at most ``KEEP_INFLATED_BYTES`` of other entries,
see below), and refuses it before ingestion when it:

* is not a v2/v3 pack, is truncated, has a wrong trailing SHA-1 or data after it;
* declares more than ``max_objects`` objects (checked before any entry is read);
* holds an entry of an unknown type (0, 5, or anything but 1-4, 6, 7);
* declares an object or delta larger than ``max_object_bytes``, or a delta whose
  result (target size) is larger than that;
* inflates an entry to a size other than the one it declares (inflation stops one
  byte past the declared size, so a lying header costs nothing);
* has deltas chained deeper than ``max_delta_depth``;
* inflates, or would resolve to, more than ``max_inflated_bytes`` in total.

The function is pure: it reads from the file it is given and touches nothing else.
Besides its verdict it returns the table of entries it read (offsets, sizes, bases,
CRC-32s, and the ids and SHA-256s of whole objects it already hashed while inflating),
so ``packindex`` can resolve the deltas without parsing the pack a second time.  It
also hands over the inflated data of the entries ``packindex`` reads anyway - deltas,
commits, trees and tags, not blobs - while they add up to at most
``KEEP_INFLATED_BYTES`` (the rest are inflated again from the pack when needed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

from qgitconf.errors import BundleError, TooLargeError
from qgitconf.gitpack.packstream import PackStream, inflate_capped
from qgitconf.limits import Limits

__all__ = ["PackEntry", "PackSummary", "prescan_pack"]

_HEADER_BYTES = 12
_SHA_BYTES = 20
# Enough for any size git can write (64-bit); a longer varint is corrupt.
_MAX_VARINT_BYTES = 10
_DELTA_HEAD_BYTES = 2 * _MAX_VARINT_BYTES

_OBJ_BLOB = 3
_OBJ_OFS_DELTA = 6
_OBJ_REF_DELTA = 7
_WHOLE_TYPES = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}
# Inflated entry data handed to packindex (see the module docstring), in all.
KEEP_INFLATED_BYTES = 16 << 20


class PackEntry(NamedTuple):
    """One entry of a pack that passed the pre-scan (offsets from the pack's first byte).

    Attributes:
        offset: where the entry's header starts.
        kind: 1-4 (commit, tree, blob, tag) for a whole object, 6 (OFS_DELTA) or 7
            (REF_DELTA) for a delta.
        size: the inflated size of the entry's data (checked against the stream).
        data_start: where the entry's zlib stream starts.
        end: one past the entry's last byte.
        crc32: CRC-32 of the entry's bytes ``[offset, end)``, as a pack index stores it.
        base: the base's offset (OFS_DELTA), the base's raw id (REF_DELTA), else None.
        sha: the raw object id of a whole object, else None.
        sha256: SHA-256 of a whole blob's content, else None.
        data: the inflated data of a delta, commit, tree or tag while the pre-scan's
            budget for them lasts, else None (inflate it from the pack).
    """

    offset: int
    kind: int
    size: int
    data_start: int
    end: int
    crc32: int
    base: int | bytes | None
    sha: bytes | None
    sha256: bytes | None
    data: bytes | None = None


class PackSummary(NamedTuple):
    """What a pack that passed the pre-scan holds.

    Attributes:
        object_count: the number of entries (objects and deltas) in the pack.
        inflated_bytes: the total size of the inflated entries (object data and
            delta instructions, as stored; not the resolved delta results).
        max_depth: the longest delta chain seen (0 when nothing is deltified).
        ref_delta_bases: the ids (lowercase hex) named as bases by REF_DELTA entries
            that are not whole objects of this pack: the external bases of a thin
            pack, plus any deltified in-pack base (whose id a pre-scan cannot know
            without resolving deltas; ``git bundle`` never writes those).
        entries: every entry, in pack order.
        checksum: the pack's trailing SHA-1 (raw).
    """

    object_count: int
    inflated_bytes: int
    max_depth: int
    ref_delta_bases: frozenset[str]
    entries: tuple[PackEntry, ...] = ()
    checksum: bytes = b""


def _delta_sizes(head: bytes) -> tuple[int, int] | None:
    """Parse a delta's source and target sizes from its first inflated bytes.

    Returns:
        ``(source_size, target_size)``, or None when ``head`` is too short yet.

    Raises:
        BundleError: a size varint is longer than any size git writes.
    """
    pos = 0
    sizes: list[int] = []
    for _ in range(2):
        value = 0
        for i in range(_MAX_VARINT_BYTES + 1):
            if i == _MAX_VARINT_BYTES:
                raise BundleError("delta size header is too long")
            if pos >= len(head):
                return None
            byte = head[pos]
            pos += 1
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                break
        sizes.append(value)
    return sizes[0], sizes[1]


class _Scan:
    """The state of one pass: caps, totals, and what is known about earlier entries."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.inflated = 0  # inflated entry bytes so far
        self.results = 0  # declared result sizes so far (objects and delta targets)
        self.max_depth = 0
        # offset -> (delta depth, result size) of every entry read so far
        self.entries: dict[int, tuple[int, int]] = {}
        # raw id -> size of every whole (non-delta) object
        self.whole: dict[bytes, int] = {}
        self.ref_bases: set[bytes] = set()
        self.table: list[PackEntry] = []
        self.keep_left = KEEP_INFLATED_BYTES  # budget for PackEntry.data

    def _keeper(
        self, size: int, sink: Callable[[bytes], object]
    ) -> tuple[Callable[[bytes], object], list[bytes] | None]:
        """``sink``, or - while the budget lasts - ``sink`` plus a list that collects
        the inflated data for ``PackEntry.data``."""
        if size > self.keep_left:
            return sink, None
        self.keep_left -= size
        parts: list[bytes] = []

        def keep(data: bytes) -> None:
            parts.append(data)
            sink(data)

        return keep, parts

    def _add_result(self, size: int, start: int) -> None:
        self.results += size
        if self.results > self.limits.max_inflated_bytes:
            raise TooLargeError(
                f"bundle pack objects add up to more than {self.limits.max_inflated_bytes} "
                f"bytes (at the object at offset {start})"
            )

    def entry(self, r: PackStream) -> None:
        """Read, check and inflate one pack entry."""
        start = r.offset
        r.start_entry()
        kind, size = self._header(r, start)
        if kind in _WHOLE_TYPES:
            self._whole(r, start, kind, size)
        else:
            self._delta(r, start, kind, size)

    def _header(self, r: PackStream, start: int) -> tuple[int, int]:
        """The entry's type and inflated size, checked against the limits."""
        limits = self.limits
        c = r.byte("an object header")
        kind = (c >> 4) & 7
        size = c & 0x0F
        shift = 4
        n = 1
        while c & 0x80:
            if n >= _MAX_VARINT_BYTES:
                raise BundleError(f"object header at offset {start} is too long")
            c = r.byte("an object header")
            size |= (c & 0x7F) << shift
            shift += 7
            n += 1
        if kind not in _WHOLE_TYPES and kind not in (_OBJ_OFS_DELTA, _OBJ_REF_DELTA):
            raise BundleError(f"object at offset {start} has unknown type {kind}")
        if size > limits.max_object_bytes:
            raise TooLargeError(
                f"object at offset {start} declares {size} bytes; "
                f"the limit is {limits.max_object_bytes}"
            )
        if self.inflated + size > limits.max_inflated_bytes:
            raise TooLargeError(
                f"bundle pack inflates to more than {limits.max_inflated_bytes} bytes "
                f"(at the object at offset {start})"
            )
        return kind, size

    def _whole(self, r: PackStream, start: int, kind: int, size: int) -> None:
        """A whole object: inflated and hashed (SHA-1 of the object, SHA-256 of a blob)."""
        self._add_result(size, start)
        data_start = r.offset
        hasher = hashlib.sha1(b"%s %d\x00" % (_WHOLE_TYPES[kind], size))  # noqa: S324
        if kind == _OBJ_BLOB:
            content = hashlib.sha256()

            def both(data: bytes) -> None:
                hasher.update(data)
                content.update(data)

            self.inflated += inflate_capped(r, size, start, both)
            sha256: bytes | None = content.digest()
            kept = None
        else:
            feed, kept = self._keeper(size, hasher.update)
            self.inflated += inflate_capped(r, size, start, feed)
            sha256 = None
        self.entries[start] = (0, size)
        sha = hasher.digest()
        self.whole[sha] = size
        data = b"".join(kept) if kept is not None else None
        self.table.append(
            PackEntry(
                start, kind, size, data_start, r.offset, r.entry_crc(), None, sha, sha256, data
            )
        )

    def _delta(self, r: PackStream, start: int, kind: int, size: int) -> None:
        """A delta: its base located (an earlier entry, or an id), its depth and its
        header's sizes checked while it is inflated."""
        limits = self.limits
        base_size: int | None
        base: int | bytes
        if kind == _OBJ_OFS_DELTA:
            distance = self._ofs_distance(r, start)
            base = start - distance
            if base not in self.entries:
                raise BundleError(
                    f"delta at offset {start} names a base at offset {base}, "
                    "where no earlier object starts"
                )
            base_depth, base_size = self.entries[base]
        else:
            base = r.exact(_SHA_BYTES, "a delta base id")
            self.ref_bases.add(base)
            base_depth, base_size = 0, self.whole.get(base)
        depth = base_depth + 1
        if depth > limits.max_delta_depth:
            raise TooLargeError(
                f"delta chain deeper than {limits.max_delta_depth} at offset {start}"
            )
        self.max_depth = max(self.max_depth, depth)
        delta = _DeltaHead(self, start, base_size)
        data_start = r.offset
        feed, kept = self._keeper(size, delta.feed)
        self.inflated += inflate_capped(r, size, start, feed)
        if delta.target is None:
            raise BundleError(f"delta at offset {start} is too short for its size header")
        self.entries[start] = (depth, delta.target)
        data = b"".join(kept) if kept is not None else None
        crc = r.entry_crc()
        self.table.append(
            PackEntry(start, kind, size, data_start, r.offset, crc, base, None, None, data)
        )

    def _ofs_distance(self, r: PackStream, start: int) -> int:
        c = r.byte("a delta base offset")
        distance = c & 0x7F
        while c & 0x80:
            if distance > start:
                break
            c = r.byte("a delta base offset")
            distance = ((distance + 1) << 7) | (c & 0x7F)
        if distance <= 0 or distance > start:
            raise BundleError(f"delta at offset {start} has a base offset outside the pack")
        return distance


class _DeltaHead:
    """Collects a delta's first inflated bytes and checks its sizes once they are known."""

    def __init__(self, scan: _Scan, start: int, base_size: int | None) -> None:
        self._scan = scan
        self._start = start
        self._base_size = base_size
        self._head = b""
        self.target: int | None = None

    def feed(self, data: bytes) -> None:
        """Take the next inflated bytes of the delta."""
        if self.target is not None:
            return
        self._head += data[: _DELTA_HEAD_BYTES - len(self._head)]
        sizes = _delta_sizes(self._head)
        if sizes is None:
            if len(self._head) >= _DELTA_HEAD_BYTES:
                raise BundleError(f"delta at offset {self._start} has a corrupt size header")
            return
        source, target = sizes
        limits = self._scan.limits
        if self._base_size is not None and source != self._base_size:
            raise BundleError(
                f"delta at offset {self._start} expects a {source}-byte base, "
                f"its base has {self._base_size} bytes"
            )
        if source > limits.max_object_bytes:
            raise TooLargeError(
                f"delta at offset {self._start} expects a {source}-byte base; "
                f"the limit is {limits.max_object_bytes}"
            )
        if target > limits.max_object_bytes:
            raise TooLargeError(
                f"delta at offset {self._start} would make a {target}-byte object; "
                f"the limit is {limits.max_object_bytes}"
            )
        self._scan._add_result(target, self._start)
        self.target = target


def prescan_pack(f: BinaryIO, size: int, limits: Limits) -> PackSummary:
    """Check a whole git pack against ``limits`` in one streaming pass.

    Args:
        f: a binary file positioned at the pack's first byte (``PACK``).
        size: the number of bytes from there to the end of the data; the pack
            must fill exactly this many bytes, its SHA-1 checksum being the last 20.
        limits: the caps to apply.

    Returns:
        A summary of the pack.

    Raises:
        BundleError: not a v2/v3 pack, truncated, corrupt, checksum mismatch, or data
            after the checksum.
        TooLargeError: over a cap of ``limits`` (objects, object or delta result size,
            delta depth, total inflated or resolved bytes).
    """
    if size < _HEADER_BYTES + _SHA_BYTES:
        raise BundleError(f"bundle pack truncated: {size} bytes is too short for a pack")
    r = PackStream(f, size)
    header = r.exact(_HEADER_BYTES, "the pack header")
    if header[:4] != b"PACK":
        raise BundleError("bundle data is not a git pack (no PACK signature)")
    version = int.from_bytes(header[4:8], "big")
    if version not in (2, 3):
        raise BundleError(f"bundle pack has unsupported version {version}")
    count = int.from_bytes(header[8:12], "big")
    if count > limits.max_objects:
        raise TooLargeError(
            f"bundle pack declares {count} objects; the limit is {limits.max_objects}"
        )
    scan = _Scan(limits)
    for _ in range(count):
        scan.entry(r)
    digest = r.digest()
    left = r.remaining
    if left < _SHA_BYTES:
        raise BundleError(
            f"bundle pack truncated: the checksum needs {_SHA_BYTES} bytes, {left} are left"
        )
    trailer = r.exact(_SHA_BYTES, "the pack checksum", hashed=False)
    if left > _SHA_BYTES:
        r.peek()  # a file shorter than ``size`` is a truncation, not trailing data
        if trailer == digest:
            raise BundleError(
                f"bundle pack is followed by {left - _SHA_BYTES} bytes after its checksum"
            )
        raise BundleError(
            f"bundle pack has {left - _SHA_BYTES} unexpected bytes after its last object "
            f"(or its checksum is wrong)"
        )
    if trailer != digest:
        raise BundleError("bundle pack checksum mismatch")
    bases = scan.ref_bases.difference(scan.whole)
    return PackSummary(
        object_count=count,
        inflated_bytes=scan.inflated,
        max_depth=scan.max_depth,
        ref_delta_bases=frozenset(b.hex() for b in bases),
        entries=tuple(scan.table),
        checksum=trailer,
    )
