"""Hardware profiles: every shipped profile is valid, matching picks the right one, bad files are refused."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from fleet.drivers.registry import CAPABILITIES, registry
from fleet.errors import ProfileError
from fleet.profiles import (
    ENUM_VOCABULARY,
    OUTLET_STATES,
    Profile,
    ProfileSet,
    clear_cache,
    default_profiles_dir,
    load_profile,
    load_profiles,
)
from fleet.profiles.quirks import KNOWN_QUIRKS, docs_table, render_docs

REPO_PROFILES = Path(__file__).resolve().parent.parent / "hardware-profiles"
FOLDER_KIND = {"servers": "server", "ups": "ups", "pdu": "pdu"}
OID = re.compile(r"^[0-9]+(\.[0-9]+)+$")

REQUIRED = {
    "supermicro-x11", "supermicro-x12", "dell-r640", "dell-r650", "hpe-dl360-gen10", "lenovo-sr630",
    "quanta-d52b", "generic-ipmi", "openipmi-sim", "rackfleet-lab",
    "generic-ups-mib", "apc-smart-ups", "eaton-9px", "eaton-5px", "cyberpower-ups", "apc-back-ups-nut",
    "nut-dummy", "apc-rpdu", "generic-pdu",
}


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    return load_profiles(REPO_PROFILES)


def repo_files() -> list[Path]:
    return sorted(REPO_PROFILES.rglob("*.toml"))


# ---------------------------------------------------------------------------------------------
# Every profile in the repository
# ---------------------------------------------------------------------------------------------


def test_all_required_profiles_are_present(profiles: ProfileSet) -> None:
    assert set(profiles.names()) >= REQUIRED
    assert len(profiles) == len(repo_files())


def test_names_are_unique_and_equal_file_stems(profiles: ProfileSet) -> None:
    stems = [f.stem for f in repo_files()]
    assert len(stems) == len(set(stems)), "two files share a name"
    for f in repo_files():
        p = profiles.get(f.stem)
        assert p.name == f.stem
        assert p.path is not None and p.path.resolve() == f.resolve()
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", p.name)


def test_each_profile_sits_in_the_folder_of_its_kind(profiles: ProfileSet) -> None:
    for p in profiles:
        assert p.path is not None
        assert FOLDER_KIND[p.path.parent.name] == p.kind, p.name


def test_drivers_are_registered_and_implement_their_capability(profiles: ProfileSet) -> None:
    known = set(registry.names())
    for p in profiles:
        for capability, names in p.drivers.items():
            assert capability in CAPABILITIES, (p.name, capability)
            assert names, (p.name, capability)
            for name in names:
                assert name in known, (p.name, capability, name)
                assert capability in registry.capabilities(name), (p.name, capability, name)


def test_sections_exist_for_the_drivers_used(profiles: ProfileSet) -> None:
    for p in profiles:
        used = {d for names in p.drivers.values() for d in names}
        assert ("ipmi" in used) <= (p.ipmi is not None), p.name
        assert ("snmp" in used) <= (p.snmp is not None), p.name
        assert ("nut" in used) <= (p.nut is not None), p.name


def test_every_quirk_says_why(profiles: ProfileSet) -> None:
    for p in profiles:
        for q in p.quirks:
            assert q.why.strip(), (p.name, q.id)
            assert len(q.why) > 20, (p.name, q.id, "a why line should explain, not just name")
            assert q.applies_to in CAPABILITIES, (p.name, q.id)


def test_every_profile_cites_sources(profiles: ProfileSet) -> None:
    for p in profiles:
        assert p.sources, p.name
        assert all(s.strip() for s in p.sources), p.name


def test_sensor_thresholds_are_ordered(profiles: ProfileSet) -> None:
    for p in profiles:
        for s in p.sensors:
            lows = [v for v in (s.critical_low, s.warning_low) if v is not None]
            highs = [v for v in (s.warning_high, s.critical_high) if v is not None]
            assert lows == sorted(lows), (p.name, s.name)
            assert highs == sorted(highs), (p.name, s.name)
            if lows and highs:
                assert max(lows) < min(highs), (p.name, s.name)


def test_power_figures_are_sane(profiles: ProfileSet) -> None:
    for p in profiles:
        assert 0 < p.power.idle_w <= p.power.peak_w, p.name
        if p.kind == "server":
            assert p.power.capacity_w is None
        if p.power.capacity_w is not None and p.power.capacity_va is not None:
            assert p.power.capacity_w <= p.power.capacity_va, p.name


def test_snmp_oids_are_numeric_and_enums_map_to_the_vocabulary(profiles: ProfileSet) -> None:
    for p in profiles:
        if p.snmp is None:
            continue
        oids = [o for m in p.snmp.metrics.values() for o in (m.oid, m.fallback_oid) if o]
        oids += [c.oid for c in p.snmp.commands.values()]
        if p.snmp.outlets is not None:
            t = p.snmp.outlets
            oids += [o for o in (t.state_oid, t.name_oid, t.count_oid) if o]
            oids += [c.oid for c in t.commands.values()]
            assert set(t.states.values()) <= OUTLET_STATES
        oids += list(p.match.sys_object_ids)
        for oid in oids:
            assert OID.match(oid), (p.name, oid)
        for metric, spec in p.snmp.metrics.items():
            if spec.unit == "enum":
                assert set(spec.values.values()) <= ENUM_VOCABULARY[metric], (p.name, metric)


def test_facts_checked_against_recordings_and_the_simulator(profiles: ProfileSet) -> None:
    rpdu = profiles.get("apc-rpdu")
    assert rpdu.snmp is not None and rpdu.snmp.outlets is not None
    assert rpdu.snmp.outlets.states == {1: "on", 2: "off"}  # rPDU: 1 on, 2 off (rPDU2 is the inverse)
    assert {c.value for c in rpdu.snmp.outlets.commands.values()} == {1, 2, 3}
    sim = profiles.get("openipmi-sim")
    assert sim.ipmi is not None and 17 not in sim.ipmi.cipher_suites
    fru = sim.quirk("fru-read-max-bytes")
    assert fru is not None and fru.value == 34
    eaton = profiles.get("eaton-9px")
    assert eaton.snmp is not None
    assert 65535 in eaton.snmp.metrics["battery_runtime"].unknown
    apc = profiles.get("apc-smart-ups")
    assert apc.snmp is not None
    charge = apc.snmp.metrics["battery_charge"]
    assert charge.scale == pytest.approx(0.1) and charge.fallback_oid == "1.3.6.1.4.1.318.1.1.1.2.2.1.0"
    assert apc.snmp.metrics["battery_runtime"].unit == "timeticks"


def test_profile_helpers(profiles: ProfileSet) -> None:
    dell = profiles.get("dell-r640")
    assert dell.drivers_for("power") == ("ipmi", "ssh")
    assert dell.drivers_for("outlets") == ()
    assert dell.supports("boot") and not dell.supports("battery")
    assert dell.quirk("boot-uefi-flag-required") is not None
    assert dell.quirk("no-such-quirk") is None
    assert all(q.applies_to == "boot" for q in dell.quirks_for("boot"))
    inlet = dell.sensor("Inlet Temp")
    assert inlet is not None
    assert inlet.state(25) == "ok"
    assert inlet.state(43) == "warning"
    assert inlet.state(48) == "critical"
    assert inlet.state(-8) == "critical"
    with pytest.raises(ProfileError):
        dell.drivers_for("teleport")


def test_kind_and_name_lookups(profiles: ProfileSet) -> None:
    assert "dell-r640" in profiles and "dell-r999" not in profiles
    assert {p.name for p in profiles.of_kind("pdu")} == {"apc-rpdu", "generic-pdu"}
    assert [p.name for p in profiles] == profiles.names()
    with pytest.raises(ProfileError, match=r"did you mean 'dell-r640'"):
        profiles.get("dell-640")
    with pytest.raises(ProfileError):
        profiles.of_kind("toaster")


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------


def test_match_ipmi(profiles: ProfileSet) -> None:
    def name(mfr: int, product: int | None = None) -> str | None:
        p = profiles.match_ipmi(mfr, product)
        return p.name if p else None

    assert name(0x1291, 0x0F02) == "openipmi-sim"  # what ipmi_sim answers
    assert name(0x1291, 0x1234) == "openipmi-sim"  # the manufacturer's only profile
    assert name(32473, 1) == "rackfleet-lab"
    assert name(674) == "dell-r650"  # shared by R640/R650: the preferred one
    assert name(10876, 0x9999) == "supermicro-x12"
    assert name(11) == "hpe-dl360-gen10"
    assert name(19046) == "lenovo-sr630"
    assert name(7244) == "quanta-d52b"
    assert name(424242) is None


def test_match_sys_object_id(profiles: ProfileSet) -> None:
    def name(oid: str) -> str | None:
        p = profiles.match_sys_object_id(oid)
        return p.name if p else None

    # sysObjectIDs of the snmpsim-data recordings
    assert name("1.3.6.1.4.1.318.1.3.4.8") == "apc-rpdu"  # AP7902B
    assert name(".1.3.6.1.4.1.318.1.3.4.6") == "apc-rpdu"  # AP8641, AP8932 (leading dot allowed)
    assert name("1.3.6.1.4.1.705.1") == "eaton-9px"  # Eaton 9PX and 93E cards
    assert name("1.3.6.1.4.1.534.1") == "eaton-9px"
    assert name("1.3.6.1.4.1.318.1.3.2.12") == "apc-smart-ups"
    assert name("1.3.6.1.4.1.3808.1.1.1") == "cyberpower-ups"
    assert name("1.3.6.1.2.1.33") == "generic-ups-mib"
    # prefixes match whole arcs only
    assert name("1.3.6.1.4.1.318.1.3.40") is None
    assert name("1.3.6.1.4.1.9.1.1") is None


def test_for_netbox_exact_and_case_insensitive(profiles: ProfileSet) -> None:
    for manufacturer, device_type in [
        ("Dell", "PowerEdge R640"),
        ("dell-inc", "poweredge-r640"),
        ("DELL INC.", "POWEREDGE R640"),
        (None, "PowerEdge R640"),
    ]:
        p, warning = profiles.for_netbox(manufacturer, device_type)
        assert (p.name, warning) == ("dell-r640", None), (manufacturer, device_type)
    p, warning = profiles.for_netbox("Eaton", "9PX2200IRT3U", kind="ups")
    assert (p.name, warning) == ("eaton-9px", None)
    p, warning = profiles.for_netbox("APC", "ap8641", kind="pdu")
    assert (p.name, warning) == ("apc-rpdu", None)


def test_for_netbox_falls_back_to_the_manufacturer_then_generic(profiles: ProfileSet) -> None:
    p, warning = profiles.for_netbox("Dell", "PowerEdge R750")
    assert p.name == "dell-r650"
    assert warning is not None and "PowerEdge R750" in warning and "dell-r650" in warning

    # A device type known under another manufacturer does not match.
    p, warning = profiles.for_netbox("HPE", "PowerEdge R640")
    assert p.name == "hpe-dl360-gen10" and warning is not None

    p, warning = profiles.for_netbox("Acme Servers", "Rocket 1U")
    assert p.name == "generic-ipmi"
    assert warning is not None and "generic-ipmi" in warning and "Rocket 1U" in warning

    p, warning = profiles.for_netbox(None, None)
    assert p.name == "generic-ipmi" and warning is not None

    p, warning = profiles.for_netbox("Acme Power", "UPS 9000", kind="ups")
    assert p.name == "generic-ups-mib" and warning is not None
    p, warning = profiles.for_netbox("Acme Power", "PDU 9000", kind="pdu")
    assert p.name == "generic-pdu" and warning is not None
    p, warning = profiles.for_netbox("APC", "Smart-UPS X 9000", kind="ups")
    assert p.name == "apc-smart-ups" and warning is not None


# ---------------------------------------------------------------------------------------------
# Malformed files: each is refused with the file and the key
# ---------------------------------------------------------------------------------------------

GOOD = """\
name = "acme-x1"
kind = "server"
vendor = "Acme"
model = "X1"
description = "A test server."
sources = ["the test"]

[match.ipmi]
manufacturer_id = 32473
product_ids = [0x10]

[match.snmp]
sys_object_ids = ["1.3.6.1.4.1.32473.1"]

[match.netbox]
manufacturers = ["Acme"]
device_types = ["X1"]

[drivers]
power = ["ipmi"]
boot = ["ipmi"]

[power]
idle_w = 100
peak_w = 400

[ipmi]
cipher_suites = [17, 3]

[[sensors]]
name = "Inlet Temp"
kind = "temperature"
unit = "celsius"
warning_high = 40
critical_high = 45

[[sensors]]
name = "CPU Temp"
kind = "temperature"
unit = "celsius"
warning_high = 85
critical_high = 95

[[quirks]]
id = "fru-read-max-bytes"
applies_to = "fru"
value = 32
why = "Read FRU Data above 32 bytes fails with completion code 0xC8."
"""


def write(tmp_path: Path, text: str, name: str = "acme-x1", folder: str = "servers") -> Path:
    d = tmp_path / "hardware-profiles" / folder
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{name}.toml"
    f.write_text(textwrap.dedent(text))
    return f


def refused(tmp_path: Path, text: str, *, name: str = "acme-x1", folder: str = "servers") -> str:
    f = write(tmp_path, text, name, folder)
    with pytest.raises(ProfileError) as info:
        load_profile(f, base=tmp_path)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f"hardware-profiles/{folder}/{name}.toml"), message
    return message


def test_the_good_file_loads(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, GOOD), base=tmp_path)
    assert isinstance(p, Profile)
    assert p.match.ipmi_product_ids == (0x10,)
    assert p.sensors[1].critical_high == 95


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace('model = "X1"', 'model = "X1"\ncolour = "red"'))
    assert "colour: unknown key" in message
    message = refused(tmp_path, GOOD.replace("critical_high = 95", "critcal_high = 95"))
    assert "sensors[1].critcal_high: unknown key" in message and "critical_high" in message
    message = refused(tmp_path, GOOD.replace("[match.netbox]", "[match.netbx]"))
    assert "match.netbx: unknown key" in message


def test_wrong_type_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("critical_high = 95", 'critical_high = "hot"'))
    assert "sensors[1].critical_high: must be a number" in message
    message = refused(tmp_path, GOOD.replace("manufacturer_id = 32473", 'manufacturer_id = "32473"'))
    assert "match.ipmi.manufacturer_id: must be an integer" in message
    message = refused(tmp_path, GOOD.replace('sources = ["the test"]', 'sources = "the test"'))
    assert "sources: must be an array" in message
    message = refused(tmp_path, GOOD.replace("idle_w = 100", "idle_w = true"))
    assert "power.idle_w: must be a number" in message


def test_quirk_without_why_is_refused(tmp_path: Path) -> None:
    why = 'why = "Read FRU Data above 32 bytes fails with completion code 0xC8."'
    message = refused(tmp_path, GOOD.replace(why, ""))
    assert "quirks[0].why:" in message
    message = refused(tmp_path, GOOD.replace(why,
                                              'why = "   "'))
    assert "quirks[0].why:" in message


def test_unknown_or_unsuitable_driver_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace('power = ["ipmi"]', 'power = ["ipmi", "amt"]'))
    assert "drivers.power[1]: unknown driver 'amt'" in message
    message = refused(tmp_path, GOOD.replace('boot = ["ipmi"]', 'boot = ["snmp"]'))
    assert "drivers.boot[0]:" in message and "does not implement 'boot'" in message
    message = refused(tmp_path, GOOD.replace('boot = ["ipmi"]', 'teleport = ["ipmi"]'))
    assert "drivers.teleport: unknown capability" in message


def test_bad_oid_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace('"1.3.6.1.4.1.32473.1"', '".1.3.6.1.4.1.32473.1"'))
    assert "match.snmp.sys_object_ids[0]: must be a numeric dotted OID without a leading dot" in message
    message = refused(tmp_path, GOOD.replace('"1.3.6.1.4.1.32473.1"', '"1.3.6.one"'))
    assert "match.snmp.sys_object_ids[0]: must be a numeric dotted OID" in message


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = GOOD.replace('vendor = "Acme"', 'vendor = "Acme')  # line 3
    message = refused(tmp_path, text)
    assert message.startswith("hardware-profiles/servers/acme-x1.toml:3:"), message
    assert "invalid TOML" in message


def test_name_must_equal_the_file_stem(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD, name="acme-x2")
    assert "name: must equal the file name" in message and "'acme-x2'" in message


def test_kind_must_match_the_folder(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD, folder="ups")
    assert "kind: is 'server' but the file is in ups/" in message


def test_unordered_thresholds_are_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("warning_high = 85", "warning_high = 99"))
    assert "sensors[1].warning_high: must be at most critical_high" in message
    message = refused(tmp_path, GOOD.replace(
        "warning_high = 40", "critical_low = 10\nwarning_low = 5\nwarning_high = 40"))
    assert "sensors[0].critical_low: must be at most warning_low" in message
    message = refused(tmp_path, GOOD.replace("warning_high = 40", "warning_low = 40\nwarning_high = 40"))
    assert "sensors[0].warning_low: must be below warning_high" in message


def test_missing_driver_section_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace("[ipmi]\ncipher_suites = [17, 3]\n", ""))
    assert "ipmi: is required: driver 'ipmi' is listed in [drivers]" in message


SNMP_UPS = """\
name = "acme-ups"
kind = "ups"
vendor = "Acme"
model = "U1"
description = "A test UPS."
sources = ["the test"]

[match.snmp]
sys_object_ids = ["1.3.6.1.4.1.32473.2"]

[drivers]
battery = ["snmp"]

[power]
idle_w = 10
peak_w = 50
capacity_w = 900
capacity_va = 1000

[snmp]
mib = "TEST-MIB"

[snmp.metrics.battery_runtime]
oid = "1.3.6.1.4.1.32473.2.1.0"
unit = "timeticks"

[snmp.metrics.output_source]
oid = "1.3.6.1.4.1.32473.2.2.0"
unit = "enum"
values = { "1" = "online", "2" = "on_battery" }
"""


def test_snmp_sections_are_validated(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, SNMP_UPS, "acme-ups", "ups"), base=tmp_path)
    assert p.snmp is not None and p.snmp.metrics["output_source"].values == {1: "online", 2: "on_battery"}

    def bad(text: str) -> str:
        return refused(tmp_path, text, name="acme-ups", folder="ups")

    assert "snmp.metrics.output_source.values.2: must be one of" in bad(
        SNMP_UPS.replace('"2" = "on_battery"', '"2" = "battery"'))
    assert "snmp.metrics.battery_runtime.unit:" in bad(SNMP_UPS.replace('"timeticks"', '"hours"'))
    assert "snmp.metrics.battery_charj: unknown metric (did you mean 'battery_charge'?)" in bad(
        SNMP_UPS.replace("battery_runtime]", "battery_charj]"))
    assert "snmp.metrics.output_source.oid: must be a numeric dotted OID" in bad(
        SNMP_UPS.replace('"1.3.6.1.4.1.32473.2.2.0"', '"upsOutputSource.0"'))
    assert "power.capacity_w: must not exceed capacity_va" in bad(
        SNMP_UPS.replace("capacity_w = 900", "capacity_w = 1200"))


# ---------------------------------------------------------------------------------------------
# Sets of profiles
# ---------------------------------------------------------------------------------------------


def profile_text(name: str, *, mfr: int | None = None, products: str = "", oid: str | None = None,
                 preferred: bool = False) -> str:
    lines = [f'name = "{name}"', 'kind = "server"', 'vendor = "Acme"', f'model = "{name}"',
             'description = "test"', 'sources = ["test"]', "", "[match]", f"preferred = {str(preferred).lower()}"]
    if mfr is not None:
        lines += ["[match.ipmi]", f"manufacturer_id = {mfr}"]
        if products:
            lines += [f"product_ids = [{products}]"]
    if oid is not None:
        lines += ["[match.snmp]", f'sys_object_ids = ["{oid}"]']
    lines += ["", "[drivers]", 'shell = ["ssh"]', "", "[power]", "idle_w = 1", "peak_w = 2", ""]
    return "\n".join(lines)


def test_product_match_beats_manufacturer_match_and_longest_prefix_wins(tmp_path: Path) -> None:
    write(tmp_path, profile_text("family", mfr=32473, oid="1.3.6.1.4.1.32473", preferred=True), "family")
    write(tmp_path, profile_text("special", mfr=32473, products="7", oid="1.3.6.1.4.1.32473.5.1"), "special")
    ps = load_profiles(tmp_path / "hardware-profiles")
    assert ps.match_ipmi(32473, 7).name == "special"  # type: ignore[union-attr]
    assert ps.match_ipmi(32473, 8).name == "family"  # type: ignore[union-attr]
    assert ps.match_ipmi(32473).name == "family"  # type: ignore[union-attr]
    assert ps.match_sys_object_id("1.3.6.1.4.1.32473.5.1.9").name == "special"  # type: ignore[union-attr]
    assert ps.match_sys_object_id("1.3.6.1.4.1.32473.5.2").name == "family"  # type: ignore[union-attr]
    with pytest.raises(ProfileError, match="generic-ipmi"):
        ps.for_netbox("Nobody", "Nothing")


def test_shared_manufacturer_needs_exactly_one_preferred(tmp_path: Path) -> None:
    write(tmp_path, profile_text("one", mfr=32473), "one")
    write(tmp_path, profile_text("two", mfr=32473), "two")
    with pytest.raises(ProfileError, match=r"match.preferred: IPMI manufacturer id 32473 is shared by one, two"):
        load_profiles(tmp_path / "hardware-profiles")


def test_same_product_claimed_twice_is_refused(tmp_path: Path) -> None:
    write(tmp_path, profile_text("one", mfr=32473, products="1", preferred=True), "one")
    write(tmp_path, profile_text("two", mfr=32473, products="1"), "two")
    with pytest.raises(ProfileError, match=r"match.ipmi.product_ids: .*also claimed by 'one'"):
        load_profiles(tmp_path / "hardware-profiles")


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    write(tmp_path, profile_text("twin"), "twin", "servers")
    extra = tmp_path / "hardware-profiles" / "servers" / "old"
    extra.mkdir()
    (extra / "twin.toml").write_text(profile_text("twin"))
    with pytest.raises(ProfileError, match="duplicate profile name 'twin'"):
        load_profiles(tmp_path / "hardware-profiles")


def test_a_bad_file_fails_the_whole_directory(tmp_path: Path) -> None:
    write(tmp_path, profile_text("fine"), "fine")
    write(tmp_path, profile_text("broken").replace("idle_w = 1", "idle_w = -1"), "broken")
    with pytest.raises(ProfileError, match=r"hardware-profiles/servers/broken.toml: power.idle_w"):
        load_profiles(tmp_path / "hardware-profiles")


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no hardware profiles"):
        load_profiles(tmp_path)


def test_default_directory_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_PROFILES", raising=False)
    assert default_profiles_dir().resolve() == REPO_PROFILES.resolve()
    assert load_profiles() is load_profiles()

    write(tmp_path, profile_text("only-one"), "only-one")
    monkeypatch.setenv("FLEET_PROFILES", str(tmp_path / "hardware-profiles"))
    clear_cache()
    assert load_profiles().names() == ["only-one"]
    monkeypatch.delenv("FLEET_PROFILES")
    assert "dell-r640" in load_profiles()


def test_every_quirk_id_is_documented(profiles: ProfileSet) -> None:
    doc = (REPO_PROFILES.parent / "docs" / "profiles.md").read_text()
    missing = sorted({q.id for p in profiles for q in p.quirks if f"`{q.id}`" not in doc})
    assert not missing, f"quirk ids missing from docs/profiles.md: {missing}"


def test_every_quirk_id_in_the_profiles_is_known_to_the_code(profiles: ProfileSet) -> None:
    used = {q.id for p in profiles for q in p.quirks}
    assert used <= set(KNOWN_QUIRKS), sorted(used - set(KNOWN_QUIRKS))


def test_the_docs_quirks_table_is_generated_from_the_registry() -> None:
    doc = (REPO_PROFILES.parent / "docs" / "profiles.md").read_text()
    assert docs_table() in doc, "docs/profiles.md's quirks table is stale: run `python -m fleet.profiles.quirks`"
    assert render_docs(doc) == doc


def test_an_unknown_quirk_id_is_refused_naming_the_file_the_id_and_the_known_ids(tmp_path: Path) -> None:
    message = refused(tmp_path, GOOD.replace('id = "fru-read-max-bytes"', 'id = "slow-bmc"'))
    assert "acme-x1.toml: quirks[0].id: unknown quirk id 'slow-bmc'" in message
    assert "known: " in message and "boot-uefi-flag-required" in message and "no-outlet-control" in message
