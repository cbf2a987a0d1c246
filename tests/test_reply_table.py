"""Replies are untrusted: a table of malicious replies against ``core/reply.py`` and
publish.  Each case names the attack and expects one outcome; none may crash publish,
reach the terminal unescaped, or change anything but the target's own prerequisite
hint (which the target itself then checks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from qgitconf.core.envelope import parse_statement
from qgitconf.core.reply import parse_reply
from qgitconf.errors import BadReplyError, TooLargeError
from qgitconf.lab.attacks import split_update
from qgitconf.limits import MAX_REPLY_BYTES
from qgitconf.mgmt.publish import load_record, publish
from qgitconf.mgmt.publishjobs import publish_targets
from qgitconf.qubes.qrexec import CallResult
from tests.labkit import Lab, QubeTransport, commit_files, in_process_publish, kept_update, qg

HEX = "a" * 40


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


STAGED = {"result": "staged", "commit": HEX, "sequence": 1, "applied": None}

BAD_REPLIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("no newline", json.dumps(STAGED).encode()),
    ("two lines", line(STAGED) + line(STAGED)),
    ("huge", b"{" + b" " * (MAX_REPLY_BYTES + 10) + b"}\n"),
    ("not json", b"staged\n"),
    ("json array", b"[]\n"),
    ("invalid utf-8", b'{"result": "\xff"}\n'),
    ("unknown result", line({"result": "applied"})),
    ("extra key", line(dict(STAGED, admin=True))),
    ("missing key", line({"result": "staged", "commit": HEX, "sequence": 1})),
    ("short commit", line(dict(STAGED, commit="abc"))),
    ("uppercase commit", line(dict(STAGED, commit="A" * 40))),
    ("commit with escape", line(dict(STAGED, commit="\x1b[2J" + "a" * 36))),
    ("negative sequence", line(dict(STAGED, sequence=-1))),
    ("bool sequence", line(dict(STAGED, sequence=True))),
    ("float sequence", line(dict(STAGED, sequence=1.5))),
    ("string sequence", line(dict(STAGED, sequence="1"))),
    ("applied not hex", line(dict(STAGED, applied="HEAD"))),
    ("reason not a code", line({"result": "rejected", "reason": "\x1b[31mx", "detail": ""})),
    ("reason too long", line({"result": "rejected", "reason": "a" * 41, "detail": ""})),
    ("detail not text", line({"result": "rejected", "reason": "rollback", "detail": 5})),
    ("nested object", line({"result": {"result": "staged"}})),
    ("deep nesting (RecursionError in json)", b"[" * 2000 + b"]" * 2000 + b"\n"),
    ("deep nesting in a value", b'{"result": ' + b"[" * 1500 + b"]" * 1500 + b"}\n"),
    ("NaN", b'{"result": "staged", "commit": "' + HEX.encode() + b'", "sequence": NaN}\n'),
]


@pytest.mark.parametrize("reply", [r for _, r in BAD_REPLIES], ids=[n for n, _ in BAD_REPLIES])
def test_parse_reply_refuses(reply: bytes) -> None:
    with pytest.raises(BadReplyError):
        parse_reply(reply)


def test_parse_reply_escapes_detail() -> None:
    reply = parse_reply(
        line({"result": "rejected", "reason": "rollback", "detail": "\x1b]0;pwned\x07\u202e" * 40})
    )
    assert reply.detail is not None
    assert (
        "\x1b" not in reply.detail and "\u202e" not in reply.detail and "\x07" not in reply.detail
    )
    assert "\\x1b]0;pwned\\x07\\u202e" in reply.detail


class FakeTarget:
    """A transport whose target answers ``stdout`` with ``status`` (a lying qube)."""

    def __init__(self, stdout: bytes, status: int = 0, error: Exception | None = None) -> None:
        self.stdout, self.status, self.error = stdout, status, error
        self.calls = 0

    def call(self, target: str, service: str, stdin: bytes, stdout_cap: int) -> CallResult:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return CallResult(self.status, self.stdout[: stdout_cap + 1], b"")


PUBLISH_CASES: list[tuple[str, FakeTarget, str, str]] = [
    ("malformed", FakeTarget(b"\x1b[2J\x1b[H you are owned\n"), "failed", "unreadable"),
    ("huge", FakeTarget(b"", error=TooLargeError("answered more than 4096 bytes")), "failed", ""),
    ("refused with junk", FakeTarget(b"", status=126), "denied", ""),
    (
        "escape sequences in detail",
        FakeTarget(
            line({"result": "rejected", "reason": "rollback", "detail": "\x1b[31mred\u202e"})
        ),
        "rejected",
        "rollback: \\x1b[31mred\\u202e",
    ),
    (
        "crashing service status with a staged line",
        FakeTarget(line(STAGED), status=70),
        "staged",
        "",
    ),
]


@pytest.mark.parametrize(
    ("target", "status", "message"),
    [c[1:] for c in PUBLISH_CASES],
    ids=[c[0] for c in PUBLISH_CASES],
)
def test_publish_survives_malicious_replies(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, target: FakeTarget, status: str, message: str
) -> None:
    commit_files(lab, "personal", {".bashrc": "x\n"}, "x")
    with in_process_publish(lab, monkeypatch) as repo:
        result = publish(repo, "personal", target)
        record = load_record(repo, "personal")
    assert result.status == status
    assert message in result.message
    assert "\x1b" not in result.message and "\u202e" not in result.message
    assert record["sequence"] == 1
    if status != "staged":
        assert "accepted" not in record
    # status output stays escaped too
    out = qg(lab, "config-mgmt", "status").stdout.decode()
    assert "\x1b" not in out


def test_a_lie_about_the_accepted_commit_only_costs_a_full_bundle(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target claims to hold a commit config-mgmt never made: the next update is a
    full bundle (no prerequisite), which the real target accepts."""
    commit_files(lab, "personal", {".bashrc": "1\n"}, "one")
    liar = FakeTarget(line(dict(STAGED, commit="b" * 40, applied="c" * 40)))
    with in_process_publish(lab, monkeypatch) as repo:
        assert publish(repo, "personal", liar).status == "staged"
        assert load_record(repo, "personal")["accepted"] == "b" * 40
    commit_files(lab, "personal", {".bashrc": "2\n"}, "two")
    with in_process_publish(lab, monkeypatch) as repo:
        result = publish(repo, "personal", QubeTransport(lab))
    assert result.status == "staged" and result.sequence == 2
    st = parse_statement(split_update(kept_update(lab, "personal"))[0])
    assert st.prerequisite is None


def test_a_lie_about_an_older_commit_is_checked_by_the_target(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target claims an ancestor it never accepted: the incremental bundle lacks the
    prerequisite on the real target, which rejects it; publish retries with a full one."""
    first = commit_files(lab, "personal", {".bashrc": "1\n"}, "one")
    liar = FakeTarget(line(dict(STAGED, commit=first)))
    with in_process_publish(lab, monkeypatch) as repo:
        assert publish(repo, "personal", liar).status == "staged"
    commit_files(lab, "personal", {".bashrc": "2\n"}, "two")
    with in_process_publish(lab, monkeypatch) as repo:
        result = publish(repo, "personal", QubeTransport(lab))
    assert result.status == "staged" and result.sequence == 3  # 2 was the rejected one
    st = parse_statement(split_update(kept_update(lab, "personal"))[0])
    assert st.prerequisite is None


def test_publish_targets_reports_each_target_even_when_one_lies(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_files(lab, "personal", {".bashrc": "x\n"}, "x")
    commit_files(lab, "work", {".bashrc": "y\n"}, "y")
    with in_process_publish(lab, monkeypatch) as repo:
        results = publish_targets(
            repo, ["personal", "work"], FakeTarget(b"garbage\n"), jobs=2, now=datetime.now(UTC)
        )
    assert [(r.target, r.status) for r in results] == [("personal", "failed"), ("work", "failed")]
    assert all("unreadable" in r.message for r in results)
