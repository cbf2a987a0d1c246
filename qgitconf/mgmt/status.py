"""config-mgmt status: per target, the branch tip, what was published and what the
target reported (labelled as reported, with when: replies are untrusted hints, and
config-mgmt hears from a target only when it publishes to it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qgitconf.mgmt.publish import REFUSED, load_record
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.mgmt.records import MgmtStatus, ReplyRecord, StatusRow


def reported_state(reply: ReplyRecord) -> str | None:
    """What the last reply says the target holds, in one word.

    Returns:
        ``applied`` (the accepted commit is the applied one), ``accepted`` (staged or
        up to date, but another commit or nothing applied), ``rejected``, or None when
        the target never answered.
    """
    result = reply.get("result")
    if result is None:
        return None
    if result in ("staged", "up-to-date"):
        applied = reply.get("applied")
        return "applied" if applied is not None and applied == reply.get("commit") else "accepted"
    return "rejected"


def _text(value: Any) -> str | None:
    return sanitize(value) if isinstance(value, str) and value else None


def mgmt_status(repo: MgmtRepo) -> MgmtStatus:
    """Per target: tip, last update published, the target's last reply, the last error.

    Returns:
        ``{"role": "config-mgmt", "repo": PATH, "targets": [row, ...]}``; the row schema
        is in docs/usage.md ("status (config-mgmt)").
    """
    repo.require()
    rows: list[StatusRow] = []
    for name, info in sorted(repo.targets().items()):
        rec = load_record(repo, name)
        tip = repo.tip(name)
        reply: ReplyRecord = rec.get("reply") or {}
        error = rec.get("error")
        accepted = reply.get("result") in ("staged", "up-to-date")
        rows.append(
            {
                "target": name,
                "layers": info.get("layers", []),
                "tip": tip,
                "published": {
                    "sequence": rec.get("sequence"),
                    "commit": rec.get("published"),
                    "at": rec.get("published_at"),
                },
                "reported_by_target": {
                    "state": reported_state(reply),
                    "result": reply.get("result"),
                    "sequence": reply.get("sequence"),
                    "accepted": reply.get("commit") if accepted else None,
                    "applied": reply.get("applied") if accepted else None,
                    "reason": reply.get("reason"),
                    "detail": _text(reply.get("detail")),
                    "at": reply.get("at"),
                },
                "last_error": (
                    {"code": error.get("code"), "detail": _text(error.get("detail"))}
                    if isinstance(error, dict)
                    else None
                ),
                "hint": _text(rec.get("hint")),
                "unconfirmed": [c for c in rec.get("unconfirmed", []) if isinstance(c, str)],
                "pending": tip != rec.get("published") or error is not None or not accepted,
            }
        )
    return {"role": "config-mgmt", "repo": str(repo.path), "targets": rows}


def _short(sha: Any) -> str:
    return sha[:12] if isinstance(sha, str) and sha else "-"


def status_lines(row: StatusRow) -> list[str]:
    """The text of one target's row (no ``None``: missing values are words or ``-``)."""
    pub = row["published"]
    rep = row["reported_by_target"]
    if pub["sequence"] is None:
        published = "not published"
    elif pub["commit"] is None:  # sequence reserved, update not kept (publish died)
        published = f"published seq {pub['sequence']} (incomplete)"
    else:
        published = f"published seq {pub['sequence']} {_short(pub['commit'])}"
    state = rep["state"]
    if state is None:
        reported = "target: nothing reported yet"
    else:
        when = f" seq {rep['sequence']}" if rep["sequence"] is not None else ""
        when += f" at {rep['at']}" if rep["at"] else ""
        if state == "applied":
            what = f"applied {_short(rep['applied'])}"
        elif state == "accepted":
            applied = _short(rep["applied"]) if rep["applied"] else "nothing"
            what = f"accepted {_short(rep['accepted'])} ({rep['result']}), applied {applied}"
        else:
            what = f"rejected ({rep['reason'] or rep['result']})"
        reported = f"target reported{when}: {what}"
    lines = [
        f"{row['target']}: tip {_short(row['tip'])}  {published}  {reported}"
        + ("  [pending]" if row["pending"] else "")
    ]
    if state == "rejected" and rep["detail"]:
        lines.append(f"  rejected: {rep['detail']}")
    err = row["last_error"]
    if err is not None:
        detail = err["detail"] or ""
        if err["code"] == "policy-denied" and not detail.startswith(REFUSED):
            # a record from before: qrexec exits 126 alike for a denied call and for a
            # halted target the policy does not start (autostart=no)
            detail = f"{REFUSED}: {detail}"
        lines.append(f"  last publish: {err['code']}: {detail}")
    if row["hint"]:
        lines.append(f"  {row['hint']}")
    return lines
