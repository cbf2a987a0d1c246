"""Every limit qgitconf applies to untrusted input, in one immutable record.

Rule 1 and rule 5 of DESIGN.md: fixed small caps on the envelope, statement and
signature; configurable caps on the bundle and on what it may inflate to.
"""

from __future__ import annotations

from typing import NamedTuple

# Fixed by the wire format (DESIGN "Formats"); not configurable.
MAX_HEADER_LINE = 64
MAX_STATEMENT_BYTES = 4096
MAX_SIGNATURE_BYTES = 16384
MAX_REPLY_BYTES = 4096

# What the filesystem allows, in bytes (Linux; ext4, btrfs, xfs and tmpfs alike).  Every
# name the agent accepts must be writable together with every name it derives from it
# (issue 14): the temp names of the journal are short and fixed-length (``.qgc-<id>-<i>``,
# under 32 bytes), and kept copies are named by the SHA-256 of their path, so a
# component may use all of NAME_MAX and only the path as a whole needs room.
NAME_MAX = 255
"""Longest file name (one path component), in bytes."""
PATH_MAX = 4096
"""Longest path the kernel takes in one call, in bytes, the terminating NUL included."""
HOME_PREFIX_RESERVE = 256
"""Bytes kept free in front of a tree path for ``$HOME/`` (``/home/user/`` in a qube),
so that ``$HOME/<path>`` still fits PATH_MAX for every program that opens it by name."""
MAX_HOME_PATH_BYTES = PATH_MAX - 1 - HOME_PREFIX_RESERVE
"""Longest tree path accepted, in bytes (3839), whatever a target's rules say."""
MAX_TEMP_NAME_BYTES = 32
"""Longest temp name the agent derives for a write (``journal.temp_name``)."""

MAX_REJECTED_LOG_BYTES = 256 * 1024
"""``rejected.log`` is rotated to ``rejected.log.1`` before it grows past this size, so a
stream of rejected updates uses at most twice this much of the private volume."""
MAX_REJECTED_DETAIL_CHARS = 1024
"""Longest error detail written to one line of ``rejected.log``."""


# Caps on other untrusted or outside input, one place for all (issue 22).
MAX_GPG_STATUS_BYTES = 1 << 16
"""Most bytes of gpg's ``--status-fd`` output read for one verification (far more than one
signature's status lines)."""
MAX_QREXEC_STDERR_BYTES = 64 * 1024
"""Most bytes of a qrexec call's stderr kept (the rest is drained and dropped)."""
MAX_DELTA_CHAIN = 5000
"""Most deltas on the way to a whole object when the agent reads its own packs (git's
default depth is 50)."""
MAX_SIDECAR_BYTES = 256 << 20
"""A known-object sidecar larger than this is not the agent's: ignored."""
MAX_EXPORT_REQUEST_BYTES = 4096
"""Longest request line of the ``qgitconf.Export`` service (one path)."""
MAX_KEY_FILE_BYTES = 1024 * 1024
"""Largest public key file read (the pinned key, the repo's signing key)."""
MAX_SYMLINK_TARGET_BYTES = 1024
"""Longest symlink target accepted, in bytes."""
MAX_LINK_HOPS = 40
"""How many tree symlinks ``pathtree.check_tree`` follows before it calls it a loop."""
MAX_SYSTEM_PREFIXES = 64
"""Most system-file prefixes one setting may name."""
MAX_EXPORT_BYTES = 1024 * 1024
"""Largest file the ``qgitconf.Export`` service sends and ``import`` accepts."""
MAX_EXPORT_HEADER_BYTES = 128
"""Longest header of an Export answer."""
MAX_SECRET_SCAN_BYTES = 8 * 1024 * 1024
"""Most bytes of one file the pre-commit hook scans for secrets."""
MAX_RISK_DIFF_LINES = 50_000
"""Above this many lines a file is not line-diffed by the risk report: every new line
counts as added (more findings, never fewer) and difflib's quadratic worst case is
avoided."""
MAX_RISK_CONFIG_TEXTS = 200
"""Most git/ssh config files of one tree the risk report reads."""
MAX_RISK_CONFIG_BYTES = 1024 * 1024
"""Largest git/ssh config file the risk report reads (a larger one is not read)."""


class Limits(NamedTuple):
    """Caps on one update; a target's toml may lower or raise them.

    A named tuple, like the other small records on the receive path: defining a
    dataclass costs about a millisecond at every start of the Receive service.
    """

    max_bundle_bytes: int = 256 * 1024 * 1024
    max_objects: int = 100_000
    max_object_bytes: int = 64 * 1024 * 1024
    max_inflated_bytes: int = 1024 * 1024 * 1024
    max_tree_entries: int = 50_000
    max_tree_depth: int = 64
    max_path_bytes: int = 4096
    max_bundle_header_bytes: int = 64 * 1024
    max_delta_depth: int = 50

    @classmethod
    def from_mapping(cls, values: dict[str, object]) -> Limits:
        """Build limits from a toml table, refusing unknown keys and non-positive ints.

        Raises:
            ValueError: an unknown key or a value that is not a positive int.
        """
        known = set(cls._fields)
        out: dict[str, int] = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown limit {key!r}")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"limit {key!r} must be a positive integer")
            out[key] = value
        return cls(**out)
