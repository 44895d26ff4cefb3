"""PXE: render and install boot configs and answer files, serve them, read the evidence back.

Pure rendering from frozen contexts: this package knows nothing of the database or of drivers
(``fleet.ops.pxe`` maps the inventory to contexts). Layers, one module each:

- :mod:`pxe.context`: :class:`Network`, :class:`HostContext`, :class:`TreeContext` — frozen, and
  checked when built, so no value with a newline, quote, ``${...}`` or ``;`` ever reaches a template.
- :mod:`pxe.render`: one sandboxed Jinja environment; :func:`render_tree` gives every text file of
  a tree in memory (:class:`RenderedTree`); template lookup falls back by purpose/OS/family/arch.
- :mod:`pxe.install`: :func:`install` builds the tree aside (bringing the tree it replaced last time,
  kept as ``.ROOT.spare``, up to date), with boot loaders and OS images from the system
  (:class:`BootSources`), then swaps it in atomically.
- :mod:`pxe.serve`: :class:`PxeServer` runs the real dnsmasq and an aiohttp server for ``http/``
  and installer callbacks (loaded on first use: it imports aiohttp); :func:`check_config` runs
  ``dnsmasq --test``.
- :mod:`pxe.evidence`: :func:`read_evidence` / :class:`EvidenceReader` turn their logs into
  :class:`Evidence` records (lease, ignored, tftp, fetch, callback).

The installed tree (``ROOT`` is the absolute path given when rendering; dnsmasq.conf names it)::

    ROOT/dnsmasq.conf                    dnsmasq: DHCP (static, known MACs only) + TFTP, no DNS
    ROOT/hosts.json                      index: hostname, short name, MAC, IP, OS, loader, callback token
    ROOT/.manifest.json                  digest and mtime of every file the tree holds
    ROOT/tftp/                           TFTP root
        undionly.kpxe  snponly.efi  ipxe.efi      iPXE for BIOS and UEFI firmware PXE
        pxelinux.0  ldlinux.c32                   PXELINUX (hosts with loader "pxelinux")
        pxelinux.cfg/01-aa-bb-cc-dd-ee-ff         per-host PXELINUX config
        debian-installer/amd64/bootnetx64.efi     Debian's signed shim + grubx64.efi (loader "grub")
        grubx64.efi                               again at the root: the shim asks for it there
        debian-installer/amd64/grub/grub.cfg      configfile $prefix/hosts/$net_default_mac.cfg
        debian-installer/amd64/grub/hosts/aa:bb:cc:dd:ee:ff.cfg
        images/OS/vmlinuz  images/OS/initrd       kernel and initrd per OS
    ROOT/http/                           served by the HTTP server at /
        boot.ipxe                                 stage 1: chain hosts/${netX/mac:hexhyp}.ipxe
        hosts/aa-bb-cc-dd-ee-ff.ipxe              per-host iPXE script
        answers/HOSTNAME/preseed.cfg              Debian; user-data + meta-data (Ubuntu); ks.cfg (RHEL family)
        images/OS/vmlinuz  images/OS/initrd       hard links to the TFTP copies
    ROOT/var/                            kept across installs: dnsmasq.log, dnsmasq.leases, dnsmasq.pid,
                                         http.jsonl (HTTP access and callback log),
                                         callbacks-spent.jsonl (digests of spent late tokens)

Callbacks: ``GET /cb/HOSTNAME/early|late?token=T``, ``T = HMAC-SHA256(key, HOSTNAME + boot nonce)[:32]``,
accepted only from the host's address and, for ``late``, once (:mod:`pxe.callbacks`). See docs/pxe.md.
"""

from .context import (
    LOADERS,
    HostContext,
    Network,
    TreeContext,
    callback_token,
    check_kernel_arg,
    os_family,
)
from .errors import InstallError, MissingBootFile, PxeError, ServeError, TemplateError
from .evidence import Evidence, EvidenceReader, read_evidence
from .install import BootSources, InstallReport, install
from .render import ANSWER_FILES, RenderedTree, Renderer, render_host, render_tree

__all__ = [
    "ANSWER_FILES",
    "LOADERS",
    "BootSources",
    "Evidence",
    "EvidenceReader",
    "HostContext",
    "InstallError",
    "InstallReport",
    "MissingBootFile",
    "Network",
    "PxeError",
    "PxeServer",
    "RenderedTree",
    "Renderer",
    "ServeError",
    "TemplateError",
    "TreeContext",
    "callback_token",
    "check_config",
    "check_kernel_arg",
    "install",
    "os_family",
    "read_evidence",
    "render_host",
    "render_tree",
]


def __getattr__(name: str) -> object:
    # The server pulls in aiohttp; load it only when asked for.
    if name in ("PxeServer", "check_config"):
        from . import serve

        return getattr(serve, name)
    raise AttributeError(f"module 'pxe' has no attribute {name!r}")
