"""Git bundles: written by publish, read strictly by the agent (DESIGN rule 5).

Writing is publish's job and uses the user's git (``git pack-objects --thin``).
Reading never uses dulwich's ``read_bundle``, which trusts its input: the header is
parsed here with caps and strict formats, the pack is pre-scanned (``packscan``),
resolved and checked (``packindex``), and only then written into a quarantine
object store.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from dulwich.objects import ObjectID, Tree

from qgitconf.errors import BundleError, TooLargeError
from qgitconf.fsutil import atomic_write, private_dir
from qgitconf.gitpack.objcache import KNOWN_DIR, SUFFIX, Known, format_sidecar, load_known
from qgitconf.gitpack.packindex import index_pack, write_pack
from qgitconf.gitpack.packread import PackReader
from qgitconf.gitpack.packscan import prescan_pack
from qgitconf.limits import Limits

_V2 = b"# v2 git bundle\n"
_V3 = b"# v3 git bundle\n"
_HEX40 = re.compile(rb"[0-9a-f]{40}")
_REFNAME = re.compile(rb"refs/heads/[A-Za-z][A-Za-z0-9_.-]{0,30}")


class BundleHeader(NamedTuple):
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
    completed pack across.  Whatever happens, ``close`` removes the directory.  The
    dulwich stores are opened on first use: a first update never needs them.
    """

    def __init__(self, tmp_root: Path, real_objects: Path) -> None:
        tmp_root.mkdir(parents=True, exist_ok=True)
        self.root = private_dir(tmp_root, "quarantine-")
        self.objects = self.root / "objects"
        (self.objects / "pack").mkdir(parents=True)
        (self.objects / "info").mkdir()
        (self.objects / "info" / "alternates").write_text(str(real_objects.resolve()) + "\n")
        self.real_objects = real_objects
        self.parsed: dict[bytes, Any] = {}  # new commits and tags (and trees once read)
        self.trees: dict[bytes, bytes] = {}  # new trees' checked content, by hex id
        self.blob_sha256: dict[str, bytes] = {}  # new blob id -> SHA-256 of its content

    @functools.cached_property
    def store(self) -> Any:
        """The quarantine's object store (its alternates reach the real one)."""
        # Lazy, as real_store's: dulwich.object_store costs about 20 ms and a first
        # update never opens it (the first-update receive rows of ``make bench``).
        from dulwich.object_store import DiskObjectStore

        return DiskObjectStore(str(self.objects))

    @functools.cached_property
    def real_store(self) -> Any:
        """The agent's object store (dulwich): objects in no pack (loose ones)."""
        from dulwich.object_store import DiskObjectStore

        return DiskObjectStore(str(self.real_objects))

    @functools.cached_property
    def real_packs(self) -> PackReader:
        """The agent's packs, where a thin pack's bases and the prerequisite are: read
        without dulwich's object store, whose import alone cost the Receive service
        about 15 ms (the "publish -> staged" row of ``make bench``)."""
        return PackReader(self.real_objects, lazy=True)

    def real_has(self, hexsha: str) -> bool:
        """Whether the agent's store holds object ``hexsha`` (a pack, else dulwich's)."""
        return hexsha in self.real_packs or hexsha.encode("ascii") in self.real_store

    def real_raw(self, hexsha: str) -> tuple[int, bytes]:
        """``(type number, content)`` of ``hexsha`` from the agent's store.

        Raises:
            KeyError: the store does not hold it.
        """
        try:
            return self.real_packs.get_raw(hexsha)
        except KeyError:
            pass
        real = self.real_store
        if hexsha.encode("ascii") not in real:
            raise KeyError(hexsha)
        kind, data = real.get_raw(hexsha.encode("ascii"))
        return int(kind), bytes(data)

    @functools.cached_property
    def known(self) -> Known:
        """What the checks of earlier packs left beside them (``objcache``)."""
        return load_known(self.known_dir)

    @property
    def known_dir(self) -> Path:
        """Where the sidecars live: beside the object store, out of git's way."""
        return self.real_objects.parent / KNOWN_DIR

    def blob_digests(self) -> dict[str, bytes]:
        """SHA-256 of blob contents by id: the new blobs and the ones known before."""
        return {**self.known.blob_sha256, **self.blob_sha256}

    @property
    def new_shas(self) -> list[bytes]:
        """Ids of every object the ingested pack brought."""
        new = {*self.parsed, *self.trees, *(s.encode("ascii") for s in self.blob_sha256)}
        return list(new)

    def raw_tree(self, sha: bytes) -> bytes | None:
        """A new or known tree's checked content by hex id, or None (``gitstore`` walks)."""
        data = self.trees.get(sha)
        return data if data is not None else self.known.trees.get(sha)

    def __getitem__(self, sha: bytes) -> Any:
        """An object by id: the new ones (checked on ingestion) first, then the store."""
        obj = self.parsed.get(sha)
        if obj is not None:
            return obj
        data = self.raw_tree(sha)
        if data is None:
            return self.store[sha]
        tree = Tree.from_raw_string(Tree.type_num, data, ObjectID(sha))
        self.parsed[sha] = tree
        return tree

    def ingest(self, stream: BinaryIO, max_input: int, limits: Limits) -> None:
        """Check the pack at ``stream``'s position and write it into the quarantine.

        Three steps, each reading the pack sequentially: the pre-scan applies the caps
        before anything is resolved (``prescan_pack``); ``index_pack`` resolves every
        delta once, ``check()``-s every commit, tree and tag and hashes every blob;
        ``write_pack`` writes the pack, completed with its thin bases, and its index.

        Raises:
            BundleError: the pack is corrupt, thin against a missing object, or holds
                an object that fails ``check()``.
            TooLargeError: more input, objects, inflated bytes, object or delta result
                size, or delta depth than allowed.
            UnsafePathError: a tree entry git itself would refuse.
        """
        start = stream.tell()
        size = stream.seek(0, os.SEEK_END) - start
        if size > max_input:
            raise TooLargeError("bundle pack larger than the limit")
        stream.seek(start)
        summary = prescan_pack(stream, size, limits)  # rule 5: the caps come first

        def lookup(sha: bytes) -> tuple[int, bytes]:
            return self.real_raw(sha.hex())

        indexed = index_pack(stream, start, summary, lookup, limits)
        if len(indexed.index) + len(indexed.external) > limits.max_objects:
            raise TooLargeError(f"bundle has more than {limits.max_objects} objects")
        self._refuse_collisions(indexed.blob_sha256, indexed.trees)
        pack = write_pack(stream, start, summary, indexed, lookup, self.objects / "pack")
        sidecar = format_sidecar(indexed.blob_sha256, indexed.trees)
        atomic_write(self.root / pack.with_suffix(SUFFIX).name, sidecar, 0o444)
        self.parsed = indexed.parsed
        self.trees = indexed.trees
        self.blob_sha256 = indexed.blob_sha256

    def _refuse_collisions(
        self, blob_sha256: Mapping[str, bytes], trees: Mapping[bytes, bytes]
    ) -> None:
        """An id the agent knows must come with the content it had (SHA-1 collisions).

        Raises:
            BundleError: a blob or tree id is known with other content.
        """
        known = self.known
        checks: tuple[tuple[str, Mapping[Any, bytes], Mapping[Any, bytes]], ...] = (
            ("blob", blob_sha256, known.blob_sha256),  # by hex id (str): SHA-256
            ("tree", trees, known.trees),  # by hex id (bytes): content
        )
        for kind, new, old in checks:
            for sha, content in new.items():
                if old.get(sha, content) != content:
                    name = sha.decode("ascii") if isinstance(sha, bytes) else sha
                    raise BundleError(
                        f"{kind} {name} is known here with other content (a SHA-1 collision)",
                        code="sha1-collision",
                    )

    def promote(self) -> None:
        """Move the verified pack files into the real object store (rule 8: last step)."""
        dest = self.real_objects / "pack"
        dest.mkdir(parents=True, exist_ok=True)
        packs = sorted((self.objects / "pack").glob("pack-*.pack"))
        for pack in packs:
            sidecar = self.root / pack.with_suffix(SUFFIX).name
            if sidecar.exists():
                self.known_dir.mkdir(exist_ok=True)
                os.replace(sidecar, self.known_dir / sidecar.name)
            # The index goes last: git and dulwich look packs up by their .idx.
            os.replace(pack, dest / pack.name)
            os.replace(pack.with_suffix(".idx"), dest / pack.with_suffix(".idx").name)
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        for opened in ("store", "real_store", "real_packs"):
            if opened in self.__dict__:
                self.__dict__[opened].close()
        shutil.rmtree(self.root, ignore_errors=True)
