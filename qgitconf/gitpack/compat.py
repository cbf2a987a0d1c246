"""The few dulwich primitives whose API or meaning changed between 0.21 and 1.x.

qgitconf supports dulwich from 0.21.2 (Debian 12; Fedora 41 has 0.21.7, Fedora 42
0.22.1, Debian 13 0.22.7 without its compiled extension) to the newest 1.x.  Four
things differ across that range, and qgitconf owns three of them outright, so every
version parses untrusted bytes the same way and refuses the same things:

* ``parse_tree``: ``parse_tree(text, strict)`` before 0.25, ``parse_tree(text,
  sha_len, strict=...)`` after (on 0.21 a positional 20 silently means
  ``strict=True``), and the C, Rust and Python versions are lax in different ways
  (``strtol`` takes ``+`` and spaces, ``int`` takes ``_``).  :func:`parse_tree_entries`
  is qgitconf's own strict parser, one regular expression: what git writes, nothing
  else.
* ``pack_object_header`` takes an ``ObjectFormat`` from 1.x on: the type-and-size
  varint of a pack entry is written here (:func:`pack_object_header`).
* ``Commit.extract_signature`` exists from 0.24 only, and re-serialises the commit
  (``raw_without_sig``), which can differ from the bytes that were signed:
  :func:`split_commit_signature` cuts payload and signature from the raw bytes as
  ``git verify-commit`` does.
* ``Repo.init_bare(..., default_branch=)`` exists from 0.21.7:
  :func:`qgitconf.gitpack.compatinit.init_bare` passes it where the signature has it,
  else points HEAD itself (0.21.2 reads no configuration either way); it lives apart,
  with dulwich.repo, which this module's callers on the apply rows never load.

Nothing here compares version strings; :data:`MIN_DULWICH` is the one minimum that
``pyproject.toml``, ``debian/control`` and the RPM spec also state (a test checks).
"""

from __future__ import annotations

import hashlib
import re
from binascii import hexlify
from typing import Any

import dulwich
from dulwich.errors import ObjectFormatException

__all__ = [
    "MIN_DULWICH",
    "commit_raw",
    "dulwich_version",
    "pack_object_header",
    "parse_tree_entries",
    "split_commit_signature",
]

MIN_DULWICH = (0, 21, 2)

# One tree entry as git writes it: an octal mode without leading zero, a space, a name
# without NUL (empty and bad names are refused by the caller, worded as Tree.check
# words them), a NUL and a 20-byte SHA-1.  Atomic groups: no backtracking, linear time.
_ENTRY = rb"(?>([1-7][0-7]*)) (?>([^\0]*))\0(.{20})"
_ENTRY_RE = re.compile(_ENTRY, re.DOTALL)
_TREE_RE = re.compile(rb"(?:" + _ENTRY + rb")*+", re.DOTALL)


def dulwich_version() -> tuple[int, ...]:
    """The installed dulwich's version tuple (for ``doctor``)."""
    return tuple(int(part) for part in dulwich.__version__[:3])


def parse_tree_entries(data: bytes) -> list[tuple[bytes, int, bytes]]:
    """``(name, mode, hex id)`` of each entry of a raw tree, parsed strictly.

    The same result as dulwich's ``parse_tree`` on every tree git writes, on every
    dulwich version; anything else (a mode with a leading zero or a character other
    than an octal digit, a missing space or NUL, a short id) is refused.

    Raises:
        ObjectFormatException: the tree is malformed.
    """
    if _TREE_RE.fullmatch(data) is None:
        raise ObjectFormatException(f"malformed tree entry at offset {_first_bad(data)}")
    return [(name, int(mode, 8), hexlify(sha)) for mode, name, sha in _ENTRY_RE.findall(data)]


def _first_bad(data: bytes) -> int:
    pos = 0
    while (m := _ENTRY_RE.match(data, pos)) is not None:
        pos = m.end()
    return pos


def pack_object_header(kind: int, size: int) -> bytes:
    """The header of a whole (undeltified) pack entry: type and size, as a varint
    (git's ``Documentation/gitformat-pack``): 4 bits of size in the first byte, then
    7 bits a byte, the high bit set while more follow."""
    if not 1 <= kind <= 4 or size < 0:
        raise ValueError(f"not a whole object: type {kind}, size {size}")
    out = bytearray()
    c = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(c | 0x80)
        c = size & 0x7F
        size >>= 7
    out.append(c)
    return bytes(out)


def split_commit_signature(raw: bytes) -> tuple[bytes, bytes | None]:
    """The signed payload and the signature of a raw commit, cut as git cuts them.

    git's ``parse_buffer_signed_by_header`` for a SHA-1 repository: the ``gpgsig``
    header's value and continuation lines are the signature; every other header line
    is the payload, except another algorithm's ``gpgsig-*`` header with its
    continuation lines; from the blank line on, everything is the payload.  Nothing is
    re-serialised: the payload is exactly the bytes ``git verify-commit`` hands gpg.

    Returns:
        ``(payload, signature)``; ``signature`` is None when there is no ``gpgsig``.
    """
    payload: list[bytes] = []
    signature: list[bytes] = []
    saw = in_signature = other = False
    pos, end = 0, len(raw)
    while pos < end:
        nl = raw.find(b"\n", pos)
        nxt = end if nl < 0 else nl + 1
        line = raw[pos:nxt]
        sig: bytes | None = None
        if in_signature and line.startswith(b" "):
            sig = line[1:]
        elif line.startswith(b"gpgsig "):
            sig = line[7:]
            other = False
        elif line.startswith(b"gpgsig"):
            other = True
        elif other and not line.startswith(b" "):
            other = False
        if sig is not None:
            signature.append(sig)
            saw = in_signature = True
        else:
            if line.startswith(b"\n"):  # the blank line: the rest is the message
                nxt = end
                line = raw[pos:]
            if not other:
                payload.append(line)
            in_signature = False
        pos = nxt
    return b"".join(payload), b"".join(signature) if saw else None


def commit_raw(commit: Any) -> bytes:
    """The raw bytes of a dulwich ``Commit`` read from a store, checked to be the
    bytes its id names (so nothing re-serialised stands in for what was signed).

    Raises:
        ValueError: the bytes do not hash to the commit's id.
    """
    raw = bytes(commit.as_raw_string())
    digest = hashlib.sha1(b"commit %d\x00" % len(raw))  # noqa: S324 - git object ids
    digest.update(raw)
    if digest.hexdigest().encode("ascii") != bytes(commit.id):
        raise ValueError("a commit's bytes do not match its id")
    return raw
