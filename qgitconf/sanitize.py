"""Make untrusted text safe to show to a human (DESIGN rule 11).

Control characters (C0, DEL, C1), bidirectional overrides and isolates, and other
invisible format characters are replaced by a visible escape such as ``\\x1b`` or
``\\u202e``; invalid UTF-8 becomes ``\\xNN``.  Newlines can be kept for multi-line
text (diffs); tabs are kept as they are harmless.
"""

from __future__ import annotations

import unicodedata

_BIDI_AND_INVISIBLE = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _needs_escape(ch: str, keep_newlines: bool) -> bool:
    if ch == "\t" or (keep_newlines and ch == "\n"):
        return False
    if ch == "\\":
        return False
    code = ord(ch)
    if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
        return True
    if ch in _BIDI_AND_INVISIBLE:
        return True
    return unicodedata.category(ch) in ("Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def sanitize(text: str | bytes, *, keep_newlines: bool = False) -> str:
    """Return ``text`` with every control, bidi and invisible character escaped.

    Args:
        text: untrusted text; bytes are decoded as UTF-8, bad bytes escaped.
        keep_newlines: keep ``\\n`` (for multi-line output such as diffs).

    Returns:
        A string that cannot move the cursor, change colours or reorder text.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape_char(c) if _needs_escape(c, keep_newlines) else c for c in text)
