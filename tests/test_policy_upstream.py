"""`qgitconf policy check` against Qubes' own policy code (issue 19.8).

A table of policy files is checked twice: by `qgitconf policy check` and by the real
`qubes-policy-lint` of the pinned qubes-core-qrexec (the lab's dom0 layer, run with
the system python3).  Both must accept every valid file and reject every invalid one;
where qgitconf is deliberately stricter (it accepts a subset of the format) the row
says so, and never the other way round: a file qgitconf accepts is accepted by dom0.

Then whole policy directories (the shipped file next to a user's files, and the old
shipped file whose catch-all denies shadowed them) are evaluated by qgitconf's
`evaluate` and by upstream's `FilePolicy`/`Request` (qrexec/policy/parser.py): both
must give the same decision, target and autostart for every request of the table.

Skipped where the real lab cannot be built (not root, no pinned sources).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from qgitconf.cli import cli
from qgitconf.core.policy import QubeInfo, evaluate, load_policy_dir
from qgitconf.lab.build import SYS_PATH, SYSTEM_PYTHON, available, build, source_dir

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "policy" / "90-qgitconf.policy"

# The policy file shipped before issue 19.8 (30- tier, config-mgmt by name, catch-alls).
OLD_SHIPPED = """\
qgitconf.Receive * config-mgmt @tag:qgitconf-target allow autostart=no
qgitconf.Receive * @anyvm @anyvm deny
qgitconf.Fetch * @tag:qgitconf-target config-mgmt allow
qgitconf.Fetch * @anyvm @anyvm deny
qgitconf.Export * config-mgmt @tag:qgitconf-target ask
qgitconf.Export * @anyvm @anyvm deny
"""


@dataclass(frozen=True)
class Upstream:
    """The pinned qubes-core-qrexec as the lab's dom0 layer installs it."""

    site: Path
    lint: Path

    def env(self) -> dict[str, str]:
        return {"PATH": SYS_PATH, "LANG": "C.UTF-8", "PYTHONPATH": str(self.site)}


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    ok, why = available()
    src = source_dir()
    if not ok or src is None:
        pytest.skip(f"real lab unavailable: {why}")
    layer = build(src) / "dom0/usr"
    up = Upstream(layer / "lib/python3/dist-packages", layer / "bin/qubes-policy-lint")
    assert (up.site / "qrexec/policy/parser.py").is_file()
    assert up.lint.is_file()
    return up


def lint(up: Upstream, path: Path) -> tuple[int, str]:
    """The real `qubes-policy-lint FILE` (qrexec/tools/qubes_policy_lint.py)."""
    proc = subprocess.run(
        [SYSTEM_PYTHON, str(up.lint), str(path)],
        capture_output=True,
        env=up.env(),
        check=False,
        timeout=60,
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


def ours(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["policy", "check", "--no-samples", str(path)])
    return result.exit_code, result.output


GOOD = "qgitconf.Receive + @tag:qgitconf-mgmt @tag:qgitconf-target allow autostart=no"

# (id, file text, qgitconf accepts, qubes-policy-lint accepts)
TABLE: list[tuple[str, str, bool, bool]] = [
    ("shipped", SHIPPED.read_text(encoding="utf-8"), True, True),
    ("old shipped (shadowing, but valid)", OLD_SHIPPED, True, True),
    ("fetch via @default", "qgitconf.Fetch + @tag:t @default allow target=m", True, True),
    ("ask with default", "qgitconf.Export + @tag:m @tag:t ask default_target=personal", True, True),
    ("argument", "qgitconf.Fetch +x.y_z-1 work @adminvm deny notify=no", True, True),
    ("type and dispvm", "qgitconf.Fetch * @type:AppVM @dispvm:fedora-dvm allow", True, True),
    ("any service", "* * @anyvm @anyvm deny", True, True),
    ("user param", "qgitconf.Receive + m personal allow user=root", True, True),
    ("unknown action", "qgitconf.Receive + config-mgmt personal permit", False, False),
    ("too few columns", "qgitconf.Receive + config-mgmt allow", False, False),
    ("argument without +", "qgitconf.Receive x config-mgmt personal allow", False, False),
    ("argument with * service", "* +x config-mgmt personal allow", False, False),
    ("bad service name", "qgitconf/Receive + config-mgmt personal allow", False, False),
    ("unknown param", "qgitconf.Receive + config-mgmt personal allow foo=bar", False, False),
    ("param of deny", "qgitconf.Receive + @anyvm @anyvm deny target=work", False, False),
    ("@default as source", "qgitconf.Receive + @default personal allow", False, False),
    ("inline comment", f"{GOOD} # push", False, False),
    ("bad autostart", "qgitconf.Receive + config-mgmt personal allow autostart=0", False, False),
    ("target= a class", "qgitconf.Fetch + @anyvm @default allow target=@anyvm", False, False),
    # qgitconf is stricter: it refuses what it does not need.
    ("stricter: unknown type", "qgitconf.Receive + @type:VM personal allow", False, True),
    ("duplicate param", f"{GOOD} autostart=yes", False, False),
    ("include outside policy.d", "!include /etc/passwd", False, False),
    ("stricter: bad qube name", "qgitconf.Receive + config-mgmt per$onal allow", False, True),
    ("stricter: include", "!include include/x", False, True),
    ("stricter: include-dir", "!include-dir include", False, True),
]


@pytest.mark.parametrize(
    ("text", "ours_ok", "lint_ok"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE]
)
def test_policy_check_agrees_with_qubes_policy_lint(
    upstream: Upstream, tmp_path: Path, text: str, ours_ok: bool, lint_ok: bool
) -> None:
    path = tmp_path / "50-table.policy"
    path.write_text("# header\n" + text + ("" if text.endswith("\n") else "\n"))
    code, out = lint(upstream, path)
    assert (code == 0) == lint_ok, out
    if not lint_ok:
        assert f"{path}:2: error:" in out, out
    code, out = ours(path)
    assert (code == 0) == ours_ok, out
    assert not ours_ok or lint_ok  # never accept what dom0 refuses


def test_shipped_file_lints_clean_with_samples(upstream: Upstream) -> None:
    assert lint(upstream, SHIPPED) == (0, "")
    result = CliRunner().invoke(cli, ["policy", "check", str(SHIPPED)])
    assert result.exit_code == 0 and "sample requests as expected" in result.output


# --- whole directories: qgitconf's evaluate against upstream's FilePolicy -------------

_EVAL = r"""
import json, pathlib, sys
from qrexec.exc import AccessDenied
from qrexec.policy.parser import AskResolution, FilePolicy, Request
spec = json.load(sys.stdin)
policy = FilePolicy(policy_path=pathlib.Path(spec["dir"]))
out = []
for service, argument, source, target in spec["requests"]:
    try:
        res = policy.evaluate(Request(service, "+" + argument, source, target,
                                      system_info=spec["system_info"]))
    except AccessDenied:
        out.append(["deny", target, None])
        continue
    action = "ask" if isinstance(res, AskResolution) else "allow"
    out.append([action, str(res.target if action == "allow" else target), res.autostart])
print(json.dumps(out))
"""

QUBES = {
    "dom0": QubeInfo("dom0", klass="AdminVM"),
    "config-mgmt": QubeInfo("config-mgmt", frozenset({"qgitconf-mgmt"})),
    "backup": QubeInfo("backup"),
    "personal": QubeInfo("personal", frozenset({"qgitconf-target"})),
    "work": QubeInfo("work", frozenset({"qgitconf-target"})),
    "untrusted": QubeInfo("untrusted"),
}

REQUESTS = [
    ("qgitconf.Receive", "", "config-mgmt", "personal"),
    ("qgitconf.Receive", "", "config-mgmt", "work"),
    ("qgitconf.Receive", "x", "config-mgmt", "personal"),
    ("qgitconf.Receive", "", "untrusted", "personal"),
    ("qgitconf.Receive", "", "config-mgmt", "untrusted"),
    ("qgitconf.Fetch", "", "personal", "config-mgmt"),
    ("qgitconf.Fetch", "", "personal", "backup"),
    ("qgitconf.Fetch", "", "untrusted", "config-mgmt"),
    ("qgitconf.Fetch", "work", "personal", "config-mgmt"),
    ("qgitconf.Export", "", "config-mgmt", "personal"),
    ("qgitconf.Export", "", "config-mgmt", "untrusted"),
    ("qgitconf.Export", "", "personal", "work"),
]

# A user's own rules: a second management qube for Fetch (Global Config's tier) and
# no pushes to work (the user's file).
USER_FILES = {
    "30-user.policy": "qgitconf.Receive + config-mgmt work deny\n",
    "50-config-qgitconf.policy": "qgitconf.Fetch + @tag:qgitconf-target backup allow\n",
}


def _system_info() -> dict[str, object]:
    return {
        "domains": {
            q.name: {
                "type": q.klass,
                "tags": sorted(q.tags),
                "uuid": f"00000000-0000-0000-0000-{i:012d}",
                "template_for_dispvms": False,
                "default_dispvm": None,
                "icon": "appvm-red",
                "power_state": "Running",
            }
            for i, q in enumerate(QUBES.values())
        }
    }


def upstream_decisions(up: Upstream, policy_dir: Path) -> list[tuple[str, str, bool | None]]:
    spec = {"dir": str(policy_dir), "requests": REQUESTS, "system_info": _system_info()}
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", _EVAL],
        input=json.dumps(spec).encode(),
        capture_output=True,
        env=up.env(),
        check=False,
        timeout=60,
        cwd=os.fspath(policy_dir),
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return [(a, t, s) for a, t, s in json.loads(proc.stdout)]


def our_decisions(policy_dir: Path) -> list[tuple[str, str, bool | None]]:
    rules = load_policy_dir(policy_dir)
    out: list[tuple[str, str, bool | None]] = []
    for service, argument, source, target in REQUESTS:
        d = evaluate(
            rules, service=service, argument=argument, source=source, target=target, qubes=QUBES
        )
        start = None if d.action == "deny" else d.params.get("autostart", "yes") == "yes"
        out.append((d.action, d.target, start))
    return out


def _dir(tmp_path: Path, shipped_name: str, shipped_text: str) -> Path:
    d = tmp_path / "policy.d"
    d.mkdir()
    (d / shipped_name).write_text(shipped_text)
    for name, text in USER_FILES.items():
        (d / name).write_text(text)
    return d


def test_shipped_policy_dir_decisions_match_upstream(upstream: Upstream, tmp_path: Path) -> None:
    d = _dir(tmp_path, SHIPPED.name, SHIPPED.read_text(encoding="utf-8"))
    got = our_decisions(d)
    assert got == upstream_decisions(upstream, d)
    decided = dict(zip(REQUESTS, got, strict=True))
    # the user's rules are in force: work gets no pushes, backup serves Fetch
    assert decided[("qgitconf.Receive", "", "config-mgmt", "work")][0] == "deny"
    assert decided[("qgitconf.Fetch", "", "personal", "backup")][0] == "allow"
    # the package's rules: no argument, nothing started
    assert decided[("qgitconf.Receive", "", "config-mgmt", "personal")] == (
        "allow",
        "personal",
        False,
    )
    assert decided[("qgitconf.Receive", "x", "config-mgmt", "personal")][0] == "deny"
    assert decided[("qgitconf.Fetch", "", "personal", "config-mgmt")] == (
        "allow",
        "config-mgmt",
        False,
    )
    assert decided[("qgitconf.Export", "", "config-mgmt", "personal")] == (
        "ask",
        "personal",
        False,
    )


def test_old_policy_shadowed_user_rules_in_both(upstream: Upstream, tmp_path: Path) -> None:
    """The old 30-qgitconf.policy sorts before 30-user.policy and 50-config-*: its
    catch-all denies won, in qgitconf's model and in Qubes' parser alike."""
    d = _dir(tmp_path, "30-qgitconf.policy", OLD_SHIPPED)
    got = our_decisions(d)
    assert got == upstream_decisions(upstream, d)
    decided = dict(zip(REQUESTS, got, strict=True))
    assert decided[("qgitconf.Fetch", "", "personal", "backup")][0] == "deny"  # shadowed
    assert decided[("qgitconf.Fetch", "", "personal", "config-mgmt")][2] is True  # autostart
