"""Rule 7 over a whole tree: collisions, symlinks resolved through the tree's other
symlinks, directories that load code reached through a link; and the digest of the
rules that lets apply skip a check Receive made."""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections.abc import Iterable, Sequence

from qgitconf import limits
from qgitconf.core import coderules, globs, paths, programs, systemrules
from qgitconf.core.coderules import CODE_LOADING_RULES, CodeLoadingRule
from qgitconf.core.paths import (
    HFS_IGNORABLE,
    MODE_SYMLINK,
    MODE_TREE,
    PathRules,
    checked_entry,
    code_loading,
    denied_prefix,
    fold_parts,
    refuse,
)
from qgitconf.limits import MAX_LINK_HOPS
from qgitconf.sanitize import sanitize

RULE_MODULES = (
    paths,
    globs,
    coderules,
    programs,
    systemrules,
    limits,
    sys.modules[__name__],
)
"""The modules whose code decides :func:`check_tree`'s verdict (a test checks that every
module of the package this one imports is here, or decides nothing)."""


@functools.lru_cache(maxsize=65536)
def _collision_key(part: str) -> str:
    """Caseless, normalised key of a component: names that one filesystem or another
    would treat as the same file get the same key.  Pure, so cached."""
    if part.isascii():  # no ignorable code points; caseless matching is lower()
        return part.lower()
    part = "".join(ch for ch in part if ch not in HFS_IGNORABLE)
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", part).casefold())


def _resolve_through_links(
    start: list[str], links: dict[tuple[str, ...], list[str]]
) -> list[str] | None:
    """Follow the tree's own symlinks lexically; None if there are too many hops."""
    current = start
    for _ in range(MAX_LINK_HOPS):
        for i in range(1, len(current) + 1):
            hop = links.get(tuple(current[:i]))
            if hop is not None:
                current = hop + current[i:]
                break
        else:
            return current
    return None


def rules_digest(rules: PathRules) -> str | None:
    """A digest of everything :func:`check_tree`'s verdict depends on besides the tree:
    ``rules`` (the allowlist, limits and system prefixes), the code of the checks (the
    files of :data:`RULE_MODULES`, so a changed or upgraded rule gives another digest)
    and the Unicode database the name comparisons use (a Python upgrade may change it).

    Receive records it with the tree it checked; apply checks a tree again unless it
    is that tree under the same digest (issue 21).  None when a module's file cannot
    be read (then every tree is checked again).
    """
    h = hashlib.sha256(unicodedata.unidata_version.encode() + b"\n")
    try:
        for module in RULE_MODULES:
            with open(module.__file__ or "", "rb") as f:
                data = f.read()
            h.update(b"%d\n" % len(data) + data)
    except (OSError, TypeError):
        return None
    h.update(repr((tuple(rules.allow), rules.max_path_bytes, rules.max_depth)).encode())
    h.update(repr(tuple(rules.system.prefixes)).encode())
    return h.hexdigest()


def check_tree(entries: Iterable[tuple[bytes, int, bytes | None]], rules: PathRules) -> list[str]:
    """Check every entry of an untrusted tree, and how the entries relate.

    Each ``(path, mode, link_target)`` goes through :func:`check_tree_entry`.  Also
    refused: the same path twice; two paths (or the directories they imply) that differ
    only by case, Unicode normalisation or HFS+ ignorable code points; a path below a
    file or symlink of the same tree (e.g. symlink ``x`` and file ``x/passwd``); a
    symlink whose target, followed through the tree's other symlinks, loops or ends in
    a denied prefix; a path that loads code because a symlink of the tree redirects
    ``bin``, ``.local/bin`` or ``.local/lib`` to its directory.

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
        text, parts, resolved = checked_entry(path, mode, rules, link_target)
        if text in seen:
            raise refuse(text, "the same path twice")
        seen.add(text)
        folded = [_collision_key(p) for p in parts]
        # Deepest prefix first: every prefix of a known key is known too, under the
        # matching prefix of its name, so the walk up stops at the first known one.
        for depth in range(len(parts), 0, -1):
            key = tuple(folded[:depth])
            name = "/".join(parts[:depth])
            other = keys.setdefault(key, name)
            if other != name:
                raise refuse(
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
                raise refuse(text, f"below the {kind} '{sanitize(text[:cut])}'")
            cut = text.rfind("/", 0, cut)
    for link, resolved in links.items():
        final = _resolve_through_links(resolved, links)
        text = "/".join(link)
        if final is None:
            raise refuse(text, "symlink loop")
        denied = denied_prefix(final)
        if denied is not None:
            raise refuse(text, f"symlink target, through other symlinks, inside '{denied}'")
    if links:
        _check_redirected_code_dirs(paths, links)
    return paths


def _check_redirected_code_dirs(
    paths: Sequence[str], links: dict[tuple[str, ...], list[str]]
) -> None:
    """Refuse a path that a tree symlink puts where code is loaded from.

    If the tree's symlinks make the directory of a :data:`CODE_LOADING_RULES` rule
    (``bin``, ``.local/bin``, ``.local/lib``) resolve elsewhere, the names that rule
    refuses are refused in the directory it resolves to (``bin -> tools`` with
    ``tools/gpg``).  Compared after folding, like the rules themselves; loops were
    refused before.
    """
    folded_links = {fold_parts(link): list(fold_parts(target)) for link, target in links.items()}
    redirected: list[tuple[CodeLoadingRule, list[str], str]] = []
    for rule in CODE_LOADING_RULES:
        if not rule.parent:
            continue  # $HOME itself is never a symlink of the tree
        final = _resolve_through_links(list(rule.parent), folded_links)
        if final is not None and tuple(final) != rule.parent:
            redirected.append((rule, final, "/".join(rule.parent)))
    for text in paths:
        folded = fold_parts(text.split("/"))
        for rule, final, via in redirected:
            if code_loading(folded, rule, final):
                raise refuse(
                    text,
                    f"code-loading path through the symlink '{via}' ({rule.reason}), "
                    "which qgitconf never writes",
                )
