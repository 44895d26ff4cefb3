"""Quirks the code knows: each id, the capability it applies to, the type of its value, and where it acts.

A profile's ``[[quirks]]`` entry is data (``fleet.profiles.Quirk``); its id must be listed in
:data:`KNOWN_QUIRKS`: the loader refuses any other id (a typo, or a quirk nothing honours, would be a
claim that no code enforces). For a known id the loader checks ``applies_to`` and the value type
against its :class:`QuirkSpec`, then runs the spec's ``check`` on the whole profile: a quirk that other
profile fields already honour (an OID map, a unit, an ``unknown`` list, a missing command) is checked
against them, so a profile cannot say one thing in its quirks and another in its data.

The values the code acts on are gathered into one small frozen record per capability, a field of the
profile (``profile.boot``: :class:`BootQuirks`, ``profile.bmc``: :class:`BmcQuirks`,
``profile.outlet``: :class:`OutletQuirks`), so code asks ``profile.boot.uefi_flag_required`` instead
of looking a string up. Drivers, which get plain values and no profile, read the same ids from
``Target.options["quirks"]``; every id they read is known here (tests/test_quirks.py checks).

The pattern for the next quirk: add its :class:`QuirkSpec` here (with a ``check`` if other profile
fields honour it), a field on its capability's record if code acts on it, act on it where it applies,
test that the behaviour goes away without it, and run ``python -m fleet.profiles.quirks`` to refresh the table
in docs/profiles.md (a test fails while the docs and this registry disagree).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

__all__ = [
    "KNOWN_QUIRKS",
    "BmcQuirks",
    "BootQuirks",
    "OutletQuirks",
    "QuirkSpec",
    "bmc_quirks",
    "boot_quirks",
    "check_quirk",
    "docs_table",
    "outlet_quirks",
    "refuse_outlet_switching",
    "unknown_quirk_message",
]

#: A load-time consistency check: ``(profile, value) -> None`` or ``(key path, message)``.
Check = Callable[[Any, Any], "tuple[str, str] | None"]


@dataclass(frozen=True)
class QuirkSpec:
    """A quirk the code knows: where (``applies_to``), with what value (``value_type``), and how it acts."""

    id: str
    applies_to: str
    value_type: type
    acts_in: str  # where it is honoured: a function, or "load" plus the profile field checked
    meaning: str
    check: Check | None = None


# -- load-time checks: the quirk is honoured by other profile fields; they must agree ------------


def _metric(profile: Any, name: str) -> Any:
    snmp = getattr(profile, "snmp", None)
    return snmp.metrics.get(name) if snmp is not None else None


def _runtime_unit(profile: Any, value: Any) -> tuple[str, str] | None:
    want = "timeticks" if not isinstance(value, str) else value
    spec = _metric(profile, "battery_runtime")
    if spec is None:
        return "snmp.metrics.battery_runtime", f"is required: the quirk says the runtime is read in {want}"
    if spec.unit != want:
        return ("snmp.metrics.battery_runtime.unit",
                f"must be {want!r} as the profile's runtime quirk says (got {spec.unit!r})")
    return None


def _timeticks(profile: Any, value: Any) -> tuple[str, str] | None:
    if value != 100:
        return "value", f"TimeTicks are hundredths of a second: the value is 100 (got {value!r})"
    return _runtime_unit(profile, "timeticks")


def _runtime_sentinel(profile: Any, value: Any) -> tuple[str, str] | None:
    spec = _metric(profile, "battery_runtime")
    if spec is None or value not in spec.unknown:
        return ("snmp.metrics.battery_runtime.unknown",
                f"must list {value}: the quirk says a raw {value} means no runtime estimate")
    return None


def _has_fallbacks(profile: Any, value: Any) -> tuple[str, str] | None:
    snmp = getattr(profile, "snmp", None)
    if value and (snmp is None or not any(m.fallback_oid for m in snmp.metrics.values())):
        return "snmp.metrics", "needs a fallback_oid: the quirk says the high-precision objects may be missing"
    return None


def _fan_unit(profile: Any, value: Any) -> tuple[str, str] | None:
    for i, s in enumerate(getattr(profile, "sensors", ())):
        if s.kind == "fan" and s.unit != value:
            return f"sensors[{i}].unit", f"must be {value!r}: the profile's quirk says fans read in {value}"
    return None


def _snmp_command_at_least(profile: Any, value: Any) -> tuple[str, str] | None:
    snmp = getattr(profile, "snmp", None)
    cmd = snmp.commands.get("load_off") if snmp is not None else None
    if cmd is not None and cmd.value < value:
        return ("snmp.commands.load_off.value",
                f"must be at least {value} s: writing {cmd.value} cancels a pending shutdown on this model")
    return None


def _no_command(action: str) -> Check:
    def check(profile: Any, value: Any) -> tuple[str, str] | None:
        if not value:
            return None
        snmp, nut = getattr(profile, "snmp", None), getattr(profile, "nut", None)
        if snmp is not None and action in snmp.commands:
            return f"snmp.commands.{action}", f"must not be mapped: the profile's quirk says {action} is not offered"
        if nut is not None and action in nut.commands:
            return f"nut.commands.{action}", f"must not be mapped: the profile's quirk says {action} is not offered"
        return None
    return check


def _no_cycle(profile: Any, value: Any) -> tuple[str, str] | None:
    snmp = getattr(profile, "snmp", None)
    if value and snmp is not None and snmp.outlets is not None and "cycle" in snmp.outlets.commands:
        return "snmp.outlets.commands.cycle", "must not be mapped: the quirk says the MIB has no cycle command"
    return None


def _rpdu2_states(profile: Any, value: Any) -> tuple[str, str] | None:
    snmp = getattr(profile, "snmp", None)
    table = snmp.outlets if snmp is not None else None
    if table is None:
        return None
    on_rpdu2 = table.state_oid == value or table.state_oid.startswith(value + ".")
    inverted = table.states.get(1) == "off" and table.states.get(2) == "on"
    if on_rpdu2 and not inverted:
        return "snmp.outlets.states", f"must map 1 = off, 2 = on: {value} is the rPDU2 column, inverted"
    if not on_rpdu2 and inverted:
        return "snmp.outlets.states", "maps 1 = off, 2 = on, the rPDU2 order, on a column that is not rPDU2's"
    return None


def _no_outlet_driver(profile: Any, value: Any) -> tuple[str, str] | None:
    if value and profile.drivers.get("outlets"):
        return "drivers.outlets", "must be empty: the profile's quirk no-outlet-control says it cannot switch"
    return None


def _one_of(*values: str) -> Check:
    def check(profile: Any, value: Any) -> tuple[str, str] | None:
        if value not in values:
            return "value", f"must be one of {', '.join(values)} (got {value!r})"
        return None
    return check


def _registry(*specs: QuirkSpec) -> Mapping[str, QuirkSpec]:
    out: dict[str, QuirkSpec] = {}
    for spec in specs:
        if spec.id in out:
            raise ValueError(f"quirk {spec.id!r} registered twice")
        out[spec.id] = spec
    return MappingProxyType(dict(sorted(out.items())))


KNOWN_QUIRKS: Mapping[str, QuirkSpec] = _registry(
    QuirkSpec("boot-uefi-flag-required", "boot", bool, "fleet.ops.bootmode.decide_boot_mode (profile.boot)",
              "the server boots UEFI: a next-boot override must carry the EFI bit (IPMI boot flags data1 "
              "bit 5, ipmitool 'options=efiboot'), else the BMC asks for a legacy boot the firmware ignores"),
    QuirkSpec("boot-flags-not-persistent", "boot", bool, "fleet.drivers.ipmi.ops.op_get_boot",
              "the BMC keeps neither the persistent nor the UEFI flag: read the device selector back even "
              "when the valid bit is clear"),
    QuirkSpec("redfish-boot-all-fields", "boot", bool, "fleet.drivers.redfish.control.set_boot",
              "the BMC (AMI, ASRockRack) wants mode, enabled and target in every boot PATCH: "
              "BootSourceOverrideMode is sent even when the resource shows none, and when clearing (the mode "
              "the resource shows)"),
    QuirkSpec("redfish-continuous-refused", "boot", bool, "fleet.drivers.redfish.control.set_boot",
              "the BMC refuses BootSourceOverrideEnabled=Continuous: a persistent request is sent as Once, "
              "reported persistent=false and logged; it is not re-applied at later reboots (not implemented: "
              "nothing keeps the wish between driver calls)"),
    QuirkSpec("power-needs-chassis-control-script", "power", bool, "fleet.drivers.ipmi.ops._chassis_hint",
              "ipmi_sim: completion code 0xCC on chassis commands is a lab set-up fault (no chassis_control "
              "script), said so in the error"),
    QuirkSpec("ipmi-over-lan-disabled-by-default", "power", str, "fleet.drivers.ipmi.worker._login_error (profile.bmc)",
              "the model ships with IPMI over LAN off: a failed login says so and how to enable it (the value)"),
    QuirkSpec("ipmi-over-lan-setting", "power", str, "fleet.drivers.ipmi.worker._login_error (profile.bmc)",
              "IPMI over LAN can be turned off on this BMC: a failed login says so and where (the value)"),
    QuirkSpec("redfish-power-cycle", "power", str, "fleet.drivers.redfish.control._choose",
              "how this BMC power-cycles over Redfish: ResetType PowerCycle or ForceRestart, or off-on "
              "(ForceOff, confirm off, On, confirm on), instead of the ladder PowerCycle, else ForceRestart, "
              "else off-on; a named ResetType the system does not list is refused",
              _one_of("PowerCycle", "ForceRestart", "off-on")),
    QuirkSpec("fru-read-max-bytes", "fru", int, "fleet.drivers.ipmi.ops.op_fru",
              "the largest Read FRU Data count the BMC accepts: the FRU area is read in chunks of this size"),
    QuirkSpec("fan-reading-is-duty-cycle", "sensors", str, "load: sensors[].unit of every fan",
              "fans read in % duty cycle, not RPM: every fan sensor must have this unit", _fan_unit),
    QuirkSpec("high-precision-oids-may-be-missing", "battery", bool, "load: snmp.metrics.*.fallback_oid",
              "older cards lack the high-precision objects: the metrics need a fallback_oid "
              "(read by fleet.drivers.snmp on noSuchObject)", _has_fallbacks),
    QuirkSpec("runtime-in-timeticks", "battery", int, "load: snmp.metrics.battery_runtime.unit",
              "runtime is TimeTicks (the value: 100 per second): the runtime metric's unit must be timeticks "
              "(fleet.drivers.snmp.convert_metric divides by 100)", _timeticks),
    QuirkSpec("runtime-unit-uncertain", "battery", str, "load: snmp.metrics.battery_runtime.unit",
              "the runtime's unit has varied between firmware: the metric's unit must be the value, and "
              "fleet.drivers.snmp.convert_metric refuses a reading whose ASN.1 type contradicts it", _runtime_unit),
    QuirkSpec("runtime-65535-means-unknown", "battery", int, "load: snmp.metrics.battery_runtime.unknown",
              "the raw runtime value that means no estimate: it must be in the metric's unknown list",
              _runtime_sentinel),
    QuirkSpec("output-off-delay-zero-cancels", "outlets", int, "load: snmp.commands.load_off.value",
              "writing 0 to the output-off delay cancels a shutdown: load_off writes at least the value (s)",
              _snmp_command_at_least),
    QuirkSpec("cycle-is-off-then-on", "outlets", bool, "load: snmp.outlets.commands (profile.outlet)",
              "the MIB has no cycle command: none may be mapped, and fleet.drivers.snmp.set_outlet cycles as "
              "off, confirm off, on, confirm on", _no_cycle),
    QuirkSpec("rpdu2-state-values-inverted", "outlets", str, "load: snmp.outlets.states",
              "the value is the rPDU2 state column, whose map is 1 = off, 2 = on: a table on that column must "
              "map so, and only that column may", _rpdu2_states),
    QuirkSpec("outlet-state-unknown-needs-pdu-power-cycle", "outlets", int, "fleet.drivers.snmp.set_outlet",
              "the raw command-column value meaning the PDU lost its relays: switch nothing, call a person"),
    QuirkSpec("no-outlet-control", "outlets", bool,
              "fleet.profiles.quirks.refuse_outlet_switching, from fleet.ops.ups.outlet_action",
              "the device cannot switch outlets: switching is refused (Unsupported) before any packet, and no "
              "outlets driver may be listed", _no_outlet_driver),
    QuirkSpec("battery-life-years", "battery", int, "fleet.ops.ups.battery_forecast",
              "the battery's service life in years, for the age-based replacement date (default 4)"),
    QuirkSpec("no-remote-load-on", "power", bool, "load: snmp/nut commands.load_on",
              "output on cannot be done remotely: no load_on command may be mapped", _no_command("load_on")),
    QuirkSpec("no-stayoff-command", "outlets", bool, "load: snmp/nut commands.shutdown_stayoff",
              "stay-off is not offered on this model: no shutdown_stayoff command may be mapped",
              _no_command("shutdown_stayoff")),
)


def unknown_quirk_message(quirk_id: str) -> str:
    return (f"unknown quirk id {quirk_id!r}: the code acts on no such quirk; known: {', '.join(KNOWN_QUIRKS)} "
            "(a new quirk is registered in fleet/profiles/quirks.py with the code that honours it)")


def check_quirk(quirk_id: str, applies_to: str, value: Any) -> tuple[str, str] | None:
    """(key, message) if ``quirk_id`` is unknown, or ``applies_to``/``value`` do not fit its spec, else None."""
    spec = KNOWN_QUIRKS.get(quirk_id)
    if spec is None:
        return "id", unknown_quirk_message(quirk_id)
    if applies_to != spec.applies_to:
        return "applies_to", f"quirk {quirk_id!r} applies to {spec.applies_to!r}, not {applies_to!r}"
    # bool is an int in Python: a boolean quirk takes only true/false, a number quirk no boolean.
    if not isinstance(value, spec.value_type) or (spec.value_type is not bool and isinstance(value, bool)):
        return "value", f"quirk {quirk_id!r} takes a {spec.value_type.__name__}, not {value!r}"
    return None


class _QuirkLike(Protocol):
    id: str
    value: Any


@dataclass(frozen=True)
class BootQuirks:
    """Boot quirks, typed. ``uefi_flag_required``: ``boot-uefi-flag-required``;
    ``flags_not_persistent``: ``boot-flags-not-persistent``."""

    uefi_flag_required: bool = False
    flags_not_persistent: bool = False


@dataclass(frozen=True)
class BmcQuirks:
    """BMC (IPMI) quirks, typed. ``ipmi_over_lan_remedy``: how to turn IPMI over LAN on, when the model
    may have it off (``ipmi-over-lan-disabled-by-default`` / ``ipmi-over-lan-setting``), else None;
    ``off_by_default``: it ships off; ``fru_read_max_bytes``; ``chassis_control_script``."""

    ipmi_over_lan_remedy: str | None = None
    off_by_default: bool = False
    fru_read_max_bytes: int | None = None
    chassis_control_script: bool = False


@dataclass(frozen=True)
class OutletQuirks:
    """Outlet quirks, typed. ``no_control``: ``no-outlet-control``; ``cycle_is_off_then_on``;
    ``relays_lost_raw``: ``outlet-state-unknown-needs-pdu-power-cycle``."""

    no_control: bool = False
    cycle_is_off_then_on: bool = False
    relays_lost_raw: int | None = None


def refuse_outlet_switching(profile: Any, device: str, outlet: int) -> None:
    """Raise :class:`~fleet.errors.Unsupported` before any packet when ``profile`` (or None) says the
    device cannot switch outlets (quirk ``no-outlet-control``)."""
    if profile is not None and profile.outlet.no_control:
        from fleet.errors import Unsupported

        why = profile.quirk("no-outlet-control").why
        raise Unsupported(f"profile {profile.name} cannot switch outlets (quirk no-outlet-control: "
                          f"{why})", target=device, operation=f"outlet {outlet}")


def _by_id(quirks: Iterable[_QuirkLike]) -> dict[str, Any]:
    return {q.id: q.value for q in quirks}


def boot_quirks(quirks: Iterable[_QuirkLike]) -> BootQuirks:
    """The boot record of a profile's quirks (values already checked by :func:`check_quirk`)."""
    v = _by_id(quirks)
    return BootQuirks(uefi_flag_required=bool(v.get("boot-uefi-flag-required", False)),
                      flags_not_persistent=bool(v.get("boot-flags-not-persistent", False)))


def bmc_quirks(quirks: Iterable[_QuirkLike]) -> BmcQuirks:
    v = _by_id(quirks)
    off = v.get("ipmi-over-lan-disabled-by-default")
    return BmcQuirks(ipmi_over_lan_remedy=off if off is not None else v.get("ipmi-over-lan-setting"),
                     off_by_default=off is not None, fru_read_max_bytes=v.get("fru-read-max-bytes"),
                     chassis_control_script=bool(v.get("power-needs-chassis-control-script", False)))


def outlet_quirks(quirks: Iterable[_QuirkLike]) -> OutletQuirks:
    v = _by_id(quirks)
    return OutletQuirks(no_control=bool(v.get("no-outlet-control", False)),
                        cycle_is_off_then_on=bool(v.get("cycle-is-off-then-on", False)),
                        relays_lost_raw=v.get("outlet-state-unknown-needs-pdu-power-cycle"))


# -- the docs table, generated from the registry ----------------------------------------------

DOCS_BEGIN = "<!-- quirks table: generated by `python -m fleet.profiles.quirks`; do not edit by hand -->"
DOCS_END = "<!-- end of quirks table -->"


def docs_table() -> str:
    """The Markdown table of :data:`KNOWN_QUIRKS` that docs/profiles.md carries between its markers."""
    rows = ["| id | applies to | value | acts in | meaning |", "| --- | --- | --- | --- | --- |"]
    for spec in KNOWN_QUIRKS.values():
        rows.append(f"| `{spec.id}` | {spec.applies_to} | {spec.value_type.__name__} | {spec.acts_in} "
                    f"| {spec.meaning} |")
    return "\n".join([DOCS_BEGIN, *rows, DOCS_END])


def render_docs(text: str) -> str:
    """``text`` (docs/profiles.md) with the table between the markers replaced by :func:`docs_table`."""
    start, end = text.index(DOCS_BEGIN), text.index(DOCS_END) + len(DOCS_END)
    return text[:start] + docs_table() + text[end:]


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "profiles.md"
    doc.write_text(render_docs(doc.read_text()))
    print(f"wrote the quirks table of {doc}")
