"""Making a bare repository with dulwich.repo, the one difference across dulwich
0.21-1.x that needs it (the rest are compat.py's).

Apart from compat, which the apply rows of ``make bench`` import: dulwich.repo (about
30 ms) and inspect load only when a repository is made (``target init``, a first update).
"""

from __future__ import annotations

import inspect
from typing import Any

from dulwich.repo import Repo


def init_bare(path: str, default_branch: bytes) -> None:
    """Create a bare repository at ``path`` (made here) whose HEAD names
    ``refs/heads/<default_branch>``, reading no git configuration."""
    if "default_branch" in inspect.signature(Repo.init_bare).parameters:
        # Given a default branch, dulwich reads no configuration for it.
        Repo.init_bare(path, mkdir=True, default_branch=default_branch).close()
        return
    # 0.21.2: HEAD is refs/heads/master and no configuration is read.
    repo = Repo.init_bare(path, mkdir=True)
    refs: Any = repo.refs  # 1.x's types name refs ``Ref``, a type 0.21 does not have
    try:
        refs.set_symbolic_ref(b"HEAD", b"refs/heads/" + default_branch)
    finally:
        repo.close()
