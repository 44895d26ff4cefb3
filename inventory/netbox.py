"""Read a NetBox export: the JSON list responses of ``/api/dcim/devices/`` and ``/api/dcim/interfaces/``.

Save them with, for example, ``curl -H "Authorization: Token ..." \
"$NETBOX/api/dcim/devices/?role=server&limit=0" > devices.json`` (``limit=0`` asks for every
object on one page; a file holding one page of several is imported with a warning). Both the
paginated form (``{"count", "next", "results": [...]}``) and a bare list are accepted.

Mapping, per device: site slug → site code; location slug → pod; rack name → rack; position
(U, ``10.0`` → 10); device type → hardware profile through ``ProfileSet.for_netbox`` (with a
warning when it falls back); serial, asset tag; status → lifecycle state (for new servers only);
``primary_ip4``/``primary_ip6`` (CIDR, prefix dropped) → primary IP; ``oob_ip`` → BMC address;
the device custom field ``redfish`` → its Redfish endpoint (``true``: the ``oob_ip`` on port 443; text:
``HOST[:PORT]``, or ``:PORT`` on the ``oob_ip``); tag slugs → tags. Per interface with a MAC
(``mac_address`` up to NetBox 4.1, ``primary_mac_address.mac_address`` from 4.2): a NIC, unless
``mgmt_only`` (that MAC is the BMC's).

Every record carries ``file:line`` of its JSON object, found while parsing (one pass with
``json.JSONDecoder.raw_decode`` over the results array), so errors point into the file.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from fleet.errors import ValidationError

from .records import Record, SourceMap, build

__all__ = ["STATUS_TO_STATE", "ProfileLookup", "read_netbox"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class ProfileLookup(Protocol):
    """What the reader needs of the hardware profiles (``fleet.profiles.ProfileSet`` is one).

    A protocol, so that the inventory imports nothing of ``fleet`` but its errors.
    """

    def for_netbox(self, manufacturer: str | None, device_type: str | None, *,
                   kind: str | None = None) -> tuple[_Named, str | None]: ...

#: NetBox device status (``status.value``) → Rackfleet lifecycle state.
STATUS_TO_STATE: Mapping[str, str] = {
    "active": "deployed",
    "planned": "new",
    "staged": "ready",
    "offline": "maintenance",
    "failed": "failed",
    "inventory": "new",
    "decommissioning": "decommissioning",
}
_MIN_RACK_UNITS = 42
_WS = re.compile(r"[ \t\n\r]*")
_NOT_CODE = re.compile(r"[^A-Za-z0-9._-]+")


def read_netbox(devices: Path, interfaces: Path | None = None, *, profiles: ProfileLookup
                ) -> tuple[list[Record], list[str]]:
    """Sites, pods, racks and servers (with NICs when ``interfaces`` is given) from a NetBox export."""
    warnings: list[str] = []
    device_objs = _read_results(devices, "devices", warnings)
    nics_by_device: dict[int, list[SourceMap]] | None = None
    if interfaces is not None:
        nics_by_device = _read_interfaces(interfaces, {_int(o.get("id")) for o, _ in device_objs}, warnings)

    sites: dict[str, SourceMap] = {}
    pods: dict[tuple[str, str], SourceMap] = {}
    racks: dict[tuple[str, str], SourceMap] = {}
    rack_top: dict[tuple[str, str], int] = defaultdict(int)
    servers: list[SourceMap] = []
    fallbacks: dict[str, list[str]] = defaultdict(list)
    renamed: dict[str, str] = {}
    unnamed = 0

    for obj, where in device_objs:
        file, line = where
        name = obj.get("name")
        if not name:
            unnamed += 1
            continue

        def field(key: str, message: str, value: object = None, _name: Any = name, _where: str = f"{file}:{line}"
                  ) -> ValidationError:
            return ValidationError(f"device {_name!r}: {message}", field=key, value=value, location=_where)

        site = obj.get("site")
        if not isinstance(site, Mapping) or not site.get("slug"):
            raise field("site", "has no site")
        code = str(site["slug"])
        sites.setdefault(code, SourceMap.of({"code": code, "name": site.get("name") or code}.items(), file=file,
                                         line=line))
        server = SourceMap.of({"hostname": name}.items(), file=file, line=line)
        location = obj.get("location")
        pod = None
        if isinstance(location, Mapping) and location.get("slug"):
            pod = str(location["slug"])
            pods.setdefault((code, pod), SourceMap.of({"site": code, "code": pod, "name": location.get("name") or pod
                                                    }.items(), file=file, line=line))
        rack = obj.get("rack")
        if isinstance(rack, Mapping) and rack.get("name"):
            rack_name = _as_code(str(rack["name"]), renamed)
            key = (code, rack_name)
            if key not in racks:
                racks[key] = SourceMap.of({"site": code, "name": rack_name}.items(), file=file, line=line)
                if pod is not None:
                    racks[key]["pod"] = pod
            server["site"] = code
            server["rack"] = rack_name
            position = obj.get("position")
            if position is not None:
                if not isinstance(position, int | float) or isinstance(position, bool) or position != int(position):
                    raise field("position", f"position {position!r} is not a whole rack unit", position)
                server["position"] = int(position)
                height = _u_height(obj.get("device_type"))
                if height is not None:
                    server["height"] = height
                rack_top[key] = max(rack_top[key], int(position) + (height or 1) - 1)

        dtype = obj.get("device_type") if isinstance(obj.get("device_type"), Mapping) else {}
        maker = dtype.get("manufacturer") if isinstance(dtype.get("manufacturer"), Mapping) else {}
        profile, warning = profiles.for_netbox(maker.get("name") or maker.get("slug"),
                                               dtype.get("model") or dtype.get("slug"), kind="server")
        server["profile"] = profile.name
        if warning:
            fallbacks[warning].append(str(name))

        for key in ("serial", "asset_tag"):
            if obj.get(key):
                server[key] = obj[key]
        status = obj.get("status")
        value = status.get("value") if isinstance(status, Mapping) else status
        if value is not None:
            state = STATUS_TO_STATE.get(str(value))
            if state is None:
                raise field("status", f"unknown NetBox status {value!r}; known: {', '.join(STATUS_TO_STATE)}",
                            value)
            server["state"] = state
        ip = _address(obj.get("primary_ip4")) or _address(obj.get("primary_ip6")) or _address(obj.get("primary_ip"))
        if ip:
            server["primary_ip"] = ip
        oob = _address(obj.get("oob_ip"))
        if oob:
            server["bmc"] = f"[{oob}]" if ":" in oob else oob
        custom = obj.get("custom_fields")
        redfish = custom.get("redfish") if isinstance(custom, Mapping) else None
        if redfish is True or (isinstance(redfish, str) and redfish.strip().startswith(":")):
            if not oob:
                raise field("redfish", "custom field redfish names no address and the device has no oob_ip",
                            redfish)
            server["redfish"] = server["bmc"] + (redfish.strip() if isinstance(redfish, str) else "")
        elif isinstance(redfish, str) and redfish.strip():
            server["redfish"] = redfish.strip()
        elif redfish not in (None, False, ""):
            raise field("redfish", "custom field redfish is true, HOST[:PORT] or :PORT", redfish)
        tags = obj.get("tags")
        if isinstance(tags, list):
            server["tags"] = [t.get("slug") or t.get("name") if isinstance(t, Mapping) else t for t in tags]
        if obj.get("description"):
            server["description"] = obj["description"]
        if nics_by_device is not None:
            server["nics"] = nics_by_device.get(_int(obj.get("id")), [])
        servers.append(server)

    for key, top in rack_top.items():
        if top > _MIN_RACK_UNITS:
            racks[key]["units"] = top  # NetBox's device list does not say the rack height: make it hold them
    for warning, names in sorted(fallbacks.items()):
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        warnings.append(f"{devices}: {warning} ({len(names)} device(s): {shown})")
    for old, new in sorted(renamed.items()):
        warnings.append(f"{devices}: NetBox rack {old!r} is imported as {new!r} (names here are codes: letters, "
                        "digits, '.', '_', '-')")
    if unnamed:
        warnings.append(f"{devices}: {unnamed} unnamed device(s) skipped: a server needs a host name")

    out: list[Record] = [build("site", m) for m in sites.values()]
    out += [build("pod", m) for m in pods.values()]
    out += [build("rack", m) for m in racks.values()]
    out += [_build_server(m) for m in servers]
    return out, warnings


def _build_server(raw: SourceMap) -> Record:
    try:
        return build("server", raw)
    except ValidationError as err:
        if err.field and not err.message.startswith("device "):
            err.message = f"device {raw['hostname']!r}: {err.message}"
            err.args = (err._render(),)
        raise


def _read_interfaces(path: Path, device_ids: set[int | None], warnings: list[str]) -> dict[int, list[SourceMap]]:
    by_device: dict[int, list[SourceMap]] = defaultdict(list)
    foreign = 0
    for obj, (file, line) in _read_results(path, "interfaces", warnings):
        device = obj.get("device")
        device_id = _int(device.get("id")) if isinstance(device, Mapping) else None
        if device_id is None or device_id not in device_ids:
            foreign += 1
            continue
        if obj.get("mgmt_only"):
            continue  # the BMC's own port: its MAC is not a host NIC
        mac = obj.get("mac_address")
        primary = obj.get("primary_mac_address")
        if not mac and isinstance(primary, Mapping):
            mac = primary.get("mac_address")
        if not mac:
            continue  # virtual, LAG or unknown: nothing to boot or match on
        nic = SourceMap.of({"name": obj.get("name"), "mac": mac}.items(), file=file, line=line)
        by_device[device_id].append(nic)
    if foreign:
        warnings.append(f"{path}: {foreign} interface(s) of devices not in the devices file ignored")
    return by_device


def _u_height(device_type: object) -> int | None:
    if isinstance(device_type, Mapping):
        height = device_type.get("u_height")
        if isinstance(height, int | float) and not isinstance(height, bool) and height >= 1:
            return int(-(-height // 1))
    return None


def _address(obj: object) -> str | None:
    if isinstance(obj, Mapping) and obj.get("address"):
        return str(obj["address"]).split("/", 1)[0]
    return None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_code(name: str, renamed: dict[str, str]) -> str:
    code = _NOT_CODE.sub("-", name.strip()).strip("-._")
    if code != name:
        renamed[name] = code
    return code


def _read_results(path: Path, what: str, warnings: list[str]) -> list[tuple[dict, tuple[str, int]]]:
    """The objects of a NetBox list response, each with (file, line of its opening brace)."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"not UTF-8 text ({exc.reason})", location=file) from None
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    decoder = json.JSONDecoder()
    try:
        i = _WS.match(text, 0).end()  # type: ignore[union-attr]
        top: dict[str, Any] = {}
        if text.startswith("[", i):
            items, i = _array(decoder, text, i)
        elif text.startswith("{", i):
            items, i = None, i + 1
            while True:
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if text.startswith("}", i):
                    i += 1
                    break
                key, i = decoder.raw_decode(text, i)
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if not text.startswith(":", i):
                    raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
                i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
                if key == "results" and text.startswith("[", i):
                    items, i = _array(decoder, text, i)
                else:
                    top[key], i = decoder.raw_decode(text, i)
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if text.startswith(",", i):
                    i += 1
            if items is None:
                raise ValidationError(f"not a NetBox list response: no 'results' list of {what}",
                                      location=f"{file}:1")
        else:
            raise json.JSONDecodeError("Expecting '{' or '['", text, i)
        if _WS.match(text, i).end() != len(text):  # type: ignore[union-attr]
            raise json.JSONDecodeError("Extra data", text, i)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"JSON syntax: {exc.msg}", location=f"{file}:{exc.lineno}") from None
    count, nxt = top.get("count"), top.get("next")
    if nxt or (isinstance(count, int) and count > len(items)):
        warnings.append(f"{file}: holds {len(items)} of {count} {what} (one page); fetch with ?limit=0 to import "
                        "them all")
    out = []
    for obj, pos in items:
        if not isinstance(obj, dict):
            raise ValidationError(f"each of the {what} must be a JSON object", location=f"{file}:{line_of(pos)}")
        out.append((obj, (file, line_of(pos))))
    return out


def _array(decoder: json.JSONDecoder, text: str, i: int) -> tuple[list[tuple[Any, int]], int]:
    """Decode the JSON array at ``text[i]`` item by item, keeping where each item starts."""
    items: list[tuple[Any, int]] = []
    i += 1
    while True:
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if text.startswith("]", i):
            return items, i + 1
        value, end = decoder.raw_decode(text, i)
        items.append((value, i))
        i = _WS.match(text, end).end()  # type: ignore[union-attr]
        if text.startswith(",", i):
            i += 1
        elif not text.startswith("]", i):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
