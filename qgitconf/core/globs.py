"""The allowlist's glob patterns: ``*`` within one component, ``**`` across them."""

from __future__ import annotations

import functools
import re


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
