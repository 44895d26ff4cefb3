"""Frozen contexts that templates render from, and the checks that make them safe to render.

Every value that reaches config text is checked when a context is built (``__post_init__``), so a
context that exists is safe: a host name, tag, MAC, path or kernel argument carrying a newline, a
quote, a ``${...}``, a ``;`` or a space is refused here, with a :class:`fleet.errors.ValidationError`
naming the field, *before* any template runs. Values must already be in canonical form (lower-case
host names, ``aa:bb:cc:dd:ee:ff`` MACs, compressed IPs): a value that a check would change is refused
rather than silently normalised, so nothing rendered differs from what the inventory holds.

- :class:`Network`: the provisioning network (CIDR, gateway, DNS servers, domain).
- :class:`HostContext`: one server: everything its boot script, kernel command line and answer
  files need (it carries the manager URL and the network by reference).
- :class:`TreeContext`: the whole tree: dnsmasq's settings and all hosts.

Callback tokens are ``HMAC-SHA256(key, hostname + boot nonce)`` (hex, 32 characters):
:func:`callback_token`. The nonce is chosen by the caller for each render (one boot of the host), so
a token is good for one boot only; the HTTP server also checks that a callback comes from the host's
address and that its ``late`` token was not spent already (:mod:`pxe.callbacks`).
Nothing here reads the clock or a random source.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from fleet.errors import ValidationError
from inventory.validate import check_hostname, check_ip, check_mac, check_network

__all__ = [
    "ARCHES",
    "DEFAULT_MIRRORS",
    "DISK_LAYOUTS",
    "FAMILIES",
    "GRUB_DIR",
    "LOADERS",
    "LOADER_FIRMWARES",
    "PHASES",
    "HostContext",
    "Network",
    "TreeContext",
    "callback_token",
    "check_console",
    "check_disk",
    "check_image_path",
    "check_kernel_arg",
    "check_manager_url",
    "check_os",
    "check_ssh_key",
    "check_tag",
    "check_timestamp",
    "os_family",
    "verify_token",
]

#: Boot paths a host may take (chosen per host; dnsmasq tags the host with its loader's name).
#: ``ipxe``: BIOS → undionly.kpxe, UEFI → snponly.efi, then iPXE over HTTP (the default).
#: ``pxelinux``: BIOS only, PXELINUX over TFTP. ``grub``: UEFI only, Debian's signed shim + GRUB over TFTP.
LOADERS: tuple[str, ...] = ("ipxe", "pxelinux", "grub")
#: The firmware each loader boots under (``bios``, ``uefi``): a host whose loader runs under one only
#: tells what firmware it has (``fleet.ops.bootmode`` reads it to choose the boot flags' BIOS boot type).
LOADER_FIRMWARES: dict[str, tuple[str, ...]] = {"ipxe": ("bios", "uefi"), "pxelinux": ("bios",), "grub": ("uefi",)}
#: OS families, each with its own answer files: preseed, autoinstall (cloud-init), kickstart.
FAMILIES: tuple[str, ...] = ("debian", "ubuntu", "rhel")
_OS_FAMILY = {"debian": "debian", "ubuntu": "ubuntu", "rocky": "rhel", "alma": "rhel", "rhel": "rhel",
              "centos": "rhel"}
ARCHES: tuple[str, ...] = ("x86_64",)
DISK_LAYOUTS: tuple[str, ...] = ("atomic", "lvm")
#: Where GRUB's files live in the tree. Debian's signed GRUB has its prefix built in
#: (``/debian-installer/amd64/grub`` under the TFTP root), so the tree mirrors Debian's netboot layout.
GRUB_DIR = "tftp/debian-installer/amd64/grub"
#: Default package mirrors per family (a host's ``mirror`` overrides). For Ubuntu, ``mirror`` is the live ISO's URL.
DEFAULT_MIRRORS = {"debian": "http://deb.debian.org/debian", "ubuntu": "",
                   "rhel": "http://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os"}
#: Installer callbacks: ``/cb/HOST/early`` when the installer starts, ``/cb/HOST/late`` when it is done.
PHASES: tuple[str, ...] = ("early", "late")

_OS_RE = re.compile(r"^([a-z]+)-([0-9]+(?:\.[0-9]+)?)\Z")
# One kernel argument: no space, quote, backslash, $, ;, {, }, <, >, |, `, # or control character.
_KARG_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.,:/=+@%-]{0,199}\Z")
_CONSOLE_RE = re.compile(r"^tty[A-Za-z]{0,8}[0-9]{1,3}(,[0-9]{3,7}([noe][5-8]?)?)?\Z")
_TAG_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
_DISK_RE = re.compile(r"^/dev/[A-Za-z0-9][A-Za-z0-9/_.:+-]{0,120}\Z")
_SSH_KEY_RE = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/]+={0,3}"
    r"( [A-Za-z0-9@._:+-]{1,64})?\Z")
_LEASE_RE = re.compile(r"^([0-9]{1,6}[mhd]?|infinite)\Z")
_TOKEN_RE = re.compile(r"^[0-9a-f]{32}\Z")
_URL_PATH_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)*\Z")
_IFACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
_IMAGE_REL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9._-]{0,63}){0,3}\Z")


# ---------------------------------------------------------------------------------------------------
# Checks: each returns the value or raises ValidationError(field=..., value=...)
# ---------------------------------------------------------------------------------------------------


def _refuse(field_name: str, value: object, why: str) -> ValidationError:
    return ValidationError(f"{value!r} {why}", field=field_name, value=value)


def _exact(checked: str, value: object, field_name: str) -> str:
    if checked != value:
        raise _refuse(field_name, value, f"is not in canonical form (expected {checked!r})")
    return checked


def os_family(os_name: str) -> str:
    """The family of an OS name (``debian-12`` → ``debian``, ``rocky-9`` → ``rhel``)."""
    return _OS_FAMILY[check_os(os_name).split("-", 1)[0]]


def check_os(value: object, field_name: str = "os") -> str:
    """An OS name: ``debian-12``, ``ubuntu-24.04``, ``rocky-9``, ``alma-9``..."""
    if not isinstance(value, str):
        raise _refuse(field_name, value, "is not an OS name")
    m = _OS_RE.match(value)
    if not m or m.group(1) not in _OS_FAMILY:
        raise _refuse(field_name, value, "is not a known OS (debian-N, ubuntu-YY.MM, rocky-N, alma-N, rhel-N, "
                                         "centos-N)")
    return value


def check_kernel_arg(value: object, field_name: str = "kernel_args") -> str:
    """One kernel argument (``quiet``, ``net.ifnames=0``, ``console=ttyS1,115200n8``)."""
    if not isinstance(value, str) or not _KARG_RE.match(value):
        raise _refuse(field_name, value, "is not a safe kernel argument (letters, digits and _ . , : / = + @ % -; "
                                         "no spaces, quotes, $, ;, braces or control characters)")
    return value


def check_console(value: object, field_name: str = "console") -> str:
    """A kernel console: ``ttyS0``, ``ttyS1,115200``, ``tty0``, or ``""`` for none."""
    if value == "":
        return ""
    if not isinstance(value, str) or not _CONSOLE_RE.match(value):
        raise _refuse(field_name, value, "is not a console (e.g. ttyS0,115200 or tty0)")
    return value


def check_tag(value: object, field_name: str = "tags") -> str:
    """A dnsmasq tag name: lower-case letters, digits, ``_`` and ``-``; starting with a letter."""
    if not isinstance(value, str) or not _TAG_RE.match(value):
        raise _refuse(field_name, value, "is not a valid dnsmasq tag (a-z first, then a-z, 0-9, _ or -; at most 32)")
    return value


def check_disk(value: object, field_name: str = "disk") -> str:
    """An install disk (``/dev/sda``, ``/dev/nvme0n1``, ``/dev/disk/by-id/...``) or ``""`` (the installer picks)."""
    if value == "":
        return ""
    if not isinstance(value, str) or not _DISK_RE.match(value) or ".." in value or "//" in value:
        raise _refuse(field_name, value, "is not a disk device path (/dev/...)")
    return value


def check_image_path(value: object, field_name: str = "extra_initrds") -> str:
    """A file under the tree's ``images/`` (``firmware/firmware.cpio.gz``): no ``..``, no leading dot or slash."""
    if not isinstance(value, str) or not _IMAGE_REL_RE.match(value) or ".." in value:
        raise _refuse(field_name, value, "is not a plain path under images/ (letters, digits, . _ - and /)")
    return value


def check_ssh_key(value: object, field_name: str = "ssh_keys") -> str:
    """One OpenSSH public key line (type, base64, optional simple comment)."""
    if not isinstance(value, str) or not _SSH_KEY_RE.match(value):
        raise _refuse(field_name, value, "is not an OpenSSH public key (type base64 [comment])")
    return value


def check_timestamp(value: object, field_name: str = "token_expires") -> str:
    """An ISO 8601 time with its UTC offset, in canonical form (``2026-12-08T02:00:00+00:00``)."""
    try:
        ts = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        ts = None
    if ts is None or ts.tzinfo is None:
        raise _refuse(field_name, value, "is not an ISO 8601 time with its offset (2026-12-08T02:00:00+00:00)")
    return _exact(ts.isoformat(), value, field_name)


def check_manager_url(value: object, field_name: str = "manager_url") -> str:
    """``http://HOST[:PORT][/path]``, HOST an IP address or host name; no query, no trailing slash."""
    if not isinstance(value, str) or any(c in value for c in " \t\r\n\"'`$;{}<>\\|#?&%"):
        raise _refuse(field_name, value, "is not a plain http://HOST[:PORT] URL")
    parts = urlsplit(value)
    if parts.scheme != "http" or not parts.hostname or parts.username or parts.password or parts.query \
            or parts.fragment or not _URL_PATH_RE.match(parts.path) or value.endswith("/"):
        raise _refuse(field_name, value, "is not a plain http://HOST[:PORT][/path] URL (no trailing slash)")
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        raise _refuse(field_name, value, "has a bad port") from None
    try:
        ip = ipaddress.ip_address(host)
        shown = f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        shown = check_hostname(host, field=field_name)
    rebuilt = f"http://{shown}{f':{port}' if port is not None else ''}{parts.path}"
    return _exact(rebuilt, value, field_name)


def _check_host(value: object, field_name: str) -> str:
    if not isinstance(value, str):
        raise _refuse(field_name, value, "is not a host name")
    return _exact(check_hostname(value, field=field_name), value, field_name)


def _check_ipv4(value: object, field_name: str) -> str:
    ip = _exact(check_ip(value, field=field_name), value, field_name)
    if ipaddress.ip_address(ip).version != 4:
        raise _refuse(field_name, value, "is not an IPv4 address (DHCPv4 hands out this address)")
    return ip


def _tuple(values: Iterable[str] | str, field_name: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise _refuse(field_name, values, "must be a list, not one string")
    return tuple(values)


def callback_token(key: bytes, hostname: str, nonce: str) -> str:
    """The callback token of ``hostname`` for one boot (``nonce``, e.g. the imaging job's): HMAC-SHA256
    under ``key`` of both, 32 hex characters. A new nonce (a new render, a new boot) gives a new token."""
    if not key:
        raise ValueError("the callback key is empty")
    if not nonce:
        raise ValueError("a callback token needs a boot nonce (one token per boot)")
    message = b"rackfleet-callback\x00" + hostname.encode() + b"\x00" + nonce.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def verify_token(expected: str, given: str) -> bool:
    """Compare tokens in constant time."""
    return hmac.compare_digest(expected.encode(), given.encode())


# ---------------------------------------------------------------------------------------------------
# Contexts
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Network:
    """The provisioning network hosts get their addresses on (from the rack's IP pool)."""

    cidr: str
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    domain: str = ""
    _net: ipaddress.IPv4Network = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        _exact(check_network(self.cidr, field="cidr"), self.cidr, "cidr")
        net = ipaddress.ip_network(self.cidr)
        if not isinstance(net, ipaddress.IPv4Network):
            raise _refuse("cidr", self.cidr, "is not an IPv4 network")
        object.__setattr__(self, "_net", net)
        if self.gateway is not None:
            _check_ipv4(self.gateway, "gateway")
            if self.gateway not in self:
                raise _refuse("gateway", self.gateway, f"is not in {self.cidr}")
        for d in _tuple(self.dns, "dns"):
            _check_ipv4(d, "dns")
        object.__setattr__(self, "dns", _tuple(self.dns, "dns"))
        if self.domain:
            _check_host(self.domain, "domain")

    @property
    def network_address(self) -> str:
        return str(self._net.network_address)

    @property
    def netmask(self) -> str:
        return str(self._net.netmask)

    @property
    def prefixlen(self) -> int:
        return self._net.prefixlen

    def __contains__(self, ip: object) -> bool:
        """Whether the address ``ip`` (text) lies in this network."""
        try:
            return ipaddress.ip_address(str(ip)) in self._net
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class HostContext:
    """One server to boot and install. Paths it names are relative to the tree's root.

    ``loader`` picks the boot path (:data:`LOADERS`); ``tags`` are extra dnsmasq tags set for this
    host (e.g. for a test that picks options per host). ``kernel_args`` are appended after ours.
    ``disk`` empty lets the installer pick the first disk. ``extra_initrds`` are more initrds (paths
    under the tree's ``images/``, e.g. Debian's ``firmware.cpio.gz``) loaded after the OS's own.
    ``token`` is good for callbacks from ``ip`` only, until ``token_expires`` (ISO 8601 with its offset;
    empty: until the next render), and its ``late`` callback only once.
    """

    hostname: str
    mac: str
    ip: str
    os: str
    manager_url: str
    network: Network
    token: str
    arch: str = "x86_64"
    loader: str = "ipxe"
    console: str = "ttyS0,115200"
    kernel_args: tuple[str, ...] = ()
    disk: str = ""
    disk_layout: str = "atomic"
    ssh_keys: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    mirror: str = ""
    extra_initrds: tuple[str, ...] = ()
    token_expires: str = ""

    def __post_init__(self) -> None:
        _check_host(self.hostname, "hostname")
        _exact(check_mac(self.mac, field="mac"), self.mac, "mac")
        _check_ipv4(self.ip, "ip")
        if not isinstance(self.network, Network):
            raise _refuse("network", self.network, "is not a Network")
        if self.ip not in self.network:
            raise _refuse("ip", self.ip, f"is not in the provisioning network {self.network.cidr}")
        check_os(self.os)
        check_manager_url(self.manager_url)
        if not isinstance(self.token, str) or not _TOKEN_RE.match(self.token):
            raise _refuse("token", "<hidden>", "is not a callback token (32 hex characters)")
        if self.token_expires:
            check_timestamp(self.token_expires, "token_expires")
        if self.arch not in ARCHES:
            raise _refuse("arch", self.arch, f"is not a supported architecture ({', '.join(ARCHES)})")
        if self.loader not in LOADERS:
            raise _refuse("loader", self.loader, f"is not a boot loader ({', '.join(LOADERS)})")
        check_console(self.console)
        for name in ("kernel_args", "ssh_keys", "tags", "extra_initrds"):
            object.__setattr__(self, name, _tuple(getattr(self, name), name))
        for arg in self.kernel_args:
            check_kernel_arg(arg)
        check_disk(self.disk)
        if self.disk_layout not in DISK_LAYOUTS:
            raise _refuse("disk_layout", self.disk_layout, f"is not a disk layout ({', '.join(DISK_LAYOUTS)})")
        for key in self.ssh_keys:
            check_ssh_key(key)
        for tag in self.tags:
            check_tag(tag)
            if tag in LOADERS or tag in ("known", "efi64", "bios"):
                raise _refuse("tags", tag, "is reserved (loader and firmware tags are set by Rackfleet)")
        if self.mirror:
            check_manager_url(self.mirror, "mirror")
        for rel in self.extra_initrds:
            check_image_path(rel)
        if len(set(self.initrd_names)) != len(self.initrd_names):
            raise _refuse("extra_initrds", self.extra_initrds, "holds two files of the same name (or one named "
                                                               "'initrd')")

    # Derived names and URLs (pure functions of the fields).

    @property
    def family(self) -> str:
        return os_family(self.os)

    @property
    def short_name(self) -> str:
        return self.hostname.split(".", 1)[0]

    @property
    def domain(self) -> str:
        return self.hostname.partition(".")[2] or self.network.domain

    @property
    def mac_hyphen(self) -> str:
        """``aa-bb-cc-dd-ee-ff``: the per-host iPXE script name (iPXE's ``${mac:hexhyp}``)."""
        return self.mac.replace(":", "-")

    @property
    def ipxe_path(self) -> str:
        return f"http/hosts/{self.mac_hyphen}.ipxe"

    @property
    def pxelinux_path(self) -> str:
        """PXELINUX looks for ``pxelinux.cfg/01-`` + the MAC with hyphens (01 = Ethernet)."""
        return f"tftp/pxelinux.cfg/01-{self.mac_hyphen}"

    @property
    def grub_path(self) -> str:
        """GRUB's ``$net_default_mac`` is ``aa:bb:cc:dd:ee:ff``."""
        return f"{GRUB_DIR}/hosts/{self.mac}.cfg"

    @property
    def answers_dir(self) -> str:
        return f"http/answers/{self.hostname}"

    @property
    def answers_url(self) -> str:
        return f"{self.manager_url}/answers/{self.hostname}"

    @property
    def kernel_path(self) -> str:
        """The kernel, relative to the TFTP root and to the HTTP root alike."""
        return f"images/{self.os}/vmlinuz"

    @property
    def initrd_path(self) -> str:
        return f"images/{self.os}/initrd"

    @property
    def initrd_names(self) -> tuple[str, ...]:
        """The names the initrds are loaded under (iPXE ``--name``, the kernel's ``initrd=``)."""
        return ("initrd", *(rel.rsplit("/", 1)[-1] for rel in self.extra_initrds))

    @property
    def initrd_paths(self) -> tuple[str, ...]:
        """Every initrd, relative to the TFTP and HTTP roots: the OS's, then the extra ones."""
        return (self.initrd_path, *(f"images/{rel}" for rel in self.extra_initrds))

    @property
    def initrds(self) -> tuple[tuple[str, str], ...]:
        """(name, path) of every initrd, in load order."""
        return tuple(zip(self.initrd_names, self.initrd_paths, strict=True))

    @property
    def kernel_url(self) -> str:
        return f"{self.manager_url}/{self.kernel_path}"

    @property
    def initrd_url(self) -> str:
        return f"{self.manager_url}/{self.initrd_path}"

    def callback_url(self, phase: str) -> str:
        """``http://MANAGER/cb/HOST/PHASE?token=T``."""
        if phase not in PHASES:
            raise ValueError(f"unknown callback phase {phase!r}")
        return f"{self.manager_url}/cb/{self.hostname}/{phase}?token={self.token}"

    @property
    def effective_mirror(self) -> str:
        """The host's mirror, else its family's default."""
        return self.mirror or DEFAULT_MIRRORS[self.family]

    @property
    def mirror_host(self) -> str:
        """The mirror's ``host[:port]`` (Debian's ``mirror/http/hostname``)."""
        return urlsplit(self.effective_mirror).netloc

    @property
    def mirror_dir(self) -> str:
        """The mirror's path (Debian's ``mirror/http/directory``)."""
        return urlsplit(self.effective_mirror).path or "/"

    @property
    def disk_name(self) -> str:
        """The install disk without ``/dev/`` (kickstart's ``--only-use``), or ``""``."""
        return self.disk.removeprefix("/dev/")

    @property
    def early_url(self) -> str:
        return self.callback_url("early")

    @property
    def late_url(self) -> str:
        return self.callback_url("late")


@dataclass(frozen=True, slots=True)
class TreeContext:
    """The whole tree: where it is installed, the dnsmasq settings and every host.

    ``root`` is the absolute path the tree is installed at (dnsmasq.conf names its TFTP root, log
    and lease files by absolute path). ``server_ip`` is the manager's address on the provisioning
    network (the TFTP server, and the default DNS server of a network that names none).
    ``interface`` empty leaves it to ``fleet pxe serve --interface``. ``ra_prefix`` empty disables
    router advertisements (iPXE then waits ~13 s for IPv6 on each boot).

    ``networks`` are the provisioning networks served (one static DHCP range each, tagged ``net0``,
    ``net1``... in this order, with its own router and DNS options); left empty, they are the hosts'
    networks in order of first use. ``network`` is the first of them (give either). Networks other
    than the interface's own reach dnsmasq through a DHCP relay.
    """

    root: str
    manager_url: str
    server_ip: str
    network: Network | None = None
    hosts: tuple[HostContext, ...] = ()
    interface: str = ""
    lease_time: str = "1h"
    ra_prefix: str = "fd77::"
    dnsmasq_user: str = ""
    networks: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.root, str) or not self.root.startswith("/") or any(
                c in self.root for c in " \t\r\n\"'`$;{}<>\\|#,") or "/../" in self.root + "/":
            raise _refuse("root", self.root, "is not a plain absolute path (no spaces, quotes, commas or $;{})")
        check_manager_url(self.manager_url)
        _check_ipv4(self.server_ip, "server_ip")
        object.__setattr__(self, "hosts", _tuple(self.hosts, "hosts"))
        if self.interface and not _IFACE_RE.match(self.interface):
            raise _refuse("interface", self.interface, "is not an interface name")
        if not _LEASE_RE.match(self.lease_time):
            raise _refuse("lease_time", self.lease_time, "is not a dnsmasq lease time (e.g. 1h, 600, infinite)")
        if self.ra_prefix:
            try:
                if ipaddress.ip_address(self.ra_prefix).version != 6 or str(
                        ipaddress.ip_address(self.ra_prefix)) != self.ra_prefix:
                    raise ValueError
            except ValueError:
                raise _refuse("ra_prefix", self.ra_prefix, "is not a canonical IPv6 prefix address (e.g. fd77::)") \
                    from None
        if self.dnsmasq_user and not _USER_RE.match(self.dnsmasq_user):
            raise _refuse("dnsmasq_user", self.dnsmasq_user, "is not a user name")
        nets = _tuple(self.networks, "networks")
        if self.network is not None and self.network not in nets:
            nets = (self.network, *nets)
        if not nets:
            nets = tuple(dict.fromkeys(h.network for h in self.hosts if isinstance(h, HostContext)))
        if not nets:
            raise _refuse("networks", nets, "is empty: a tree serves at least one network")
        cidrs: set[str] = set()
        for net in nets:
            if not isinstance(net, Network):
                raise _refuse("networks", net, "is not a Network")
            if net.cidr in cidrs:
                raise _refuse("networks", net.cidr, "is given twice (with different settings)")
            cidrs.add(net.cidr)
        object.__setattr__(self, "networks", nets)
        object.__setattr__(self, "network", nets[0])
        seen_mac: dict[str, str] = {}
        seen_ip: dict[str, str] = {}
        seen_host: set[str] = set()
        seen_short: dict[str, str] = {}
        served = set(nets)
        for h in self.hosts:
            if not isinstance(h, HostContext):
                raise _refuse("hosts", h, "is not a HostContext")
            if h.hostname in seen_host:
                raise _refuse("hostname", h.hostname, "appears twice in the tree")
            if h.mac in seen_mac:
                raise _refuse("mac", h.mac, f"is given to both {seen_mac[h.mac]} and {h.hostname}")
            if h.ip in seen_ip:
                raise _refuse("ip", h.ip, f"is given to both {seen_ip[h.ip]} and {h.hostname}")
            if h.network not in served:
                raise _refuse("network", h.hostname, f"is on {h.network.cidr}, which the tree does not serve "
                                                     f"({', '.join(n.cidr for n in nets)})")
            if h.short_name in seen_short:
                raise _refuse("hostname", h.hostname, f"has the same short name as {seen_short[h.short_name]} "
                                                      "(dnsmasq names hosts by their short name)")
            seen_short[h.short_name] = h.hostname
            seen_host.add(h.hostname)
            seen_mac[h.mac] = h.hostname
            seen_ip[h.ip] = h.hostname

    @property
    def tagged_networks(self) -> tuple[tuple[str, Network], ...]:
        """(dnsmasq tag, network) for each network served: ``net0``, ``net1``..."""
        return tuple((f"net{i}", net) for i, net in enumerate(self.networks))

    def dns_for(self, net: Network) -> tuple[str, ...]:
        """The DNS servers offered on ``net``: its own, else the manager."""
        return net.dns or (self.server_ip,)

    @property
    def dns_servers(self) -> tuple[str, ...]:
        """The DNS servers of the first network."""
        return self.dns_for(self.networks[0])

    @property
    def loaders(self) -> frozenset[str]:
        """The loaders some host uses."""
        return frozenset(h.loader for h in self.hosts)

    @property
    def oses(self) -> tuple[str, ...]:
        """The OSes some host installs, sorted."""
        return tuple(sorted({h.os for h in self.hosts}))

    @property
    def extra_images(self) -> tuple[str, ...]:
        """Extra files under ``images/`` some host loads (its ``extra_initrds``), sorted."""
        return tuple(sorted({rel for h in self.hosts for rel in h.extra_initrds}))

    @property
    def host_tags(self) -> tuple[str, ...]:
        """Extra tags some host sets, sorted."""
        return tuple(sorted({t for h in self.hosts for t in h.tags}))
