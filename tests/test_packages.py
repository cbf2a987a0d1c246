"""Packaging files agree with each other and with the code; `make packages` builds.

The package build runs dpkg-buildpackage (and rpmbuild where present) on a copy of
the tree: about a minute.  It is skipped, with the reason, when the tools are not
installed; `.ci/run` installs them so CI runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from qgitconf import __version__
from qgitconf.cli import cli
from qgitconf.manpage import render

ROOT = Path(__file__).resolve().parent.parent


def test_version_file_matches_package() -> None:
    assert (ROOT / "version").read_text().strip() == __version__


def test_debian_changelog_version() -> None:
    first = (ROOT / "debian/changelog").read_text().splitlines()[0]
    assert first.startswith(f"qgitconf ({__version__}-")


def test_qubesbuilder_layout() -> None:
    """Issue 19.7: dom0 (``host``) builds only the policy spec, as
    qubes-app-linux-split-gpg's .qubesbuilder does; templates (``vm``) the rest."""
    text = (ROOT / ".qubesbuilder").read_text()
    # A tiny structural check (no YAML dependency): host rpm, vm rpm + deb.
    assert re.search(r"^host:\n  rpm:\n    build:\n    - rpm_spec/qgitconf-dom0.spec$", text, re.M)
    assert re.search(r"^vm:\n  rpm:\n    build:\n    - rpm_spec/qgitconf.spec\n", text, re.M)
    assert re.search(r"^  deb:\n    build:\n    - debian$", text, re.M)
    assert "qgitconf.spec" not in text.split("vm:")[0]  # the agent package never for dom0
    # Builder v2 renders X.spec from X.spec.in
    for spec in re.findall(r"- (rpm_spec/\S+\.spec)$", text, re.M):
        assert (ROOT / f"{spec}.in").is_file(), spec


def test_specs_render_as_builder_v2_does() -> None:
    """qubes-builderv2 generate-spec: @VERSION@ lines from `version`, @REL@ from `rel`,
    and it stops when a spec has @REL@ but the repository has no `rel` file."""
    rel = (ROOT / "rel").read_text().splitlines()
    assert rel and re.fullmatch(r"[0-9]+(\.[0-9]+)*", rel[0])
    for spec in (ROOT / "rpm_spec").glob("*.spec.in"):
        text = spec.read_text()
        rendered = text.replace("@VERSION@", __version__).replace("@REL@", rel[0])
        assert not re.search(r"@[A-Z0-9_]+@", rendered), spec.name


def _files_section(spec: str) -> list[str]:
    body = spec.split("\n%files\n", 1)[1].split("\n%changelog", 1)[0]
    return [ln for ln in body.splitlines() if ln and not ln.startswith("#")]


def test_spec_lists_every_rpc_and_rpc_config_file() -> None:
    spec = (ROOT / "rpm_spec/qgitconf.spec.in").read_text()
    for f in (ROOT / "rpc").iterdir():
        assert f"%{{_sysconfdir}}/qubes-rpc/{f.name}" in spec
    for f in (ROOT / "rpc-config").iterdir():
        assert f"%{{_sysconfdir}}/qubes/rpc-config/{f.name}" in spec
    # the template package carries no dom0 file and no dom0 subpackage
    assert "%package" not in spec and "policy.d" not in spec
    # but the policy, for `qgitconf policy check` and copying to dom0 (docs/setup.md)
    assert "%{_datadir}/qgitconf/" in _files_section(spec)


def test_dom0_spec_holds_only_the_policy() -> None:
    spec = (ROOT / "rpm_spec/qgitconf-dom0.spec.in").read_text()
    assert re.search(r"^Name:\s+qgitconf-dom0$", spec, re.M)
    assert "%package" not in spec
    assert re.findall(r"^Requires:\s+(.*)$", spec, re.M) == ["qubes-core-qrexec-dom0"]
    assert _files_section(spec) == [
        "%config(noreplace) %attr(0664,root,qubes) %{_sysconfdir}/qubes/policy.d/*qgitconf*.policy"
    ]
    assert all("qgitconf" in p.name for p in (ROOT / "policy").glob("*.policy"))
    assert "make install-dom0 " in spec and "make install " not in spec


def test_user_units_enabled_alike_and_documented() -> None:
    """Issue 19.13: Debian (dh_installsystemduser) and the RPM (%post, preset) both
    enable the pull timer and the restore service; the docs the units name ship."""
    preset = (ROOT / "systemd/50-qgitconf.preset").read_text()
    enabled = re.findall(r"^enable (\S+)$", preset, re.M)
    assert sorted(enabled) == ["qgitconf-pull.timer", "qgitconf-restore.service"]
    spec = (ROOT / "rpm_spec/qgitconf.spec.in").read_text()
    post = spec.split("\n%post\n", 1)[1].split("\n%preun\n", 1)[0]
    assert "--global preset qgitconf-pull.timer qgitconf-restore.service" in post
    assert "%{_prefix}/lib/systemd/user-preset/50-qgitconf.preset" in spec
    rules = (ROOT / "debian/rules").read_text()
    assert "--no-enable" not in rules and "override_dh_installsystemduser" not in rules
    docs = re.search(r"^%doc (.*)$", spec, re.M)
    assert docs is not None
    deb_docs = (ROOT / "debian/qgitconf.docs").read_text().split()
    for unit in (ROOT / "systemd").glob("qgitconf-*"):
        text = unit.read_text()
        directives = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        # PrivateTmp= needs user namespaces in a user unit (unverified on the Qubes kernel)
        assert not any(ln.startswith("PrivateTmp") for ln in directives), unit.name
        for doc in re.findall(r"file:///usr/share/doc/qgitconf/(\S+)", text):
            assert f"docs/{doc}" in docs.group(1).split(), (unit.name, doc)
            assert f"docs/{doc}" in deb_docs, (unit.name, doc)
            assert (ROOT / "docs" / doc).is_file()
    assert "dh_compress -X.md" in rules  # the linked .md files stay uncompressed


def test_systemd_restore_unit_runs_before_pull() -> None:
    """Issue 19.13: the docs say restore re-creates missing files at boot; a unit does."""
    unit = (ROOT / "systemd/qgitconf-restore.service").read_text()
    lines = [ln for ln in unit.splitlines() if ln and not ln.startswith("#")]
    assert "Type=oneshot" in lines
    assert "ExecStart=/usr/bin/qgitconf restore" in lines
    assert "Before=qgitconf-pull.service" in lines
    assert "WantedBy=default.target" in lines
    assert "ConditionPathExists=|%h/.config/qgitconf/target.toml" in lines
    for name in ("qgitconf-restore.service", "qgitconf-pull.service"):
        text = (ROOT / "systemd" / name).read_text().splitlines()
        assert not any(ln.startswith("PrivateTmp") for ln in text), name


def test_rpc_config_files_are_valid() -> None:
    # key=value lines or comments; wait-for-session only with the values qrexec accepts.
    for f in (ROOT / "rpc-config").iterdir():
        assert (ROOT / "rpc" / f.name).is_file(), f"{f.name} configures no service"
        for line in f.read_text().splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = (s.strip() for s in line.partition("="))
            assert key in ("wait-for-session", "force-user", "skip-service-descriptor")
            if key == "wait-for-session":
                assert value in ("0", "1", "true", "false")


def test_rpc_files_exec_fixed_argv() -> None:
    """One command, programs by absolute path, nothing from the caller in argv."""
    for f in (ROOT / "rpc").iterdir():
        code = "\n".join(x for x in f.read_text().splitlines() if x and not x.startswith("#"))
        words = code.replace("\\\n", " ").split()
        assert words[:3] == ["exec", "/usr/bin/env", "-i"], f
        assert re.fullmatch(r"/usr/bin/qgitconf-service [a-z]+", " ".join(words[-2:])), f
        assert "$@" not in code and "$1" not in code, f


def test_man_page_is_current() -> None:
    assert (ROOT / "docs/qgitconf.1").read_text() == render(cli), "run `make man`"


def test_man_page_covers_every_command() -> None:
    page = (ROOT / "docs/qgitconf.1").read_text()
    for name in ("policy check", "doctor", "persist", "publish", "target init"):
        assert f".SS qgitconf {name.replace('-', chr(92) + '-')}" in page


@pytest.mark.parametrize(
    ("shell", "file"),
    [("bash", "qgitconf.bash"), ("zsh", "_qgitconf"), ("fish", "qgitconf.fish")],
)
def test_completion_is_current(shell: str, file: str) -> None:
    result = CliRunner().invoke(
        cli, [], prog_name="qgitconf", env={"_QGITCONF_COMPLETE": f"{shell}_source"}
    )
    assert result.output == (ROOT / "completion" / file).read_text(), "run `make completion`"


def test_completion_completes_new_commands() -> None:
    env = dict(
        os.environ, _QGITCONF_COMPLETE="bash_complete", COMP_WORDS="qgitconf do", COMP_CWORD="1"
    )
    out = subprocess.run(
        [str(Path(sys.executable).parent / "qgitconf")], env=env, capture_output=True, text=True
    ).stdout
    assert "plain,doctor" in out


_TOOLS = [t for t in ("dpkg-buildpackage", "dh", "make") if shutil.which(t) is None]
_PYBUILD = Path("/usr/share/perl5/Debian/Debhelper/Buildsystem/pybuild.pm").exists()
_PYPROJECT = Path("/usr/share/dh-python/dhpython/build/plugin_pyproject.py").exists()


@pytest.mark.skipif(bool(_TOOLS), reason=f"not installed: {', '.join(_TOOLS)} (.ci/run installs)")
@pytest.mark.skipif(
    not (_PYBUILD and _PYPROJECT), reason="dh-python / pybuild-plugin-pyproject not installed"
)
def test_make_packages_builds_deb_and_rpm() -> None:
    """Slow (about a minute) but run: the packages really build from this tree."""
    proc = subprocess.run(
        ["make", "-C", str(ROOT), "packages"],
        capture_output=True,
        text=True,
        env=dict(os.environ, MAKEFLAGS=""),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    debs = list((ROOT / "dist").glob(f"qgitconf_{__version__}-*_all.deb"))
    assert len(debs) == 1
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(debs[0])], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./etc/qubes-rpc/qgitconf.Receive",
        "./etc/qubes/rpc-config/qgitconf.Receive",
        "./usr/bin/qgitconf",
        "./usr/lib/python3/dist-packages/qgitconf/cli/__init__.py",
        "./usr/lib/python3/dist-packages/qgitconf/lab/qubes-src.sha256",  # `lab demo`
        "./usr/share/man/man1/qgitconf.1",
        "./usr/share/bash-completion/completions/qgitconf",
    ):
        assert path in listing, path
    assert "policy.d" not in listing  # dom0 files never go into the template package
    for path in (
        "./usr/lib/systemd/user/qgitconf-restore.service",
        "./usr/lib/systemd/user/qgitconf-pull.timer",
        "./usr/lib/systemd/user-preset/50-qgitconf.preset",
        "./usr/share/doc/qgitconf/config-mgmt.md",
        *(f"./usr/share/qgitconf/policy/{p.name}" for p in (ROOT / "policy").glob("*.policy")),
    ):
        assert path in listing, path
    control = ROOT / "build" / "deb-control"
    shutil.rmtree(control, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-e", str(debs[0]), str(control)], check=True)
    postinst = (control / "postinst").read_text()
    for unit in ("qgitconf-pull.timer", "qgitconf-restore.service"):
        assert unit in postinst, postinst  # dh_installsystemduser enables both
    # The installed scripts run isolated (DESIGN rule 12: no user site-packages).
    unpacked = ROOT / "build" / "deb-contents"
    shutil.rmtree(unpacked, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
    for script in ("qgitconf", "qgitconf-service"):
        first = (unpacked / "usr/bin" / script).read_text().splitlines()[0]
        assert first.replace(" ", "") == "#!/usr/bin/python3-I", (script, first)
    receive = (unpacked / "etc/qubes-rpc/qgitconf.Receive").read_text()
    assert "/usr/bin/qgitconf-service receive" in receive
    if shutil.which("rpmbuild"):
        rpms = {p.name for p in (ROOT / "dist").glob(f"qgitconf*-{__version__}-1*.noarch.rpm")}
        assert any(n.startswith("qgitconf-dom0-") for n in rpms), rpms
        assert any(n.startswith(f"qgitconf-{__version__}") for n in rpms), rpms
        for name in rpms:
            files = subprocess.run(
                ["rpm", "-qlp", str(ROOT / "dist" / name)], capture_output=True, text=True
            ).stdout.split()
            if name.startswith("qgitconf-dom0-"):
                # the dom0 package holds only the policy
                assert files and all(f.startswith("/etc/qubes/policy.d/") for f in files), files
            else:
                assert not any("policy.d" in f for f in files), files
                assert "/usr/share/doc/qgitconf/config-mgmt.md" in files
    assert tarfile  # the tarball is built inside make


# -- the RPM's Requires against Fedora 41/42 (issue 20) -----------------------------------


def _fedora_table() -> dict[str, dict[str, str]]:
    """docs/packaging.md's dependency table, by Fedora package name."""
    text = (ROOT / "docs/packaging.md").read_text()
    lines = text.split("| dependency | Debian package | Fedora package |", 1)[1].splitlines()
    header = ["dependency", "debian", "fedora", "minimum", "d12", "d13", "f41", "f42"]
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        row = dict(zip(header, cells, strict=True))
        rows[row["fedora"]] = row
    return rows


def _vtuple(text: str) -> tuple[int, ...]:
    m = re.match(r"[0-9]+(?:\.[0-9]+)*", text)
    assert m, text
    return tuple(int(x) for x in m.group(0).split("."))


def check_rpm_requires(requires: list[str], table: dict[str, dict[str, str]]) -> list[str]:
    """What is wrong with ``rpm -qpR``'s lines against the table (empty: nothing)."""
    problems = []
    seen = set()
    for req in requires:
        if req.startswith(("rpmlib(", "config(qgitconf)")) or req == "/bin/sh":
            continue  # rpm's own, and %post/%preun's shell
        if req.startswith("python(abi) = "):
            # the Python the package is built with: each Fedora release's own
            continue
        if req.startswith("/"):
            # the scripts' interpreter: /usr/bin/python3 on Fedora, the venv's here
            if req != "/usr/bin/python3" and not req.startswith(str(ROOT)):
                problems.append(f"unexpected file dependency {req}")
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.+-]+)(?: (>=|=|<|<=|>) ([0-9][0-9.]*))?", req)
        if m is None:
            problems.append(f"unexpected requirement {req!r} (rich or generated?)")
            continue
        name, op, version = m.groups()
        row = table.get(name)
        if row is None:
            problems.append(f"{name} is not in docs/packaging.md's table")
            continue
        seen.add(name)
        if op is not None and op != ">=":
            problems.append(f"{req}: only minimums (an upper bound holds back dnf updates)")
        if version is not None and version != row["minimum"]:
            problems.append(f"{req}: the table's minimum is {row['minimum']}")
        floor = version or (row["minimum"] if row["minimum"] != "any" else None)
        for release in ("f41", "f42"):
            if floor is not None and _vtuple(row[release]) < _vtuple(floor):
                problems.append(f"{req}: Fedora {release[1:]} has {name} {row[release]}")
    problems += [f"{name} is in the table but not required" for name in table.keys() - seen]
    return problems


def test_rpm_requires_check_fails_on_what_fedora_lacks() -> None:
    table = {
        "python3-dulwich": {"minimum": "0.21.2", "f41": "0.21.7", "f42": "0.22.1"},
        "git-core": {"minimum": "any", "f41": "2.47.0", "f42": "2.49.0"},
    }
    ok = ["python3-dulwich >= 0.21.2", "git-core", "/bin/sh", "python(abi) = 3.13"]
    assert check_rpm_requires(ok, table) == []
    assert check_rpm_requires(["python3-dulwich >= 0.22", "git-core"], table) == [
        "python3-dulwich >= 0.22: the table's minimum is 0.21.2",
        "python3-dulwich >= 0.22: Fedora 41 has python3-dulwich 0.21.7",
    ]
    bound = check_rpm_requires(["python3-dulwich < 2", "git-core"], table)
    assert bound[0].startswith("python3-dulwich < 2: only minimums")
    generated = "(python3.13dist(dulwich) < 2 with python3.13dist(dulwich) >= 0.21.2)"
    assert "rich or generated" in check_rpm_requires([generated, *ok], table)[0]
    assert check_rpm_requires(["git-core"], table) == [
        "python3-dulwich is in the table but not required"
    ]


@pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="rpmbuild not installed")
def test_rpm_requires_are_in_fedora_41_and_42() -> None:
    """Issue 20: the built RPM's Requires, checked against docs/packaging.md's Fedora
    columns (no Fedora repository is reachable here)."""
    proc = subprocess.run(
        ["make", "-C", str(ROOT), "rpm"],
        capture_output=True,
        text=True,
        env=dict(os.environ, MAKEFLAGS=""),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rpm = ROOT / "dist" / f"qgitconf-{__version__}-1.noarch.rpm"
    requires = subprocess.run(
        ["rpm", "-qpR", str(rpm)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    table = _fedora_table()
    assert set(table) == {"python3", "python3-dulwich", "python3-gnupg", "python3-click",
                          "git-core", "gnupg2"}  # fmt: skip
    assert check_rpm_requires(requires, table) == [], requires


def test_the_lab_files_are_package_data() -> None:
    """The installed package runs its own demo (issue 20): every non-Python file the lab
    reads next to its modules is in the wheel's package data."""
    tomlfile = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = tomlfile["tool"]["setuptools"]["package-data"]["qgitconf"]
    lab = ROOT / "qgitconf" / "lab"
    extra = sorted(p.name for p in lab.iterdir() if p.is_file() and p.suffix not in (".py",))
    assert extra == ["qubes-src.sha256", "real_qubesdb.c"]
    for name in extra:
        assert f"lab/{name}" in data
