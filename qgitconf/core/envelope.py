"""The update wire format: envelope header and signed statement (DESIGN "Formats").

Pure functions only.  ``read_envelope`` pulls the fixed-size header, the statement
bytes and the signature bytes off a stream with hard caps (rule 1) and returns them
*unparsed*: the caller verifies the signature before it calls ``parse_statement``
(rule 2).  ``format_statement`` / ``format_envelope_header`` are the writer side used by
publish, so both sides share one definition of the format.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import BinaryIO, NamedTuple

from qgitconf.errors import MalformedError, TooLargeError
from qgitconf.limits import MAX_HEADER_LINE, MAX_SIGNATURE_BYTES, MAX_STATEMENT_BYTES

MAGIC = b"QGITCONF-UPDATE 1\n"
STATEMENT_FORMAT = "qgitconf-update-1"

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
# qrexec qube names: a letter first, then letters, digits, '-', '_', '.'; at most 31.
QUBE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,30}")
_KEYS = (
    "format",
    "target",
    "sequence",
    "commit",
    "prerequisite",
    "bundle-size",
    "bundle-sha256",
    "tree-sha256",
    "created",
)
_OPTIONAL_LAST = "expires"


class RawEnvelope(NamedTuple):
    """The statement and signature bytes as read, not yet trusted or parsed."""

    statement: bytes
    signature: bytes


class Statement(NamedTuple):
    """A parsed statement; only built by ``parse_statement`` after the signature checks."""

    target: str
    sequence: int
    commit: str
    prerequisite: str | None
    bundle_size: int
    bundle_sha256: str
    tree_sha256: str
    created: datetime
    expires: datetime | None = None


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise MalformedError(f"input ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _read_line(stream: BinaryIO, cap: int) -> bytes:
    """Read one ``\\n``-terminated line of at most ``cap`` bytes, one byte at a time."""
    buf = bytearray()
    while True:
        ch = stream.read(1)
        if not ch:
            raise MalformedError("input ended inside the envelope header")
        buf += ch
        if ch == b"\n":
            return bytes(buf)
        if len(buf) >= cap:
            raise MalformedError("envelope header line too long")


def _length_line(line: bytes, name: bytes, cap: int) -> int:
    prefix = name + b": "
    if not line.startswith(prefix) or not line.endswith(b"\n"):
        raise MalformedError(f"expected '{name.decode()}' line in envelope header")
    value = line[len(prefix) : -1].decode("ascii", errors="replace")
    if not _DECIMAL.fullmatch(value):
        raise MalformedError(f"bad {name.decode()} in envelope header")
    n = int(value)
    if n == 0:
        raise MalformedError(f"{name.decode()} is zero")
    if n > cap:
        raise TooLargeError(f"{name.decode()} {n} exceeds {cap}")
    return n


def read_envelope(stream: BinaryIO) -> RawEnvelope:
    """Read the envelope header, statement and signature from ``stream`` (rule 1).

    Leaves ``stream`` positioned at the first bundle byte.

    Raises:
        MalformedError: wrong magic, header lines or early end of input.
        TooLargeError: a declared length above its fixed cap.
    """
    magic = _read_exact(stream, len(MAGIC))
    if magic != MAGIC:
        raise MalformedError("not a qgitconf update (bad magic line)")
    n = _length_line(_read_line(stream, MAX_HEADER_LINE), b"statement-length", MAX_STATEMENT_BYTES)
    m = _length_line(_read_line(stream, MAX_HEADER_LINE), b"signature-length", MAX_SIGNATURE_BYTES)
    if _read_line(stream, MAX_HEADER_LINE) != b"\n":
        raise MalformedError("envelope header not followed by an empty line")
    statement = _read_exact(stream, n)
    signature = _read_exact(stream, m)
    return RawEnvelope(statement=statement, signature=signature)


def format_envelope_header(statement: bytes, signature: bytes) -> bytes:
    """Return the envelope header and both blobs, ready to be followed by the bundle."""
    if len(statement) > MAX_STATEMENT_BYTES or len(signature) > MAX_SIGNATURE_BYTES:
        raise TooLargeError("statement or signature larger than the format allows")
    head = (
        MAGIC
        + f"statement-length: {len(statement)}\n".encode()
        + f"signature-length: {len(signature)}\n".encode()
        + b"\n"
    )
    return head + statement + signature


def _parse_time(value: str, key: str) -> datetime:
    if not _TIME.fullmatch(value):
        raise MalformedError(f"statement {key} is not RFC 3339 UTC seconds")
    try:
        # The format is fixed above; fromisoformat checks the ranges, in C (strptime
        # would import _strptime, locale and calendar at every Receive start).
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError as e:
        raise MalformedError(f"statement {key} is not a valid time") from e


def format_time(when: datetime) -> str:
    """RFC 3339, UTC, whole seconds, as the statement carries it."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_statement(data: bytes) -> Statement:
    """Parse statement bytes strictly: fixed keys, fixed order, nothing else.

    Call only after the signature over ``data`` was verified (rule 2).

    Raises:
        MalformedError: any deviation from the format.
    """
    if len(data) > MAX_STATEMENT_BYTES:
        raise TooLargeError("statement too long")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise MalformedError("statement is not ASCII") from e
    if not text.endswith("\n"):
        raise MalformedError("statement does not end with a newline")
    lines = text[:-1].split("\n")
    keys = list(_KEYS)
    if len(lines) == len(keys) + 1:
        keys.append(_OPTIONAL_LAST)
    if len(lines) != len(keys):
        raise MalformedError(f"statement has {len(lines)} lines, expected {len(_KEYS)} or 10")
    values: dict[str, str] = {}
    for key, line in zip(keys, lines, strict=True):
        prefix = key + ": "
        if not line.startswith(prefix):
            raise MalformedError(f"statement line {line[:40]!r}: expected key {key!r}")
        value = line[len(prefix) :]
        if not value or value != value.strip() or any(not c.isprintable() for c in value):
            raise MalformedError(f"statement value for {key!r} is empty or has bad characters")
        values[key] = value

    if values["format"] != STATEMENT_FORMAT:
        raise MalformedError("unknown statement format")
    if not QUBE_NAME.fullmatch(values["target"]):
        raise MalformedError("statement target is not a valid qube name")
    for key in ("sequence", "bundle-size"):
        if not _DECIMAL.fullmatch(values[key]):
            raise MalformedError(f"statement {key} is not a canonical decimal")
    if not _HEX40.fullmatch(values["commit"]):
        raise MalformedError("statement commit is not 40 lowercase hex digits")
    prereq = values["prerequisite"]
    if prereq != "none" and not _HEX40.fullmatch(prereq):
        raise MalformedError("statement prerequisite is not 40 lowercase hex digits or 'none'")
    for key in ("bundle-sha256", "tree-sha256"):
        if not _HEX64.fullmatch(values[key]):
            raise MalformedError(f"statement {key} is not 64 lowercase hex digits")
    created = _parse_time(values["created"], "created")
    expires = _parse_time(values["expires"], "expires") if "expires" in values else None
    if int(values["bundle-size"]) == 0:
        raise MalformedError("statement bundle-size is zero")
    return Statement(
        target=values["target"],
        sequence=int(values["sequence"]),
        commit=values["commit"],
        prerequisite=None if prereq == "none" else prereq,
        bundle_size=int(values["bundle-size"]),
        bundle_sha256=values["bundle-sha256"],
        tree_sha256=values["tree-sha256"],
        created=created,
        expires=expires,
    )


def format_statement(st: Statement) -> bytes:
    """Serialise a statement in the exact format ``parse_statement`` accepts."""
    lines = [
        f"format: {STATEMENT_FORMAT}",
        f"target: {st.target}",
        f"sequence: {st.sequence}",
        f"commit: {st.commit}",
        f"prerequisite: {st.prerequisite or 'none'}",
        f"bundle-size: {st.bundle_size}",
        f"bundle-sha256: {st.bundle_sha256}",
        f"tree-sha256: {st.tree_sha256}",
        f"created: {format_time(st.created)}",
    ]
    if st.expires is not None:
        lines.append(f"expires: {format_time(st.expires)}")
    return ("\n".join(lines) + "\n").encode("ascii")
