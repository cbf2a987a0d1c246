"""config-mgmt status: per target, the branch tip, what was published and what the
target reported (labelled as reported: replies are untrusted hints)."""

from __future__ import annotations

from typing import Any

from qgitconf.mgmt.publish import load_record
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.sanitize import sanitize


def mgmt_status(repo: MgmtRepo) -> dict[str, Any]:
    repo.require()
    rows = []
    for name, info in sorted(repo.targets().items()):
        rec = load_record(repo, name)
        tip = repo.tip(name)
        reply = rec.get("reply") or {}
        error = rec.get("error")
        rows.append(
            {
                "target": name,
                "layers": info.get("layers", []),
                "tip": tip,
                "published": {"sequence": rec.get("sequence"), "commit": rec.get("published")},
                "reported_by_target": {
                    "result": reply.get("result"),
                    "accepted": reply.get("commit") if reply.get("result") != "rejected" else None,
                    "applied": reply.get("applied"),
                    "reason": reply.get("reason"),
                    "detail": sanitize(reply["detail"]) if reply.get("detail") else None,
                },
                "last_error": error,
                "pending": tip != rec.get("published")
                or error is not None
                or reply.get("result") not in ("staged", "up-to-date"),
            }
        )
    return {"role": "config-mgmt", "repo": str(repo.path), "targets": rows}
