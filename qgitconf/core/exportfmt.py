"""The ``qgitconf.Export`` answer's wire format: built by the target, parsed by config-mgmt.

``QGITCONF-EXPORT 2\\nqube: NAME\\nmode: <100644|100755>\\nsize: N\\n\\n`` followed by
exactly N bytes.  Pure: no I/O.  Version 1 answers had no ``qube:`` line and are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qgitconf.core.envelope import QUBE_NAME
from qgitconf.errors import ConfigError, MalformedError
from qgitconf.limits import MAX_EXPORT_BYTES, MAX_EXPORT_HEADER_BYTES

__all__ = [
    "MAGIC",
    "MAGIC_V1",
    "MAX_EXPORT_HEADER_BYTES",
    "ExportedFile",
    "format_export",
    "parse_export",
]

MAGIC = b"QGITCONF-EXPORT 2\n"
MAGIC_V1 = b"QGITCONF-EXPORT 1\n"  # before the answer named its qube: refused
_QUBE_LINE = re.compile(rb"qube: ([A-Za-z][A-Za-z0-9_.-]{0,30})")
_MODE_LINE = re.compile(rb"mode: (100644|100755)\n")
_SIZE_LINE = re.compile(rb"size: (0|[1-9][0-9]{0,9})\n")


def format_export(qube: str, mode: int, content: bytes) -> bytes:
    """The Export answer: the header naming ``qube``, then ``content``.

    Raises:
        ConfigError: ``qube`` is not a valid qube name.
    """
    if QUBE_NAME.fullmatch(qube) is None:
        raise ConfigError("this qube's name from QubesDB is not a qube name", code="no-qubesdb")
    head = f"qube: {qube}\nmode: {mode:o}\nsize: {len(content)}\n\n"
    return MAGIC + head.encode("ascii") + content


@dataclass(frozen=True)
class ExportedFile:
    """A file as another qube sent it, parsed but not trusted.

    Attributes:
        qube: The name the answering qube gave for itself.
        mode: The git mode (``0o100644`` or ``0o100755``).
        content: The file's bytes.
    """

    qube: str
    mode: int
    content: bytes


def parse_export(data: bytes, cap: int = MAX_EXPORT_BYTES) -> ExportedFile:
    """Parse an Export answer: magic, ``qube:``, ``mode:``, ``size:``, a blank line,
    exactly size bytes.  Pure: no I/O, bounded header.

    Raises:
        MalformedError: anything else (including trailing bytes, and a version 1
            answer, which does not name its qube).
    """
    if data.startswith(MAGIC_V1):
        raise MalformedError(
            "the answer is from an older qgitconf that does not name its qube; "
            "update qgitconf in that qube"
        )
    if not data.startswith(MAGIC):
        raise MalformedError("the answer is not a qgitconf export")
    rest = data[len(MAGIC) :]
    head, sep, content = rest.partition(b"\n\n")
    if not sep or len(head) > MAX_EXPORT_HEADER_BYTES:
        raise MalformedError("the export header is malformed")
    lines = head.split(b"\n")
    if len(lines) != 3:
        raise MalformedError("the export header is malformed")
    q = _QUBE_LINE.fullmatch(lines[0])
    m = _MODE_LINE.fullmatch(lines[1] + b"\n")
    n = _SIZE_LINE.fullmatch(lines[2] + b"\n")
    if q is None or m is None or n is None:
        raise MalformedError("the export header is malformed")
    size = int(n.group(1))
    if size > cap or size != len(content):
        raise MalformedError(f"the export says {size} bytes but carries {len(content)}")
    return ExportedFile(q.group(1).decode("ascii"), int(m.group(1), 8), content)
