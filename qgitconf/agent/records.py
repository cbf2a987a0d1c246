"""The shapes of the agent's JSON records and of the results it returns to the cli, as
TypedDicts: checked by mypy, plain dicts at run time (docs/design.md, "Typed records")."""

from __future__ import annotations

from typing import NotRequired, TypedDict

# -- the state's records (manifest.json, originals.json, generations.json, state.json) --


class Entry(TypedDict):
    """A file's record: a ``manifest.json`` entry (with its stat cache), what a plan
    writes (``Wanted.record``), or what a probe found (``DiskState.record``)."""

    type: str  # "file" | "link"; a probe's also "missing", "dir", "blocked", "other"
    mode: NotRequired[int]  # a file's
    sha256: NotRequired[str]  # a file's
    target: NotRequired[str]  # a symlink's
    stat: NotRequired[list[int]]  # the manifest's stat cache (``homefs.stat_entry``)


class Original(Entry):
    """An ``originals.json`` entry: what was at a path before qgitconf first wrote it."""

    backup: NotRequired[str]  # a file's copy, relative to the state directory


class Checked(TypedDict):
    """The tree Receive checked against the path rules, and the rules' digest."""

    tree: str
    rules: str | None  # None: the rules' code could not be read


class Staged(TypedDict, total=False):
    """``state.json``'s record of the staged update."""

    commit: str
    sequence: int
    signer: str
    created: str
    received: str
    checked: Checked


class StateRecord(TypedDict, total=False):
    """``state.json``: the last accepted update, what is staged and applied."""

    sequence: int
    commit: str
    applied: str | None
    staged: Staged


class GenerationBase(TypedDict):
    """What an apply, a revert or a restore did."""

    kind: str
    commit: str | None
    time: str
    written: list[str]
    removed: list[str]
    restored: list[str]
    backed_up: list[str]
    originals: list[str]
    adopted: list[str]
    left: list[str]
    skipped: list[str]
    note: str


class Generation(GenerationBase):
    """A ``generations.json`` record: one apply or revert."""

    number: int


class Applied(GenerationBase):
    """``apply.execute``'s record: a generation's, or a restore's (no number, not saved)."""

    number: int | None


class AutoApply(TypedDict):
    """``auto-apply.json``: the last auto-apply decision."""

    commit: str
    time: str
    result: str  # "applied" | "staged"
    reason: str
    generation: int | None
    risk_summary: dict[str, int] | None
    high: list[str]


# -- the journal (plan.json) --------------------------------------------------------------


class Probed(Entry):
    """What a probe found at a path (``DiskState.record``); as a journal step's ``old``,
    also its ``lstat`` key (and a directory's mode)."""

    st: NotRequired[list[int]]  # size, mtime_ns, ino, ctime_ns


class Step(TypedDict):
    """One journaled step of an apply."""

    i: int
    op: str
    path: str
    old: Probed
    new: Entry | None
    keep: str | None
    keep_at: str | None
    direct: NotRequired[str]  # the blob a direct step creates in place
    tmp: NotRequired[str]  # the temp name of any other step


class After(TypedDict):
    """The state records an apply ends with (``commitrecords.record_commit``)."""

    kind: str
    number: int | None
    manifest: dict[str, Entry]
    originals: dict[str, Original]
    generation: Generation | None


class JournalData(TypedDict):
    """``plan.json``."""

    version: int
    id: str
    steps: list[Step]
    after: After


class Interrupted(TypedDict):
    """What an interrupted journal says (``journal.describe``)."""

    kind: str | None
    generation: int | None
    steps: int
    phase: str
    committing: bool


# -- results for the cli (printed, or dumped by --json) ------------------------------------


class Drift(TypedDict):
    path: str
    state: str  # "missing", "blocked", "mode", "modified", "type"


class HomeStatus(TypedDict):
    """``status``'s view of the agent state and $HOME."""

    sequence: int | None
    staged: str | None
    received: str | None
    applied: str | None
    pending: bool
    generation: int
    last_update: str | None
    last_update_age: int | None
    skipped: list[str]
    managed: int
    drift: list[str]
    drift_detail: list[Drift]
    interrupted: bool
    journal: Interrupted | None
    busy: bool
    recovered: str | None


class Status(HomeStatus):
    """``qgitconf status`` in a target (``source`` and ``keys`` are None only inside
    the fast path, before its configuration memo answers)."""

    role: str
    source: str | None
    keys: list[str] | None


class Kept(TypedDict):
    """Where a copy of an overwritten file is kept."""

    path: str
    at: str


class ApplyResult(TypedDict):
    """``apply`` and ``revert``: the generation's record, or "up to date" (no number)."""

    number: int | None
    commit: str | None
    written: list[str]
    removed: list[str]
    skipped: list[str]
    left: list[str]
    note: str
    recovered: str | None
    kind: NotRequired[str]
    time: NotRequired[str]
    restored: NotRequired[list[str]]
    backed_up: NotRequired[list[str]]
    originals: NotRequired[list[str]]
    adopted: NotRequired[list[str]]
    kept: NotRequired[list[Kept]]


class RestoreResult(TypedDict):
    restored: list[str]
    left: list[str]
    recovered: str | None


class StagedUpdate(TypedDict):
    """The staged update as apply's confirmation names it."""

    commit: str
    sequence: int | None
    applied: str | None


class PreviewOf(TypedDict, total=False):
    """What a preview is of: a revert's generation, or an apply's staged sequence."""

    to: int  # revert
    sequence: int | None  # apply


class Preview(PreviewOf):
    """``apply --dry-run``, ``revert --dry-run``: what the plan would do."""

    dry_run: bool
    kind: str
    commit: str | None
    generation: int | None
    write: list[str]
    remove: list[str]
    restore: list[str]
    adopt: list[str]
    mkdir: list[str]
    rmdir: list[str]
    kept: list[Kept]
    conflicts: list[str]
    blockers: list[str]
    left: list[str]
    skipped: list[str]
    would_stop: bool
    up_to_date: bool
    interrupted: NotRequired[bool]


class DriftNotes(Drift):
    notes: list[str]


class LocalDiff(TypedDict):
    """``qgitconf diff``."""

    applied: str | None
    managed: int
    drift: list[DriftNotes]
    diff: str
    diff_tool: str
    interrupted: bool


class Signer(TypedDict):
    fingerprint: str
    uids: list[str]
    pinned: bool


class FileEntry(TypedDict):
    """One changed file of a review."""

    path: str
    status: str
    old_mode: str | None
    new_mode: str | None
    symlink: str | None
    binary: bool
    notes: list[str]


class Risk(TypedDict):
    """A risk finding (``core.risks.Finding.as_dict``)."""

    rule: str
    severity: str
    path: str
    line: int | None
    text: str
    explanation: str


class Change(TypedDict):
    op: str
    path: str


class CommitInfo(TypedDict):
    date: str
    author: str
    message: str


class Review(CommitInfo):
    """``qgitconf review`` (schema: docs/review.md)."""

    signer: Signer
    sequence: int
    commit: str
    created: str
    received: str | None
    applied: str | None
    changes: list[Change]
    conflicts: list[str]
    blockers: list[str]
    files: list[FileEntry]
    risks: list[Risk]
    risk_summary: dict[str, int]
    diff: str
    diff_tool: str
    auto_apply: AutoApply | None
    apply_command: str


class TargetInit(TypedDict):
    config: str
    fingerprint: str
    uids: list[str]
    source: str


class RemovePlan(TypedDict):
    """What ``target remove`` would remove and keep."""

    remove: list[str]
    managed: int
    kept_copies: int
    generations: int
    pending: bool
    template: bool


class Removed(RemovePlan):
    removed: list[str]
    recovered: str | None


class Reply(TypedDict):
    """The JSON line Receive answers with."""

    result: str  # "staged" | "up-to-date" | "rejected"
    commit: NotRequired[str]
    sequence: NotRequired[int]
    applied: NotRequired[str | None]
    reason: NotRequired[str]
    detail: NotRequired[str]
