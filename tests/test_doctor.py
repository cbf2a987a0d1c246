"""`qgitconf doctor`: a table of checks on both sides; exit 1 when one fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from qgitconf.ops.doctor import gpg_version_check
from qgitconf.ops.doctor_mgmt import split_gpg2_client_check, split_gpg_vault
from qgitconf.ops.doctor_target import _check_pinned, key_status
from tests.keys import make_key
from tests.labkit import Lab, commit_files, publish, qg, run


@pytest.mark.parametrize(
    ("line", "result"),
    [
        ("gpg (GnuPG) 2.2.40", "ok"),
        ("gpg (GnuPG) 2.2.36", "ok"),
        ("gpg (GnuPG) 2.4.0", "ok"),
        ("gpg (GnuPG) 2.2.35", "fail"),
        ("gpg (GnuPG) 2.1.18", "fail"),
        ("gpg (GnuPG/MacGPG2) 1.4.23", "fail"),
        ("", "fail"),
        ("gpg (GnuPG) beta", "fail"),
    ],
)
def test_gpg_version(line: str, result: str) -> None:
    assert gpg_version_check(line).result == result


@pytest.fixture(scope="module")
def expiring_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    base = tmp_path_factory.mktemp("k")
    home = Path(tempfile.mkdtemp(prefix="qgd-", dir="/tmp"))  # short: gpg-agent socket path
    fpr = make_key(home, "doctor <d@lab.invalid>", "1y")
    out = subprocess.run(
        ["gpg", "--homedir", str(home), "--armor", "--export", fpr], capture_output=True, check=True
    ).stdout
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    shutil.rmtree(home, ignore_errors=True)
    path = base / f"{fpr}.asc"
    path.write_bytes(out)
    return fpr, path


def test_key_status_reads_expiry(expiring_key: tuple[str, Path]) -> None:
    fpr, path = expiring_key
    colons = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--show-keys", str(path)],
        capture_output=True,
        check=True,
    ).stdout.decode()
    st = key_status(colons, time.time())
    assert st.fingerprints == (fpr,)
    assert st.can_sign
    assert st.expires is not None and st.expires > time.time() + 300 * 86400


@pytest.mark.parametrize(
    ("days", "result", "text"),
    [(0, "ok", "present"), (340, "warn", "expires in"), (400, "fail", "expired")],
)
def test_pinned_key_expiry(
    expiring_key: tuple[str, Path], days: int, result: str, text: str
) -> None:
    fpr, path = expiring_key
    check = _check_pinned(fpr, path, dict(os.environ), time.time() + days * 86400)
    assert check.result == result, check
    assert text in check.message


def test_pinned_key_file_must_hold_that_key(expiring_key: tuple[str, Path]) -> None:
    _, path = expiring_key
    check = _check_pinned("C" * 40, path, dict(os.environ), time.time())
    assert check.result == "fail"
    assert "exactly" in check.message
    missing = _check_pinned("C" * 40, path.with_name("none.asc"), dict(os.environ), time.time())
    assert missing.result == "fail" and "missing" in missing.message


def _doctor(lab: Lab, qube: str, expect: int, **env: str) -> dict[str, Any]:
    proc = lab.run(qube, ["qgitconf", "doctor", "--json"], extra_env=env or None)
    assert proc.returncode == expect, proc.stdout.decode() + proc.stderr.decode()
    return dict(json.loads(proc.stdout))


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in report["checks"]}


def test_doctor_target_clean_then_broken(lab: Lab) -> None:
    commit_files(lab, "personal", {".gitconfig": "[alias]\n\tst = status\n"}, "aliases")
    assert publish(lab, "personal")["status"] == "staged"
    report = _doctor(lab, "personal", 0)
    assert report["role"] == "target" and report["ok"]
    checks = _by_name(report)
    assert checks["gpg"]["result"] == "ok"
    assert checks["target-config"]["result"] == "ok"
    assert checks[f"pinned-key {lab.fingerprint[-16:]}"]["result"] == "ok"
    assert checks["agent-repo"]["result"] == "ok"
    assert checks["journal"]["result"] == "ok"
    # the lab's QubesDB: an AppVM without custom-persist keeps /home
    assert checks["persistence"]["result"] == "ok"
    assert "custom-persist is off" in checks["persistence"]["message"]
    assert checks["system-files"]["result"] == "skip"  # off unless dom0 turns it on
    lab.set_qubesdb("personal", "/vm-config/qgitconf-system-paths", "/etc/gitconfig")
    system = _by_name(_doctor(lab, "personal", 0))["system-files"]
    assert system["result"] == "ok" and "/etc/gitconfig" in system["message"], system

    state = lab.home("personal") / ".local/share/qgitconf"
    lab.write("personal", ".local/share/qgitconf/journal/plan.json", b"{}")
    report = _doctor(lab, "personal", 1)
    assert _by_name(report)["journal"]["result"] == "fail"
    shutil.rmtree(state / "journal")

    # A lost object: git fsck notices.
    objects = [p for p in (state / "repo/objects").rglob("*") if p.is_file()]
    for p in objects:
        if p.suffix in (".pack", ".idx") or len(p.parent.name) == 2:
            p.chmod(0o644)
            p.unlink()
    report = _doctor(lab, "personal", 1)
    assert _by_name(report)["agent-repo"]["result"] == "fail"


def test_doctor_table_output(lab: Lab) -> None:
    proc = qg(lab, "personal", "doctor")
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == "role: target"
    assert any(line.startswith("OK    gpg ") for line in lines)


def test_doctor_target_custom_persist_warns(lab: Lab) -> None:
    lab.set_qubesdb("personal", "/qubes-service/custom-persist", "1")
    report = _doctor(lab, "personal", 0)  # a warning, not a failure
    checks = _by_name(report)
    assert checks["persistence"]["result"] == "warn"
    assert "not declared" in checks["persistence"]["message"]
    # the package's services, as installed in the lab's template
    assert checks["service qgitconf.Receive"]["result"] == "ok"
    assert "/etc/qubes-rpc/qgitconf.Receive" in checks["service qgitconf.Receive"]["message"]


def test_doctor_config_mgmt_signs_through_split_gpg(lab: Lab) -> None:
    report = _doctor(lab, "config-mgmt", 0)
    assert report["role"] == "config-mgmt"
    checks = _by_name(report)
    assert checks["repo"]["result"] == "ok"
    assert checks["signing-key"]["result"] == "ok"
    assert checks["gpg.program"]["result"] == "ok"
    assert "signed a test message" in checks["gpg.program"]["message"]
    skipped = _by_name(json.loads(qg(lab, "config-mgmt", "doctor", "--json", "--no-sign").stdout))
    assert "skipped" in skipped["gpg.program"]["message"]


def test_doctor_config_mgmt_broken_gpg_program(lab: Lab) -> None:
    run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "config", "gpg.program", "nope")
    report = _doctor(lab, "config-mgmt", 1)
    assert _by_name(report)["gpg.program"]["result"] == "fail"


def test_doctor_dom0_policy(lab: Lab) -> None:
    policy = (lab.policy_dir / "90-qgitconf.policy").read_bytes()
    lab.write("untrusted", "policy.d/90-qgitconf.policy", policy)
    env = {"QGITCONF_POLICY_DIR": "/home/user/policy.d"}
    report = _doctor(lab, "untrusted", 0, **env)
    assert report["role"] == "dom0"
    assert _by_name(report)["policy"]["result"] == "ok"
    lab.write("untrusted", "policy.d/90-qgitconf.policy", b"qgitconf.Receive * a b permit\n")
    report = _doctor(lab, "untrusted", 1, **env)
    assert any(c["result"] == "fail" and ":1: " in c["message"] for c in report["checks"])


def test_doctor_nothing_set_up(lab: Lab) -> None:
    report = _doctor(lab, "untrusted", 0)
    assert report["role"] == "none"
    assert _by_name(report)["setup"]["result"] == "warn"


def test_doctor_config_mgmt_fails_without_signing_key_asc(lab: Lab) -> None:
    """Issue 16: without qgitconf/signing-key.asc the pre-receive hook refuses every
    push, so doctor must fail, naming the file."""
    checks = _by_name(_doctor(lab, "config-mgmt", 0))
    assert checks["signing-key.asc"]["result"] == "ok"
    assert lab.fingerprint in checks["signing-key.asc"]["message"]
    run(lab, "config-mgmt", "rm", "qgitconf.git/qgitconf/signing-key.asc")
    report = _doctor(lab, "config-mgmt", 1)
    check = _by_name(report)["signing-key.asc"]
    assert check["result"] == "fail"
    assert "signing-key.asc is missing" in check["message"]
    assert "pre-receive" in check["message"]
    proc = qg(lab, "config-mgmt", "doctor", "--no-sign", expect=1)
    assert any(
        line.startswith("FAIL  signing-key.asc") for line in proc.stdout.decode().splitlines()
    )


def test_dependency_minimums_are_the_same_everywhere() -> None:
    """One minimum per dependency (issue 20): pyproject, debian/control, the rpm spec,
    doctor's constants, docs/packaging.md's table and docs/usage.md's doctor row."""
    import re

    from qgitconf.gitpack.compat import MIN_DULWICH
    from qgitconf.ops.doctor import MIN_CLICK, MIN_GPG, MIN_PYTHON_GNUPG

    root = Path(__file__).resolve().parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    control = (root / "debian/control").read_text()
    spec = (root / "rpm_spec/qgitconf.spec.in").read_text()
    packaging = (root / "docs/packaging.md").read_text()
    usage = (root / "docs/usage.md").read_text()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| ([\w-]+) \| `[^`]+` \| `[^`]+` \| ([^|]+?) \|", packaging, re.M)
    }
    for pip, deb, rpm, row, minimum in (
        ("python-gnupg", "python3-gnupg", "python3-gnupg", "python-gnupg", MIN_PYTHON_GNUPG),
        ("click", "python3-click", "python3-click", "click", MIN_CLICK),
        ("dulwich", "python3-dulwich", "python3-dulwich", "dulwich", MIN_DULWICH),
        (None, "gpg", "gnupg2", "GnuPG", MIN_GPG),
    ):
        want = ".".join(map(str, minimum))
        found = {
            "debian/control": re.findall(rf"^\s+{deb} \(>= ([0-9.]+)\)", control, re.M),
            "rpm spec": re.findall(rf"^Requires:\s+{rpm} >= ([0-9.]+)$", spec, re.M),
            "docs/packaging.md": [rows.get(row)],
        }
        if pip is not None:
            found["pyproject.toml"] = re.findall(rf'"{pip}>=([0-9.]+)[,"]', pyproject)
        assert found == {k: [want] for k in found}, (row, found)
    # doctor's row in usage.md names the same minimums
    line = next(ln for ln in usage.splitlines() if ln.startswith("| every qube |"))
    for name, minimum in (
        ("gpg", MIN_GPG),
        ("python-gnupg", MIN_PYTHON_GNUPG),
        ("dulwich", MIN_DULWICH),
        ("click", MIN_CLICK),
    ):
        assert f"`{name}` ≥ {'.'.join(map(str, minimum))}" in line, (name, line)


def test_doctor_checks_click_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor fails below MIN_CLICK and names the version it read."""
    from importlib import metadata

    from qgitconf.ops import doctor

    monkeypatch.setattr(metadata, "version", lambda name: "8.1.2")
    check = doctor._check_click()
    assert (check.result, check.message) == ("fail", "click 8.1.2 < 8.1.3")
    monkeypatch.setattr(metadata, "version", lambda name: "8.1.3")
    assert doctor._check_click().result == "ok"

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert doctor._check_click().result == "fail"


def test_doctor_accepts_split_gpg_default_target(lab: Lab) -> None:
    """Issue 19.12: split-GPG 2.0.85's qubes-gpg.sh calls ``@default`` when there is no
    /rw/config/gpg-split-domain, and the dom0 policy's ``target=`` picks the vault.  The
    real wrapper, qrexec and policy daemon route the test signature to the vault."""
    cfg = lab.qube("config-mgmt") / "rw/config/gpg-split-domain"
    saved = cfg.read_bytes()
    cfg.unlink()
    try:
        # the upstream form (qubes-app-linux-split-gpg README / split-gpg2's example policy)
        (lab.policy_dir / "30-split-gpg.policy").write_text(
            "qubes.Gpg + config-mgmt @default allow target=vault\n"
        )
        check = _by_name(_doctor(lab, "config-mgmt", 0))["gpg.program"]
        assert check["result"] == "ok", check
        assert "vault chosen by the dom0 policy (@default)" in check["message"]
        assert "signed a test message" in check["message"]
        # without a policy rule for @default the call is refused: the signature test fails
        (lab.policy_dir / "30-split-gpg.policy").write_text("qubes.Gpg * config-mgmt vault allow\n")
        assert _by_name(_doctor(lab, "config-mgmt", 1))["gpg.program"]["result"] == "fail"
    finally:
        cfg.write_bytes(saved)
    check = _by_name(_doctor(lab, "config-mgmt", 0))["gpg.program"]
    assert "(vault vault)" in check["message"]


@pytest.mark.parametrize(
    ("content", "env", "said"),
    [
        ("vault\n", {}, "vault vault"),
        ("vault\n", {"QUBES_GPG_DOMAIN": "other"}, "vault vault"),  # the file wins
        ("", {"QUBES_GPG_DOMAIN": "other"}, "vault other"),
        ("", {}, "vault chosen by the dom0 policy (@default)"),
        (None, {}, "vault chosen by the dom0 policy (@default)"),
        ("@default\n", {}, "vault chosen by the dom0 policy (@default)"),
    ],
)
def test_split_gpg_vault_follows_qubes_gpg_sh(
    tmp_path: Path, content: str | None, env: dict[str, str], said: str
) -> None:
    cfg = tmp_path / "gpg-split-domain"
    if content is not None:
        cfg.write_text(content)
    assert split_gpg_vault(cfg, env) == said


def test_split_gpg2_client_enabled_after_boot_needs_a_restart(tmp_path: Path) -> None:
    """Issue 19.1: split-gpg2-client.service has ConditionPathExists=
    /run/qubes-service/split-gpg2-client, which exists only if the service was on at boot."""
    flag = tmp_path / "split-gpg2-client"
    on = {"/qubes-service/split-gpg2-client": "1"}
    assert split_gpg2_client_check({}.get, flag) is None  # not enabled: nothing to say
    problem = split_gpg2_client_check(on.get, flag)
    assert problem is not None and "restart the qube" in problem
    flag.touch()
    assert split_gpg2_client_check(on.get, flag) is None


def test_doctor_split_gpg2_client_enabled_after_boot(lab: Lab) -> None:
    run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "config", "gpg.program", "gpg")
    args = ["qgitconf", "doctor", "--json", "--no-sign"]
    checks = _by_name(json.loads(lab.run("config-mgmt", args).stdout))
    assert checks["gpg.program"]["result"] == "ok"
    lab.set_qubesdb("config-mgmt", "/qubes-service/split-gpg2-client", "1")
    proc = lab.run("config-mgmt", args)
    assert proc.returncode == 1
    check = _by_name(json.loads(proc.stdout))["gpg.program"]
    assert check["result"] == "fail" and "restart the qube" in check["message"]


def test_doctor_checks_the_dulwich_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    from qgitconf.gitpack import compat as dulwich_compat
    from qgitconf.ops import doctor

    assert doctor._check_dulwich().result == "ok"
    monkeypatch.setattr(dulwich_compat, "dulwich_version", lambda: (0, 20, 50))
    check = doctor._check_dulwich()
    assert check.result == "fail" and "0.20.50 < 0.21.2" in check.message
