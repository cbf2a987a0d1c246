"""GnuPG: the isolated verifier, its status-line judge and signing through gpg.program."""
