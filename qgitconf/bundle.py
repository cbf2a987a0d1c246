"""Git bundles: written by publish, read strictly by the agent (DESIGN rule 5).

Writing is publish's job and uses the user's git (``git bundle create``: thin and
deltified).  Reading never uses dulwich's ``read_bundle``, which trusts its input: the
header is parsed here with caps and strict formats, the pack is pre-scanned
(``packscan``), then streamed into a quarantine object store with
``add_thin_pack(max_input_size=…)``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from qgitconf.errors import BundleError, TooLargeError, UnsafePathError
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

_V2 = b"# v2 git bundle\n"
_V3 = b"# v3 git bundle\n"
_HEX40 = re.compile(rb"[0-9a-f]{40}")
_REFNAME = re.compile(rb"refs/heads/[A-Za-z][A-Za-z0-9_.-]{0,30}")


@dataclass(frozen=True)
class BundleHeader:
    """What a bundle header declares."""

    prerequisites: tuple[str, ...]
    refs: tuple[tuple[str, str], ...]  # (refname, sha)


def _line(stream: BinaryIO, remaining: list[int]) -> bytes:
    buf = bytearray()
    while True:
        ch = stream.read(1)
        if not ch:
            raise BundleError("bundle header ends early")
        remaining[0] -= 1
        if remaining[0] < 0:
            raise TooLargeError("bundle header too long")
        if ch == b"\n":
            return bytes(buf)
        buf += ch


def read_bundle_header(stream: BinaryIO, limits: Limits) -> BundleHeader:
    """Parse a bundle header strictly, leaving ``stream`` at the pack's first byte.

    Accepts a v2 bundle, or a v3 bundle whose only capability is
    ``@object-format=sha1``.  Refuses non-hex ids, comments on ref lines, unknown
    capabilities, duplicate refs and more than one prerequisite.

    Raises:
        BundleError: the header is not acceptable.
        TooLargeError: the header is longer than ``limits.max_bundle_header_bytes``.
    """
    remaining = [limits.max_bundle_header_bytes]
    first = _line(stream, remaining) + b"\n"
    if first not in (_V2, _V3):
        raise BundleError("not a v2/v3 git bundle")
    prereqs: list[str] = []
    refs: list[tuple[str, str]] = []
    while True:
        line = _line(stream, remaining)
        if not line:
            break
        if line.startswith(b"@"):
            if first != _V3 or refs or prereqs or line != b"@object-format=sha1":
                raise BundleError(f"bundle capability not accepted: {line[:60]!r}")
            continue
        if line.startswith(b"-"):
            sha = line[1:41]
            rest = line[41:]
            if not _HEX40.fullmatch(sha) or (rest and not rest.startswith(b" ")) or refs:
                raise BundleError("bad prerequisite line in bundle")
            prereqs.append(sha.decode("ascii"))
            continue
        sha, sep, name = line.partition(b" ")
        if not sep or not _HEX40.fullmatch(sha) or not _REFNAME.fullmatch(name):
            raise BundleError(f"bad ref line in bundle: {line[:80]!r}")
        refs.append((name.decode("ascii"), sha.decode("ascii")))
    if len(prereqs) > 1:
        raise BundleError("bundle has more than one prerequisite")
    if len(refs) != 1:
        raise BundleError(f"bundle advertises {len(refs)} refs, exactly one is allowed")
    return BundleHeader(tuple(prereqs), tuple(refs))


class Quarantine:
    """A temporary object store whose alternates point at the agent's real store.

    New objects land here; the real store changes only when ``promote`` moves the
    completed pack across.  Whatever happens, ``close`` removes the directory,
    including dulwich's ``tmp_pack_*`` leftovers.
    """

    def __init__(self, tmp_root: Path, real_objects: Path) -> None:
        tmp_root.mkdir(parents=True, exist_ok=True)
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="quarantine-", dir=tmp_root))
        self.objects = self.root / "objects"
        (self.objects / "pack").mkdir(parents=True)
        (self.objects / "info").mkdir()
        (self.objects / "info" / "alternates").write_text(str(real_objects.resolve()) + "\n")
        self.real_objects = real_objects
        self.parsed: dict[bytes, Any] = {}  # new trees, commits and tags, checked
        self.blob_sha256: dict[str, bytes] = {}  # new blob id -> SHA-256 of its content
        from dulwich.object_store import DiskObjectStore

        self.store: Any = DiskObjectStore(str(self.objects))

    @property
    def new_shas(self) -> list[bytes]:
        """Ids of every object the ingested pack brought."""
        return [*self.parsed, *(s.encode("ascii") for s in self.blob_sha256)]

    def __getitem__(self, sha: bytes) -> Any:
        """An object by id: the already parsed new ones first, then the store."""
        obj = self.parsed.get(sha)
        return obj if obj is not None else self.store[sha]

    def ingest(self, stream: BinaryIO, max_input: int, limits: Limits) -> None:
        """Stream a pack from ``stream`` into the quarantine and check every new object.

        Raises:
            BundleError: the pack is corrupt, thin against a missing object, or holds
                an object that fails ``check()``.
            TooLargeError: more input, objects, inflated bytes, object or delta result
                size, or delta depth than allowed (``prescan_pack``).
        """
        from dulwich.errors import ChecksumMismatch, ObjectFormatException

        from qgitconf.packscan import prescan_pack

        # Rule 5: caps on objects, sizes, delta results and depth before dulwich inflates.
        start = stream.tell()
        size = stream.seek(0, os.SEEK_END) - start
        stream.seek(start)
        prescan_pack(stream, size, limits)
        stream.seek(start)
        try:
            pack = self.store.add_thin_pack(stream.read, None, max_input_size=max_input)
        except KeyError as e:
            raise BundleError(
                "bundle pack refers to an object that is not here (missing prerequisite)"
            ) from e
        except ChecksumMismatch as e:
            raise BundleError("bundle pack checksum mismatch or trailing data") from e
        except Exception as e:  # dulwich raises many kinds on hostile packs
            name = type(e).__name__
            if name == "PackInputTooLarge":
                raise TooLargeError("bundle pack larger than the limit") from e
            if name == "UnresolvedDeltas":
                raise BundleError("bundle pack has deltas against a missing prerequisite") from e
            raise BundleError(f"bundle pack rejected ({name})") from e
        try:
            if len(pack.index) > limits.max_objects:
                raise TooLargeError(f"bundle has more than {limits.max_objects} objects")
            # One sequential pass over the completed pack: check() every object (dulwich
            # does not fsck on ingestion), keep trees and commits parsed for the walks
            # that follow, and hash each blob once for the tree digest.
            for obj in pack.iterobjects():
                obj.check()
                sha = obj.id.decode("ascii")
                if obj.type_name == b"blob":
                    self.blob_sha256[sha] = hashlib.sha256(obj.as_raw_string()).digest()
                else:
                    self.parsed[obj.id] = obj
        except ObjectFormatException as e:
            text = sanitize(str(e))
            if text.startswith(("invalid name", "invalid mode")):
                # A tree entry git itself would refuse: a path rule (rule 7).
                raise UnsafePathError(f"tree entry refused: {text}") from e
            raise BundleError(f"bundle holds a malformed object: {text}") from e
        finally:
            pack.close()

    def promote(self) -> None:
        """Move the verified pack files into the real object store (rule 8: last step)."""
        dest = self.real_objects / "pack"
        dest.mkdir(parents=True, exist_ok=True)
        packs = sorted((self.objects / "pack").glob("pack-*.pack"))
        for pack in packs:
            idx = pack.with_suffix(".idx")
            # The index goes last: git and dulwich look packs up by their .idx.
            os.replace(pack, dest / pack.name)
            os.replace(idx, dest / idx.name)
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
