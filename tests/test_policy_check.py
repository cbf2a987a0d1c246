"""`qgitconf policy check`: the shipped policy passes; broken policy lines are rejected."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from qgitconf.cli import cli
from qgitconf.ops.policycheck import SAMPLES, check_files, check_samples

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "policy" / "90-qgitconf.policy"
MGMT, TARGET = "@tag:qgitconf-mgmt", "@tag:qgitconf-target"
GOOD = "qgitconf.Receive * config-mgmt @tag:qgitconf-target allow autostart=no"


def _check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["policy", "check", *args])
    return result.exit_code, result.output


def test_shipped_policy_passes_with_samples() -> None:
    code, out = _check(str(SHIPPED))
    assert code == 0, out
    assert f"{len(SAMPLES)} sample requests as expected" in out


def test_shipped_policy_passes_without_samples() -> None:
    code, out = _check("--no-samples", str(SHIPPED))
    assert code == 0, out
    assert "sample" not in out


def test_samples_follow_a_renamed_mgmt_qube(tmp_path: Path) -> None:
    """Issue 19.8: the shipped file names no qube; a management qube of another name
    needs only the tag.  A file that names config-mgmt fails for another name."""
    code, out = _check("--mgmt-qube", "dotfiles-mgmt", str(SHIPPED))
    assert code == 0, out
    named = SHIPPED.read_text().replace("@tag:qgitconf-mgmt", "config-mgmt")
    path = tmp_path / SHIPPED.name
    path.write_text(named)
    assert _check(str(path))[0] == 0
    assert _check("--mgmt-qube", "dotfiles-mgmt", str(path))[0] == 4


BROKEN = [
    ("unknown action", "qgitconf.Receive * config-mgmt personal permit", "unknown action"),
    ("bad token", "qgitconf.Receive * config-mgmt per$onal allow", "bad target token"),
    ("arg after * service", "* +x config-mgmt personal allow", "argument *"),
    ("bad argument", "qgitconf.Receive x config-mgmt personal allow", "bad argument"),
    ("bad service", "qgitconf/Receive * config-mgmt personal allow", "bad service name"),
    ("too few columns", "qgitconf.Receive * config-mgmt allow", "too few columns"),
    ("inline comment", f"{GOOD} # push", "inline comments"),
    ("unknown param", "qgitconf.Receive * config-mgmt personal allow foo=bar", "not allowed"),
    ("param of deny", "qgitconf.Receive * @anyvm @anyvm deny target=work", "not allowed"),
    ("bad boolean", "qgitconf.Receive * config-mgmt personal allow autostart=0", "yes or no"),
    ("@default as source", "qgitconf.Receive * @default personal allow", "target column"),
    ("unknown type", "qgitconf.Receive * @type:VM personal allow", "unknown qube type"),
    ("bad tag", "qgitconf.Receive * @tag:a/b personal allow", "bad tag"),
    ("include directive", "!include /etc/passwd", "not supported"),
    ("target= two qubes", "qgitconf.Fetch * @anyvm @default allow target=@anyvm", "one qube"),
]


@pytest.mark.parametrize(("line", "reason"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_line_rejected_with_location(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "30-test.policy"
    path.write_text(f"# header\n{GOOD}\n{line}\n")
    code, out = _check(str(path))
    assert code == 4
    assert f"{path}:3: " in out
    assert reason in out


@pytest.mark.parametrize("name", ["30-QGitConf.policy", "30 qgitconf.policy", "qgitconf.pol"])
def test_bad_file_name_rejected(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    shutil.copy(SHIPPED, path)
    code, out = _check("--no-samples", str(path))
    assert code == 4
    assert "[0-9a-z_.-]+.policy" in out


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "30-x.policy"
    path.write_text("a * b c d\nqgitconf.Receive * config-mgmt personal maybe\n")
    code, out = _check(str(path))
    assert code == 4
    assert f"{path}:1:" in out and f"{path}:2:" in out


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    code, out = _check(str(tmp_path / "40-none.policy"))
    assert code == 4
    assert "cannot read" in out


# Valid policies whose *behaviour* breaks a promise: the samples must catch each one.
WEAKENED = [
    ("push from anyone", "qgitconf.Receive + @anyvm @tag:qgitconf-target allow autostart=no"),
    ("push starts qubes", "qgitconf.Receive + @tag:qgitconf-mgmt @tag:qgitconf-target allow"),
    ("push with any argument", f"qgitconf.Receive * {MGMT} {TARGET} allow autostart=no"),
    ("catch-all deny", "qgitconf.Receive * @anyvm @anyvm deny"),
    ("export without asking", "qgitconf.Export + @tag:qgitconf-mgmt @tag:qgitconf-target allow"),
    ("export starts qubes", "qgitconf.Export + @tag:qgitconf-mgmt @tag:qgitconf-target ask"),
    ("fetch from anywhere", "qgitconf.Fetch + @tag:qgitconf-target @anyvm allow autostart=no"),
    ("fetch starts mgmt", "qgitconf.Fetch + @tag:qgitconf-target @tag:qgitconf-mgmt allow"),
]


@pytest.mark.parametrize("first", [w[1] for w in WEAKENED], ids=[w[0] for w in WEAKENED])
def test_samples_catch_weakened_policy(first: str) -> None:
    text = first + "\n" + SHIPPED.read_text()
    problems = check_samples(text, SHIPPED.name)
    assert problems
    assert all(p.startswith(f"{SHIPPED.name}:1: sample ") for p in problems)


def test_empty_policy_denies_everything_and_fails_allow_samples(tmp_path: Path) -> None:
    path = tmp_path / SHIPPED.name
    path.write_text("# nothing\n")
    report = check_files([path])
    expected_fail = sum(1 for s in SAMPLES if s.expect != "deny")
    assert len(report.problems) == expected_fail


def test_samples_forced_on_other_names(tmp_path: Path) -> None:
    path = tmp_path / "50-mine.policy"
    path.write_text(GOOD + "\n")
    assert check_files([path]).ok  # syntax only by default
    assert not check_files([path], samples=True).ok
