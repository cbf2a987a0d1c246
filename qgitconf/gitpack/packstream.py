"""Reading an untrusted pack as a stream: bounded buffering, the running SHA-1 of the
pack and the CRC-32 of each entry, and an inflater that never produces more than an
entry declares (rule 5; used by :mod:`qgitconf.gitpack.packscan`)."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from typing import BinaryIO

from qgitconf.errors import BundleError

CHUNK = 64 * 1024


_ZLIB_SLACK = 1024  # more than zlib's worst-case overhead for one small stream


class PackStream:
    """Sequential bounded reader over the pack bytes; hashes every byte it consumes.

    Consumed bytes are hashed (pack SHA-1, entry CRC-32) in bulk: when the buffer is
    refilled and when an entry starts or ends, not one call per header byte.
    """

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._unread = size
        self._buf = b""
        self._pos = 0
        self._mark = 0  # consumed bytes before this position are hashed
        self.offset = 0
        self.sha = hashlib.sha1()  # noqa: S324 - git's pack checksum is SHA-1
        self._crc = 0  # CRC-32 of the current entry's bytes

    @property
    def remaining(self) -> int:
        """Bytes of the pack not consumed yet."""
        return len(self._buf) - self._pos + self._unread

    def _hash_consumed(self) -> None:
        if self._mark < self._pos:
            view = memoryview(self._buf)[self._mark : self._pos]
            self.sha.update(view)
            self._crc = zlib.crc32(view, self._crc)
        self._mark = self._pos

    def _fill(self) -> bool:
        if self._pos < len(self._buf):
            return True
        if self._unread <= 0:
            return False
        data = self._f.read(min(CHUNK, self._unread))
        if not data:
            raise BundleError(f"bundle pack truncated: the file ends {self._unread} bytes early")
        self._hash_consumed()
        self._unread -= len(data)
        self._buf = data
        self._pos = self._mark = 0
        return True

    def start_entry(self) -> None:
        """An entry starts here: its CRC-32 counts from the next byte."""
        self._hash_consumed()
        self._crc = 0

    def entry_crc(self) -> int:
        """CRC-32 of the bytes consumed since ``start_entry``."""
        self._hash_consumed()
        return self._crc

    def digest(self) -> bytes:
        """SHA-1 of every hashed byte consumed so far."""
        self._hash_consumed()
        return self.sha.digest()

    def peek(self) -> memoryview:
        """Return the buffered bytes not consumed yet (empty at the end of the pack)."""
        if not self._fill():
            return memoryview(b"")
        return memoryview(self._buf)[self._pos :]

    def consume(self, n: int, *, hashed: bool = True) -> None:
        """Mark ``n`` bytes of ``peek()`` as consumed."""
        if not hashed:
            self._hash_consumed()
            self._mark = self._pos + n
        self._pos += n
        self.offset += n

    def byte(self, what: str) -> int:
        """Consume and return one byte.

        Raises:
            BundleError: the pack ends here.
        """
        if self._pos >= len(self._buf) and not self._fill():
            raise BundleError(f"bundle pack truncated in {what} at offset {self.offset}")
        value = self._buf[self._pos]
        self._pos += 1
        self.offset += 1
        return value

    def exact(self, n: int, what: str, *, hashed: bool = True) -> bytes:
        """Consume and return exactly ``n`` bytes (``n`` is small).

        Raises:
            BundleError: the pack ends first.
        """
        out = bytearray()
        while len(out) < n:
            view = self.peek()
            if not view:
                raise BundleError(f"bundle pack truncated in {what} at offset {self.offset}")
            take = min(n - len(out), len(view))
            out += view[:take]
            self.consume(take, hashed=hashed)
        return bytes(out)


def inflate_capped(
    r: PackStream, declared: int, start: int, sink: Callable[[bytes], object]
) -> int:
    """Inflate one entry's zlib stream, never producing more than ``declared + 1`` bytes.

    Returns:
        The inflated size, which equals ``declared``.

    Raises:
        BundleError: corrupt zlib data, a truncated pack, or a size that is not the
            declared one.
    """
    d = zlib.decompressobj()
    produced = 0
    while not d.eof:
        data = r.peek()
        if not data:
            raise BundleError(f"bundle pack truncated inside the object at offset {start}")
        # zlib copies whatever input follows the stream's end into unused_data: offer
        # about as much as a stream of this size takes, not the whole buffer.
        data = data[: declared + _ZLIB_SLACK]
        try:
            out = d.decompress(data, min(CHUNK, declared + 1 - produced))
        except zlib.error as e:
            raise BundleError(f"object at offset {start} holds corrupt zlib data") from e
        # At the end of the stream CPython may report the rest of the input both as
        # unused_data and as unconsumed_tail: count it once.
        used = len(data) - len(d.unused_data if d.eof else d.unconsumed_tail)
        if used == 0 and not out and not d.eof:
            raise BundleError(f"object at offset {start} holds corrupt zlib data")
        r.consume(used)
        if out:
            produced += len(out)
            if produced > declared:
                raise BundleError(
                    f"object at offset {start} inflates to more than its declared {declared} bytes"
                )
            sink(out)
    if produced != declared:
        raise BundleError(
            f"object at offset {start} inflates to {produced} bytes, it declares {declared}"
        )
    return produced
