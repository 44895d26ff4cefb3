"""The boot mode (UEFI or legacy) of a next-boot override: one rule (fleet/ops/bootmode.py), the typed quirk
behind it (fleet/profiles/quirks.py), and `fleet bootdev` sending the EFI bit to a lab BMC, read back by
ipmitool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlmodel import Session

from fleet.errors import ProfileError, ValidationError
from fleet.lab import bmcserver
from fleet.ops.bootmode import decide_boot_mode, server_boot_modes
from fleet.profiles import load_profiles
from inventory.db import make_engine, upgrade
from inventory.models import Server, ServerTag
from inventory.selectors import parse_selector

from .clihelp import fleet
from .peers import missing_peer

PROFILES = load_profiles()
BMC_HOST, BMC_PORT = "127.0.0.1", 16641


# -- (a) the rule, from recorded firmware, the loader and the quirk ----------------------------------


def test_the_quirk_boot_uefi_flag_required_is_typed_data_on_the_profile() -> None:
    assert PROFILES.get("supermicro-x12").boot.uefi_flag_required
    assert PROFILES.get("hpe-dl360-gen10").boot.uefi_flag_required
    assert PROFILES.get("quanta-d52b").boot.uefi_flag_required
    assert not PROFILES.get("rackfleet-lab").boot.uefi_flag_required
    assert not PROFILES.get("generic-ipmi").boot.uefi_flag_required


def _profile_dir(tmp_path: Path, quirk: str) -> Path:
    src = PROFILES.get("supermicro-x12").path
    assert src is not None
    text = src.read_text()
    start = text.index('id = "boot-uefi-flag-required"')
    end = text.index("why =", start)
    (tmp_path / "servers").mkdir(parents=True)
    (tmp_path / "servers" / src.name).write_text(text[:start] + quirk + text[end:])
    return tmp_path


@pytest.mark.parametrize(("quirk", "message"), [
    ('id = "boot-uefi-flag-required"\napplies_to = "boot"\nvalue = "yes"\n', "takes a bool, not 'yes'"),
    ('id = "boot-uefi-flag-required"\napplies_to = "power"\nvalue = true\n', "applies to 'boot', not 'power'"),
])
def test_the_loader_refuses_a_known_quirk_with_the_wrong_value_type_or_capability(tmp_path: Path, quirk: str,
                                                                                   message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        load_profiles(_profile_dir(tmp_path, quirk))


def test_recorded_firmware_wins_then_a_single_firmware_loader_then_the_profile_quirk_then_legacy() -> None:
    x12, lab = PROFILES.get("supermicro-x12"), PROFILES.get("rackfleet-lab")
    # Recorded firmware beats everything, including a quirk that says UEFI.
    bios = decide_boot_mode(firmware="bios", loader="grub", profile=x12)
    assert (bios.mode, bios.source) == ("legacy", "inventory: tag firmware:bios")
    assert decide_boot_mode(firmware="uefi", profile=lab).uefi
    # A loader that boots under one firmware only tells which; iPXE (both) tells nothing.
    grub = decide_boot_mode(loader="grub", profile=lab)
    assert grub.uefi and "PXE loader grub boots under UEFI only" in grub.source
    assert decide_boot_mode(loader="pxelinux", profile=x12).mode == "legacy"
    quirk = decide_boot_mode(loader="ipxe", profile=x12)
    assert (quirk.mode, quirk.source) == ("uefi", "profile supermicro-x12: quirk boot-uefi-flag-required")
    default = decide_boot_mode(loader="ipxe", profile=lab)
    assert default.mode == "legacy" and default.source.startswith("default:")
    assert decide_boot_mode(profile=None).mode == "legacy"
    with pytest.raises(ValidationError, match="unknown firmware 'coreboot'"):
        decide_boot_mode(firmware="coreboot")


def test_server_boot_modes_reads_firmware_and_loader_tags_from_the_inventory(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'inv.db'}")
    upgrade(engine)
    rows = {"a": ("supermicro-x12", []), "b": ("rackfleet-lab", ["firmware:uefi"]),
            "c": ("supermicro-x12", ["firmware:bios"]), "d": ("rackfleet-lab", ["pxe-loader:grub"]),
            "e": ("rackfleet-lab", []), "f": ("no-such-profile", [])}
    with Session(engine) as s:
        for name, (profile, tags) in rows.items():
            server = Server(hostname=name, profile=profile)
            s.add(server)
            s.flush()
            s.add_all(ServerTag(server_id=server.id, tag=t) for t in tags)
        s.commit()
        modes = server_boot_modes(s, parse_selector(None), PROFILES)
        assert {h: m.mode for h, m in modes.items()} == {"a": "uefi", "b": "uefi", "c": "legacy", "d": "uefi",
                                                          "e": "legacy", "f": "legacy"}
        assert modes["d"].source == "inventory: tag pxe-loader:grub: PXE loader grub boots under UEFI only"
        # Imaging's effective loader (overrides file included) wins over the tag.
        assert server_boot_modes(s, parse_selector("d"), PROFILES, loaders={"d": "pxelinux"})["d"].mode == "legacy"
        s.add(ServerTag(server_id=s.get(Server, 2).id, tag="firmware:bios"))  # type: ignore[union-attr]
        s.commit()
        with pytest.raises(ValidationError, match="b: tags say two firmwares"):
            server_boot_modes(s, parse_selector("b"), PROFILES)


# -- (b) `fleet bootdev` against a lab BMC: the EFI bit on the wire, read back by ipmitool ---------


def _ipmitool(port: int, *args: str) -> str:
    res = subprocess.run(["ipmitool", "-I", "lanplus", "-C", "17", "-H", BMC_HOST, "-p", str(port), "-U", "admin",
                          "-E", "-N", "1", "-R", "2", *args], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "IPMI_PASSWORD": "password"})
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture
def lab_bmcs(tmp_path: Path):  # type: ignore[no-untyped-def]
    if shutil.which("ipmitool") is None:
        missing_peer("ipmitool (Debian package ipmitool)")
    names = ["x12", "lab", "tagged"]
    spec = tmp_path / "bmcs.json"
    spec.write_text(json.dumps({"bmcs": [{"name": n, "host": BMC_HOST, "port": BMC_PORT + i, "username": "admin",
                                          "password": "password", "power": "off"} for i, n in enumerate(names)]}))
    state = tmp_path / "bmc-state"
    pid = bmcserver.start(spec, state)
    try:
        yield {n: BMC_PORT + i for i, n in enumerate(names)}
    finally:
        bmcserver.stop(state, pid=pid)


@pytest.mark.peer
def test_fleet_bootdev_sends_the_efi_bit_to_a_uefi_profile_server_as_ipmitool_reads_back(
        env: dict[str, str], lab_bmcs: dict[str, int]) -> None:
    assert fleet(env, "add", "site", "t1").returncode == 0
    assert fleet(env, "add", "rack", "R1", "--site", "t1").returncode == 0
    assert fleet(env, "credentials", "set", "bmc", "--kind", "ipmi", "--user", "admin", "--password-stdin",
                 stdin="password\n").returncode == 0
    servers = {"x12": ("supermicro-x12", []), "lab": ("rackfleet-lab", []), "tagged": ("rackfleet-lab",
                                                                                     ["--tag", "firmware:uefi"])}
    for i, (host, (profile, tags)) in enumerate(servers.items()):
        added = fleet(env, "add", "server", host, "--rack", "R1", "--position", str(i + 1), "--bmc",
                      f"{BMC_HOST}:{lab_bmcs[host]}", "--bmc-credential", "bmc", "--profile", profile, *tags)
        assert added.returncode == 0, added.stderr

    done = fleet(env, "bootdev", "pxe", "x12", "lab", "tagged", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    rows = {r["hostname"]: r for r in json.loads(done.stdout)}
    assert {h: (r["device"], r["uefi"], r["mode"]) for h, r in rows.items()} == {
        "x12": ("pxe", True, "uefi"), "lab": ("pxe", False, "legacy"), "tagged": ("pxe", True, "uefi")}
    assert rows["x12"]["mode_source"] == "profile supermicro-x12: quirk boot-uefi-flag-required"
    assert rows["tagged"]["mode_source"] == "inventory: tag firmware:uefi"
    # ipmitool, the independent client, reads boot parameter 5 back from each BMC.
    x12 = _ipmitool(lab_bmcs["x12"], "chassis", "bootparam", "get", "5")
    assert "BIOS EFI boot" in x12 and "Force PXE" in x12 and "Options apply to only next boot" in x12
    lab = _ipmitool(lab_bmcs["lab"], "chassis", "bootparam", "get", "5")
    assert "BIOS PC Compatible (legacy) boot" in lab and "Force PXE" in lab
    assert "BIOS EFI boot" in _ipmitool(lab_bmcs["tagged"], "chassis", "bootparam", "get", "5")

    # --legacy overrides the profile, --persistent is kept and reported.
    done = fleet(env, "bootdev", "pxe", "x12", "--legacy", "--persistent", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)[0]
    assert (row["uefi"], row["persistent"], row["mode_source"]) == (False, True, "requested (--legacy)")
    x12 = _ipmitool(lab_bmcs["x12"], "chassis", "bootparam", "get", "5")
    assert "BIOS PC Compatible (legacy) boot" in x12 and "Options apply to all future boots" in x12

    # The audit says which mode was asked of each server, and why.
    audit = json.loads(fleet(env, "audit", "--action", "bootdev", "--json").stdout)
    first = next(a for a in audit if sorted(a["targets"]) == ["lab", "tagged", "x12"])
    assert first["detail"]["modes"]["x12"] == {"mode": "uefi",
                                               "source": "profile supermicro-x12: quirk boot-uefi-flag-required"}
    assert first["detail"]["modes"]["lab"]["mode"] == "legacy"
