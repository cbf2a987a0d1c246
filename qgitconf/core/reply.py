"""Parse a target's reply to Receive: untrusted, bounded, strict schema.

The reply is only a hint (which commit the target accepted, to use as the next
bundle's prerequisite); it never decides anything about security.  Text fields are
sanitised before anyone can print them.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from qgitconf.errors import BadReplyError
from qgitconf.limits import MAX_REPLY_BYTES
from qgitconf.sanitize import sanitize

_HEX40 = re.compile(r"[0-9a-f]{40}")
_CODE = re.compile(r"[a-z][a-z0-9-]{0,39}")


class Reply(NamedTuple):
    """A reply that passed the schema; text already sanitised."""

    result: str  # staged | up-to-date | rejected | error
    commit: str | None = None
    sequence: int | None = None
    applied: str | None = None
    reason: str | None = None
    detail: str | None = None

    @property
    def accepted(self) -> bool:
        return self.result in ("staged", "up-to-date")


def parse_reply(data: bytes) -> Reply:
    """Parse one JSON line.

    Raises:
        BadReplyError: anything outside the schema.
    """
    if len(data) > MAX_REPLY_BYTES:
        raise BadReplyError("reply too long")
    lines = data.split(b"\n")
    if len(lines) != 2 or lines[1] != b"":
        raise BadReplyError("reply is not exactly one line")
    try:
        obj = json.loads(lines[0].decode("utf-8"))
    # RecursionError: 4096 bytes of "[[[[..." nest deeper than json's C scanner allows.
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadReplyError("reply is not JSON") from e
    if not isinstance(obj, dict):
        raise BadReplyError("reply is not a JSON object")
    result = obj.get("result")
    if result in ("staged", "up-to-date"):
        if set(obj) != {"result", "commit", "sequence", "applied"}:
            raise BadReplyError("reply has unexpected keys")
        commit, seq, applied = obj["commit"], obj["sequence"], obj["applied"]
        if not isinstance(commit, str) or not _HEX40.fullmatch(commit):
            raise BadReplyError("reply commit is not 40 hex")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise BadReplyError("reply sequence is not a non-negative integer")
        if applied is not None and (not isinstance(applied, str) or not _HEX40.fullmatch(applied)):
            raise BadReplyError("reply applied is not 40 hex or null")
        return Reply(result, commit=commit, sequence=seq, applied=applied)
    if result in ("rejected", "error"):
        if set(obj) != {"result", "reason", "detail"}:
            raise BadReplyError("reply has unexpected keys")
        reason, detail = obj["reason"], obj["detail"]
        if not isinstance(reason, str) or not _CODE.fullmatch(reason):
            raise BadReplyError("reply reason is not a code")
        if not isinstance(detail, str):
            raise BadReplyError("reply detail is not text")
        return Reply(result, reason=reason, detail=sanitize(detail[:1000]))
    raise BadReplyError("reply result is unknown")
