"""The GUI: notify-send never blocks, and `review --gui` under Xvfb with the real zenity.

The dialog tests start Xvfb on a free display, run `qgitconf review --gui` in the lab's
personal qube (through qrexec, as its user; the qubes share the host's network
namespace, so the display's abstract socket reaches them), take a screenshot into the
test's tmp dir, press Apply or Cancel with xdotool, and check $HOME.  They skip when
Xvfb, zenity, xdotool or ImageMagick's `import` are missing (`.ci/run` installs them).
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qgitconf import sysprog
from qgitconf.agent.gui import notify
from tests.applykit import as_user
from tests.labkit import Lab, commit_files, host_env, publish, qg

TOOLS = ("Xvfb", "zenity", "xdotool", "import")


def _fake_notify_send(bindir: Path, marker: Path) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    fake = bindir / "notify-send"
    # written aside, then renamed: the marker never exists empty (a loaded machine
    # once let the test read it between the shell's create and printf's write)
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {marker}.tmp\nmv {marker}.tmp {marker}\nsleep 30\n'
    )
    fake.chmod(0o755)


def _wait_for(path: Path, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists()


def _system_notify_send(monkeypatch: pytest.MonkeyPatch, path: Path | None) -> None:
    """Make ``path`` the system's notify-send (sysprog finds programs on the system PATH)."""
    real = sysprog.find
    monkeypatch.setattr(
        sysprog, "find", lambda n: (str(path) if path else None) if n == "notify-send" else real(n)
    )


def test_notify_does_not_wait_and_needs_a_display(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "notified"
    _fake_notify_send(tmp_path / "bin", marker)
    _system_notify_send(monkeypatch, tmp_path / "bin" / "notify-send")
    env = {"PATH": "/usr/bin:/bin"}
    assert notify(env, "s", "b") is False  # no DISPLAY: nothing started
    start = time.monotonic()
    assert notify({**env, "DISPLAY": ":99"}, "title", "a <b>bold</b> \x1b[31m body") is True
    assert time.monotonic() - start < 5  # the fake sleeps 30 s
    assert _wait_for(marker)
    lines = marker.read_text().splitlines()
    assert lines[-2:] == ["title", "a &lt;b&gt;bold&lt;/b&gt; \\x1b[31m body"]
    _system_notify_send(monkeypatch, None)
    assert notify({"PATH": str(tmp_path / "bin"), "DISPLAY": ":99"}, "s", "b") is False


def test_notify_send_and_zenity_in_home_bin_are_never_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DESIGN rule 12: an update that places ~/bin/notify-send or ~/bin/zenity (on the
    PATH that ~/.profile sets) is not run; only the system's programs are, with an
    environment built from nothing (session variables only)."""
    from qgitconf.agent import gui

    marker = tmp_path / "notified"
    _fake_notify_send(tmp_path / "bin", marker)
    (tmp_path / "bin" / "zenity").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (tmp_path / "bin" / "zenity").chmod(0o755)
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "DISPLAY": ":99",
        "LD_PRELOAD": "/x.so",
        "HOME": str(tmp_path),
    }
    _system_notify_send(monkeypatch, None)  # the system has none: nothing runs
    assert notify(env, "s", "b") is False
    started: list[tuple[list[str], dict[str, str]]] = []

    class _Popen:
        def __init__(self, cmd: list[str], **kw: object) -> None:
            started.append((cmd, dict(kw["env"])))  # type: ignore[call-overload]

    monkeypatch.undo()
    monkeypatch.setattr(gui.subprocess, "Popen", _Popen)
    if sysprog.find("notify-send") is not None:
        assert notify(env, "s", "b") is True
        cmd, child_env = started[0]
        assert str(tmp_path) not in " ".join(cmd[:-2])
        assert cmd[0] in (sysprog.find("timeout"), sysprog.find("notify-send"))
        assert child_env["PATH"] == sysprog.SYSTEM_PATH and "LD_PRELOAD" not in child_env
        assert child_env["DISPLAY"] == ":99"
    assert gui.zenity_available(env) is (sysprog.find("zenity") is not None)
    time.sleep(0.2)
    assert not marker.exists()


@pytest.fixture
def user_dir(lab: Lab) -> Iterator[Path]:
    """A directory personal's user can reach and write (the fake notify-send runs with
    that uid, and pytest's tmp_path is root's own)."""
    where = Path(tempfile.mkdtemp(prefix="qgc-gui-"))
    os.chown(where, lab.uid("personal"), lab.uid("personal"))
    yield where
    shutil.rmtree(where, ignore_errors=True)


def test_receive_notifies_after_staging_without_blocking(
    lab: Lab, user_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qgitconf.agent.autoapply import after_staging
    from qgitconf.agent.receive import accept_update
    from tests.labkit import kept_update

    marker = user_dir / "notified"
    _fake_notify_send(user_dir / "bin", marker)
    commit_files(lab, "personal", {".config/a": "a\n"}, "first")
    publish(lab, "personal")
    update = kept_update(lab, "personal")
    # Replay the kept update into an empty state, in-process (as personal's user), with
    # a display set.
    state = lab.home("personal") / ".local/share/qgitconf"
    env = host_env(lab, "personal", {"DISPLAY": ":99"})
    monkeypatch.setenv("HOME", env["HOME"])  # as in the qube (dulwich reads ~/.gitconfig)
    _system_notify_send(monkeypatch, user_dir / "bin" / "notify-send")
    with as_user(lab, "personal"):
        shutil.rmtree(state)
        state.mkdir(parents=True)
        start = time.monotonic()
        out = accept_update(
            io.BytesIO(update), "config-mgmt", lab.home("personal"), env, name="personal"
        )
        after_staging(lab.home("personal"), env, out)  # as the Receive service does
    assert out.result == "staged"
    assert time.monotonic() - start < 20
    assert _wait_for(marker)
    assert "update 1" in marker.read_text() and "qgitconf review" in marker.read_text()


# -- the dialog under Xvfb ----------------------------------------------------------------


@pytest.fixture
def display() -> Iterator[str]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"GUI test needs {', '.join(missing)} (installed by .ci/run)")
    for n in range(91, 140):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            break
    else:
        pytest.skip("no free X display number")
    xvfb = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not _wait_for(Path(f"/tmp/.X11-unix/X{n}"), 10):
            pytest.skip("Xvfb did not start")
        yield f":{n}"
    finally:
        xvfb.terminate()
        xvfb.wait(10)


@contextlib.contextmanager
def _as_root() -> Iterator[None]:
    """Root again for a moment, inside ``as_user`` (the saved uid is root's)."""
    uid, gid = os.geteuid(), os.getegid()
    os.seteuid(0)
    os.setegid(0)
    try:
        yield
    finally:
        os.setegid(gid)
        os.seteuid(uid)


def _x(display: str, *args: str) -> str:
    env = {**os.environ, "DISPLAY": display}
    proc = subprocess.run(args, capture_output=True, env=env, check=True, timeout=30)
    return proc.stdout.decode()


def _open_dialog(lab: Lab, display: str) -> tuple[subprocess.Popen[bytes], str]:
    line = "cd && exec " + shlex.join(["env", f"DISPLAY={display}", "qgitconf", "review", "--gui"])
    proc = subprocess.Popen(
        lab.qrexec_argv("personal", line),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    window = ""
    while not window and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"review --gui exited early: {proc.communicate()}")
        found = subprocess.run(
            ["xdotool", "search", "--name", "qgitconf: review"],
            capture_output=True,
            env={**os.environ, "DISPLAY": display},
            check=False,
        )
        window = found.stdout.decode().split()[0] if found.stdout.strip() else ""
        time.sleep(0.2)
    assert window, "the review dialog did not appear"
    time.sleep(1.5)  # let GTK draw it
    return proc, window


def _press(display: str, window: str, button: str) -> None:
    geo = dict(
        line.split("=", 1)
        for line in _x(display, "xdotool", "getwindowgeometry", "--shell", window).split()
    )
    width, height = int(geo["WIDTH"]), int(geo["HEIGHT"])
    # zenity puts [Cancel] [Apply] at the bottom right, Apply last.
    x = width - 51 if button == "Apply" else width - 141
    _x(display, "xdotool", "mousemove", "--window", window, str(x), str(height - 25), "click", "1")


def _stage_risky_update(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": "PS1='$ '\n"}, "first")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    commit_files(
        lab,
        "personal",
        {
            ".bashrc": "PS1='$ '\nexport PATH=$HOME/.evil:$PATH\n",
            ".config/git/config": '[alias]\n\tst = status\n\tup = "!git pull && make"\n',
        },
        "prompt, PATH and a git alias \x1b[31m\u202e",
    )
    publish(lab, "personal")


def test_review_dialog_apply(lab: Lab, display: str, tmp_path: Path) -> None:
    _stage_risky_update(lab)
    proc, window = _open_dialog(lab, display)
    shot = tmp_path / "review-dialog.png"
    _x(display, "import", "-window", "root", str(shot))
    assert shot.stat().st_size > 10_000
    _press(display, window, "Apply")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"generation 2: applied" in out
    bashrc = (lab.home("personal") / ".bashrc").read_text()
    assert "export PATH=$HOME/.evil:$PATH" in bashrc
    assert (lab.home("personal") / ".config/git/config").exists()


def test_review_dialog_cancel(lab: Lab, display: str, tmp_path: Path) -> None:
    _stage_risky_update(lab)
    before = (lab.home("personal") / ".bashrc").read_bytes()
    proc, window = _open_dialog(lab, display)
    _x(display, "import", "-window", "root", str(tmp_path / "review-dialog.png"))
    _press(display, window, "Cancel")
    out, _err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and b"cancelled: nothing applied" in out
    assert (lab.home("personal") / ".bashrc").read_bytes() == before
    assert not (lab.home("personal") / ".config/git/config").exists()


def test_review_dialog_applies_exactly_the_commit_it_showed(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apply passes the shown commit to apply, which refuses one staged meanwhile."""
    from qgitconf.agent import commands, gui

    a = commit_files(lab, "personal", {".config/a": "seen\n"}, "A")
    publish(lab, "personal")
    home, env = lab.home("personal"), host_env(lab, "personal", {"DISPLAY": ":99"})
    monkeypatch.setenv("HOME", env["HOME"])  # as in the qube
    calls: list[dict[str, object]] = []
    real_apply = commands.apply

    def recording_apply(*args: object, **kw: object) -> dict[str, object]:
        calls.append(kw)
        return real_apply(*args, **kw)  # type: ignore[arg-type]

    dialogs: list[list[str]] = []

    def dialog(env: object, args: list[str], text: str | None = None) -> int:
        dialogs.append(args)
        if len(dialogs) == 1:  # while the dialog is open, a later update B arrives
            assert text is not None and f"commit {a} (sequence 1), and no other" in text
            with _as_root():  # driving the lab takes root
                commit_files(lab, "personal", {".config/a": "unseen\n"}, "B")
                publish(lab, "personal")
        return 0

    monkeypatch.setattr(gui, "do_apply", recording_apply)  # gui's import of commands.apply
    monkeypatch.setattr(gui, "_zenity", dialog)
    monkeypatch.setattr(gui, "zenity_available", lambda env=None: True)
    from qgitconf.errors import QgitconfError

    with as_user(lab, "personal"), pytest.raises(QgitconfError) as err:
        gui.review_dialog(home, env)
    assert err.value.code == "staged-changed" and err.value.exit_status == 1
    assert calls and calls[0].get("commit") == a
    assert "--error" in dialogs[1] and not (home / ".config/a").exists()
