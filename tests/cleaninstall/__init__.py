"""``make test-install``: the .deb installed from clean Debian systems (issue 20)."""
