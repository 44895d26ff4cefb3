"""PXE rendering: iPXE, PXELINUX, GRUB, dnsmasq and answer files from frozen contexts.

Pure rendering only: this package knows nothing of drivers or the database. Its templates and
renderer arrive with the PXE imaging work; the package exists now so the layout is settled.
"""
