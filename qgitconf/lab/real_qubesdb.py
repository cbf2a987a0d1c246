"""Stand-in for QubesDB's ``qubesdb-read``, ``-list`` and ``-multiread`` in a real-lab qube.

Installed by :mod:`qgitconf.lab.real_roots` as root-owned ``/usr/bin/qubesdb-read``,
``/usr/bin/qubesdb-list`` and ``/usr/bin/qubesdb-multiread`` (``#!/usr/bin/python3
-I``; the program picks its command from its name, as the real ``qubesdb-cmd`` does).
On Qubes the values come from ``qubesdb-daemon``, which only dom0 writes; here from
``/run/qubesdb/db.json``, a read-only bind of a root-owned file the harness writes
(``{"/name": "personal"}``).  Behaviour as upstream ``client/qubesdb-cmd.c``: ``read``
prints each value and a newline (bytes outside 0x20..0x7f as ``\\xNN`` unless ``-r``),
``Failed to read KEY`` and exit 1 for a missing key; ``list PATH`` prints the keys
starting with PATH, PATH cut off unless ``-f``; ``multiread PATH`` prints ``KEY =
VALUE`` for each of those keys (what qubes-sysinit.sh and bind-dirs.sh parse); ``-q``
silences errors; no database is "Failed connect to local daemon", exit 1.
"""

from __future__ import annotations

import json
import os
import sys

DB = "/run/qubesdb/db.json"


def _encode(value: str, raw: bool) -> str:
    if raw:
        return value
    return "".join(c if 0x20 <= ord(c) < 0x80 else f"\\x{ord(c) & 0xFF:02x}" for c in value)


def main(argv: list[str]) -> int:
    prog = os.path.basename(argv[0])
    cmd = prog.split("-", 1)[1] if "-" in prog else ""
    args = argv[1:]
    opts: set[str] = set()
    while args and args[0].startswith("-") and len(args[0]) > 1:
        flag = args.pop(0)
        if flag == "--":
            break
        if flag.startswith("--default="):  # newer qubesdb-read: a value for a missing key
            opts.add(flag)
            continue
        opts.update(flag[1:])
    fullpath, raw, quiet = "f" in opts, "r" in opts, "q" in opts
    default = next((o.split("=", 1)[1] for o in opts if o.startswith("--default=")), None)
    try:
        with open(DB) as f:
            db: dict[str, str] = json.load(f)
    except (OSError, ValueError):
        if not quiet:
            print("Failed connect to local daemon", file=sys.stderr)
        return 1
    if cmd == "read":
        failed = 0
        for key in args:
            value = db.get(key, default)
            if value is None:
                if not quiet:
                    print(f"Failed to read {key}", file=sys.stderr)
                failed = 1
                continue
            print((f"{key} = " if fullpath else "") + _encode(value, raw))
        return failed
    if cmd == "list":
        if len(args) != 1:
            print("LIST command accept only one path", file=sys.stderr)
            return 1
        cut = 0 if fullpath else len(args[0])
        for key in sorted(k for k in db if k.startswith(args[0])):
            print(key[cut:])
        return 0
    if cmd == "multiread":
        if len(args) != 1:
            print("MULTIREAD command accept only one path", file=sys.stderr)
            return 1
        cut = 0 if fullpath else len(args[0])
        for key in sorted(k for k in db if k.startswith(args[0])):
            print(f"{key[cut:]} = {_encode(db[key], raw)}")
        return 0
    print("Unknown command", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
