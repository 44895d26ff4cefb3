"""PXE rendering: golden files for every template, parse-back of each format, the Jinja environment's locks.

Regenerate the golden files after a deliberate template change, then review the diff::

    PXE_REGEN_GOLDEN=1 .venv/bin/pytest tests/test_pxe_render.py
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pxe import Renderer, TemplateError, render_host, render_tree
from pxe.render import BUILTIN_TEMPLATES, template_candidates

from .test_pxe_context import MANAGER, sample_host, sample_tree

GOLDEN = Path(__file__).with_name("golden") / "pxe"
_RENDERER = Renderer()
REGEN = os.environ.get("PXE_REGEN_GOLDEN") == "1"


@pytest.fixture(scope="module")
def rendered() -> dict[str, bytes]:
    return dict(render_tree(sample_tree()).files)


# ---------------------------------------------------------------------------------------------------
# Golden files
# ---------------------------------------------------------------------------------------------------


def test_golden_files(rendered: dict[str, bytes]) -> None:
    if REGEN:
        if GOLDEN.exists():
            for old in sorted(GOLDEN.rglob("*"), reverse=True):
                old.unlink() if old.is_file() else old.rmdir()
        for rel, data in rendered.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_bytes(data)
    golden = {p.relative_to(GOLDEN).as_posix(): p.read_bytes() for p in GOLDEN.rglob("*") if p.is_file()}
    assert sorted(golden) == sorted(rendered), "the set of rendered files changed (PXE_REGEN_GOLDEN=1 to accept)"
    for rel, data in rendered.items():
        assert data == golden[rel], f"{rel} differs from tests/golden/pxe/{rel} (PXE_REGEN_GOLDEN=1 to accept)"


def test_every_template_is_covered_by_the_golden_files() -> None:
    renderer = Renderer()
    render_tree(sample_tree(), renderer=renderer)
    used = {tpl.name for tpl in renderer._cache.values()}
    shipped = {p.name for p in BUILTIN_TEMPLATES.glob("*.j2")}
    assert used == shipped


def test_rendering_is_deterministic(rendered: dict[str, bytes]) -> None:
    again = render_tree(sample_tree(), renderer=Renderer()).files
    assert dict(again) == rendered
    assert render_host(sample_host()) == render_host(sample_host())


def test_layout(rendered: dict[str, bytes]) -> None:
    assert sorted(rendered) == [
        "dnsmasq.conf",
        "hosts.json",
        "http/answers/deb-grub.lab.example.net/preseed.cfg",
        "http/answers/deb-ipxe.lab.example.net/preseed.cfg",
        "http/answers/deb-pxelinux.lab.example.net/preseed.cfg",
        "http/answers/rocky.lab.example.net/ks.cfg",
        "http/answers/ubu.lab.example.net/meta-data",
        "http/answers/ubu.lab.example.net/user-data",
        "http/boot.ipxe",
        "http/hosts/52-54-00-77-00-0a.ipxe",
        "http/hosts/52-54-00-77-00-0d.ipxe",
        "http/hosts/52-54-00-77-00-0e.ipxe",
        "tftp/debian-installer/amd64/grub/grub.cfg",
        "tftp/debian-installer/amd64/grub/hosts/52:54:00:77:00:0c.cfg",
        "tftp/pxelinux.cfg/01-52-54-00-77-00-0b",
    ]
    assert all(data.endswith(b"\n") for data in rendered.values())


# ---------------------------------------------------------------------------------------------------
# Parse-back: dnsmasq
# ---------------------------------------------------------------------------------------------------

_DNSMASQ_KEYS = {"port", "interface", "bind-interfaces", "user", "pid-file", "log-facility", "log-dhcp",
                 "dhcp-leasefile", "dhcp-range", "dhcp-ignore", "dhcp-option", "enable-ra", "dhcp-match",
                 "dhcp-boot", "enable-tftp", "tftp-root", "dhcp-host"}


def parse_dnsmasq(text: str) -> list[tuple[str, str | None]]:
    out = []
    for line in text.splitlines():
        assert len(line) < 1000, "dnsmasq splits long lines (a 250-network header once broke the config)"
        if not line.strip() or line.startswith("#"):
            continue
        assert line == line.strip(), f"stray whitespace: {line!r}"
        key, sep, value = line.partition("=")
        out.append((key, value if sep else None))
    return out


def test_dnsmasq_parse_back(rendered: dict[str, bytes]) -> None:
    conf = parse_dnsmasq(rendered["dnsmasq.conf"].decode())
    assert {k for k, _ in conf} <= _DNSMASQ_KEYS
    single = {k: v for k, v in conf if k not in ("dhcp-range", "dhcp-option", "dhcp-match", "dhcp-boot", "dhcp-host")}
    assert single["port"] == "0" and single["interface"] == "br0" and "bind-interfaces" in single
    assert single["tftp-root"] == "/srv/rackfleet/pxe/tftp"
    assert single["log-facility"] == "/srv/rackfleet/pxe/var/dnsmasq.log"
    assert single["dhcp-leasefile"] == "/srv/rackfleet/pxe/var/dnsmasq.leases"
    assert single["dhcp-ignore"] == "tag:!known"
    ranges = [v for k, v in conf if k == "dhcp-range"]
    assert ranges == ["set:net0,10.77.0.0,static,255.255.255.0,1h", "fd77::,ra-only"]
    options = [v for k, v in conf if k == "dhcp-option"]
    assert options == ["tag:net0,option:router,10.77.0.1", "tag:net0,option:dns-server,10.77.0.1,10.77.0.2",
                       "tag:net0,option:domain-name,lab.example.net"]
    assert [v for k, v in conf if k == "dhcp-match"] == [
        "set:ipxe,175", "set:efi64,option:client-arch,7", "set:efi64,option:client-arch,9"]
    hosts = [v.split(",") for k, v in conf if k == "dhcp-host" and v]
    tree = sample_tree()
    assert len(hosts) == len(tree.hosts)
    for fields, h in zip(hosts, tree.hosts, strict=True):
        sets = [f"set:{h.loader}"] if h.loader != "ipxe" else []
        sets += [f"set:{t}" for t in h.tags]
        assert fields == [h.mac, *sets, h.ip, h.short_name]


def _boot_rules(conf: list[tuple[str, str | None]]) -> list[tuple[dict[str, bool], str]]:
    rules = []
    for key, value in conf:
        if key != "dhcp-boot" or value is None:
            continue
        parts = value.split(",")
        tags = {p.removeprefix("tag:").lstrip("!"): not p.startswith("tag:!") for p in parts if p.startswith("tag:")}
        files = [p for p in parts if not p.startswith("tag:")]
        assert len(files) == 1
        rules.append((tags, files[0]))
    return rules


@pytest.mark.parametrize(("ipxe", "efi64", "loader"), itertools.product((False, True), (False, True),
                                                                         ("ipxe", "pxelinux", "grub")))
def test_exactly_one_boot_file_per_client(rendered: dict[str, bytes], ipxe: bool, efi64: bool, loader: str) -> None:
    """For every (iPXE running?, UEFI?, host loader) one dhcp-boot line matches, so line order cannot matter."""
    rules = _boot_rules(parse_dnsmasq(rendered["dnsmasq.conf"].decode()))
    have = {"ipxe": ipxe, "efi64": efi64, "pxelinux": loader == "pxelinux", "grub": loader == "grub"}
    matches = [f for tags, f in rules if all(have.get(t, False) == want for t, want in tags.items())]
    assert len(matches) == 1, matches
    expected = {"pxelinux": "pxelinux.0", "grub": "debian-installer/amd64/bootnetx64.efi"}.get(loader) or (
        f"{MANAGER}/boot.ipxe" if ipxe else "snponly.efi" if efi64 else "undionly.kpxe")
    assert matches == [expected]


def test_dnsmasq_without_optional_parts() -> None:
    from .test_pxe_context import NET

    tree = sample_tree(interface="", ra_prefix="", dnsmasq_user="root", network=NET, lease_time="infinite")
    conf = parse_dnsmasq(render_tree(tree).files["dnsmasq.conf"].decode())
    keys = [k for k, _ in conf]
    assert "interface" not in keys and "enable-ra" not in keys and ("user", "root") in conf
    assert ("dhcp-range", "set:net0,10.77.0.0,static,255.255.255.0,infinite") in conf


def test_dnsmasq_with_several_networks() -> None:
    from pxe import HostContext, Network, callback_token

    from .test_pxe_context import KEY, NET

    net2 = Network("10.78.0.0/25")
    far = HostContext(hostname="far.example.net", mac="52:54:00:77:00:10", ip="10.78.0.5", os="debian-12",
                      manager_url=MANAGER, network=net2, token=callback_token(KEY, "far.example.net", "boot-1"))
    tree = sample_tree(hosts=(sample_host(), far), networks=(NET, net2))
    conf = parse_dnsmasq(render_tree(tree).files["dnsmasq.conf"].decode())
    assert [v for k, v in conf if k == "dhcp-range"][:2] == [
        "set:net0,10.77.0.0,static,255.255.255.0,1h", "set:net1,10.78.0.0,static,255.255.255.128,1h"]
    assert "tag:net1,option:dns-server,10.77.0.1" in [v for k, v in conf if k == "dhcp-option"]
    assert not any(v and v.startswith("tag:net1,option:router") for k, v in conf)
    assert ("dhcp-host", "52:54:00:77:00:10,10.78.0.5,far") in conf


# ---------------------------------------------------------------------------------------------------
# Parse-back: boot scripts
# ---------------------------------------------------------------------------------------------------


def _cmdline(host_name: str) -> list[str]:
    tree = sample_tree()
    host = next(h for h in tree.hosts if h.short_name == host_name)
    return list(Renderer().cmdline(host))


def test_ipxe_scripts_parse_back(rendered: dict[str, bytes]) -> None:
    stage1 = rendered["http/boot.ipxe"].decode().splitlines()
    assert stage1[0] == "#!ipxe"
    chain = [line for line in stage1 if line.startswith("chain ")]
    assert chain == [f"chain --autofree {MANAGER}/hosts/${{netX/mac:hexhyp}}.ipxe || goto none"]
    for name, mac in (("deb-ipxe", "0a"), ("ubu", "0d"), ("rocky", "0e")):
        lines = rendered[f"http/hosts/52-54-00-77-00-{mac}.ipxe"].decode().splitlines()
        assert lines[0] == "#!ipxe"
        commands = [line.split()[0] for line in lines[1:] if line and not line.startswith("#")]
        assert set(commands) <= {"echo", "kernel", "initrd", "boot"} and commands[-1] == "boot"
        kernel = next(line.split() for line in lines if line.startswith("kernel "))
        assert kernel[1].startswith(f"{MANAGER}/images/") and kernel[2] == "initrd=initrd"
        assert kernel[3:] == _cmdline(name)
        assert any(line == f"initrd --name initrd {MANAGER}/images/{kernel[1].split('/')[-2]}/initrd" for line in lines)


def test_debian_cmdline() -> None:
    args = _cmdline("deb-ipxe")
    assert args[:3] == ["auto=true", "priority=critical",
                        f"url={MANAGER}/answers/deb-ipxe.lab.example.net/preseed.cfg"]
    assert "hostname=deb-ipxe" in args and "domain=lab.example.net" in args
    assert "BOOTIF=01-52-54-00-77-00-0a" in args
    assert args[-2:] == ["---", "console=ttyS0,115200"]
    assert "quiet" in _cmdline("deb-pxelinux") and "console=ttyS1,57600" in _cmdline("deb-pxelinux")
    assert not any(a.startswith("console=") for a in _cmdline("rocky"))


def test_pxelinux_parse_back(rendered: dict[str, bytes]) -> None:
    lines = rendered["tftp/pxelinux.cfg/01-52-54-00-77-00-0b"].decode().splitlines()
    entries = [line.strip().split(None, 1) for line in lines if line.strip() and not line.startswith("#")]
    keys = [e[0] for e in entries]
    assert keys == ["DEFAULT", "PROMPT", "TIMEOUT", "LABEL", "SAY", "KERNEL", "INITRD", "APPEND"]
    conf = dict((e[0], e[1]) for e in entries)
    assert conf["DEFAULT"] == conf["LABEL"] == "install"
    assert conf["KERNEL"] == "images/debian-12/vmlinuz" and conf["INITRD"] == "images/debian-12/initrd"
    assert conf["APPEND"].split() == _cmdline("deb-pxelinux")


def test_grub_parse_back(rendered: dict[str, bytes]) -> None:
    entry = rendered["tftp/debian-installer/amd64/grub/grub.cfg"].decode()
    assert "configfile $prefix/hosts/$net_default_mac.cfg\n" in entry
    cfg = rendered["tftp/debian-installer/amd64/grub/hosts/52:54:00:77:00:0c.cfg"].decode()
    linux = next(shlex.split(line) for line in cfg.splitlines() if line.strip().startswith("linux "))
    assert linux == ["linux", "/images/debian-12/vmlinuz", *_cmdline("deb-grub")]
    initrd = next(shlex.split(line) for line in cfg.splitlines() if line.strip().startswith("initrd"))
    assert initrd == ["initrd", "/images/debian-12/initrd", "/images/firmware/firmware.cpio.gz"]
    assert cfg.count("{") == cfg.count("}") == 1


def test_grub_quotes_cloud_init_datasource() -> None:
    host = sample_host("ubu-grub", 0x20, "ubuntu-24.04", "grub")
    cfg = render_host(host)[host.grub_path].decode()
    linux = next(line for line in cfg.splitlines() if line.strip().startswith("linux "))
    assert f"'ds=nocloud-net;s={MANAGER}/answers/ubu-grub.lab.example.net/'" in linux
    assert shlex.split(linux)[1:][1:] == list(Renderer().cmdline(host))


def test_extra_initrds_in_every_loader() -> None:
    for loader in ("ipxe", "pxelinux", "grub"):
        host = sample_host("x", 0x21, loader=loader, extra_initrds=("probe/probe.gz",))
        text = next(iter(v for k, v in render_host(host).items() if "answers" not in k)).decode()
        assert "images/probe/probe.gz" in text
        if loader == "ipxe":
            assert " initrd=initrd initrd=probe.gz " in text
            assert f"initrd --name probe.gz {MANAGER}/images/probe/probe.gz" in text
        if loader == "pxelinux":
            assert "INITRD images/debian-12/initrd,images/probe/probe.gz" in text


# ---------------------------------------------------------------------------------------------------
# Parse-back: answer files
# ---------------------------------------------------------------------------------------------------


def parse_preseed(text: str) -> dict[str, tuple[str, str, str]]:
    """``owner question type value`` lines (backslash continuations joined) as {question: (owner, type, value)}."""
    out: dict[str, tuple[str, str, str]] = {}
    logical = re.sub(r"\\\n\s*", " ", text)
    for line in logical.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(None, 3)
        assert len(parts) >= 3, line
        owner, question, kind = parts[:3]
        assert kind in ("string", "boolean", "select", "multiselect", "password", "note"), line
        assert question not in out, f"{question} set twice"
        out[question] = (owner, kind, parts[3] if len(parts) > 3 else "")
    return out


def test_preseed_parse_back(rendered: dict[str, bytes]) -> None:
    host = sample_tree().hosts[0]
    pre = parse_preseed(rendered["http/answers/deb-ipxe.lab.example.net/preseed.cfg"].decode())
    assert pre["preseed/early_command"][2] == f"wget -q -O /dev/null '{host.early_url}' || true"
    late = pre["preseed/late_command"][2]
    assert late.endswith(f"wget -q -O /dev/null '{host.late_url}' || true")
    assert "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0TestKeyOnlyForGoldenFiles ops@example" in late
    assert pre["netcfg/get_hostname"][2] == "deb-ipxe" and pre["netcfg/get_domain"][2] == "lab.example.net"
    assert pre["mirror/http/hostname"][2] == "deb.debian.org" and pre["mirror/http/directory"][2] == "/debian"
    assert "partman-auto/disk" not in pre and pre["partman-auto/method"][2] == "regular"
    grub = parse_preseed(rendered["http/answers/deb-grub.lab.example.net/preseed.cfg"].decode())
    assert grub["partman-auto/disk"][2] == "/dev/vda" and grub["partman-auto/method"][2] == "lvm"
    assert grub["grub-installer/bootdev"][2] == "/dev/vda"


def test_cloud_init_parse_back(rendered: dict[str, bytes]) -> None:
    host = next(h for h in sample_tree().hosts if h.short_name == "ubu")
    text = rendered["http/answers/ubu.lab.example.net/user-data"].decode()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    auto = doc["autoinstall"]
    assert auto["version"] == 1
    assert auto["early-commands"] == [f"wget -q -O /dev/null '{host.early_url}' || true"]
    assert auto["late-commands"] == [f"wget -q -O /dev/null '{host.late_url}' || true"]
    assert auto["identity"]["hostname"] == "ubu"
    assert auto["ssh"]["authorized-keys"] == list(host.ssh_keys)
    assert auto["storage"]["layout"] == {"name": "direct", "match": {"path": "/dev/nvme0n1"}}
    meta = yaml.safe_load(rendered["http/answers/ubu.lab.example.net/meta-data"])
    assert meta == {"instance-id": "ubu.lab.example.net", "local-hostname": "ubu"}


def test_cloud_init_without_keys_is_still_yaml() -> None:
    host = sample_host("u2", 0x22, "ubuntu-22.04")
    doc = yaml.safe_load(render_host(host)["http/answers/u2.lab.example.net/user-data"])
    assert doc["autoinstall"]["ssh"]["authorized-keys"] == []
    assert "match" not in doc["autoinstall"]["storage"]["layout"]


def test_kickstart_parse_back(rendered: dict[str, bytes]) -> None:
    host = next(h for h in sample_tree().hosts if h.short_name == "rocky")
    text = rendered["http/answers/rocky.lab.example.net/ks.cfg"].decode()
    sections = re.findall(r"^(%\w+)\n(.*?)^%end$", text, re.M | re.S)
    body = dict(sections)
    assert body["%pre"].strip() == f"curl -fsS -o /dev/null '{host.early_url}' || true"
    assert body["%post"].strip() == f"curl -fsS -o /dev/null '{host.late_url}' || true"
    commands = {line.split()[0]: line for line in text.split("%packages")[0].splitlines()
                if line and not line.startswith("#")}
    assert commands["network"] == ("network --bootproto=dhcp --device=52:54:00:77:00:0e "
                                   "--hostname=rocky.lab.example.net --activate")
    assert commands["ignoredisk"] == "ignoredisk --only-use=sda"
    assert commands["autopart"] == "autopart --type=lvm"
    assert commands["bootloader"] == "bootloader"  # no console for this host


def test_hosts_index(rendered: dict[str, bytes]) -> None:
    doc = json.loads(rendered["hosts.json"])
    assert doc["version"] == 1 and doc["manager_url"] == MANAGER and doc["network"] == "10.77.0.0/24"
    assert [h["short_name"] for h in doc["hosts"]] == [h.short_name for h in sample_tree().hosts]
    assert all(re.fullmatch(r"[0-9a-f]{32}", h["token"]) for h in doc["hosts"])


# ---------------------------------------------------------------------------------------------------
# The environment: fallback, StrictUndefined, sandbox, line-break lock
# ---------------------------------------------------------------------------------------------------


def test_template_candidates_order() -> None:
    assert template_candidates("preseed.cfg", os="debian-12", family="debian", arch="x86_64") == [
        "preseed.cfg.debian-12.x86_64.j2", "preseed.cfg.debian-12.j2", "preseed.cfg.debian.x86_64.j2",
        "preseed.cfg.debian.j2", "preseed.cfg.x86_64.j2", "preseed.cfg.j2"]
    assert template_candidates("dnsmasq.conf") == ["dnsmasq.conf.j2"]


def test_operator_template_overrides_by_os(tmp_path: Path) -> None:
    (tmp_path / "preseed.cfg.debian-12.j2").write_text("# mine for {{ host.hostname }}\n")
    (tmp_path / "cmdline.debian.x86_64.j2").write_text("auto=true\nurl={{ host.answers_url }}/preseed.cfg\n")
    r = Renderer([tmp_path])
    deb12 = r.host_files(sample_host())
    assert deb12["http/answers/deb-ipxe.lab.example.net/preseed.cfg"] == b"# mine for deb-ipxe.lab.example.net\n"
    assert b"priority=critical" not in deb12["http/hosts/52-54-00-77-00-0a.ipxe"]
    deb11 = r.host_files(sample_host("old", 0x30, "debian-11"))
    assert deb11["http/answers/old.lab.example.net/preseed.cfg"].startswith(b"# Debian preseed for old")


def test_strict_undefined(tmp_path: Path) -> None:
    (tmp_path / "meta-data.j2").write_text("instance-id: {{ host.instance }}\n")
    with pytest.raises(TemplateError, match=r"meta-data.j2 for ubu.lab.example.net: UndefinedError"):
        Renderer([tmp_path]).host_files(sample_host("ubu", 0x0D, "ubuntu-24.04"))


def test_sandbox(tmp_path: Path) -> None:
    (tmp_path / "meta-data.j2").write_text("{{ host.__class__.__init__.__globals__ }}\n")
    with pytest.raises(TemplateError, match=r"SecurityError|UndefinedError"):
        Renderer([tmp_path]).host_files(sample_host("ubu", 0x0D, "ubuntu-24.04"))


def test_printed_line_break_stops_the_render(tmp_path: Path) -> None:
    (tmp_path / "meta-data.j2").write_text("x: {{ 'a\\ninjected: true' }}\n")
    with pytest.raises(TemplateError, match="line break"):
        Renderer([tmp_path]).host_files(sample_host("ubu", 0x0D, "ubuntu-24.04"))


def test_bad_generated_kernel_argument_stops_the_render(tmp_path: Path) -> None:
    (tmp_path / "cmdline.debian.j2").write_text("auto=true 'quoted'\n")
    with pytest.raises(TemplateError, match="not a safe kernel argument"):
        Renderer([tmp_path]).host_files(sample_host())


def test_missing_and_broken_templates(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="no template for 'nothing'"):
        Renderer().template("nothing")
    (tmp_path / "meta-data.j2").write_text("{% if %}\n")
    with pytest.raises(TemplateError, match=r"meta-data\.j2:1"):
        Renderer([tmp_path]).host_files(sample_host("ubu", 0x0D, "ubuntu-24.04"))


def test_a_failing_host_renders_no_tree(tmp_path: Path) -> None:
    (tmp_path / "ks.cfg.j2").write_text("{{ host.nope }}\n")
    with pytest.raises(TemplateError):
        render_tree(sample_tree(), template_dirs=[tmp_path])


# ---------------------------------------------------------------------------------------------------
# Whatever a person types as kernel arguments or console: refused, or rendered as exactly those words
# ---------------------------------------------------------------------------------------------------

_ARG_TEXT = st.one_of(st.from_regex(r"[a-z0-9_.=,:/+@%-]{1,16}", fullmatch=True),
                      st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=24))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=st.lists(_ARG_TEXT, max_size=4), console=st.one_of(st.just(""), _ARG_TEXT))
def test_kernel_arguments_cannot_inject(args: list[str], console: str) -> None:
    from fleet.errors import ValidationError

    renderer = _RENDERER
    try:
        hosts = [sample_host("fuzz", 0x60, loader=loader, kernel_args=tuple(args), console=console)
                 for loader in ("ipxe", "pxelinux", "grub")]
    except ValidationError:
        event("refused")
        return  # refused before rendering
    event("rendered")
    for host in hosts:
        files = renderer.host_files(host)
        cmdline = list(renderer.cmdline(host))
        at = cmdline.index("BOOTIF=01-52-54-00-77-00-60") + (2 if console else 1)
        assert cmdline[at:at + len(args)] == args  # the words given, in order, each one argument
        boot = next(v for k, v in files.items() if "answers" not in k).decode()
        clean = sample_host("fuzz", 0x60, loader=host.loader)
        baseline = next(v for k, v in renderer.host_files(clean).items() if "answers" not in k).decode()
        assert boot.count("\n") == baseline.count("\n")  # no line added: nothing injected
        if host.loader == "ipxe":
            line = next(x for x in boot.splitlines() if x.startswith("kernel "))
            assert line.split()[3:] == cmdline
        elif host.loader == "pxelinux":
            line = next(x for x in boot.splitlines() if x.strip().startswith("APPEND "))
            assert line.split()[1:] == cmdline
        else:
            line = next(x for x in boot.splitlines() if x.strip().startswith("linux "))
            assert shlex.split(line)[2:] == cmdline
