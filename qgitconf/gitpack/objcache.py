"""What the agent learned while checking a pack, kept beside it (a cache).

When an update's pack is promoted, ``qgitconf-objects/pack-<sha>.qgc`` is written
in the agent's repository (beside ``objects/``, where git does not look): the
SHA-256 of every new blob's content and the raw content of every new tree, both taken
from the bytes the agent checked.  The next update's tree digest (``tree-sha256``) and
tree walk then read the unchanged part of the tip from these files instead of
resolving delta chains of older packs with dulwich.

Nothing here is trusted more than the object store beside it: the files live in the
agent's own repository, which no update can write (rule 7), and hold only what was
derived from objects that passed every check.  A file that does not parse is ignored
and the store is read instead.  The cache also catches a SHA-1 collision: an update
that brings a known id with other content is refused (``Quarantine.ingest``).

Format: ``QGITCONF-OBJECTS 1\\n``, then records: ``B`` + 20-byte id + 32-byte SHA-256,
or ``T`` + 20-byte id + 4-byte big-endian length + the tree's content.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from qgitconf.limits import MAX_SIDECAR_BYTES

__all__ = ["KNOWN_DIR", "SUFFIX", "Known", "format_sidecar", "load_known", "parse_sidecar"]

MAGIC = b"QGITCONF-OBJECTS 1\n"
SUFFIX = ".qgc"
KNOWN_DIR = "qgitconf-objects"
_ID = 20
_DIGEST = 32
_LEN = 4


class Known:
    """Blob SHA-256s (by hex id) and raw trees (by hex id, bytes) from the sidecars."""

    __slots__ = ("blob_sha256", "trees")

    def __init__(self) -> None:
        self.blob_sha256: dict[str, bytes] = {}
        self.trees: dict[bytes, bytes] = {}


def format_sidecar(blob_sha256: Mapping[str, bytes], trees: Mapping[bytes, bytes]) -> bytes:
    """The sidecar of one pack: its blobs' SHA-256s and its trees' contents."""
    out = [MAGIC]
    for sha, digest in blob_sha256.items():
        out.append(b"B" + bytes.fromhex(sha) + digest)
    for hexsha, raw in trees.items():
        out.append(b"T" + bytes.fromhex(hexsha.decode("ascii")) + len(raw).to_bytes(_LEN, "big"))
        out.append(raw)
    return b"".join(out)


def parse_sidecar(data: bytes) -> Known:
    """Parse one sidecar.

    Raises:
        ValueError: not a sidecar, or truncated.
    """
    if not data.startswith(MAGIC):
        raise ValueError("not a qgitconf objects file")
    known = Known()
    pos, end = len(MAGIC), len(data)
    view = memoryview(data)
    while pos < end:
        kind = data[pos : pos + 1]
        sha = view[pos + 1 : pos + 1 + _ID].hex()
        pos += 1 + _ID
        if kind == b"B":
            digest = data[pos : pos + _DIGEST]
            pos += _DIGEST
            if len(digest) != _DIGEST:
                raise ValueError("truncated blob record")
            known.blob_sha256[sha] = digest
        elif kind == b"T":
            size = int.from_bytes(data[pos : pos + _LEN], "big")
            pos += _LEN
            raw = data[pos : pos + size]
            pos += size
            if pos > end:
                raise ValueError("truncated tree record")
            known.trees[sha.encode("ascii")] = raw
        else:
            raise ValueError("unknown record")
        if pos > end:
            raise ValueError("truncated record")
    return known


def load_known(directory: Path) -> Known:
    """Merge the sidecars in ``directory``; unreadable or malformed ones are skipped."""
    known = Known()
    try:  # not ``glob``: its pattern compiling costs every apply a few ms
        names = sorted(n for n in os.listdir(directory) if n.startswith("pack-"))
    except OSError:
        names = []
    for path in (directory / n for n in names if n.endswith(SUFFIX)):
        try:
            if path.stat().st_size > MAX_SIDECAR_BYTES:
                continue
            one = parse_sidecar(path.read_bytes())
        except (OSError, ValueError):
            continue
        known.blob_sha256.update(one.blob_sha256)
        known.trees.update(one.trees)
    return known
