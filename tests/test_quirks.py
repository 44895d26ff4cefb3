"""Quirks that act (fleet/profiles/quirks.py): every id is one the code knows, and a quirk honoured by other
profile fields is checked against them when the profile loads; without the quirk the same fields load."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleet.drivers.redfish.control import CYCLE_WAYS
from fleet.errors import ProfileError
from fleet.profiles import load_profiles
from fleet.profiles.quirks import KNOWN_QUIRKS

REPO = Path(__file__).resolve().parent.parent
PROFILES = load_profiles(REPO / "hardware-profiles")


def _without_quirk(text: str, quirk_id: str) -> str:
    blocks = re.split(r"(?m)^(?=\[\[quirks\]\]\n)", text)
    kept = [b for b in blocks[1:] if f'id = "{quirk_id}"' not in b]
    assert len(kept) == len(blocks) - 2, f"{quirk_id} not in the profile"
    return blocks[0] + "".join(kept)


def _load_one(tmp_path: Path, name: str, old: str, new: str, *, drop: str | None = None) -> None:
    src = PROFILES.get(name).path
    assert src is not None
    text = src.read_text()
    assert old in text, (name, old)
    text = text.replace(old, new, 1)
    if drop is not None:
        text = _without_quirk(text, drop)
    folder = tmp_path / src.parent.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / src.name).write_text(text)
    load_profiles(tmp_path)


# (profile, text in it, contradicting replacement, quirk, what the refusal says)
CONTRADICTIONS = [
    ("apc-smart-ups", '# upsAdvBatteryRunTimeRemaining\nunit = "timeticks"',
     '# upsAdvBatteryRunTimeRemaining\nunit = "seconds"', "runtime-in-timeticks",
     "snmp.metrics.battery_runtime.unit: must be 'timeticks'"),
    ("cyberpower-ups", '1.3.6.1.4.1.3808.1.1.1.2.2.4.0"\nunit = "timeticks"',
     '1.3.6.1.4.1.3808.1.1.1.2.2.4.0"\nunit = "minutes"', "runtime-unit-uncertain",
     "snmp.metrics.battery_runtime.unit: must be 'timeticks'"),
    ("eaton-9px", "unknown = [65535]", "unknown = []", "runtime-65535-means-unknown",
     "snmp.metrics.battery_runtime.unknown: must list 65535"),
    ("hpe-dl360-gen10", 'kind = "fan"\nunit = "percent"', 'kind = "fan"\nunit = "rpm"', "fan-reading-is-duty-cycle",
     "unit: must be 'percent'"),
    ("eaton-9px", "# xupsControlOutputOffDelay: seconds until off\nvalue = 1",
     "# xupsControlOutputOffDelay: seconds until off\nvalue = 0", "output-off-delay-zero-cancels",
     "snmp.commands.load_off.value: must be at least 1 s"),
    ("eaton-9px", "[snmp.outlets.commands.on]",
     '[snmp.outlets.commands.cycle]\noid = "1.3.6.1.4.1.534.1.12.2.1.5"\nvalue = 0\n\n[snmp.outlets.commands.on]',
     "cycle-is-off-then-on", "snmp.outlets.commands.cycle: must not be mapped"),
    ("apc-rpdu", 'states = { "1" = "on", "2" = "off" }', 'states = { "1" = "off", "2" = "on" }',
     "rpdu2-state-values-inverted", "snmp.outlets.states: maps 1 = off, 2 = on, the rPDU2 order"),
    ("apc-back-ups-nut", "[nut.commands]\n", '[nut.commands]\nload_on = "load.on"\n', "no-remote-load-on",
     "nut.commands.load_on: must not be mapped"),
    ("cyberpower-ups", "[snmp.commands.load_on]",
     '[snmp.commands.shutdown_stayoff]\noid = "1.3.6.1.4.1.3808.1.1.1.6.2.6.0"\nvalue = 3\n\n[snmp.commands.load_on]',
     "no-stayoff-command", "snmp.commands.shutdown_stayoff: must not be mapped"),
]


@pytest.mark.parametrize(("name", "old", "new", "quirk", "message"), CONTRADICTIONS,
                         ids=[c[3] for c in CONTRADICTIONS])
def test_a_quirk_honoured_by_profile_fields_refuses_fields_that_contradict_it(
        tmp_path: Path, name: str, old: str, new: str, quirk: str, message: str) -> None:
    with pytest.raises(ProfileError, match=re.escape(message)) as info:
        _load_one(tmp_path / "with", name, old, new)
    assert f"{name}.toml" in str(info.value) and quirk in str(info.value)
    # Without the quirk the very same fields load: the refusal is the quirk's doing.
    _load_one(tmp_path / "without", name, old, new, drop=quirk)


def test_high_precision_oids_may_be_missing_needs_a_fallback_oid(tmp_path: Path) -> None:
    src = PROFILES.get("apc-smart-ups").path
    assert src is not None
    text = re.sub(r"(?m)^fallback_(oid|scale) = .*\n", "", src.read_text())
    (tmp_path / "ups").mkdir()
    (tmp_path / "ups" / src.name).write_text(text)
    with pytest.raises(ProfileError, match=r"snmp\.metrics: needs a fallback_oid"):
        load_profiles(tmp_path)
    (tmp_path / "ups" / src.name).write_text(_without_quirk(text, "high-precision-oids-may-be-missing"))
    load_profiles(tmp_path)


def test_the_rpdu2_column_must_use_the_inverted_map(tmp_path: Path) -> None:
    # The table moved to rPDU2OutletSwitchedStatusState but kept rPDU's map: refused.
    rpdu2 = '"1.3.6.1.4.1.318.1.1.26.9.2.3.1.5"'
    with pytest.raises(ProfileError, match="must map 1 = off, 2 = on"):
        _load_one(tmp_path / "a", "apc-rpdu", '"1.3.6.1.4.1.318.1.1.12.3.5.1.1.4"', rpdu2)


def test_every_quirk_id_the_code_reads_is_known() -> None:
    read = set()
    for path in (REPO / "fleet").rglob("*.py"):
        # profile.quirk("id"), state.quirk("id"), and the Redfish driver's _quirk(call, "id")
        read |= set(re.findall(r"""quirk\((?:\s*\w+\s*,)?\s*["']([^"']+)["']""", path.read_text()))
    assert read, "the scan found no quirk lookups"
    assert {"redfish-power-cycle", "redfish-continuous-refused", "redfish-boot-all-fields"} <= read
    assert read <= set(KNOWN_QUIRKS), sorted(read - set(KNOWN_QUIRKS))


def test_typed_records_carry_the_acting_quirks() -> None:
    assert PROFILES.get("dell-r640").bmc.ipmi_over_lan_remedy.startswith("enable it: racadm set iDRAC.IPMILan")
    assert PROFILES.get("dell-r640").bmc.off_by_default
    hpe = PROFILES.get("hpe-dl360-gen10").bmc
    assert hpe.ipmi_over_lan_remedy is not None and not hpe.off_by_default
    assert PROFILES.get("generic-ipmi").bmc.ipmi_over_lan_remedy is None
    assert PROFILES.get("openipmi-sim").bmc.fru_read_max_bytes == 34
    assert PROFILES.get("openipmi-sim").boot.flags_not_persistent
    assert PROFILES.get("generic-pdu").outlet.no_control
    assert not PROFILES.get("apc-rpdu").outlet.no_control
    assert PROFILES.get("apc-rpdu").outlet.relays_lost_raw == 4
    assert PROFILES.get("eaton-9px").outlet.cycle_is_off_then_on


def test_redfish_power_cycle_takes_only_the_ways_the_driver_knows(tmp_path: Path) -> None:
    quirk = ('\n[[quirks]]\nid = "redfish-power-cycle"\napplies_to = "power"\nvalue = "{}"\n'
             'why = "test: how this BMC cycles"\n')
    src = PROFILES.get("generic-ipmi").path
    assert src is not None
    (tmp_path / "servers").mkdir()
    (tmp_path / "servers" / src.name).write_text(src.read_text() + quirk.format("GracefulRestart"))
    with pytest.raises(ProfileError, match="value: must be one of PowerCycle, ForceRestart, off-on"):
        load_profiles(tmp_path)
    for way in CYCLE_WAYS:  # the driver's values, each accepted
        (tmp_path / way / "servers").mkdir(parents=True)
        (tmp_path / way / "servers" / src.name).write_text(src.read_text() + quirk.format(way))
        assert load_profiles(tmp_path / way).get("generic-ipmi").quirk("redfish-power-cycle").value == way
