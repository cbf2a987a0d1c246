"""The click-free entry point (``qgitconf.entry``, issue 21): ``qgitconf status`` and
``qgitconf apply --yes`` print what the click layer prints, fail the same way, and
import no click; any other command line goes through click.  In the lab's target
qube, whose ``/usr/bin/qgitconf`` is the installed entry point."""

from __future__ import annotations

import json

from tests.labkit import Lab, commit_files, publish, qg, run

CLICK_CLI = ("python3", "-I", "-m", "qgitconf.cli")


def _imports(lab: Lab, *args: str) -> str:
    """The modules ``qgitconf ARGS`` imports (``-X importtime``'s report)."""
    proc = run(lab, "personal", "python3", "-I", "-X", "importtime", "/usr/bin/qgitconf", *args)
    return proc.stderr.decode()


def test_status_and_apply_match_the_click_layer_without_click(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "alias ll='ls -l'\n"}, "first")
    publish(lab, "personal")
    for args in (("status",), ("status", "--json")):
        fast = qg(lab, "personal", *args)
        full = run(lab, "personal", *CLICK_CLI, *args)
        assert fast.stdout == full.stdout and fast.stderr == full.stderr == b""
    assert " click" not in _imports(lab, "status")
    assert json.loads(qg(lab, "personal", "status", "--json").stdout)["pending"]

    out = qg(lab, "personal", "apply", "--yes")
    assert out.stdout.decode().startswith("generation 1: applied ")
    assert out.stdout.decode().endswith(" (1 written, 0 removed, 0 restored)\n")
    again = qg(lab, "personal", "apply", "--yes", "--json")
    full = run(lab, "personal", *CLICK_CLI, "apply", "--yes", "--json")
    assert json.loads(again.stdout) == json.loads(full.stdout)
    assert json.loads(again.stdout)["note"] == "up to date"
    assert " click" not in _imports(lab, "apply", "--yes")
    # any other command line: click (here its usage error, exit 2)
    assert " click" in _imports(lab, "status", "--help")
    bad = qg(lab, "personal", "apply", "--yes", "--nosuch", expect=2)
    assert b"No such option" in bad.stderr


def test_errors_as_through_the_click_layer(lab: Lab) -> None:
    fast = qg(lab, "personal", "apply", "--yes", expect=None)
    full = run(lab, "personal", *CLICK_CLI, "apply", "--yes", expect=None)
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        full.returncode,
        full.stdout,
        full.stderr,
    )
    assert fast.returncode == 1 and b"[nothing-staged]" in fast.stderr


def test_publish_matches_the_click_layer_without_click(lab: Lab) -> None:
    """``qgitconf publish NAME... [--json]`` in config-mgmt: the same lines, errors and
    exit statuses as through click, without importing it (the "publish -> staged"
    row); other options (``--dry-run``, ``--jobs``, ``--all``) still go to click."""
    for t in ("personal", "work"):
        commit_files(lab, t, {".bashrc": "alias ll='ls -l'\n"}, "first")
    first = qg(lab, "config-mgmt", "publish", "personal", "work", "--json")
    assert [r["status"] for r in json.loads(first.stdout)] == ["staged", "staged"]
    # nothing changed: both resend the kept update and print the same
    for args in (("publish", "personal"), ("publish", "--json", "personal", "work")):
        fast = qg(lab, "config-mgmt", *args)
        full = run(lab, "config-mgmt", *CLICK_CLI, *args)
        assert fast.stdout == full.stdout

        # progress lines of several targets ("[n/2] NAME: STATUS"), in the order the
        # targets finish (in parallel): compared without it
        def progress(err: bytes) -> list[bytes]:
            return sorted(line.split(b"] ", 1)[-1] for line in err.splitlines())

        assert progress(fast.stderr) == progress(full.stderr)
    assert b"[2/2]" in fast.stderr
    for bad in (("publish", "nosuch"), ("publish", "personal", "--json", "--json")):
        fast = qg(lab, "config-mgmt", *bad, expect=None)
        full = run(lab, "config-mgmt", *CLICK_CLI, *bad, expect=None)
        assert (fast.returncode, fast.stdout, fast.stderr) == (
            full.returncode,
            full.stdout,
            full.stderr,
        )
    assert fast.returncode == 0
    assert qg(lab, "config-mgmt", "publish", "nosuch", expect=None).returncode == 2
    imports = run(lab, "config-mgmt", "python3", "-I", "-X", "importtime", "/usr/bin/qgitconf",
                  "publish", "personal").stderr.decode()  # fmt: skip
    assert " click" not in imports and " dataclasses" not in imports
    assert " tomllib" not in imports  # which side this qube is on: no config reader
    dry = run(lab, "config-mgmt", "python3", "-I", "-X", "importtime", "/usr/bin/qgitconf",
              "publish", "--dry-run", "personal").stderr.decode()  # fmt: skip
    assert " click" in dry
