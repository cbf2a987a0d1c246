"""Hostile updates for the lab demo and the tests, built from genuine ones.

``resign`` replaces the statement's signature (a compromised config-mgmt without the
vault can only sign with a key of its own); ``restate`` rewrites statement fields and
signs them with a given signer.  Both keep the wire format exact so that the agent's
rules, not a parse error, reject them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from qgitconf.core.envelope import (
    format_envelope_header,
    format_statement,
    parse_statement,
    read_envelope,
)

Signer = Callable[[bytes], bytes]


def split_update(update: bytes) -> tuple[bytes, bytes, bytes]:
    """(statement, signature, bundle) of a well-formed update."""
    stream = io.BytesIO(update)
    raw = read_envelope(stream)
    return raw.statement, raw.signature, stream.read()


def resign(update: bytes, sign: Signer) -> bytes:
    """The same update, its statement signed by ``sign`` instead."""
    statement, _sig, bundle = split_update(update)
    return format_envelope_header(statement, sign(statement)) + bundle


def restate(update: bytes, sign: Signer, bundle: bytes | None = None, **fields: Any) -> bytes:
    """The update with statement ``fields`` replaced (and optionally another bundle)."""
    statement, _sig, old_bundle = split_update(update)
    st = parse_statement(statement)._replace(**fields)
    new = format_statement(st)
    return format_envelope_header(new, sign(new)) + (old_bundle if bundle is None else bundle)
