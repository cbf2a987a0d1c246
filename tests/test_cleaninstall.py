"""The pieces `make test-install` (tests/cleaninstall/run.py) stands on, checked here.

The clean-install run itself needs root, mmdebstrap and the network to the Debian
mirror, and takes minutes: it is `make test-install`, run by `.ci/run`.  What it claims
about qrexec is checked here against the pinned upstream source.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from qgitconf.lab.build import source_dir
from tests.cleaninstall.run import QREXEC_CLIENT_STANDIN, QREXEC_SCRIPT, mounts_under


def _c_literals(text: str) -> list[str]:
    """The C string literals of ``text``, escapes undone (only ``\\"`` and ``\\n`` occur)."""
    return [
        s.replace('\\"', '"').replace("\\n", "\n") for s in re.findall(r'"((?:[^"\\]|\\.)*)"', text)
    ]


@pytest.mark.skipif(source_dir() is None, reason="Qubes sources not found (make qubes-src)")
def test_the_service_script_is_qrexec_agents() -> None:
    """qrexec-agent's script for a service called by name without an argument (the
    daemon appends "+"), from the pinned qubes-core-qrexec's libqrexec/exec.c."""
    src = source_dir()
    assert src is not None
    with tarfile.open(src / "qubes-core-qrexec.tar.gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/libqrexec/exec.c"))
        f = tar.extractfile(member)
        assert f is not None
        code = f.read().decode()
    call = code[code.index("if (asprintf((char **)(argv + 2),") :]
    call = call[: call.index("goto bad_asprintf;")]
    call = "\n".join(ln for ln in call.splitlines() if not ln.strip().startswith("//"))
    lits = _c_literals(call)
    fmt = "".join(lits[:5])  # the format string: five adjacent literals
    assert fmt.count("%s") == 3
    is_name = 'name QREXEC_REQUESTED_TARGET="$5"'
    argument = '"QREXEC_SERVICE_ARGUMENT=$4"'
    assert is_name in lits and argument in lits
    # target type "name", p != NULL (the "+"), p[1] == '\0' (no argument)
    assert fmt.replace("%s", "{}").format(is_name, argument, "") == QREXEC_SCRIPT


def test_the_qrexec_client_standin_refuses_as_qrexec_does(tmp_path: Path) -> None:
    prog = tmp_path / "qrexec-client-vm"
    prog.write_text(QREXEC_CLIENT_STANDIN)
    prog.chmod(0o755)
    proc = subprocess.run([str(prog), "personal", "qgitconf.Receive"], capture_output=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (126, b"", b"Request refused\n")


def test_mounts_under_sees_mount_points() -> None:
    assert "/proc" in mounts_under(Path("/proc"))
    assert mounts_under(Path(__file__).parent / "no-such-dir") == []
