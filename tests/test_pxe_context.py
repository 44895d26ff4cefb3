"""PXE contexts: every value that reaches config text is checked when the context is built.

Also home of :func:`sample_tree`, the deterministic tree the other PXE tests render.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import InputError, ValidationError
from pxe import HostContext, Network, TreeContext, callback_token, check_kernel_arg, os_family
from pxe.context import check_console, check_disk, check_manager_url, check_tag

KEY = b"rackfleet-test-key"
NONCE = "boot-1"  # the golden files' boot nonce
NET = Network("10.77.0.0/24", gateway="10.77.0.1", dns=("10.77.0.1", "10.77.0.2"), domain="lab.example.net")
MANAGER = "http://10.77.0.1:8080"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0TestKeyOnlyForGoldenFiles ops@example"

#: (short name, last MAC byte, OS, loader, extra settings): one host per template path.
SAMPLE_HOSTS = (
    ("deb-ipxe", 0x0A, "debian-12", "ipxe", {"ssh_keys": (SSH_KEY,)}),
    ("deb-pxelinux", 0x0B, "debian-12", "pxelinux", {"console": "ttyS1,57600", "kernel_args": ("quiet",)}),
    ("deb-grub", 0x0C, "debian-12", "grub", {"disk": "/dev/vda", "disk_layout": "lvm",
                                             "extra_initrds": ("firmware/firmware.cpio.gz",), "tags": ("rack-r01",)}),
    ("ubu", 0x0D, "ubuntu-24.04", "ipxe", {"ssh_keys": (SSH_KEY,), "disk": "/dev/nvme0n1"}),
    ("rocky", 0x0E, "rocky-9", "ipxe", {"console": "", "disk": "/dev/sda", "disk_layout": "lvm",
                                        "ssh_keys": (SSH_KEY,)}),
)


def sample_host(name: str = "deb-ipxe", last: int = 0x0A, os: str = "debian-12", loader: str = "ipxe",
                **extra: object) -> HostContext:
    hostname = f"{name}.lab.example.net"
    return HostContext(hostname=hostname, mac=f"52:54:00:77:00:{last:02x}", ip=f"10.77.0.{last}", os=os,
                       manager_url=MANAGER, network=NET, token=callback_token(KEY, hostname, NONCE), loader=loader,
                       **extra)  # type: ignore[arg-type]


def sample_tree(root: str = "/srv/rackfleet/pxe", **kwargs: object) -> TreeContext:
    hosts = tuple(sample_host(n, last, os, loader, **extra) for n, last, os, loader, extra in SAMPLE_HOSTS)
    args: dict[str, object] = {"root": root, "manager_url": MANAGER, "server_ip": "10.77.0.1", "network": NET,
                               "hosts": hosts, "interface": "br0"}
    args.update(kwargs)
    return TreeContext(**args)  # type: ignore[arg-type]


def test_sample_tree_builds() -> None:
    tree = sample_tree()
    assert tree.loaders == {"ipxe", "pxelinux", "grub"}
    assert tree.oses == ("debian-12", "rocky-9", "ubuntu-24.04")
    assert tree.extra_images == ("firmware/firmware.cpio.gz",)
    h = tree.hosts[0]
    assert h.family == "debian" and h.short_name == "deb-ipxe" and h.domain == "lab.example.net"
    assert h.mac_hyphen == "52-54-00-77-00-0a"
    assert h.ipxe_path == "http/hosts/52-54-00-77-00-0a.ipxe"
    assert h.pxelinux_path == "tftp/pxelinux.cfg/01-52-54-00-77-00-0a"
    assert h.grub_path == "tftp/debian-installer/amd64/grub/hosts/52:54:00:77:00:0a.cfg"
    assert h.early_url == f"{MANAGER}/cb/deb-ipxe.lab.example.net/early?token={h.token}"


def test_token_is_an_hmac_of_host_and_boot_nonce() -> None:
    a = callback_token(KEY, "a.example.net", NONCE)
    assert a == callback_token(KEY, "a.example.net", NONCE) and len(a) == 32
    assert a != callback_token(KEY, "b.example.net", NONCE) and a != callback_token(b"other", "a.example.net", NONCE)
    assert a != callback_token(KEY, "a.example.net", "boot-2"), "a new boot, a new token"
    assert callback_token(KEY, "a.example.ne", "tboot-1") != callback_token(KEY, "a.example.net", "boot-1")
    with pytest.raises(ValueError):
        callback_token(b"", "a.example.net", NONCE)
    with pytest.raises(ValueError, match="nonce"):
        callback_token(KEY, "a.example.net", "")


def test_token_expiry_must_be_a_canonical_aware_time() -> None:
    assert sample_host(token_expires="2026-12-08T02:00:00+00:00").token_expires == "2026-12-08T02:00:00+00:00"
    for bad in ("2026-12-08T02:00:00", "tomorrow", "2026-12-08 02:00:00+00:00"):
        with pytest.raises(ValidationError, match="token_expires"):
            sample_host(token_expires=bad)


def test_os_family() -> None:
    assert [os_family(o) for o in ("debian-12", "ubuntu-24.04", "rocky-9", "alma-8")] == [
        "debian", "ubuntu", "rhel", "rhel"]


HOSTILE = [
    "web01\n", "web01\nevil", "web'01", 'web"01', "web${x}", "web;reboot", "web 01", "web`id`", "web{01}",
    "WEB01", " web01", "web01.", "web_01", "", "a" * 64,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_hostname_refused(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        HostContext(hostname=name, mac="52:54:00:77:00:0a", ip="10.77.0.10", os="debian-12", manager_url=MANAGER,
                    network=NET, token=callback_token(KEY, "x", NONCE))
    assert err.value.field == "hostname"


@pytest.mark.parametrize(("field", "value"), [
    ("mac", "52:54:00:77:00:0A"), ("mac", "52-54-00-77-00-0a"), ("mac", "52:54:00:77:00:0a\n"),
    ("mac", "01:00:5e:00:00:01"), ("ip", "10.77.0.300"), ("ip", "10.78.0.10"), ("ip", "fd77::10"),
    ("ip", "10.77.0.10;"), ("os", "debian-12;"), ("os", "windows-11"), ("os", "debian-12\n"),
    ("manager_url", "http://10.77.0.1:8080/"), ("manager_url", "https://10.77.0.1"),
    ("manager_url", "http://10.77.0.1:8080/x?y=1"), ("manager_url", "http://evil'host"),
    ("manager_url", "http://10.77.0.1:8080/${x}"), ("manager_url", "http://u:p@10.77.0.1"),
    ("token", "not-a-token"), ("token", "A" * 32), ("arch", "ppc64"), ("loader", "syslinux"),
    ("console", "ttyS0,115200;reboot"), ("console", "ttyS0 quiet"), ("console", "/dev/ttyS0"),
    ("kernel_args", ("quiet", "a b")), ("kernel_args", ("x=${y}",)), ("kernel_args", ("x;y",)),
    ("kernel_args", ("'q'",)), ("kernel_args", ("x\n",)), ("kernel_args", "quiet"), ("kernel_args", ("-x",)),
    ("disk", "sda"), ("disk", "/dev/sda;"), ("disk", "/dev/../etc/passwd"), ("disk", "/dev/sd a"),
    ("disk_layout", "zfs"), ("ssh_keys", ("ssh-ed25519 AAAA x\nssh-rsa AAAA y",)),
    ("ssh_keys", ("ssh-ed25519 'AAAA'",)),
    ("tags", ("gpu\n",)), ("tags", ("GPU",)), ("tags", ("a;b",)), ("tags", ("${x}",)), ("tags", ("known",)),
    ("tags", ("pxelinux",)), ("tags", ('"q"',)), ("mirror", "ftp://deb.debian.org/debian"),
    ("extra_initrds", ("../etc/passwd",)), ("extra_initrds", ("/abs.gz",)), ("extra_initrds", ("a b.gz",)),
    ("extra_initrds", ("initrd",)), ("extra_initrds", ("x/a.gz", "y/a.gz")),
])
def test_hostile_host_values_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        _host_with(field, value)
    assert err.value.field == field
    assert isinstance(err.value, InputError)  # exit code 2, nothing rendered


def _host_with(field: str, value: object) -> HostContext:
    base = {f.name: getattr(sample_host(), f.name) for f in dataclasses.fields(HostContext)}
    base[field] = value
    return HostContext(**base)


@pytest.mark.parametrize(("field", "value"), [
    ("root", "relative/path"), ("root", "/srv/p xe"), ("root", "/srv/pxe\n"), ("root", "/srv/$x"),
    ("root", "/srv/../etc"), ("root", "/srv/a,b"), ("interface", "br0;x"), ("interface", "a" * 16),
    ("lease_time", "1h;"), ("lease_time", "forever"), ("ra_prefix", "fd77::/64"), ("ra_prefix", "10.0.0.1"),
    ("ra_prefix", "FD77::"), ("dnsmasq_user", "root;x"), ("server_ip", "10.77.0.1\n"),
    ("manager_url", "http://10.77.0.1:8080\nx"),
])
def test_hostile_tree_values_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        sample_tree(**{field: value})
    assert err.value.field == field


@pytest.mark.parametrize(("field", "value"), [
    ("cidr", "10.77.0.1/24"), ("cidr", "fd77::/64"), ("gateway", "10.78.0.1"), ("dns", ("10.77.0.1\n",)),
    ("dns", "10.77.0.1"), ("domain", "lab;example"),
])
def test_hostile_network_values_refused(field: str, value: object) -> None:
    args: dict[str, object] = {"cidr": "10.77.0.0/24"} | {field: value}
    with pytest.raises(ValidationError) as err:
        Network(**args)  # type: ignore[arg-type]
    assert err.value.field == field


def test_duplicates_in_a_tree_refused() -> None:
    a = sample_host("a", 0x0A)
    with pytest.raises(ValidationError, match="twice"):
        sample_tree(hosts=(a, a))
    with pytest.raises(ValidationError, match="given to both"):
        sample_tree(hosts=(a, dataclasses.replace(sample_host("b", 0x0B), mac=a.mac)))
    with pytest.raises(ValidationError, match="given to both"):
        sample_tree(hosts=(a, dataclasses.replace(sample_host("b", 0x0B), ip=a.ip)))
    other = HostContext(hostname="a.other.example.net", mac="52:54:00:77:00:0f", ip="10.77.0.15", os="debian-12",
                        manager_url=MANAGER, network=NET, token=callback_token(KEY, "a.other.example.net", NONCE))
    with pytest.raises(ValidationError, match="short name"):
        sample_tree(hosts=(a, other))
    net2 = Network("10.78.0.0/24")
    far = HostContext(hostname="far.example.net", mac="52:54:00:77:00:10", ip="10.78.0.5", os="debian-12",
                      manager_url=MANAGER, network=net2, token=callback_token(KEY, "far.example.net", NONCE))
    with pytest.raises(ValidationError, match="does not serve"):
        sample_tree(hosts=(a, far))
    with pytest.raises(ValidationError, match="given twice"):
        sample_tree(networks=(NET, Network("10.77.0.0/24")))


def test_a_tree_may_serve_several_networks() -> None:
    net2 = Network("10.78.0.0/24", gateway="10.78.0.1")
    far = HostContext(hostname="far.example.net", mac="52:54:00:77:00:10", ip="10.78.0.5", os="debian-12",
                      manager_url=MANAGER, network=net2, token=callback_token(KEY, "far.example.net", NONCE))
    tree = sample_tree(hosts=(sample_host(), far), network=None)
    assert tree.networks == (NET, net2) and tree.network == NET  # in order of first use
    assert tree.tagged_networks == (("net0", NET), ("net1", net2))
    assert tree.dns_for(net2) == ("10.77.0.1",) and tree.dns_servers == NET.dns
    assert "10.78.0.5" in net2 and "10.77.0.5" not in net2 and "x" not in net2


def test_contexts_are_frozen() -> None:
    h = sample_host()
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.hostname = "evil\n"  # type: ignore[misc]


def test_validators_accept_ordinary_values() -> None:
    assert check_kernel_arg("console=ttyS1,115200n8") == "console=ttyS1,115200n8"
    assert check_kernel_arg("net.ifnames=0") and check_kernel_arg("rd.neednet=1")
    assert check_console("tty0") == "tty0" and check_console("") == ""
    assert check_disk("/dev/disk/by-id/nvme-Samsung_SSD_980_1TB") and check_disk("") == ""
    assert check_manager_url("http://pxe.lab.example.net") == "http://pxe.lab.example.net"
    assert check_manager_url("http://[fd77::1]:8080") == "http://[fd77::1]:8080"
    assert check_tag("rack-r01") == "rack-r01"


_FORBIDDEN = " \t\r\n\"'`$;{}<>\\|#&*?!()[]"


@given(st.text(min_size=1, max_size=40).filter(lambda s: any(c in _FORBIDDEN for c in s)))
def test_no_kernel_arg_with_syntax_passes(text: str) -> None:
    with pytest.raises(ValidationError):
        check_kernel_arg(text)


@given(st.text(min_size=1, max_size=40).filter(lambda s: any(c in _FORBIDDEN for c in s)))
def test_no_tag_with_syntax_passes(text: str) -> None:
    with pytest.raises(ValidationError):
        check_tag(text)
