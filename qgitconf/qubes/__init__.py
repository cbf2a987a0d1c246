"""The Qubes seam: qrexec calls and the one QubesDB reader."""
