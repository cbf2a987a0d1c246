"""The shapes of config-mgmt's JSON records and of the results it returns to the cli, as
TypedDicts: checked by mypy, plain dicts at run time (docs/design.md, "Typed records")."""

from __future__ import annotations

from typing import TypedDict

# -- the repository's records (.qgitconf/*.json) ----------------------------------------


class TargetInfo(TypedDict, total=False):
    """A ``targets.json`` entry."""

    layers: list[str]


class LayerInfo(TypedDict, total=False):
    """A ``layers.json`` entry (no fields yet: a layer is its branch)."""


class ReplyRecord(TypedDict, total=False):
    """A target's last reply, as the publish record keeps it (untrusted: a hint; read
    key by key, as an older record may lack some)."""

    result: str
    commit: str | None
    sequence: int | None
    applied: str | None
    reason: str | None
    detail: str | None
    at: str


class ErrorRecord(TypedDict):
    code: str
    detail: str


class PublishRecord(TypedDict, total=False):
    """``targets/<name>.json``: what was published to a target and what it answered."""

    sequence: int
    published: str | None
    published_at: str
    prerequisite: str | None
    unconfirmed: list[str]
    accepted: str
    reply: ReplyRecord
    error: ErrorRecord
    hint: str


class ImportEntry(TypedDict):
    """An ``imports.json`` entry: a file fetched from a qube into quarantine."""

    qube: str
    path: str
    into: str
    mode: str  # octal
    blob: str
    size: int
    base: str
    commit: str
    created: str


# -- results for the cli (printed, or dumped by --json) ------------------------------------


class ListedImport(ImportEntry):
    id: str


class ImportReview(TypedDict):
    id: str
    qube: str
    path: str
    into: str
    mode: str
    size: int
    notes: list[str]
    diff: str


class Published(TypedDict):
    sequence: int | None
    commit: str | None
    at: str | None


class Reported(TypedDict):
    """What the target last reported (``mgmt.status.reported_state``'s word, and more)."""

    state: str | None
    result: str | None
    sequence: int | None
    accepted: str | None
    applied: str | None
    reason: str | None
    detail: str | None
    at: str | None


class LastError(TypedDict):
    code: str | None
    detail: str | None


class StatusRow(TypedDict):
    """One target of ``status`` in config-mgmt (schema: docs/usage.md)."""

    target: str
    layers: list[str]
    tip: str | None
    published: Published
    reported_by_target: Reported
    last_error: LastError | None
    hint: str | None
    unconfirmed: list[str]
    pending: bool


class MgmtStatus(TypedDict):
    role: str
    repo: str
    targets: list[StatusRow]


class Dropped(TypedDict):
    commit: str
    subject: str


class MergedLayer(TypedDict):
    layer: str
    commit: str


class RemovedFile(TypedDict):
    path: str
    size: int


class SquashJson(TypedDict):
    """``squash --json``."""

    target: str
    tip: str
    base: str | None
    new: str | None
    dropped: list[Dropped]
    layers: list[MergedLayer]
    removed_files: list[RemovedFile]
