"""The spec table: for each record kind, its input keys and their converters, and :func:`build`.

Each kind lists its input keys, the record attribute each fills and the converter that checks
and normalises the value (:mod:`inventory.records.convert`); a "finish" step then checks what
involves several fields. Building a record walks only the keys present (refusing unknown ones on
the way): this is the hot path of a bulk import, so it does one dict lookup and one converter call
per value, nothing more. The CSV fast path (:mod:`inventory._fastcsv`) runs the same table.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.errors import ValidationError

from ..models import STATES
from ..validate import BMC_DEFAULT_PORT, REDFISH_DEFAULT_PORT, check_network, check_ssh_host_key, check_tls_fingerprint
from .convert import (
    Converter,
    _as_bool,
    _as_code,
    _as_date,
    _as_dns,
    _as_host,
    _as_ip,
    _as_mac,
    _as_nic_name,
    _as_options,
    _as_phases,
    _as_purpose,
    _as_secret,
    _as_tags,
    _host_port,
    _int,
    _one_of,
    _text,
)
from .source import SourceMap, _loc_of, _place
from .types import (
    KINDS,
    CredentialRecord,
    DiskRecord,
    FeedRecord,
    NicRecord,
    OutletRecord,
    PduRecord,
    PodRecord,
    PoolRecord,
    RackRecord,
    Record,
    ServerRecord,
    SiteRecord,
    UpsRecord,
)

__all__ = ["build"]


POD_KINDS = ("room", "container")
UPS_KINDS = ("server", "rack", "room")
UPS_PROTOCOLS = ("snmp", "nut")
CREDENTIAL_KINDS = ("ipmi", "snmp-v2c", "snmp-v3", "ssh", "nut", "redfish")
DISK_KINDS = ("ssd", "hdd", "nvme")


def _list_of(kind: str) -> Converter:
    """A list of nested records (NICs, disks, outlets), each placed at its own line when known."""
    def convert(value: Any, field: str, loc: str | None) -> tuple:
        if not isinstance(value, list | tuple):
            raise ValidationError(f"{field} must be a list", field=field, value=value)
        out = []
        for i, item in enumerate(value):
            item_loc = _loc_of(item, loc)
            try:
                out.append(_make(kind, item, item_loc))
            except ValidationError as err:
                raise _place(err, item, item_loc, prefix=f"{field}[{i}]") from None
        return tuple(out)
    return convert


@dataclass(frozen=True, slots=True)
class _Spec:
    cls: type
    fields: Mapping[str, tuple[str, Converter]]  # input key -> (record attribute, converter)
    required: tuple[str, ...] = ()
    finish: Callable[[dict[str, Any]], None] | None = None
    top_level: bool = True


def _finish_nic(v: dict[str, Any]) -> None:
    v.setdefault("name", "eth0")


def _finish_server(v: dict[str, Any]) -> None:
    if v.get("rack") is not None and v.get("site") is None:
        raise ValidationError("a rack is named within a site: give site too", field="site")
    if v.get("position") is not None and v.get("rack") is None:
        raise ValidationError("a rack position needs a rack", field="position", value=v["position"])
    bmc = v.pop("bmc", None)
    if bmc is not None:
        v["bmc_host"], v["bmc_port"] = bmc[0], bmc[1]
    redfish = v.pop("redfish", None)
    if redfish is not None:
        v["redfish_host"], v["redfish_port"] = redfish[0], redfish[1]
    if v.get("redfish_tls_fingerprint") is not None and v.get("redfish_ca_file") is not None:
        raise ValidationError("a Redfish endpoint is trusted by its certificate's fingerprint or by a CA file, "
                              "not both", field="redfish_ca_file")
    mac, ip = v.pop("mac", None), v.pop("ip", None)
    if mac is not None or ip is not None:
        if "nics" in v:
            raise ValidationError("give either mac/ip (one NIC) or nics, not both", field="mac")
        if mac is None:
            raise ValidationError("an ip for the primary NIC needs its mac", field="ip")
        v["nics"] = (NicRecord(name="eth0", mac=mac, ip=ip, pxe=True, loc=v.get("loc")),)


def _finish_endpoint(v: dict[str, Any]) -> None:
    """``host`` may carry a port (``HOST:PORT``); ``port`` may too; they must agree. None = protocol default."""
    host, port, gave_port = v["host"]
    v["host"] = host
    explicit = v.get("port")
    if explicit is not None and gave_port and explicit != port:
        raise ValidationError(f"port {explicit} differs from the port written with the host", field="port")
    if explicit is None and gave_port:
        v["port"] = port


def _finish_ups(v: dict[str, Any]) -> None:
    protocol = v.get("protocol")
    _finish_endpoint(v)
    if protocol == "nut" and v.get("nut_name") is None:
        raise ValidationError("a UPS read through NUT needs nut_name (its name on the NUT server)",
                              field="nut_name")


def _finish_pdu(v: dict[str, Any]) -> None:
    _finish_endpoint(v)


def _finish_pool(v: dict[str, Any]) -> None:
    net = ipaddress.ip_network(v["cidr"])
    for key in ("gateway", "first", "last"):
        if v.get(key) is not None and ipaddress.ip_address(v[key]) not in net:
            raise ValidationError(f"{v[key]} is outside {v['cidr']}", field=key, value=v[key])
    if v.get("first") and v.get("last") and ipaddress.ip_address(v["first"]) > ipaddress.ip_address(v["last"]):
        raise ValidationError(f"first {v['first']} is after last {v['last']}", field="last")
    if v.get("rack") is not None and v.get("site") is None:
        raise ValidationError("a rack is named within a site: give site too", field="site")


def _as_path(value: Any, field: str, _loc: str | None) -> str:
    """A file path (a CA bundle): one line of text, at most 1024 characters."""
    text = _text(1024)(value, field, _loc).strip()
    if not text or "\n" in text or "\x00" in text:
        raise ValidationError("a file path is required", field=field, value=value)
    return text


def _endpoint_of(default_port: int) -> Converter:
    return lambda v, f, _loc: _host_port(v, f, default_port)


_SPECS: dict[str, _Spec] = {
    "nic": _Spec(NicRecord, {
        "name": ("name", _as_nic_name), "mac": ("mac", _as_mac), "ip": ("ip", _as_ip),
        "switch": ("switch", _text(64)), "switch_port": ("switch_port", _text(64)), "pxe": ("pxe", _as_bool),
    }, required=("mac",), finish=_finish_nic, top_level=False),
    "disk": _Spec(DiskRecord, {
        "slot": ("slot", _text(32)), "kind": ("disk_kind", _one_of(DISK_KINDS)), "model": ("model", _text(64)),
        "serial": ("serial", _text(64)), "size_gb": ("size_gb", _int(0, 10**7)),
    }, required=("slot",), top_level=False),
    "outlet": _Spec(OutletRecord, {
        "number": ("number", _int(0, 4096)), "server": ("server", _as_host), "psu": ("psu", _int(1, 16)),
        "name": ("name", _text(64)),
    }, required=("number",), top_level=False),
    "site": _Spec(SiteRecord, {
        "code": ("code", _as_code), "name": ("name", _text(128)), "description": ("description", _text(256)),
    }, required=("code",)),
    "pod": _Spec(PodRecord, {
        "site": ("site", _as_code), "code": ("code", _as_code), "name": ("name", _text(128)),
        "kind": ("pod_kind", _one_of(POD_KINDS)),
    }, required=("site", "code")),
    "rack": _Spec(RackRecord, {
        "site": ("site", _as_code), "name": ("name", _as_code), "pod": ("pod", _as_code),
        "units": ("units", _int(1, 100)), "description": ("description", _text(256)),
    }, required=("site", "name")),
    "feed": _Spec(FeedRecord, {
        "site": ("site", _as_code), "name": ("name", _as_code), "rack": ("rack", _as_code),
        "capacity_w": ("capacity_w", _int(0, 10**8)), "voltage": ("voltage", _int(1, 100_000)),
        "phases": ("phases", _as_phases),
    }, required=("site", "name")),
    "credential": _Spec(CredentialRecord, {
        "name": ("name", _as_code), "kind": ("cred_kind", _one_of(CREDENTIAL_KINDS)),
        "username": ("username", _text(64)), "secret": ("secret", _as_secret), "options": ("options", _as_options),
    }, required=("name", "kind")),
    "server": _Spec(ServerRecord, {
        "hostname": ("hostname", _as_host), "site": ("site", _as_code), "pod": ("pod", _as_code),
        "rack": ("rack", _as_code), "position": ("position", _int(1, 100)), "height": ("height", _int(1, 50)),
        "profile": ("profile", _as_code), "serial": ("serial", _text(64)), "asset_tag": ("asset_tag", _text(64)),
        "state": ("state", _one_of(STATES)), "bmc": ("bmc", _endpoint_of(BMC_DEFAULT_PORT)),
        "bmc_credential": ("bmc_credential", _as_code), "ssh_credential": ("ssh_credential", _as_code),
        "redfish": ("redfish", _endpoint_of(REDFISH_DEFAULT_PORT)),
        "redfish_credential": ("redfish_credential", _as_code),
        "redfish_tls_fingerprint": ("redfish_tls_fingerprint", lambda v, f, _loc: check_tls_fingerprint(v, f)),
        "redfish_ca_file": ("redfish_ca_file", _as_path),
        "primary_ip": ("primary_ip", _as_ip), "priority": ("priority", _int(0, 1_000_000)),
        "ssh_host_key": ("ssh_host_key", lambda v, f, _loc: check_ssh_host_key(v, f)),
        "description": ("description", _text(256)), "nics": ("nics", _list_of("nic")),
        "disks": ("disks", _list_of("disk")), "tags": ("tags", _as_tags), "mac": ("mac", _as_mac),
        "ip": ("ip", _as_ip), "ups": ("ups", _as_code),
    }, required=("hostname",), finish=_finish_server),
    "ups": _Spec(UpsRecord, {
        "name": ("name", _as_code), "site": ("site", _as_code), "rack": ("rack", _as_code),
        "kind": ("ups_kind", _one_of(UPS_KINDS)), "profile": ("profile", _as_code),
        "protocol": ("protocol", _one_of(UPS_PROTOCOLS)), "host": ("host", _endpoint_of(161)),
        "port": ("port", _int(1, 65535)), "nut_name": ("nut_name", _as_code), "credential": ("credential", _as_code),
        "feed": ("feed", _as_code), "capacity_w": ("capacity_w", _int(0, 10**8)),
        "battery_installed": ("battery_installed", _as_date), "description": ("description", _text(256)),
        "outlets": ("outlets", _list_of("outlet")),
    }, required=("name", "site", "host"), finish=_finish_ups),
    "pdu": _Spec(PduRecord, {
        "name": ("name", _as_code), "site": ("site", _as_code), "rack": ("rack", _as_code),
        "profile": ("profile", _as_code), "host": ("host", _endpoint_of(161)), "port": ("port", _int(1, 65535)),
        "credential": ("credential", _as_code), "feed": ("feed", _as_code), "ups": ("ups", _as_code),
        "capacity_w": ("capacity_w", _int(0, 10**8)), "description": ("description", _text(256)),
        "outlets": ("outlets", _list_of("outlet")),
    }, required=("name", "site", "host"), finish=_finish_pdu),
    "pool": _Spec(PoolRecord, {
        "name": ("name", _as_code), "cidr": ("cidr", lambda v, f, _loc: check_network(v, f)),
        "site": ("site", _as_code), "rack": ("rack", _as_code), "purpose": ("purpose", _as_purpose),
        "gateway": ("gateway", _as_ip), "first": ("first", _as_ip), "last": ("last", _as_ip),
        "dns": ("dns", _as_dns), "vlan": ("vlan", _int(1, 4094)),
    }, required=("name", "cidr"), finish=_finish_pool),
}


def _make(kind: str, raw: object, loc: str | None) -> Any:
    spec = _SPECS[kind]
    if not isinstance(raw, Mapping):
        raise ValidationError(f"a {kind} must be a mapping of fields, not {type(raw).__name__}", field=kind)
    fields = spec.fields
    values: dict[str, Any] = {"loc": loc}
    for key, value in raw.items():
        entry = fields.get(key)
        if entry is None:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            more = f"; did you mean {hint[0]!r}?" if hint else f"; known fields: {', '.join(sorted(fields))}"
            raise ValidationError(f"unknown field {key!r} for a {kind}{more}", field=str(key))
        if value is not None:
            values[entry[0]] = entry[1](value, key, loc)
    for key in spec.required:
        if fields[key][0] not in values:
            raise ValidationError(f"{key} is required", field=key)
    if spec.finish is not None:
        spec.finish(values)
    if spec.top_level and isinstance(raw, SourceMap) and getattr(raw, "key_lines", None):
        values["src"] = raw
    return spec.cls(**values)


def build(kind: str, raw: Mapping[str, Any], loc: str | None = None) -> Record:
    """Validate and normalise one record of ``kind`` from a mapping of its fields.

    ``loc`` (``file:line``) places errors; a :class:`SourceMap` places them on the offending
    key's own line. Unknown keys are refused by name, so a typo never silently drops a value.
    A key whose value is None counts as absent (keep what is stored).
    """
    if kind not in _BUILDABLE:
        raise ValidationError(f"unknown record kind {kind!r}; kinds: {', '.join(KINDS)}", field="kind",
                              value=kind, location=loc)
    loc = _loc_of(raw, loc)
    try:
        return _make(kind, raw, loc)
    except ValidationError as err:
        raise _place(err, raw, loc) from None


_BUILDABLE = frozenset(KINDS)
