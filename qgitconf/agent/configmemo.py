"""A memo of what ``load_target_config`` answered, keyed by everything it read.

``qgitconf status`` prints the source qube and the pinned keys; parsing
``target.toml`` for them imports ``tomllib`` (and ``re``), some 16 ms of a status
whose whole budget at 1,000 files is about 25 ms (issue 21).  So a full status
stores, beside the agent state, ``config.memo``: the answer (source, pinned
fingerprints) and the exact inputs it was decided by, as ``load_target_config``
reports them through its ``seen`` list - each candidate file looked at and whether
it was a file, the exact bytes of every file read (``target.toml``, each pinned key
file), each QubesDB answer - plus a digest of the reader itself (the qgitconf
version, the Python build, the source of every qgitconf module the reader runs).

It is not a second configuration reader: :func:`lookup` reads the same inputs again,
in the same order, and answers only when every one is identical to what the real
reader was given (one SHA-256 over all of them and the answer); any difference, a
damaged memo, an input it cannot read, is "no answer", and the caller runs the real
reader.  A deterministic function of identical inputs cannot answer differently.

It decides nothing (DESIGN rule 12): only the no-drift ``status``
(:mod:`qgitconf.agent.statusfast`) uses it, to print two lines; receive, review and
apply always run the real reader.  It is written only by the agent from what the real
reader returned (:func:`remember`), never from an update's bytes.

Imports nothing beyond ``os``, ``sys``, C modules and :mod:`qgitconf.qubes.qubesdb`
(which the no-drift status loads anyway; the no-drift status's budget).
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from qgitconf.qubes.qubesdb import qubesdb_bytes

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

MEMO = "config.memo"
"""Its name in the agent state directory."""
_MAGIC = "qgitconf-config-memo-1"
_MAX_BYTES = 64 * 1024  # the memo itself
_MAX_INPUT_BYTES = 1 << 20  # each file it names (a target.toml, a key) read at most this
_MAX_INPUTS = 64

READER_MODULES = (
    "__init__.py",
    "agent/__init__.py",
    "agent/config.py",
    "agent/configmemo.py",
    "agent/where.py",
    "core/__init__.py",
    "core/coderules.py",
    "core/envelope.py",
    "core/globs.py",
    "core/paths.py",
    "core/programs.py",
    "core/systemrules.py",
    "errors.py",
    "fsutil.py",
    "limits.py",
    "qubes/__init__.py",
    "qubes/qubesdb.py",
    "sanitize.py",
    "sysprog.py",
)
"""Every qgitconf module ``import qgitconf.agent.config`` loads, relative to the
package (``tests/test_statusfast.py`` checks the list is complete): their source is
part of the key, so a changed reader never meets an old memo."""


def sha256(data: bytes = b"", *, large: bool = False) -> Any:
    """A SHA-256 object: the builtin one, without ``hashlib`` (whose OpenSSL import
    costs about 2.5 ms of the no-drift status's budget); with ``large``, OpenSSL's
    (``_hashlib``, hashlib's own, several times faster past a few hundred KB)."""
    names = ("_hashlib",) if large else ("_sha256", "_sha2")  # _sha2: Python 3.12+
    for name in (*names, "hashlib"):
        try:
            module = __import__(name)
        except ImportError:  # pragma: no cover - another Python
            continue
        make = getattr(module, "openssl_sha256" if name == "_hashlib" else "sha256", None)
        if make is not None:
            return make(data)
    raise ImportError("no SHA-256")  # pragma: no cover


def reader_digest() -> bytes:
    """SHA-256 of what the reader is: qgitconf's version, the Python build, and the
    source of :data:`READER_MODULES`."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = sha256(f"{_MAGIC}\0{sys.version}\0{sys.implementation.cache_tag}\0".encode())
    for rel in READER_MODULES:
        with open(os.path.join(package, rel), "rb") as f:
            data = f.read()
        h.update(b"%s\0%d\0" % (rel.encode(), len(data)))
        h.update(data)
    digest: bytes = h.digest()
    return digest


def _digest(reader: bytes, inputs: Iterable[tuple[str, str, bytes]], answer: list[str]) -> str:
    h = sha256(reader)
    for kind, where, data in inputs:
        name = where.encode("utf-8", "surrogateescape")
        h.update(b"%s\0%d\0%s\0%d\0" % (kind.encode(), len(name), name, len(data)))
        h.update(data)
    for line in answer:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    hexdigest: str = h.hexdigest()
    return hexdigest


def _answer_lines(source: str, keys: list[str]) -> list[str]:
    return [f"source\t{source}", *(f"key\t{k}" for k in keys)]


def render(inputs: list[tuple[str, str, bytes]], source: str, keys: list[str]) -> bytes | None:
    """The memo's bytes for the answer ``(source, keys)`` of the reader given
    ``inputs`` (its ``seen`` list); None if they cannot be written down plainly."""
    answer = _answer_lines(source, keys)
    lines = [_MAGIC, _digest(reader_digest(), inputs, answer)]
    lines += [f"{kind}\t{where}" for kind, where, _ in inputs]
    lines += answer
    if len(inputs) > _MAX_INPUTS or any(
        "\n" in x or "\r" in x or x.count("\t") != (0 if i < 2 else 1) for i, x in enumerate(lines)
    ):
        return None
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    return data if len(data) <= _MAX_BYTES else None


def parse(data: bytes) -> tuple[str, list[tuple[str, str]], str, list[str]] | None:
    """``(digest, [(kind, where)], source, keys)`` of a memo; None if it is not one."""
    try:
        text = data.decode("utf-8", "surrogateescape")
    except UnicodeDecodeError:  # pragma: no cover - surrogateescape decodes anything
        return None
    lines = text.split("\n")
    if len(lines) < 4 or lines[0] != _MAGIC or lines.pop() != "":
        return None
    digest = lines[1]
    inputs: list[tuple[str, str]] = []
    source = None
    keys: list[str] = []
    for line in lines[2:]:
        kind, tab, value = line.partition("\t")
        if not tab or "\t" in value:
            return None
        if kind in ("isfile", "file", "qubesdb") and source is None and not keys:
            inputs.append((kind, value))
        elif kind == "source" and source is None:
            source = value
        elif kind == "key" and source is not None:
            keys.append(value)
        else:
            return None
    if source is None or len(digest) != 64 or len(inputs) > _MAX_INPUTS:
        return None
    return digest, inputs, source, keys


def read_capped(path: str, cap: int) -> bytes | None:
    """The bytes of file ``path`` (following links, as the reader's ``read_bytes``);
    None if it cannot be read or holds more than ``cap`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        size = 0
        while chunk := os.read(fd, cap + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def is_file(path: str) -> bytes | None:
    """``Path(path).is_file()`` as the reader sees it (b"1"/b"0"); None where the
    reader would raise (an error other than "nothing there")."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return b"0"
        return None
    except ValueError:
        return b"0"
    return b"1" if stat.S_ISREG(st.st_mode) else b"0"


def lookup(
    state_root: str, ask_qubesdb: Callable[[str], tuple[bool, str | None]]
) -> tuple[str, list[str]] | None:
    """``(source, keys)`` the reader answered, if every input it was given is the
    same now; None otherwise (the caller runs the real reader).

    ``ask_qubesdb(key)`` is ``(answered, value)`` (``qubesdb.read_spawned``).
    """
    return begin_lookup(state_root, lambda key: lambda: ask_qubesdb(key))()


def begin_lookup(
    state_root: str, start_qubesdb: Callable[[str], Callable[[], tuple[bool, str | None]]]
) -> Callable[[], tuple[str, list[str]] | None]:
    """:func:`lookup` in two halves: the memo and its files are read and each QubesDB
    question started (``start_qubesdb(key)`` returns the function that waits for its
    answer, ``qubesdb.start_read``) now; the returned function collects the answers
    and compares.  Call it in any case (it reaps what was started)."""
    raw = read_capped(os.path.join(state_root, MEMO), _MAX_BYTES)
    memo = parse(raw) if raw is not None else None
    if memo is None:
        return lambda: None
    digest, names, source, keys = memo
    inputs: list[tuple[str, str, bytes | Callable[[], tuple[bool, str | None]] | None]] = []
    for kind, where in names:
        if kind == "isfile":
            inputs.append((kind, where, is_file(where)))
        elif kind == "file":
            inputs.append((kind, where, read_capped(where, _MAX_INPUT_BYTES)))
        else:
            inputs.append((kind, where, start_qubesdb(where)))

    def finish() -> tuple[str, list[str]] | None:
        seen: list[tuple[str, str, bytes]] = []
        missing = False
        for kind, where, data in inputs:
            if callable(data):
                answered, value = data()  # every one collected (reaped)
                data = qubesdb_bytes(value) if answered else None
            if data is None:
                missing = True
            else:
                seen.append((kind, where, data))
        if missing or _digest(reader_digest(), seen, _answer_lines(source, keys)) != digest:
            return None
        return source, keys

    return finish


def remember(
    state_root: str,
    inputs: list[tuple[str, str, bytes]],
    source: str,
    keys: list[str],
    write: Callable[[str, bytes], None],
) -> None:
    """Store the memo of the reader's answer (``write(path, bytes)``: an atomic
    write) unless it is there already; a memo that cannot be written down plainly
    (a name with a tab or a newline, over the caps) is not written.  The caller holds
    the state lock."""
    data = render(inputs, source, keys)
    if data is None:
        return
    path = os.path.join(state_root, MEMO)
    if read_capped(path, _MAX_BYTES) != data:
        write(path, data)
