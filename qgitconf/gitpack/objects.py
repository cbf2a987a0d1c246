"""Git objects built from raw bodies with dulwich.objects: stored, or a commit parsed.

Apart from store.py, which the no-op receive, status and publish rows of ``make bench``
import and which loads no dulwich.
"""

from __future__ import annotations

from typing import Any

from dulwich.objects import Commit, ShaFile


def add_raw_objects(repo: Any, bodies: list[tuple[int, bytes]]) -> None:
    """Store objects given as ``(type number, body)`` (already hashed by the caller)."""
    for type_num, body in bodies:
        repo.object_store.add_object(ShaFile.from_raw_string(type_num, body))


def parse_commit(raw: bytes) -> Any:
    """dulwich's ``Commit`` parsed from the body of a commit object (as ``git cat-file
    commit`` prints it); dulwich's errors for anything else."""
    return Commit.from_string(raw)
