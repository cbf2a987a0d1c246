"""Lab shim for ``qubes-gpg-client-wrapper``: split-GPG v1 to the lab's vault.

Like the real client it accepts only the options split-GPG allows (sign and verify:
``-b -s -a -u --status-fd --keyid-format --verify`` and their long forms), refuses
everything else, and runs gpg with the vault's key store, which the calling qube
never sees.
"""

from __future__ import annotations

import os
import sys

_SHORT_FLAGS = set("bsa")
_LONG_FLAGS = {"--detach-sign", "--sign", "--armor", "--verify", "--batch", "--no-tty"}
_LONG_VALUE = {"--local-user", "--status-fd", "--keyid-format"}


def filter_args(argv: list[str]) -> list[str] | None:
    """Return the arguments to pass on, or None when one is not allowed."""
    out: list[str] = []
    i = 0
    verify = False
    while i < len(argv):
        arg = argv[i]
        if arg in _LONG_FLAGS:
            verify = verify or arg == "--verify"
            out.append(arg)
        elif arg.split("=", 1)[0] in _LONG_VALUE:
            if "=" in arg:
                out.append(arg)
            elif i + 1 < len(argv):
                out += [arg, argv[i + 1]]
                i += 1
            else:
                return None
        elif arg.startswith("-") and len(arg) > 1 and not arg.startswith("--"):
            letters = arg[1:]
            for j, ch in enumerate(letters):
                if ch in _SHORT_FLAGS:
                    out.append("-" + ch)
                elif ch == "u":
                    value = letters[j + 1 :] or (argv[i + 1] if i + 1 < len(argv) else "")
                    if not value:
                        return None
                    if not letters[j + 1 :]:
                        i += 1
                    out += ["--local-user", value]
                    break
                else:
                    return None
        elif verify and (arg == "-" or not arg.startswith("-")):
            out.append(arg)
        else:
            return None
        i += 1
    return out


def main() -> int:
    args = filter_args(sys.argv[1:])
    if args is None:
        print("qubes-gpg-client-wrapper (lab): option not allowed by split-GPG", file=sys.stderr)
        return 2
    lab = os.environ.get("QGITCONF_LAB")
    if not lab:
        print("qubes-gpg-client-wrapper (lab): not inside a lab qube", file=sys.stderr)
        return 2
    home = os.path.join(lab, "qubes", "vault", "home", ".gnupg")
    os.execvp("gpg", ["gpg", "--homedir", home, "--batch", "--no-tty", *args])


if __name__ == "__main__":
    sys.exit(main())
