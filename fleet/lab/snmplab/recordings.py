"""The lab's SNMP device models: a recording (snmpsim-data's or ours) plus the rules that make its battery and
outlets per-device, and :func:`build_template`, which rewrites the recording for the ``fleetdev`` variation.

The models and what the variation module changes are in :mod:`fleet.lab.snmplab`'s docstring.
"""

from __future__ import annotations

import bz2
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import MissingDependency
from fleet.lab.programs import LAB_EXTRA
from fleet.lab.snmplab.agent import SnmpLabError

__all__ = ["DEFAULT_PDU_MODELS", "DEFAULT_UPS_MODELS", "MODELS", "VARIATION", "LabModel", "build_template",
           "variation_dir"]

VARIATION = "fleetdev"


def variation_dir() -> Path:
    """Rackfleet's snmpsim variation modules (``--variation-modules-dir``)."""
    return Path(__file__).resolve().parent.parent / "snmpvariation"


def _snmpsim_data_dir() -> Path:
    try:
        import snmpsim_data
    except ImportError:
        raise MissingDependency("the snmpsim-data package is not installed", remedy=LAB_EXTRA) from None
    return Path(snmpsim_data.__file__).resolve().parent / "data"


# ---------------------------------------------------------------------------------------------
# Models: a recording plus the rules that make its battery and outlets per-device
# ---------------------------------------------------------------------------------------------

_Rule = dict[str, Callable[[int], int]]

#: Battery-dependent objects per MIB family: OID -> {condition: raw value from the recorded one}.
_BATTERY_RULES: dict[str, dict[str, _Rule]] = {
    "ietf": {
        "1.3.6.1.2.1.33.1.4.1.0": {"on_battery": lambda r: 5},                     # upsOutputSource: battery(5)
        "1.3.6.1.2.1.33.1.2.1.0": {"low_battery": lambda r: 3},                    # upsBatteryStatus: low(3)
        "1.3.6.1.2.1.33.1.2.2.0": {"on_battery": lambda r: 45},                    # upsSecondsOnBattery
        "1.3.6.1.2.1.33.1.2.3.0": {"on_battery": lambda r: round(r * 0.6),         # upsEstimatedMinutesRemaining
                                   "low_battery": lambda r: min(r, 2)},
        "1.3.6.1.2.1.33.1.2.4.0": {"on_battery": lambda r: max(0, r - 18),         # upsEstimatedChargeRemaining
                                   "low_battery": lambda r: min(r, 9)},
        "1.3.6.1.2.1.33.1.3.3.1.3.1": {"on_battery": lambda r: 0},                 # upsInputVoltage.1
    },
    "xups": {
        "1.3.6.1.4.1.534.1.4.5.0": {"on_battery": lambda r: 5},                    # xupsOutputSource: battery(5)
        "1.3.6.1.4.1.534.1.2.4.0": {"on_battery": lambda r: max(0, r - 18),        # xupsBatCapacity
                                    "low_battery": lambda r: min(r, 9)},
        "1.3.6.1.4.1.534.1.2.1.0": {"on_battery": lambda r: r if r == 65535 else round(r * 0.6),
                                    "low_battery": lambda r: r if r == 65535 else min(r, 120)},
        "1.3.6.1.4.1.534.1.2.5.0": {"on_battery": lambda r: 2},                    # xupsBatteryAbmStatus: discharging
        "1.3.6.1.4.1.534.1.3.4.1.2.1": {"on_battery": lambda r: 0},                # xupsInputVoltage.1
    },
    "apc-ups": {
        "1.3.6.1.4.1.318.1.1.1.4.1.1.0": {"on_battery": lambda r: 3},              # upsBasicOutputStatus: onBattery
        "1.3.6.1.4.1.318.1.1.1.2.1.1.0": {"low_battery": lambda r: 3},             # upsBasicBatteryStatus: low
        "1.3.6.1.4.1.318.1.1.1.2.2.4.0": {"replace_battery": lambda r: 2},         # upsAdvBatteryReplaceIndicator
        "1.3.6.1.4.1.318.1.1.1.2.1.2.0": {"on_battery": lambda r: 4500},           # upsBasicBatteryTimeOnBattery
        "1.3.6.1.4.1.318.1.1.1.2.3.1.0": {"on_battery": lambda r: round(r * 0.815),  # upsHighPrecBatteryCapacity
                                          "low_battery": lambda r: min(r, 95)},
        "1.3.6.1.4.1.318.1.1.1.2.2.1.0": {"on_battery": lambda r: int(r * 0.815),  # upsAdvBatteryCapacity
                                          "low_battery": lambda r: min(r, 9)},
        "1.3.6.1.4.1.318.1.1.1.2.2.3.0": {"on_battery": lambda r: round(r * 0.6),  # upsAdvBatteryRunTimeRemaining
                                          "low_battery": lambda r: min(r, 18000)},
        "1.3.6.1.4.1.318.1.1.1.3.2.1.0": {"on_battery": lambda r: 0},              # upsAdvInputLineVoltage
        "1.3.6.1.4.1.318.1.1.1.3.3.1.0": {"on_battery": lambda r: 0},              # upsHighPrecInputLineVoltage
    },
}


@dataclass(frozen=True)
class _OutletColumn:
    prefix: str          # the column OID, without the index
    role: str            # state | command | delay_off | delay_on
    values: Mapping[str, str] = field(default_factory=dict)  # on/off/reboot/pending_* -> raw
    idle_from_record: bool = False


@dataclass(frozen=True)
class _OutletFamily:
    truth: str                       # the column whose recorded value gives each outlet's initial state
    truth_states: Mapping[str, str]  # raw -> on | off
    columns: tuple[_OutletColumn, ...]


_OUTLET_RULES: dict[str, _OutletFamily] = {
    "rpdu": _OutletFamily(
        truth="1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", truth_states={"1": "on", "2": "off"},
        columns=(
            _OutletColumn("1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", "command", {"on": "1", "off": "2", "reboot": "3"}),
            _OutletColumn("1.3.6.1.4.1.318.1.1.12.3.5.1.1.4", "state", {"on": "1", "off": "2"}),
            _OutletColumn("1.3.6.1.4.1.318.1.1.26.9.2.3.1.5", "state", {"on": "2", "off": "1"}),  # rPDU2: inverted
            _OutletColumn("1.3.6.1.4.1.318.1.1.26.9.2.4.1.5", "command", {"on": "1", "off": "2", "reboot": "3"}),
            _OutletColumn("1.3.6.1.4.1.318.1.1.4.4.2.1.3", "command", {"on": "1", "off": "2", "reboot": "3"}),
        ),
    ),
    "apc-outlet-groups": _OutletFamily(
        truth="1.3.6.1.4.1.318.1.1.1.12.1.2.1.3", truth_states={"1": "on", "2": "off"},
        columns=(
            _OutletColumn("1.3.6.1.4.1.318.1.1.1.12.1.2.1.3", "state", {"on": "1", "off": "2"}),
            _OutletColumn("1.3.6.1.4.1.318.1.1.1.12.3.2.1.3", "command", {"on": "1", "off": "2", "reboot": "3"}),
        ),
    ),
    "xups-receptacles": _OutletFamily(
        truth="1.3.6.1.4.1.534.1.12.2.1.2", truth_states={"1": "on", "2": "off"},
        columns=(
            _OutletColumn("1.3.6.1.4.1.534.1.12.2.1.2", "state",
                          {"on": "1", "off": "2", "pending_off": "3", "pending_on": "4"}),
            _OutletColumn("1.3.6.1.4.1.534.1.12.2.1.3", "delay_off", idle_from_record=True),
            _OutletColumn("1.3.6.1.4.1.534.1.12.2.1.4", "delay_on", idle_from_record=True),
        ),
    ),
}


@dataclass(frozen=True)
class LabModel:
    """A simulated device model: its recording, hardware profile and the rules applied to it."""

    name: str
    kind: str                       # ups | pdu
    profile: str
    source: str                     # "snmpsim-data:UPS/x.snmprec[.bz2]" or "rackfleet:x.snmprec"
    battery: tuple[str, ...] = ()   # keys of _BATTERY_RULES
    outlets: tuple[str, ...] = ()   # keys of _OUTLET_RULES
    description: str = ""

    def source_path(self) -> Path:
        origin, _, rel = self.source.partition(":")
        if origin == "rackfleet":
            return variation_dir() / "data" / rel
        if origin == "snmpsim-data":
            return _snmpsim_data_dir() / rel
        raise SnmpLabError(f"model {self.name}: unknown recording origin {origin!r}")


MODELS: Mapping[str, LabModel] = {m.name: m for m in (
    LabModel("apc-smart-ups", "ups", "apc-smart-ups", "rackfleet:apc-smart-ups.snmprec",
             ("apc-ups",), ("apc-outlet-groups",), "APC Smart-UPS 3000 (NMC2), PowerNet-MIB, 3 outlet groups"),
    LabModel("eaton-9px", "ups", "eaton-9px", "snmpsim-data:UPS/eaton-9px-partial.snmprec.bz2",
             ("xups",), ("xups-receptacles",), "Eaton 9PX 2200i, XUPS-MIB, 2 receptacles"),
    LabModel("eaton-93e", "ups", "eaton-9px", "snmpsim-data:UPS/eaton-93e-80.snmprec.bz2",
             ("xups", "ietf"), (), "Eaton 93E 80 kVA, XUPS-MIB and RFC 1628"),
    LabModel("ietf-ups", "ups", "generic-ups-mib", "snmpsim-data:UPS/phoenixtec-power.snmprec.bz2",
             ("ietf",), (), "Phoenixtec UPS, RFC 1628 only"),
    LabModel("apc-7902b", "pdu", "apc-rpdu", "snmpsim-data:UPS/apc-7902b.snmprec",
             (), ("rpdu",), "APC AP7902B switched rack PDU, 16 outlets"),
    LabModel("apc-8641", "pdu", "apc-rpdu", "snmpsim-data:UPS/apc-8641.snmprec",
             (), ("rpdu",), "APC AP8641 switched rack PDU, 24 outlets"),
    LabModel("apc-8932", "pdu", "apc-rpdu", "snmpsim-data:UPS/apc-8932.snmprec",
             (), ("rpdu",), "APC AP8932 switched rack PDU, 24 outlets"),
)}

DEFAULT_UPS_MODELS = ("apc-smart-ups", "eaton-9px", "eaton-93e", "ietf-ups")
DEFAULT_PDU_MODELS = ("apc-7902b", "apc-8641", "apc-8932")

_NUMERIC_TAGS = {"2", "65", "66", "67", "70"}
_SYS_NAME = "1.3.6.1.2.1.1.5.0"


def _read_records(path: Path) -> list[str]:
    raw = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
    return [line for line in raw.decode("latin-1").splitlines() if line.strip() and not line.startswith("#")]


def _oid_key(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.split("."))


def build_template(model: LabModel | str, dest: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``model``'s rewritten recording to ``dest``; return what the lab must know about it.

    The answer: ``{"outlets": {"<n>": "on"|"off"}}``, each outlet's initial state as recorded.
    Records that referenced snmpsim's stock ``writecache`` become plain values (read-only names);
    any other stock variation left in the file is an error, so the agent needs only our module.
    """
    m = MODELS[model] if isinstance(model, str) else model
    records = _read_records(m.source_path())
    parsed: list[tuple[str, str, str]] = []
    for line in records:
        oid, tag, value = line.split("|", 2)
        parsed.append((oid, tag, value))
    by_oid = {oid: (tag, value) for oid, tag, value in parsed}

    battery: dict[str, _Rule] = {}
    for fam in m.battery:
        battery.update(_BATTERY_RULES[fam])
    initial: dict[str, str] = {}
    columns: list[_OutletColumn] = []
    for fam in m.outlets:
        family = _OUTLET_RULES[fam]
        prefix = family.truth + "."
        for oid, (tag, value) in by_oid.items():
            if oid.startswith(prefix):
                raw = value if ":" not in tag else ""
                if raw not in family.truth_states:
                    raise SnmpLabError(f"{m.name}: outlet {oid} reads {value!r}, "
                                       f"not one of {sorted(family.truth_states)}")
                initial[oid[len(prefix):]] = family.truth_states[raw]
        columns.extend(family.columns)

    out: list[str] = [f"# Rackfleet lab template {m.name} from {m.source}; rewritten for the {VARIATION} variation."]
    for oid, tag, value in sorted(parsed, key=lambda r: _oid_key(r[0])):
        base_tag, _, module = tag.partition(":")
        if oid == _SYS_NAME:
            out.append(f"{oid}|{base_tag.rstrip('xe')}:{VARIATION}|role=name")
            continue
        rule = battery.get(oid)
        if rule is not None and base_tag in _NUMERIC_TAGS and not module:
            recorded = int(value)
            params = [f"normal={recorded}"] + [f"{cond}={fn(recorded)}" for cond, fn in rule.items()]
            out.append(f"{oid}|{base_tag}:{VARIATION}|{','.join(params)}")
            continue
        replaced = False
        for col in columns:
            if not oid.startswith(col.prefix + "."):
                continue
            index = oid[len(col.prefix) + 1:]
            if "." in index or index not in initial:
                continue
            params = [f"outlet={index}", f"role={col.role}"]
            if col.role in ("state", "command"):
                params += [f"{k}={v}" for k, v in col.values.items()] + [f"initial={initial[index]}"]
            else:
                params.append(f"idle={int(value) if not module else -1}")
            out.append(f"{oid}|{base_tag}:{VARIATION}|{','.join(params)}")
            replaced = True
            break
        if replaced:
            continue
        if module == "writecache":
            settings = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
            if "value" not in settings:
                raise SnmpLabError(f"{m.name}: writecache record {oid} has no value")
            out.append(f"{oid}|{base_tag}|{settings['value']}")
            continue
        if module:
            raise SnmpLabError(f"{m.name}: record {oid} uses the stock variation {module!r}; add a rule for it")
        out.append(f"{oid}|{tag}|{value}")
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text("\n".join(out) + "\n", encoding="latin-1")
    tmp.replace(target)
    return {"outlets": dict(sorted(initial.items(), key=lambda kv: int(kv[0])))}
