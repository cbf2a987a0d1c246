"""Pull in the lab: a target that was not running at publish time stays pending (dom0
refuses the call as it refuses a denied one) and pulls its kept update later;
qgitconf.Fetch serves the caller's own update only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.labkit import (
    Lab,
    commit_files,
    kept_update,
    publish,
    qg,
    rejected_log,
    run,
    target_snapshot,
)

ROOT = Path(__file__).resolve().parent.parent


def publish_all(lab: Lab, expect: int = 0) -> dict[str, dict[str, Any]]:
    out = qg(lab, "config-mgmt", "publish", "--all", "--json", expect=expect).stdout
    return {r["target"]: r for r in json.loads(out)}


def fetch(lab: Lab, caller: str, spec: str = "qgitconf.Fetch") -> tuple[int, bytes, bytes]:
    proc = run(lab, caller, "qrexec-client-vm", "config-mgmt", spec, expect=None)
    return proc.returncode, proc.stdout, proc.stderr


def staged_commit(lab: Lab, qube: str) -> str | None:
    return json.loads(qg(lab, qube, "status", "--json").stdout)["staged"]


def test_not_running_is_pending_then_pull_stages_it(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "p\n"}, "p")
    sha = commit_files(lab, "work", {".bashrc": "w\n"}, "w")
    lab.set_running("work", False)
    before = target_snapshot(lab, "work")
    # Real qrexec refuses a call to a halted qube the policy does not start exactly as
    # it refuses a denied one (qrexec-client-vm exits 126, "Request refused"): config-mgmt
    # cannot tell them apart, so the result is "denied" (exit 1) with a hint that names
    # both causes and `qgitconf pull`; the update is kept and the target stays pending.
    proc = qg(lab, "config-mgmt", "publish", "--all", expect=1)
    table = proc.stdout.decode()
    assert "work" in table and "denied" in table and "it is halted" in table
    assert "qgitconf pull" in table
    assert "[2/2]" in proc.stderr.decode()  # progress on stderr
    results = publish_all(lab, expect=1)
    assert results["personal"]["status"] == "up-to-date"
    assert results["work"]["status"] == "denied" and results["work"]["sequence"] == 1
    assert target_snapshot(lab, "work") == before  # nothing reached it
    status = json.loads(qg(lab, "config-mgmt", "status", "--json").stdout)
    row = {t["target"]: t for t in status["targets"]}["work"]
    assert row["pending"] and row["last_error"]["code"] == "policy-denied"
    assert "qgitconf pull" in row["last_error"]["detail"]

    lab.set_running("work", True)
    out = qg(lab, "work", "pull").stdout.decode()
    assert out.startswith("staged: commit") and "sequence 1" in out
    assert staged_commit(lab, "work") == sha
    # Pulling again is harmless; the next publish finds it up to date.
    assert qg(lab, "work", "pull").stdout.decode().startswith("up-to-date")
    assert publish(lab, "work")["status"] == "up-to-date"


def test_pull_with_nothing_published(lab: Lab) -> None:
    before = target_snapshot(lab, "work")
    out = qg(lab, "work", "pull").stdout.decode()
    assert out.strip() == "nothing published for this qube yet"
    assert target_snapshot(lab, "work") == before


def test_pulled_update_is_verified_like_a_pushed_one(lab: Lab) -> None:
    """A tampered kept update (compromised config-mgmt disk) is rejected by pull with the
    same reason Receive gives, and nothing changes in the target."""
    commit_files(lab, "work", {".bashrc": "w\n"}, "w")
    lab.set_running("work", False)
    assert publish_all(lab, expect=1)["work"]["status"] == "denied"  # halted: refused
    rel = "qgitconf.git/qgitconf/updates/work.update"
    path = lab.home("config-mgmt") / rel
    data = bytearray(path.read_bytes())
    data[-30] ^= 1
    lab.write("config-mgmt", rel, bytes(data), mode=path.stat().st_mode & 0o777)
    lab.set_running("work", True)
    before = target_snapshot(lab, "work")
    proc = qg(lab, "work", "pull", expect=3)
    assert b"[bundle-hash-mismatch]" in proc.stderr
    assert target_snapshot(lab, "work") == before
    log = rejected_log(lab, "work")
    assert log[-1]["reason"] == "bundle-hash-mismatch" and log[-1]["from"] == "config-mgmt"


def test_untrusted_cannot_fetch(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "secret prompt\n"}, "p")
    publish(lab, "personal")
    status, out, _err = fetch(lab, "untrusted")
    assert status == 126 and out == b""
    status, out, _err = fetch(lab, "untrusted", "qgitconf.Fetch+personal")
    assert status == 126 and out == b""


def test_permissive_policy_still_serves_only_the_callers_update(lab: Lab) -> None:
    """A misconfigured policy lets untrusted call Fetch: the service still answers for the
    caller named by dom0 only, whatever argument or stdin it sends."""
    (lab.policy_dir / "20-misconfigured.policy").write_text(
        "qgitconf.Fetch * @anyvm config-mgmt allow\n"
    )
    commit_files(lab, "personal", {".bashrc": "p\n"}, "p")
    commit_files(lab, "work", {".bashrc": "w\n"}, "w")
    publish_all(lab)
    for spec in ("qgitconf.Fetch", "qgitconf.Fetch+personal", "qgitconf.Fetch+work"):
        status, out, err = fetch(lab, "untrusted", spec)
        assert status == 1 and out == b"", (spec, status)
        assert b"nothing published for untrusted" in err
    # personal asking for work's update gets its own.
    status, out, _err = fetch(lab, "personal", "qgitconf.Fetch+work")
    assert status == 0 and out == kept_update(lab, "personal")
    assert out != kept_update(lab, "work")


def test_pull_refused_by_policy_is_a_transport_error(lab: Lab) -> None:
    # qrexec refuses a denied call as it refuses one to a halted qube (exit 126):
    # since issue 19.9 pull reports both as "source-off" (a PolicyDeniedError,
    # exit 5) and names the policy as the other cause.
    (lab.policy_dir / "20-deny.policy").write_text("qgitconf.Fetch * work config-mgmt deny\n")
    proc = qg(lab, "work", "pull", expect=5)
    assert b"[source-off]" in proc.stderr and b"or the policy denies this qube" in proc.stderr


def test_pull_does_not_start_an_offline_config_mgmt(lab: Lab) -> None:
    """Issue 19.9: Fetch has autostart=no; with config-mgmt halted, pull is refused and
    says config-mgmt is off (code source-off, exit 5); nothing changes in the target."""
    commit_files(lab, "work", {".bashrc": "w\n"}, "w")
    publish(lab, "work")
    lab.set_running("config-mgmt", False)
    before = target_snapshot(lab, "work")
    proc = qg(lab, "work", "pull", expect=5)
    err = proc.stderr.decode()
    assert "[source-off]" in err and "config-mgmt is off" in err, err
    assert "start config-mgmt and run `qgitconf pull` again" in err
    assert target_snapshot(lab, "work") == before
    lab.set_running("config-mgmt", True)
    assert qg(lab, "work", "pull").stdout.decode().startswith("up-to-date")


def test_systemd_units_run_pull() -> None:
    service = (ROOT / "systemd/qgitconf-pull.service").read_text()
    timer = (ROOT / "systemd/qgitconf-pull.timer").read_text()
    assert "ExecStart=/usr/bin/qgitconf pull" in service and "Type=oneshot" in service
    assert "OnStartupSec=" in timer and "WantedBy=timers.target" in timer


def test_rpc_dispatchers_have_fixed_argv() -> None:
    for name, arg in (("qgitconf.Fetch", "fetch"), ("qgitconf.Export", "export")):
        text = (ROOT / "rpc" / name).read_text()
        assert text.startswith("#!/bin/sh\n")
        code = "\n".join(x for x in text.splitlines() if x and not x.startswith("#"))
        words = code.replace("\\\n", " ").split()
        # one exec from an empty environment; the service by absolute path, fixed argv
        assert words[:3] == ["exec", "/usr/bin/env", "-i"], name
        assert words[-2:] == ["/usr/bin/qgitconf-service", arg], name
        assert "$@" not in code and "$1" not in code, name
        assert (ROOT / "rpc" / name).stat().st_mode & 0o111
