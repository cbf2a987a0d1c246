"""The verdict on gpg's ``--status-fd`` lines: exactly one good signature by a pinned
key, every other line on an allowlist (rules 2, 6).  Pure: it judges the bytes it is
given."""

from __future__ import annotations

import re

from qgitconf.limits import MAX_GPG_STATUS_BYTES

_COUNTED = ("NEWSIG", "GOODSIG", "VALIDSIG")


_INFORMATIONAL = frozenset(
    {
        "KEY_CONSIDERED",
        "KEYEXPIRED",
        "KEYREVOKED",
        "SIG_ID",
        "TRUST_UNDEFINED",
        "TRUST_MARGINAL",
        "TRUST_FULLY",
        "TRUST_ULTIMATE",
        "VERIFICATION_COMPLIANCE_MODE",
        "NOTATION_NAME",
        "NOTATION_FLAGS",
        "NOTATION_DATA",
        "POLICY_URL",
    }
)


_STATUS_PREFIX = b"[GNUPG:] "


_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")  # v4 or v5 key


_KEY_ID = re.compile(r"[0-9A-F]{16}|[0-9A-F]{40}|[0-9A-F]{64}")  # long id or fingerprint


def counted_signer(status: bytes, returncode: int) -> str:
    """Judge what one ``gpg --verify --status-fd`` run reported.

    Pure: it only reads its arguments.

    Args:
        status: everything gpg wrote to its status fd.
        returncode: gpg's exit status.

    Returns:
        The primary-key fingerprint (upper-case hex) of the one good, valid signature.

    Raises:
        ValueError: the signature does not count; the message says why.
    """
    if len(status) > MAX_GPG_STATUS_BYTES:
        raise ValueError("gpg reported too much")
    seen: dict[str, list[list[str]]] = {}
    for line in status.split(b"\n"):
        if not line:
            continue
        if not line.startswith(_STATUS_PREFIX):
            raise ValueError("gpg status output is malformed")
        keyword, *args = line[len(_STATUS_PREFIX) :].decode("utf-8", "replace").split(" ")
        seen.setdefault(keyword, []).append(args)
    signatures = len(seen.get("NEWSIG", ()))
    if signatures != 1:
        raise ValueError(f"{signatures} signatures, exactly one is required")
    others = sorted(k for k in seen if k not in _COUNTED and k not in _INFORMATIONAL)
    if others:
        raise ValueError(f"signature does not count ({', '.join(others)})")
    if returncode != 0:
        raise ValueError(f"signature does not count (gpg exit status {returncode})")
    good, valid = seen.get("GOODSIG", []), seen.get("VALIDSIG", [])
    if len(good) != 1 or len(valid) != 1:
        raise ValueError("signature does not count (not reported good and valid)")
    if len(valid[0]) < 10 or not good[0]:
        raise ValueError("gpg status output is malformed")
    signing_key, primary, key_id = valid[0][0], valid[0][9], good[0][0]
    if not (
        _FINGERPRINT.fullmatch(signing_key)
        and _FINGERPRINT.fullmatch(primary)
        and _KEY_ID.fullmatch(key_id)
        and signing_key.endswith(key_id)
    ):
        raise ValueError("gpg status output is malformed")
    return primary
