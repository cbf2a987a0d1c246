"""Validators for the paths, modes and symlink targets of an incoming tree (DESIGN rule 7).

Rule 7 says: every path of the tip tree has no empty, ``.``, ``..`` or ``.git``
component (any case, NTFS and HFS variants), no control characters, only the modes
100644/100755/120000/040000, no gitlinks, symlink targets that are relative and stay
inside $HOME, lies inside the allowlist, and is never the agent's own config or state
directory or ``~/.gnupg``.

Everything here is pure: no I/O, no clock, no environment.  Each check raises
:class:`~qgitconf.errors.UnsafePathError` with a detail of the form
``'<path>': <reason>`` (the code ``unsafe-path`` is carried by the error), the path passed through
:func:`~qgitconf.sanitize.sanitize`.

Choices beyond the letter of rule 7 (all of them refuse more, never less):

* A ``.git`` variant is refused as any component of a path or of a symlink target.
  The variants are the ones git's ``verify_path`` knows: case-insensitive ``.git``;
  NTFS trailing dots/spaces and ``:stream`` suffixes; the 8.3 short name ``git~1``;
  HFS+ ignorable code points inserted anywhere.
* Besides C0, DEL and C1 controls and the bidi overrides/isolates, the bidi marks
  (U+061C, U+200E, U+200F) and the line/paragraph separators (U+2028, U+2029) are
  refused in components: they make a name look like another one.
* ``DENIED_PREFIXES`` are compared per component after the same folding as the dotgit
  check (case, HFS ignorables, NTFS trailing dots/spaces and stream suffixes, NFC).  A
  non-tree entry (file or symlink) that is an *ancestor* of a denied prefix (e.g. a
  symlink ``.config`` or ``.local/share``) is refused as well: it would redirect the
  agent's own directories.
* :func:`check_tree` follows symlinks of the same tree lexically when it checks where
  a symlink target ends up, so ``a/b -> ..`` plus ``c -> a/b/.gnupg`` is refused.
  Symlinks already on disk that the tree does not hold are not visible here; apply
  never follows them (rule 9).
* Collisions are found on a caseless, NFC-normalised key with HFS ignorables removed,
  over every path and every directory a path implies (``A/x`` and ``a/y`` collide).
* A component is at most NAME_MAX (255) bytes and a path at most
  :data:`~qgitconf.limits.MAX_HOME_PATH_BYTES` (PATH_MAX less room for ``$HOME/``),
  whatever a target's rules say: every name accepted here must be writable, with the
  temp and backup names the agent derives from it (issue 14; those are short and
  fixed-length, see ``qgitconf.agent.journal.temp_name``).  A name that could not be
  written is refused at receive instead of failing half-way through an apply.

Paths that load code (DESIGN rule 12, issue 14 §1): nothing an update writes may change
how the next update is verified.  The agent itself runs programs by absolute system
path, with ``python3 -I`` and an environment built from nothing
(``qgitconf.sysprog``), but the programs around it do not: real qrexec starts a
service with ``sh -lc``, so the user's login environment is in force, and notifications,
dialogs and the user's own shells run with the user's ``PATH``.  These paths are
therefore refused outright (:data:`CODE_LOADING_RULES`; an error, not a risk finding:
no review can make them safe, and a harmless-looking update must not be able to place
them); everything else that runs code is left to the risk report:

* ``.local/lib/python*`` (any case or variant, anything below): the user
  site-packages.  Every Python start that does not pass ``-I``/``-s`` - a qrexec
  service script, ``notify-send`` helpers, the user's own tools - runs the ``.pth``
  files and ``usercustomize`` found there, which could patch the verifier of the next
  program that imports qgitconf.
* ``.pam_environment``: read by ``pam_env`` for every PAM session, qrexec services
  included, so it sets ``PATH``, ``LD_PRELOAD`` or ``PYTHONPATH`` for everything the
  agent starts.
* in ``bin`` and ``.local/bin`` (Debian's ``~/.profile`` puts them first on ``PATH``):
  the names of the programs qgitconf runs or that run qgitconf
  (:data:`qgitconf.core.programs.PROTECTED_PROGRAMS`, and ``python3.*``), as files,
  symlinks or directories.
  Other executables there stay allowed (the risk report flags them high).
* The same names reached through a symlink of the tree: if the tree makes ``bin`` (or
  ``.local/bin``, ``.local/lib``) a symlink, the directory it resolves to, through the
  tree's other symlinks, is checked the same way (``bin -> tools`` with ``tools/gpg``
  is refused; ``bin -> tools`` with ``tools/mytool`` is not).  ``.local`` itself can
  never be a symlink or a file (it is an ancestor of the agent's state).  A symlink
  the user made on disk is not visible here; apply never follows links it did not
  validate, but a user's own ``~/bin -> elsewhere`` puts ``elsewhere`` on ``PATH``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, NamedTuple

from qgitconf.core.coderules import CODE_LOADING_RULES, CodeLoadingRule
from qgitconf.core.globs import glob_matches
from qgitconf.core.systemrules import SYSTEM_TOP, SystemRules, check_system_file
from qgitconf.errors import UnsafePathError
from qgitconf.limits import MAX_HOME_PATH_BYTES, MAX_SYMLINK_TARGET_BYTES, NAME_MAX
from qgitconf.sanitize import sanitize

__all__ = [
    "ALLOWED_MODES",
    "DENIED_PREFIXES",
    "MAX_SYMLINK_TARGET_BYTES",
    "MODE_EXECUTABLE",
    "MODE_FILE",
    "MODE_GITLINK",
    "MODE_SYMLINK",
    "MODE_TREE",
    "PathRules",
    "check_component",
    "check_symlink_target",
    "check_tree_entry",
]

DENIED_PREFIXES: tuple[str, ...] = (".config/qgitconf", ".local/share/qgitconf", ".gnupg")
"""The agent's own config and state directories and the GnuPG home: never written."""


MODE_FILE = 0o100644
MODE_EXECUTABLE = 0o100755
MODE_SYMLINK = 0o120000
MODE_TREE = 0o040000
MODE_GITLINK = 0o160000

ALLOWED_MODES = frozenset({MODE_FILE, MODE_EXECUTABLE, MODE_SYMLINK, MODE_TREE})
"""The only git modes a tree entry may have."""


# Code points HFS+ ignores when it compares names (git's utf8.c, next_hfs_char).
HFS_IGNORABLE = frozenset(
    [chr(c) for c in range(0x200C, 0x2010)]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x206A, 0x2070)]
    + ["\ufeff"]
)

# Bidi overrides, embeddings, isolates and marks, and the Unicode line separators.
_FORBIDDEN_FORMAT = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u061c", "\u200e", "\u200f", "\u2028", "\u2029"]
)

_DOTGIT_NAMES = frozenset({".git", "git~1"})


class _Refused(Exception):
    """Internal: a check failed for ``reason``; turned into UnsafePathError by callers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_MAX_SHOWN = 200
"""Longest path (characters or bytes) quoted in an error detail before it is cut."""


def refuse(path: str | bytes, reason: str) -> UnsafePathError:
    cut = len(path) > _MAX_SHOWN
    shown = sanitize(path[:_MAX_SHOWN]) + ("..." if cut else "")
    return UnsafePathError(f"'{shown}': {reason}")


class PathRules(NamedTuple):
    """What a target accepts in a tree, beyond the fixed rules.

    Attributes:
        allow: globs over the full slash-separated path (see :func:`glob_matches`);
            a non-tree entry must match at least one.
        max_path_bytes: longest full path accepted, in bytes.
        max_depth: most components a path may have.
        system: the system prefixes a root-owned setting allows below the reserved
            ``system/`` directory (``qgitconf.core.systemrules``; empty: refused).
    """

    allow: tuple[str, ...] = ("**",)
    max_path_bytes: int = 4096
    max_depth: int = 64
    system: SystemRules = SystemRules()


# --- globs ---------------------------------------------------------------------------


# --- components ----------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def _fold_component(name: str) -> str:
    """Fold a component the way case-insensitive, NTFS and HFS+ filesystems would.

    Removes HFS+ ignorable code points, cuts an NTFS ``:stream`` suffix, strips NTFS
    trailing dots and spaces, then applies Unicode caseless matching (NFD, casefold,
    NFC).  Pure, so cached: trees repeat the same directory names many times.
    """
    if name.isascii():  # no HFS ignorables, and caseless matching is lower()
        return name.split(":", 1)[0].rstrip(". ").lower()
    name = "".join(ch for ch in name if ch not in HFS_IGNORABLE)
    name = name.split(":", 1)[0]
    name = name.rstrip(". ")
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", name).casefold())


def _is_dotgit(name: str) -> bool:
    return _fold_component(name) in _DOTGIT_NAMES


def _describe_char(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_BAD_BYTE = re.compile(rb"[\x00-\x1f\x7f/\\]")


@functools.lru_cache(maxsize=65536)
def _component(name: bytes) -> str:
    """Check one component; raise :class:`_Refused` with a reason on failure.

    Pure, so cached (a refusal raises and is not cached)."""
    if not name:
        raise _Refused("empty component")
    if len(name) > NAME_MAX:
        raise _Refused(f"name longer than {NAME_MAX} bytes (NAME_MAX)")
    if _BAD_BYTE.search(name):  # then find the first reason, in this order
        if b"\0" in name:
            raise _Refused("NUL byte in a component")
        if b"/" in name:
            raise _Refused("'/' inside a component")
        if b"\\" in name:
            raise _Refused("backslash in a component")
        for byte in name:
            if byte < 0x20 or byte == 0x7F:
                raise _Refused(f"control character \\x{byte:02x}")
    try:
        text = name.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise _Refused("invalid UTF-8") from None
    if not name.isascii():  # C1 controls and format characters are not ASCII
        for ch in text:
            if 0x80 <= ord(ch) < 0xA0:
                raise _Refused(f"control character {_describe_char(ch)}")
            if ch in _FORBIDDEN_FORMAT:
                raise _Refused(f"bidi or line-separator character {_describe_char(ch)}")
    if text == ".":
        raise _Refused("'.' component")
    if text == "..":
        raise _Refused("'..' component")
    if _is_dotgit(text):
        raise _Refused("'.git' component")
    return text


def check_component(name: bytes) -> str:
    """Check one path component from an untrusted tree.

    Refused: empty, ``.``, ``..``; longer than NAME_MAX (255) bytes; any ``.git``
    variant (case-insensitive ``.git``, NTFS ``.git.``/``.git ``/
    ``.git::$INDEX_ALLOCATION``/``git~1``, HFS+ ``.git`` with ignorable code points
    such as U+200C); NUL, ``/``, backslash, C0 controls, DEL;
    invalid UTF-8; C1 controls; bidi overrides, isolates and marks; U+2028/U+2029.

    Args:
        name: the component's raw bytes.

    Returns:
        The component decoded from UTF-8.

    Raises:
        UnsafePathError: the component is refused.
    """
    try:
        return _component(name)
    except _Refused as exc:
        raise refuse(name, exc.reason) from None


# --- paths ---------------------------------------------------------------------------


def _split_path(path: bytes, rules: PathRules) -> list[str]:
    """Split a git path into checked components; raise :class:`_Refused` on failure."""
    if not path:
        raise _Refused("empty path")
    if len(path) > rules.max_path_bytes:
        raise _Refused(f"path longer than {rules.max_path_bytes} bytes")
    if len(path) > MAX_HOME_PATH_BYTES:
        raise _Refused(
            f"path longer than {MAX_HOME_PATH_BYTES} bytes (PATH_MAX less room for $HOME)"
        )
    if path.startswith(b"/"):
        raise _Refused("absolute path")
    if path.endswith(b"/"):
        raise _Refused("trailing '/'")
    raw = path.split(b"/")
    if len(raw) > rules.max_depth:
        raise _Refused(f"deeper than {rules.max_depth} components")
    return [_component(part) for part in raw]


def fold_parts(parts: Sequence[str]) -> tuple[str, ...]:
    return tuple(_fold_component(p) for p in parts)


# The denied prefixes as a trie of folded components.  A node maps a folded component
# to the next node; "" (never a component) holds the prefix that ends at a node, "/"
# (never in a component) one prefix below it, to name in messages.
_Node = dict[str, Any]
_DENIED_TRIE: _Node = {}
for _prefix in DENIED_PREFIXES:
    _node = _DENIED_TRIE
    for _part in fold_parts(_prefix.split("/")):
        _node = _node.setdefault(_part, {})
        _node.setdefault("/", _prefix)
    _node[""] = _prefix


def _denied_walk(parts: Sequence[str]) -> tuple[str | None, str | None]:
    """Where ``parts`` stand to the denied prefixes, after folding.

    Returns:
        ``(prefix, None)`` when ``parts`` equal or lie under a denied prefix,
        ``(None, prefix)`` when they are a proper ancestor of one, else ``(None, None)``.
    """
    node = _DENIED_TRIE
    for part in parts:
        child: _Node | None = node.get(_fold_component(part))
        if child is None:
            return None, None
        node = child
        if "" in node:
            return node[""], None
    return None, node.get("/")


def code_loading(folded: Sequence[str], rule: CodeLoadingRule, at: Sequence[str]) -> bool:
    """``folded`` lies at or below a name ``rule`` refuses in directory ``at`` (folded)."""
    n = len(at)
    return len(folded) > n and tuple(folded[:n]) == tuple(at) and rule.match(folded[n])


def _code_loading_reason(folded: Sequence[str]) -> str | None:
    """Why the path with folded components ``folded`` loads code; None if it does not."""
    for rule in CODE_LOADING_RULES:
        if code_loading(folded, rule, rule.parent):
            return rule.reason
    return None


def denied_prefix(parts: Sequence[str]) -> str | None:
    """Return the denied prefix ``parts`` equals or lies under, if any."""
    return _denied_walk(parts)[0]


def _check_mode(mode: int) -> None:
    if mode == MODE_GITLINK:
        raise _Refused("gitlink (mode 160000): submodules are not allowed")
    if mode not in ALLOWED_MODES:
        raise _Refused(f"mode {mode:o} not allowed (only 100644, 100755, 120000, 040000)")


def _symlink_target(link_parts: Sequence[str], target: bytes) -> tuple[str, list[str]]:
    """Check a symlink target; return it and its lexical resolution from $HOME."""
    if not target:
        raise _Refused("empty symlink target")
    if len(target) > MAX_SYMLINK_TARGET_BYTES:
        raise _Refused(f"symlink target longer than {MAX_SYMLINK_TARGET_BYTES} bytes")
    if target.startswith(b"/"):
        raise _Refused("absolute symlink target")
    raw = target.split(b"/")
    ups = 0
    while ups < len(raw) and raw[ups] == b"..":
        ups += 1
    rest: list[str] = []
    for part in raw[ups:]:
        try:
            rest.append(_component(part))
        except _Refused as exc:
            raise _Refused(f"symlink target: {exc.reason}") from None
    parent = list(link_parts[:-1])
    if ups > len(parent):
        raise _Refused("symlink target leaves $HOME")
    resolved = parent[: len(parent) - ups] + rest
    denied = denied_prefix(resolved)
    if denied is not None:
        raise _Refused(f"symlink target inside '{denied}'")
    return target.decode("utf-8"), resolved


def check_symlink_target(link_path: str, target: bytes) -> str:
    """Check where a symlink from an untrusted tree points.

    The target must be non-empty, at most :data:`MAX_SYMLINK_TARGET_BYTES` bytes,
    relative, with no empty or ``.`` components; ``..`` is allowed only as leading
    components, and no more of them than the link's directory is deep, so the lexical
    resolution stays inside $HOME.  The other components must pass
    :func:`check_component`, and the resolution must not lie in a denied prefix.

    Args:
        link_path: where the link lives, slash-separated, relative to $HOME (already
            checked by the caller).
        target: the link's target bytes (the blob content).

    Returns:
        The target decoded from UTF-8.

    Raises:
        UnsafePathError: the target is refused; the detail names the link.
    """
    try:
        link_parts = link_path.split("/")
        return _symlink_target(link_parts, target)[0]
    except _Refused as exc:
        raise refuse(f"{link_path} -> {sanitize(target)}", exc.reason) from None


def _tree_entry(
    path: bytes, mode: int, rules: PathRules, link_target: bytes | None
) -> tuple[str, list[str], list[str] | None]:
    """Check one entry; return its path, its components and, for a symlink, the
    lexical resolution of its target."""
    parts = _split_path(path, rules)
    _check_mode(mode)
    text = "/".join(parts)
    if _fold_component(parts[0]) == SYSTEM_TOP:
        # System files (issue 15): their own rules, from root-owned settings only.
        if parts[0] != SYSTEM_TOP or (mode != MODE_TREE and len(parts) == 1):
            raise _Refused(f"'{SYSTEM_TOP}' is reserved for system files (system/etc/...)")
        if mode != MODE_TREE:
            check_system_file(parts, mode, rules.system)
        return text, parts, None
    denied, ancestor = _denied_walk(parts)
    if denied is not None:
        raise _Refused(f"inside '{denied}', which qgitconf never writes")
    code = _code_loading_reason(fold_parts(parts))
    if code is not None:
        raise _Refused(f"code-loading path ({code}), which qgitconf never writes")
    if mode != MODE_TREE:
        if ancestor is not None:
            raise _Refused(f"a file or symlink here would replace a parent of '{ancestor}'")
        if not any(glob_matches(pattern, text) for pattern in rules.allow):
            raise _Refused("not in the allowlist")
    resolved: list[str] | None = None
    if mode == MODE_SYMLINK:
        if link_target is None:
            raise _Refused("symlink without a target")
        resolved = _symlink_target(parts, link_target)[1]
    return text, parts, resolved


def checked_entry(
    path: bytes, mode: int, rules: PathRules, link_target: bytes | None
) -> tuple[str, list[str], list[str] | None]:
    """:func:`_tree_entry`, with a refusal turned into :class:`UnsafePathError`."""
    try:
        return _tree_entry(path, mode, rules, link_target)
    except _Refused as exc:
        shown: str | bytes = path
        if mode == MODE_SYMLINK and link_target is not None:
            shown = path + b" -> " + link_target
        raise refuse(shown, exc.reason) from None


def check_tree_entry(
    path: bytes, mode: int, rules: PathRules, link_target: bytes | None = None
) -> str:
    """Check one entry of an untrusted tree: its full path, mode and symlink target.

    The path is slash-separated as git stores it (no leading or trailing ``/``, no
    ``//``), at most ``rules.max_path_bytes`` bytes and ``rules.max_depth``
    components, each passing :func:`check_component`.  The mode must be in
    :data:`ALLOWED_MODES` (gitlinks are refused: no submodules).  The path must be at
    most :data:`~qgitconf.limits.MAX_HOME_PATH_BYTES` bytes, must not lie in
    :data:`DENIED_PREFIXES` nor be a path that loads code (:data:`CODE_LOADING_RULES`);
    a file or symlink must also not be an ancestor of a denied prefix, and must match
    ``rules.allow`` (trees are not checked against the allowlist:
    a directory that holds allowed files must pass).  A symlink (mode 120000) needs
    ``link_target``, checked by :func:`check_symlink_target`; for other modes
    ``link_target`` is ignored.

    Args:
        path: the full path's raw bytes.
        mode: the git mode of the entry.
        rules: the target's allowlist and limits.
        link_target: the symlink's target bytes, for mode 120000.

    Returns:
        The path decoded from UTF-8.

    Raises:
        UnsafePathError: the entry is refused.
    """
    return checked_entry(path, mode, rules, link_target)[0]


# --- whole trees ---------------------------------------------------------------------
