"""The envelope reader and the statement parser: strict, bounded, total (rule 1).

Property tests: on any input they return a value or raise one of the named
untrusted-input errors, never anything else; what the writer produces the reader
accepts unchanged; the reader never reads past the declared lengths.
"""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qgitconf.core.envelope import (
    MAGIC,
    Statement,
    format_envelope_header,
    format_statement,
    parse_statement,
    read_envelope,
)
from qgitconf.errors import MalformedError, TooLargeError, UntrustedInputError

HEX40 = st.text("0123456789abcdef", min_size=40, max_size=40)
HEX64 = st.text("0123456789abcdef", min_size=64, max_size=64)
TIMES = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2999, 1, 1)).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC)
)
NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,30}", fullmatch=True)

statements = st.builds(
    Statement,
    target=NAMES,
    sequence=st.integers(0, 2**63),
    commit=HEX40,
    prerequisite=st.none() | HEX40,
    bundle_size=st.integers(1, 2**40),
    bundle_sha256=HEX64,
    tree_sha256=HEX64,
    created=TIMES,
    expires=st.none() | TIMES,
)


@given(statements)
def test_statement_round_trip(s: Statement) -> None:
    assert parse_statement(format_statement(s)) == s


@given(st.binary(max_size=600))
@settings(max_examples=400)
def test_parse_statement_is_total(data: bytes) -> None:
    with contextlib.suppress(UntrustedInputError):
        parse_statement(data)


@given(statements, st.integers(0, 400), st.binary(min_size=1, max_size=3))
@settings(max_examples=300)
def test_mutated_statement_is_rejected_or_reparsed(s: Statement, at: int, junk: bytes) -> None:
    data = bytearray(format_statement(s))
    pos = at % len(data)
    mutated = bytes(data[:pos]) + junk + bytes(data[pos + 1 :])
    try:
        parsed = parse_statement(mutated)
    except UntrustedInputError:
        return
    # Anything accepted must serialise back to exactly the bytes that were signed.
    assert format_statement(parsed) == mutated


@given(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=64))
def test_envelope_round_trip_leaves_stream_at_bundle(stmt: bytes, sig: bytes, rest: bytes) -> None:
    if not stmt or not sig:
        return
    stream = io.BytesIO(format_envelope_header(stmt, sig) + rest)
    raw = read_envelope(stream)
    assert (raw.statement, raw.signature, stream.read()) == (stmt, sig, rest)


@given(st.binary(max_size=200))
@settings(max_examples=400)
def test_read_envelope_is_total(data: bytes) -> None:
    with contextlib.suppress(UntrustedInputError):
        read_envelope(io.BytesIO(data))


@given(st.binary(max_size=120))
def test_read_envelope_on_magic_prefix_is_total(data: bytes) -> None:
    with contextlib.suppress(UntrustedInputError):
        read_envelope(io.BytesIO(MAGIC + data))


class _Counting(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        chunk = self.data[self.pos : self.pos + len(b)]
        b[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def test_reader_never_reads_past_the_signature() -> None:
    body = format_envelope_header(b"statement\n", b"-----BEGIN PGP SIGNATURE-----\n")
    stream = _Counting(body + b"BUNDLE" * 1000)
    read_envelope(stream)  # type: ignore[arg-type]
    assert stream.pos == len(body)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"QGITCONF-UPDATE 2\n", MalformedError),
        (MAGIC + b"statement-length: 4097\nsignature-length: 1\n\n", TooLargeError),
        (MAGIC + b"statement-length: 1\nsignature-length: 16385\n\n", TooLargeError),
        (MAGIC + b"statement-length: 0\nsignature-length: 1\n\n", MalformedError),
        (MAGIC + b"statement-length: -1\nsignature-length: 1\n\n", MalformedError),
        (MAGIC + b"statement-length: 1 \nsignature-length: 1\n\n", MalformedError),
        (MAGIC + b"signature-length: 1\nstatement-length: 1\n\n", MalformedError),
        (MAGIC + b"statement-length: 1\nsignature-length: 1\nx\n", MalformedError),
        (MAGIC + b"statement-length: 5\nsignature-length: 5\n\nabc", MalformedError),
    ],
)
def test_envelope_header_table(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        read_envelope(io.BytesIO(data))


def test_statement_with_crlf_is_rejected() -> None:
    s = Statement(
        "personal", 1, "a" * 40, None, 1, "b" * 64, "c" * 64, datetime(2026, 1, 1, tzinfo=UTC)
    )
    with pytest.raises(MalformedError):
        parse_statement(format_statement(s).replace(b"\n", b"\r\n"))


SAMPLE = Statement(
    target="personal",
    sequence=7,
    commit="a" * 40,
    prerequisite=None,
    bundle_size=100,
    bundle_sha256="b" * 64,
    tree_sha256="c" * 64,
    created=datetime(2026, 11, 28, 22, 5, 45, tzinfo=UTC),
)


@pytest.mark.parametrize(
    "value",
    [
        "2026-13-28T22:05:45Z",
        "2026-02-30T22:05:45Z",
        "2026-11-28T24:05:45Z",
        "2026-11-28T22:60:45Z",
        "2026-11-28T22:05:60Z",
        "2026-11-28T22:05:45+00:00",
        "2026-11-28 22:05:45Z",
        "2026-11-28T22:05:45.5Z",
        "2026-1-28T22:05:45Z",
    ],
)
def test_statement_times_out_of_range_or_format_are_malformed(value: str) -> None:
    text = format_statement(SAMPLE).replace(b"2026-11-28T22:05:45Z", value.encode())
    with pytest.raises(MalformedError):
        parse_statement(text)


def test_statement_time_is_utc_seconds() -> None:
    assert parse_statement(format_statement(SAMPLE)).created == datetime(
        2026, 11, 28, 22, 5, 45, tzinfo=UTC
    )
