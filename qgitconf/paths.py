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
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from qgitconf.errors import UnsafePathError
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
    "check_tree",
    "check_tree_entry",
    "glob_matches",
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

MAX_SYMLINK_TARGET_BYTES = 1024
"""Longest symlink target accepted, in bytes."""

_MAX_LINK_HOPS = 40
"""How many tree symlinks :func:`check_tree` follows before it calls it a loop."""

# Code points HFS+ ignores when it compares names (git's utf8.c, next_hfs_char).
_HFS_IGNORABLE = frozenset(
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


def _refuse(path: str | bytes, reason: str) -> UnsafePathError:
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
    """

    allow: tuple[str, ...] = ("**",)
    max_path_bytes: int = 4096
    max_depth: int = 64


# --- globs ---------------------------------------------------------------------------


def _translate_component(comp: str) -> str:
    out: list[str] = []
    for ch in comp:
        if ch == "*":
            if not out or out[-1] != "[^/]*":
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _compile_glob(pattern: str) -> re.Pattern[str]:
    comps: list[str] = []
    for comp in pattern.split("/"):
        if comp == "**" and comps and comps[-1] == "**":
            continue  # "**/**" is the same as "**"
        comps.append(comp)
    n = len(comps)
    out: list[str] = []
    for i, comp in enumerate(comps):
        if comp == "**":
            if n == 1:
                out.append(".*")
            elif i == 0:
                out.append("(?:[^/]+/)*")  # zero or more leading components
            elif i == n - 1:
                out.append("(?:/[^/]+)*")  # zero or more trailing components
            else:
                out.append("/(?:[^/]+/)*")  # zero or more middle components
        else:
            if i > 0 and comps[i - 1] != "**":
                out.append("/")
            out.append(_translate_component(comp))
    return re.compile("".join(out), re.DOTALL)


def glob_matches(pattern: str, path: str) -> bool:
    """Tell whether ``path`` matches the allowlist glob ``pattern``.

    The whole path must match (the pattern is anchored at both ends).  ``*`` matches
    any characters within one component (leading dots included), ``?`` exactly one
    character other than ``/``, and a component that is exactly ``**`` matches any
    number of whole components, zero included (``a/**`` matches ``a``, ``a/b`` and
    ``a/b/c``).  Every other character, ``[`` included, matches itself.  Matching is
    case-sensitive.

    Args:
        pattern: the glob, slash-separated.
        path: a slash-separated path, as git stores it.

    Returns:
        True if the pattern matches the whole path.
    """
    return _compile_glob(pattern).fullmatch(path) is not None


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
    name = "".join(ch for ch in name if ch not in _HFS_IGNORABLE)
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

    Refused: empty, ``.``, ``..``; any ``.git`` variant (case-insensitive ``.git``,
    NTFS ``.git.``/``.git ``/``.git::$INDEX_ALLOCATION``/``git~1``, HFS+ ``.git`` with
    ignorable code points such as U+200C); NUL, ``/``, backslash, C0 controls, DEL;
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
        raise _refuse(name, exc.reason) from None


# --- paths ---------------------------------------------------------------------------


def _split_path(path: bytes, rules: PathRules) -> list[str]:
    """Split a git path into checked components; raise :class:`_Refused` on failure."""
    if not path:
        raise _Refused("empty path")
    if len(path) > rules.max_path_bytes:
        raise _Refused(f"path longer than {rules.max_path_bytes} bytes")
    if path.startswith(b"/"):
        raise _Refused("absolute path")
    if path.endswith(b"/"):
        raise _Refused("trailing '/'")
    raw = path.split(b"/")
    if len(raw) > rules.max_depth:
        raise _Refused(f"deeper than {rules.max_depth} components")
    return [_component(part) for part in raw]


def _fold_parts(parts: Sequence[str]) -> tuple[str, ...]:
    return tuple(_fold_component(p) for p in parts)


# The denied prefixes as a trie of folded components.  A node maps a folded component
# to the next node; "" (never a component) holds the prefix that ends at a node, "/"
# (never in a component) one prefix below it, to name in messages.
_Node = dict[str, Any]
_DENIED_TRIE: _Node = {}
for _prefix in DENIED_PREFIXES:
    _node = _DENIED_TRIE
    for _part in _fold_parts(_prefix.split("/")):
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


def _denied_prefix(parts: Sequence[str]) -> str | None:
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
    denied = _denied_prefix(resolved)
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
        raise _refuse(f"{link_path} -> {sanitize(target)}", exc.reason) from None


def _tree_entry(
    path: bytes, mode: int, rules: PathRules, link_target: bytes | None
) -> tuple[str, list[str], list[str] | None]:
    """Check one entry; return its path, its components and, for a symlink, the
    lexical resolution of its target."""
    parts = _split_path(path, rules)
    _check_mode(mode)
    text = "/".join(parts)
    denied, ancestor = _denied_walk(parts)
    if denied is not None:
        raise _Refused(f"inside '{denied}', which qgitconf never writes")
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


def _checked_entry(
    path: bytes, mode: int, rules: PathRules, link_target: bytes | None
) -> tuple[str, list[str], list[str] | None]:
    """:func:`_tree_entry`, with a refusal turned into :class:`UnsafePathError`."""
    try:
        return _tree_entry(path, mode, rules, link_target)
    except _Refused as exc:
        shown: str | bytes = path
        if mode == MODE_SYMLINK and link_target is not None:
            shown = path + b" -> " + link_target
        raise _refuse(shown, exc.reason) from None


def check_tree_entry(
    path: bytes, mode: int, rules: PathRules, link_target: bytes | None = None
) -> str:
    """Check one entry of an untrusted tree: its full path, mode and symlink target.

    The path is slash-separated as git stores it (no leading or trailing ``/``, no
    ``//``), at most ``rules.max_path_bytes`` bytes and ``rules.max_depth``
    components, each passing :func:`check_component`.  The mode must be in
    :data:`ALLOWED_MODES` (gitlinks are refused: no submodules).  The path must not
    lie in :data:`DENIED_PREFIXES`; a file or symlink must also not be an ancestor of
    one, and must match ``rules.allow`` (trees are not checked against the allowlist:
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
    return _checked_entry(path, mode, rules, link_target)[0]


# --- whole trees ---------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def _collision_key(part: str) -> str:
    """Caseless, normalised key of a component: names that one filesystem or another
    would treat as the same file get the same key.  Pure, so cached."""
    if part.isascii():  # no ignorable code points; caseless matching is lower()
        return part.lower()
    part = "".join(ch for ch in part if ch not in _HFS_IGNORABLE)
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", part).casefold())


def _resolve_through_links(
    start: list[str], links: dict[tuple[str, ...], list[str]]
) -> list[str] | None:
    """Follow the tree's own symlinks lexically; None if there are too many hops."""
    current = start
    for _ in range(_MAX_LINK_HOPS):
        for i in range(1, len(current) + 1):
            hop = links.get(tuple(current[:i]))
            if hop is not None:
                current = hop + current[i:]
                break
        else:
            return current
    return None


def check_tree(entries: Iterable[tuple[bytes, int, bytes | None]], rules: PathRules) -> list[str]:
    """Check every entry of an untrusted tree, and how the entries relate.

    Each ``(path, mode, link_target)`` goes through :func:`check_tree_entry`.  Also
    refused: the same path twice; two paths (or the directories they imply) that differ
    only by case, Unicode normalisation or HFS+ ignorable code points; a path below a
    file or symlink of the same tree (e.g. symlink ``x`` and file ``x/passwd``); a
    symlink whose target, followed through the tree's other symlinks, loops or ends in
    a denied prefix.

    Args:
        entries: ``(path bytes, mode, symlink target bytes or None)`` for every entry.
        rules: the target's allowlist and limits.

    Returns:
        The decoded paths, in the order given.

    Raises:
        UnsafePathError: anything is refused.
    """
    paths: list[str] = []
    seen: set[str] = set()
    keys: dict[tuple[str, ...], str] = {}
    non_trees: dict[str, int] = {}
    links: dict[tuple[str, ...], list[str]] = {}
    for path, mode, link_target in entries:
        text, parts, resolved = _checked_entry(path, mode, rules, link_target)
        if text in seen:
            raise _refuse(text, "the same path twice")
        seen.add(text)
        folded = [_collision_key(p) for p in parts]
        # Deepest prefix first: every prefix of a known key is known too, under the
        # matching prefix of its name, so the walk up stops at the first known one.
        for depth in range(len(parts), 0, -1):
            key = tuple(folded[:depth])
            name = "/".join(parts[:depth])
            other = keys.setdefault(key, name)
            if other != name:
                raise _refuse(
                    text, f"collides with '{sanitize(other)}' (differs only by case or Unicode)"
                )
            if other is not name:
                break
        if mode != MODE_TREE:
            non_trees[text] = mode
        if resolved is not None:
            links[tuple(parts)] = resolved
        paths.append(text)
    for text in paths:
        cut = text.rfind("/")
        while cut > 0:
            parent_mode = non_trees.get(text[:cut])
            if parent_mode is not None:
                kind = "symlink" if parent_mode == MODE_SYMLINK else "file"
                raise _refuse(text, f"below the {kind} '{sanitize(text[:cut])}'")
            cut = text.rfind("/", 0, cut)
    for link, resolved in links.items():
        final = _resolve_through_links(resolved, links)
        text = "/".join(link)
        if final is None:
            raise _refuse(text, "symlink loop")
        denied = _denied_prefix(final)
        if denied is not None:
            raise _refuse(text, f"symlink target, through other symlinks, inside '{denied}'")
    return paths
