"""Validated inventory records, and the one function that writes a batch of them.

Every import path (YAML, CSV, NetBox, ``fleet add``) turns its input into the frozen records of
this module with :func:`build`, then hands the whole batch to :func:`apply`. Keeping both steps
here means the rules are written once: what a valid hostname or MAC is, which names must resolve,
what counts as a conflict, and what "re-importing the same file changes nothing" means.

Two rules shape the records:

- **Every value is validated on the way in** (``inventory.validate``), because names and addresses
  end up in dnsmasq, iPXE and preseed text later. Errors name the field and the ``file:line``.
- **An absent field means "leave it as stored"**: optional fields are ``None`` unless the input
  gave them. A NetBox export, which knows nothing of pod kinds or rack heights, then updates what
  it knows and nothing else. A given list (NICs, disks, tags, outlets) replaces the stored one.

:func:`apply` never commits: the caller owns the transaction, and any error leaves it to the
caller to roll back, so an import is all or nothing. It is written for large batches (100,000
servers): existing rows are preloaded in a few queries, checks run in Python on dicts, and rows
are written with SQLAlchemy Core ``executemany`` inserts.
"""

from __future__ import annotations

import difflib
import gc
import ipaddress
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sqlalchemy import (
    Boolean,
    Connection,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    update,
)

from fleet.errors import ConflictError, ValidationError

from .models import (
    STATES,
    Credential,
    Disk,
    IpPool,
    Nic,
    Outlet,
    Pdu,
    Pod,
    PowerFeed,
    Rack,
    Server,
    ServerTag,
    Site,
    StateChange,
    Ups,
    utcnow,
)
from .validate import (
    BMC_DEFAULT_PORT,
    check_code,
    check_date,
    check_endpoint,
    check_hostname,
    check_int,
    check_ip,
    check_mac,
    check_network,
    check_ssh_host_key,
    check_tag,
    check_text,
)

if TYPE_CHECKING:
    from sqlmodel import Session

    from .secrets import KeyRing

__all__ = [
    "KINDS",
    "ApplyReport",
    "CredentialRecord",
    "DiskRecord",
    "FeedRecord",
    "NicRecord",
    "OutletRecord",
    "PduRecord",
    "PodRecord",
    "PoolRecord",
    "RackRecord",
    "Record",
    "ServerRecord",
    "SiteRecord",
    "SourceMap",
    "UpsRecord",
    "apply",
    "build",
    "gc_paused",
    "parse_bool",
    "split_tags",
]

#: Record kinds, in the order :func:`apply` writes them (each refers only to earlier ones,
#: except servers' ``ups`` references, which are resolved when the UPS units are written).
KINDS: tuple[str, ...] = ("site", "pod", "rack", "feed", "credential", "server", "ups", "pdu", "pool")

POD_KINDS = ("room", "container")
UPS_KINDS = ("server", "rack", "room")
UPS_PROTOCOLS = ("snmp", "nut")
CREDENTIAL_KINDS = ("ipmi", "snmp-v2c", "snmp-v3", "ssh", "nut")
DISK_KINDS = ("ssd", "hdd", "nvme")
DEFAULT_PORTS = {"snmp": 161, "nut": 3493}
DEFAULT_SERVER_PROFILE = "generic-ipmi"
DEFAULT_UPS_PROFILE = "generic-ups-mib"
DEFAULT_PDU_PROFILE = "generic-pdu"

_NIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,31}\Z")
_PURPOSE = re.compile(r"^[a-z][a-z0-9-]{0,15}\Z")
_TAG_SPLIT = re.compile(r"[\s;,]+")
_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0", ""})
# Chunk size for IN (...) lists: under SQLite's historical limit of 999 bound variables.
_CHUNK = 900
# Above this many keys, one full scan of a table beats many IN (...) queries.
_SCAN_ABOVE = 5000


class ProfileNames(Protocol):
    """What :func:`apply` needs of ``fleet.profiles.ProfileSet``: membership and the names."""

    def __contains__(self, name: object) -> bool: ...

    def names(self) -> Iterable[str]: ...


# -- where values came from ---------------------------------------------------------------------------


class SourceMap(dict):
    """A mapping read from a file that remembers where it, and each of its keys, started.

    The importer builds these (one per YAML mapping or CSV row) with :meth:`of`; :func:`build`
    uses them to place an error on the line of the offending key rather than of the record.
    """

    __slots__ = ("file", "key_lines", "line")

    @classmethod
    def of(cls, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), *, file: str, line: int,
           key_lines: Sequence[int] = ()) -> SourceMap:
        # No __init__ override: a dict subclass's Python __init__ costs 5x the dict itself, and
        # the importer makes one of these per YAML mapping and per CSV row.
        out = cls(items)
        out.file = file
        out.line = line
        out.key_lines = key_lines
        return out

    def where(self, key: str | None = None) -> str:
        """``file:line`` of ``key`` (or of the mapping itself)."""
        line = self.line
        if key is not None and self.key_lines:
            try:
                index = list(self).index(key)
            except ValueError:
                index = -1
            if 0 <= index < len(self.key_lines):
                line = self.key_lines[index]
        return f"{self.file}:{line}"

    def __reduce__(self):
        return (_rebuild_source_map, (list(self.items()), self.file, self.line, tuple(self.key_lines)))


def _rebuild_source_map(items: list, file: str, line: int, key_lines: tuple) -> SourceMap:
    return SourceMap.of(items, file=file, line=line, key_lines=key_lines)


def _loc_of(raw: object, loc: str | None, key: str | None = None) -> str | None:
    if isinstance(raw, SourceMap) and getattr(raw, "file", None):
        return raw.where(key)
    return loc


def _place(err: ValidationError, raw: object, loc: str | None, prefix: str = "") -> ValidationError:
    """Put ``err`` at the line of its field (unless already placed) and prefix its field name."""
    key = re.split(r"[ .\[]", err.field or "", maxsplit=1)[0] or None
    if prefix:
        err.field = f"{prefix}.{err.field}" if err.field else prefix
        err.args = (err._render(),)
    where = _loc_of(raw, loc, key)
    if where:
        err.at(where)
    return err


def _at(rec: Any, field: str) -> str | None:
    """``file:line`` of ``field`` of a record: the key's own line when the record came from YAML."""
    src = getattr(rec, "src", None)
    if src is not None and field in src:
        return src.where(field)
    return rec.loc


def _conflict(message: str, *, field: str, loc: str | None) -> ConflictError:
    """A ConflictError naming where and which field."""
    return ConflictError(message, field=field, location=loc)


def _refused(message: str, *, field: str, loc: str | None, value: object = None) -> ValidationError:
    return ValidationError(message, field=field, value=value, location=loc)


# -- records ------------------------------------------------------------------------------------------


# Every record has ``loc`` ("file:line" of the record) and, when it was read from YAML, ``src``: the
# mapping it came from, so that apply() can name the line of the very key it refuses (a reference
# to an object the reader made anyway, so it costs nothing). Neither takes part in equality.


@dataclass(frozen=True, slots=True)
class NicRecord:
    name: str
    mac: str
    ip: str | None = None
    switch: str = ""
    switch_port: str = ""
    pxe: bool = False
    loc: str | None = field(default=None, compare=False, repr=False)

    def key(self) -> tuple:
        return (self.name, self.mac, self.ip, self.switch, self.switch_port, self.pxe)


@dataclass(frozen=True, slots=True)
class DiskRecord:
    slot: str
    disk_kind: str = "ssd"
    model: str = ""
    serial: str = ""
    size_gb: int = 0
    loc: str | None = field(default=None, compare=False, repr=False)

    def key(self) -> tuple:
        return (self.slot, self.disk_kind, self.model, self.serial, self.size_gb)


@dataclass(frozen=True, slots=True)
class OutletRecord:
    """One outlet of a UPS or PDU; ``server`` is the host name it feeds (PSU ``psu``), if any."""

    number: int
    server: str | None = None
    psu: int = 1
    name: str = ""
    loc: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SiteRecord:
    kind: ClassVar[str] = "site"
    code: str
    name: str | None = None
    description: str | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PodRecord:
    kind: ClassVar[str] = "pod"
    site: str
    code: str
    name: str | None = None
    pod_kind: str | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RackRecord:
    kind: ClassVar[str] = "rack"
    site: str
    name: str
    pod: str | None = None
    units: int | None = None
    description: str | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FeedRecord:
    kind: ClassVar[str] = "feed"
    site: str
    name: str
    rack: str | None = None
    capacity_w: int | None = None
    voltage: int | None = None
    phases: int | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A credential from a secrets file. ``secret`` is the plain secret: never shown, never exported."""

    kind: ClassVar[str] = "credential"
    name: str
    cred_kind: str
    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ServerRecord:
    kind: ClassVar[str] = "server"
    hostname: str
    site: str | None = None
    pod: str | None = None
    rack: str | None = None
    position: int | None = None
    height: int | None = None
    profile: str | None = None
    serial: str | None = None
    asset_tag: str | None = None
    state: str | None = None
    bmc_host: str | None = None
    bmc_port: int | None = None
    bmc_credential: str | None = None
    ssh_credential: str | None = None
    primary_ip: str | None = None
    ssh_host_key: str | None = None
    priority: int | None = None
    description: str | None = None
    nics: tuple[NicRecord, ...] | None = None
    disks: tuple[DiskRecord, ...] | None = None
    tags: tuple[str, ...] | None = None
    #: The name of a per-server UPS whose whole output (outlet 0) feeds this server's PSU 1.
    ups: str | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class UpsRecord:
    kind: ClassVar[str] = "ups"
    name: str
    site: str
    host: str
    rack: str | None = None
    ups_kind: str | None = None
    profile: str | None = None
    protocol: str | None = None
    port: int | None = None
    nut_name: str | None = None
    credential: str | None = None
    feed: str | None = None
    capacity_w: int | None = None
    battery_installed: date | None = None
    description: str | None = None
    outlets: tuple[OutletRecord, ...] | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PduRecord:
    kind: ClassVar[str] = "pdu"
    name: str
    site: str
    host: str
    rack: str | None = None
    profile: str | None = None
    port: int | None = None
    credential: str | None = None
    feed: str | None = None
    ups: str | None = None
    capacity_w: int | None = None
    description: str | None = None
    outlets: tuple[OutletRecord, ...] | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PoolRecord:
    kind: ClassVar[str] = "pool"
    name: str
    cidr: str
    site: str | None = None
    rack: str | None = None
    purpose: str | None = None
    gateway: str | None = None
    first: str | None = None
    last: str | None = None
    dns: str | None = None
    vlan: int | None = None
    loc: str | None = field(default=None, compare=False, repr=False)
    src: SourceMap | None = field(default=None, compare=False, repr=False)


Record = (SiteRecord | PodRecord | RackRecord | FeedRecord | CredentialRecord | ServerRecord | UpsRecord
          | PduRecord | PoolRecord)


# -- field validators ---------------------------------------------------------------------------------

@lru_cache(maxsize=8192)
def _code_cached(value: str, field: str) -> str:
    return check_code(value, field)


def _code(value: object, field: str) -> str:
    # Site, rack and profile names repeat on every server: validate each distinct one once.
    if type(value) is str:
        return _code_cached(value, field)
    return check_code(value, field)


@lru_cache(maxsize=4096)
def _tag_cached(value: str, field: str) -> str:
    return check_tag(value, field)


# Fast paths for values already in canonical form (the common case, 100,000 times in a bulk import).
# Each returns exactly what the validator in inventory.validate would, and defers to it otherwise.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_IPV4_PORT = re.compile(rf"({_OCTET}(?:\.{_OCTET}){{3}})(?::([1-9][0-9]{{0,4}}))?")
_MAC_CANON = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_CANON = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")


def _ip(value: object, field: str) -> str:
    if type(value) is str and _IPV4.fullmatch(value):
        return value
    return check_ip(value, field)


def _mac(value: object, field: str) -> str:
    if type(value) is str:
        mac = value.lower()
        if _MAC_CANON.fullmatch(mac) and not int(mac[:2], 16) & 1 and mac != "00:00:00:00:00:00":
            return mac
    elif isinstance(value, int) and not isinstance(value, bool):
        raise ValidationError(f"{value!r} is not a MAC address (in YAML, quote MACs: \"aa:bb:...\")",
                              field=field, value=value)
    return check_mac(value, field)


def _hostname(value: object, field: str) -> str:
    if type(value) is str and _HOST_CANON.fullmatch(value) and not value.replace(".", "").isdigit():
        return value
    return check_hostname(value, field)


def _host_port(value: object, field: str, default_port: int) -> tuple[str, int, bool]:
    """(host, port, whether the port was written) for ``HOST[:PORT]``."""
    if type(value) is str:
        m = _IPV4_PORT.fullmatch(value)
        if m is not None:
            host, port = m.groups()
            if port is None:
                return host, default_port, False
            if int(port) <= 65535:
                return host, int(port), True
    host, port = check_endpoint(value, field, default_port=default_port)
    text = str(value).strip()
    return host, port, text.count(":") == 1 or "]:" in text


def parse_bool(value: object, field: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (case-insensitive), or a YAML boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValidationError(f"{value!r} is not true or false", field=field, value=value)


def split_tags(value: object, field: str = "tags") -> tuple[str, ...]:
    """Tags from a list, or from one string separated by spaces, commas or semicolons; sorted, unique."""
    if isinstance(value, str):
        items: Iterable[object] = [t for t in _TAG_SPLIT.split(value) if t]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise ValidationError("tags must be a list or a space-separated string", field=field, value=value)
    tags = set()
    for item in items:
        tags.add(_tag_cached(item, field) if type(item) is str else check_tag(item, field))
    return tuple(sorted(tags))


def _choice(value: object, field: str, choices: Sequence[str]) -> str:
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in choices:
        raise ValidationError(f"{value!r} is not one of: {', '.join(choices)}", field=field, value=value)
    return text  # type: ignore[return-value]


# -- record specs: one table per kind -----------------------------------------------------------------
#
# Each kind lists its input keys, the record attribute each fills and the converter that checks
# and normalises the value; a "finish" step then checks what involves several fields. Building a
# record walks only the keys present (refusing unknown ones on the way): this is the hot path of a
# bulk import, so it does one dict lookup and one converter call per value, nothing more.

Converter = Callable[[Any, str, "str | None"], Any]  # (value, field, loc of the record) -> value


def _text(max_len: int) -> Converter:
    return lambda v, f, _loc: check_text(v, f, max_len)


def _int(low: int | None = None, high: int | None = None) -> Converter:
    return lambda v, f, _loc: check_int(v, f, low, high)


def _one_of(choices: Sequence[str]) -> Converter:
    allowed = frozenset(choices)
    return lambda v, f, _loc: v if v in allowed else _choice(v, f, choices)


def _as_code(v: Any, f: str, _loc: str | None) -> str:
    return _code(v, f)


def _as_host(v: Any, f: str, _loc: str | None) -> str:
    return _hostname(v, f)


def _as_ip(v: Any, f: str, _loc: str | None) -> str:
    return _ip(v, f)


def _as_mac(v: Any, f: str, _loc: str | None) -> str:
    return _mac(v, f)


def _as_bool(v: Any, f: str, _loc: str | None) -> bool:
    return parse_bool(v, f)


def _as_date(v: Any, f: str, _loc: str | None) -> date:
    return check_date(v, f)


def _as_tags(v: Any, f: str, _loc: str | None) -> tuple[str, ...]:
    return split_tags(v, f)


def _as_nic_name(v: Any, f: str, _loc: str | None) -> str:
    if type(v) is not str or not _NIC_NAME.match(v):
        raise ValidationError(f"{v!r} is not an interface name (letters, digits, '.', '_', ':', '-')", field=f,
                              value=v)
    return v


def _as_phases(v: Any, f: str, _loc: str | None) -> int:
    phases = check_int(v, f)
    if phases not in (1, 3):
        raise ValidationError(f"{phases} phases: a feed has 1 or 3", field=f, value=v)
    return phases


def _is_pem_key(v: str) -> bool:
    text = v.strip()
    return text.startswith("-----BEGIN ") and text.endswith("PRIVATE KEY-----") and len(text) <= 16384 \
        and "\x00" not in text


def _as_secret(v: Any, f: str, _loc: str | None) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if isinstance(v, str) and _is_pem_key(v):
        return v.strip() + "\n"  # an SSH private key (PEM/OpenSSH block): only for kind ssh, checked on write
    if not isinstance(v, str) or not v or len(v) > 1024 or any(c in v for c in "\x00\r\n"):
        # Never echo the value: it is a secret.
        raise ValidationError("a secret must be one line of text, at most 1024 characters (or, for kind ssh, a "
                              "private key block)", field=f)
    return v


def _as_options(v: Any, f: str, _loc: str | None) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, Mapping):
        raise ValidationError("options must be a mapping", field=f, value=v)
    return tuple(sorted((_code(k, f), check_text(x, f"{f}.{k}", 128)) for k, x in v.items()))


def _as_dns(v: Any, f: str, _loc: str | None) -> str:
    items = v if isinstance(v, list | tuple) else [d for d in _TAG_SPLIT.split(str(v)) if d]
    text = ",".join(_ip(d, f) for d in items)
    if len(text) > 256:
        raise ValidationError("too many DNS servers", field=f)
    return text


def _as_purpose(v: Any, f: str, _loc: str | None) -> str:
    if not isinstance(v, str) or not _PURPOSE.match(v):
        raise ValidationError(f"{v!r} is not a purpose (a lower-case word, e.g. provisioning, bmc)", field=f,
                              value=v)
    return v


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


# -- apply --------------------------------------------------------------------------------------------


@dataclass
class ApplyReport:
    """What :func:`apply` did, per record kind, and what it thought worth saying."""

    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(sum(self.created.values()) or sum(self.updated.values()))


def apply(session: Session, records: Sequence[Record], *, profiles: ProfileNames, keyring: KeyRing | None = None,
          actor: str, mode: str = "upsert") -> ApplyReport:
    """Write ``records`` as one batch; the caller commits (or rolls back on any error).

    References (site code, pod code within a site, rack and feed names within a site, credential,
    UPS, PDU and host names) resolve against the batch and the database. ``mode="create"`` refuses
    records whose natural key already exists (``fleet add``); ``"upsert"`` updates them, so
    importing the same file twice changes nothing the second time. A server's lifecycle state is
    set only when the server is created (recorded as a state change "imported"): moves of
    existing servers belong to ``inventory.lifecycle``.
    """
    if mode not in ("upsert", "create"):
        raise ValueError(f"mode must be 'upsert' or 'create', not {mode!r}")
    writer = _Writer(session.connection(), profiles, keyring, actor, mode)
    with gc_paused(), _sqlite_cache(writer.conn, len(records)):
        writer.run(records)
    return writer.report


#: Page cache for a bulk import on SQLite (KiB): the connection's default of 2 MiB makes a
#: 100,000-server batch spill pages to the WAL file while it is written.
_BULK_CACHE_KIB = 65536


@contextmanager
def _sqlite_cache(conn: Connection, size: int) -> Iterator[None]:
    """A larger SQLite page cache while a large batch is written; the connection's own after."""
    if conn.dialect.name != "sqlite" or size < 10_000:
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{_BULK_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a bulk import builds millions of small objects.

    The collector runs every few hundred allocations and re-scans everything still alive, so a
    100,000-server import spends a third of its time in it while creating no cycles at all.
    Reference counting still frees everything as usual; the previous state is restored after.

    On the way out, what survived the pause (the records, mostly: long-lived by nature) is filed
    as old without a scan, by ``gc.freeze()`` then ``gc.unfreeze()``; otherwise re-enabling the
    collector triggers at once a collection that walks all of it (0.25 s at 100,000 servers).
    Old objects are still scanned by the collector's full collections, as any others. Skipped
    when the application keeps objects frozen itself, since unfreeze would release those too.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _chunks(seq: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _table(model: Any) -> Table:
    return model.__table__


_T_SITE, _T_POD, _T_RACK, _T_FEED = _table(Site), _table(Pod), _table(Rack), _table(PowerFeed)
_T_CRED, _T_SERVER, _T_TAG, _T_NIC = _table(Credential), _table(Server), _table(ServerTag), _table(Nic)
_T_DISK, _T_UPS, _T_PDU, _T_OUTLET = _table(Disk), _table(Ups), _table(Pdu), _table(Outlet)
_T_POOL, _T_CHANGE = _table(IpPool), _table(StateChange)

# Server columns whose record attribute has the column's name and value.
_PLAIN_COLUMNS = ("position", "height", "profile", "serial", "asset_tag", "bmc_host", "bmc_port", "primary_ip",
                  "ssh_host_key", "priority", "description")
# Server columns an import may set, and their values when a new server does not give them.
_SERVER_DEFAULTS: dict[str, Any] = {
    "rack_id": None, "position": None, "height": 1, "profile": DEFAULT_SERVER_PROFILE, "serial": "",
    "asset_tag": "", "bmc_host": None, "bmc_port": 623, "bmc_credential_id": None, "ssh_credential_id": None,
    "primary_ip": None, "ssh_host_key": None, "priority": 100, "description": "",
}


class _Writer:
    """One apply: the preloaded keys, the checks, and the writes, kind by kind."""

    def __init__(self, conn: Connection, profiles: ProfileNames, keyring: KeyRing | None, actor: str,
                 mode: str) -> None:
        self.conn = conn
        self.profiles = profiles
        self.profile_names: set[str] | None = None
        self.profiles_ok: set[tuple[str, str]] = set()  # (profile, device kind) pairs already checked
        self.keyring = keyring
        self.actor = actor
        self.mode = mode
        self.report = ApplyReport()
        self.now = utcnow()
        # The time as SQL text, so executemany does not run the UTC type's converter on every row.
        self.now_sql = literal_column(str(literal(self.now, _T_SERVER.c.created_at.type).compile(
            dialect=conn.dialect, compile_kwargs={"literal_binds": True})))
        self.sites: dict[str, int] = {}
        self.pods: dict[tuple[int, str], int] = {}
        self.pod_codes: dict[int, str] = {}
        self.racks: dict[tuple[int, str], Any] = {}  # (site_id, name) -> row
        self.feeds: dict[tuple[int, str], int] = {}
        self.creds: dict[str, int] = {}
        self.server_ids: dict[str, int] = {}  # host names of the batch and of referenced servers
        self.ups_ids: dict[str, int] = {}
        self.ups_refs: dict[str, list[tuple[str, int, str | None]]] = defaultdict(list)  # ups -> servers
        self.outlet_psus: dict[tuple[str, int], str | None] = {}  # (host, psu) -> where, within the batch

    # -- driver -----------------------------------------------------------------------------------------

    def run(self, records: Sequence[Record]) -> None:
        by_kind: dict[str, list] = {k: [] for k in KINDS}
        for rec in records:
            try:
                by_kind[rec.kind].append(rec)
            except (KeyError, AttributeError):
                raise TypeError(f"not an inventory record: {rec!r}") from None
        keys = {
            "site": lambda r: r.code, "pod": lambda r: (r.site, r.code), "rack": lambda r: (r.site, r.name),
            "feed": lambda r: (r.site, r.name), "credential": lambda r: r.name,
            "server": lambda r: r.hostname, "ups": lambda r: r.name, "pdu": lambda r: r.name,
            "pool": lambda r: r.name,
        }
        for kind in KINDS:
            self._unique_in_batch(kind, by_kind[kind], keys[kind])
        self._sites(by_kind["site"])
        self._pods(by_kind["pod"])
        self._racks(by_kind["rack"])
        self._feeds(by_kind["feed"])
        self._credentials(by_kind["credential"])
        self._servers(by_kind["server"])
        self._ups(by_kind["ups"])
        self._pdus(by_kind["pdu"])
        self._pools(by_kind["pool"])

    @staticmethod
    def _unique_in_batch(kind: str, recs: list, key: Callable[[Any], Any]) -> None:
        seen: dict[Any, Any] = {}
        for rec in recs:
            k = key(rec)
            first = seen.setdefault(k, rec)
            if first is not rec:
                name = "/".join(k) if isinstance(k, tuple) else k
                where = f" (first at {first.loc})" if first.loc else ""
                fld = {"site": "code", "pod": "code", "server": "hostname"}.get(kind, "name")
                raise _conflict(f"{kind} {name!r} appears twice in this import{where}", field=fld,
                                loc=_at(rec, fld))

    # -- helpers -----------------------------------------------------------------------------------------

    def _rows_by_keys(self, table: Table, column: Any, keys: Sequence, columns: Sequence | None = None) -> list:
        """Rows of ``table`` whose ``column`` is one of ``keys``: by IN lists, or one scan when many."""
        cols = list(columns) if columns is not None else list(table.c)
        if not keys:
            return []
        if len(keys) > _SCAN_ABOVE:
            wanted = set(keys)
            rows = self.conn.execute(select(*cols, column.label("_key"))).mappings()
            return [r for r in rows if r["_key"] in wanted]
        out: list = []
        for chunk in _chunks(list(keys)):
            out.extend(self.conn.execute(select(*cols).where(column.in_(chunk))).mappings())
        return out

    def _insert(self, table: Table, rows: Sequence[dict] | Sequence[tuple], *, columns: Sequence[str] | None = None,
                stamps: Sequence[str] = (), key: Sequence[str] = ()) -> dict[Any, int]:
        """Bulk insert ``rows``; ``stamps`` are time columns set to now.

        ``rows`` are dicts (all with the same keys) or, with ``columns``, tuples of those columns
        (the bulk rows of an import: no dict per row to build and take apart again).

        With ``key`` (natural-key columns), returns natural key -> new id, read back in one query
        as the rows above the largest id before the insert (filtered by the keys inserted, so rows
        other writers commit meanwhile are never taken for ours).
        """
        if not rows:
            return {}
        if columns is None:
            names = list(rows[0])  # type: ignore[arg-type]
            width = len(names)
            if any(len(r) != width for r in rows):
                raise AssertionError(f"rows for {table.name} must all have the same columns")
            get = itemgetter(*names)
            tuples: Sequence[tuple] = list(map(get, rows)) if width > 1 else [(get(r),) for r in rows]
        else:
            names = list(columns)
            tuples = rows  # type: ignore[assignment]
        stmt = insert(table)
        if stamps:
            stmt = stmt.values({name: self.now_sql for name in stamps})
        before = (self.conn.execute(select(func.max(table.c.id))).scalar() or 0) if key else 0
        if self.conn.dialect.name == "sqlite":
            self._executemany_sqlite(stmt, table, names, tuples)
        elif not self._copy_postgres(table, names, tuples, stamps):
            # psycopg pipelines a plain executemany (measured 5x faster than multi-row
            # INSERT ... RETURNING batches); COPY, above, is faster still.
            for chunk in _chunks(tuples, 20_000):
                self.conn.execute(stmt, [dict(zip(names, t, strict=True)) for t in chunk])
        if not key:
            return {}
        at = [names.index(k) for k in key]
        keys = list(map(itemgetter(*at), tuples)) if len(at) > 1 else [t[at[0]] for t in tuples]
        if self.conn.dialect.name == "sqlite":
            # Our transaction holds the write lock, and SQLite gives each new row max(rowid) + 1:
            # when the ids above ``before`` are exactly before+1 .. before+n, they are ours, in
            # insert order, and the read-back of 100,000 keys (0.4 s) is not needed.
            top, n = self.conn.execute(select(func.max(table.c.id), func.count()).where(table.c.id > before)).one()
            if n == len(keys) and top == before + n:
                return dict(zip(keys, range(before + 1, top + 1), strict=True))
        wanted = set(keys)
        cols = [table.c[k] for k in key]
        out: dict[Any, int] = {}
        for row in self.conn.execute(select(table.c.id, *cols).where(table.c.id > before)).all():
            k = tuple(row[1:]) if len(key) > 1 else row[1]
            if k in wanted:
                out[k] = row[0]
        return out

    def _copy_postgres(self, table: Table, names: list[str], rows: Sequence[tuple], stamps: Sequence[str]) -> bool:
        """``COPY ... FROM STDIN`` through psycopg: about 10x an executemany for 100,000 rows.

        Used only when psycopg can adapt every value itself (no SQLAlchemy bind processor in
        the way, e.g. JSON); returns False to let the caller insert another way.
        """
        dbapi = self.conn.connection.driver_connection
        if len(rows) < 1000 or not hasattr(dbapi, "cursor") or self.conn.dialect.driver != "psycopg":
            return False
        if any(table.c[n].type._cached_bind_processor(self.conn.dialect) is not None
               and not isinstance(table.c[n].type, Boolean) for n in names):  # ours are real bools
            return False
        quote = self.conn.dialect.identifier_preparer
        columns = ", ".join(quote.quote(n) for n in (*names, *stamps))
        extra = (self.now,) * len(stamps)
        with dbapi.cursor() as cursor, cursor.copy(
                f"COPY {quote.format_table(table)} ({columns}) FROM STDIN") as copy:
            if extra:
                for r in rows:
                    copy.write_row(r + extra)
            else:
                for r in rows:
                    copy.write_row(r)
        return True

    def _executemany_sqlite(self, stmt: Any, table: Table, names: list[str], rows: Sequence[tuple]) -> None:
        """The Core insert, compiled once and run by the driver's executemany on plain tuples.

        SQLAlchemy's per-row parameter processing costs about as much as SQLite's own work for a
        100,000-row insert; here the column types' bind processors run column by column instead.
        """
        dialect = self.conn.dialect
        compiled = stmt.compile(dialect=dialect, column_keys=names)
        order = list(compiled.positiontup or ())
        params: Sequence[tuple] = rows
        if order != names:
            at = [names.index(n) for n in order]
            if len(at) > 1:
                params = list(map(itemgetter(*at), rows))
            else:
                params = [(r[at[0]],) for r in rows] if at else [()] * len(rows)
        processors = []
        for i, name in enumerate(order):
            col_type = table.c[name].type
            process = col_type._cached_bind_processor(dialect)
            if process is None:
                continue
            # None stays None; and the driver binds a bool as the integer 1 or 0, as the processor would.
            if isinstance(col_type, Boolean):
                if all(v is None or type(v) is bool for v in map(itemgetter(i), params)):
                    continue
            elif all(v is None for v in map(itemgetter(i), params)):
                continue
            processors.append((i, process))
        if processors:
            columns = [list(c) for c in zip(*params, strict=True)]
            for i, process in processors:
                columns[i] = [None if v is None else process(v) for v in columns[i]]
            params = list(zip(*columns, strict=True))
        for chunk in _chunks(params, 50_000):
            self.conn.exec_driver_sql(compiled.string, list(chunk))

    def _update(self, table: Table, changes: list[tuple[int, dict]], stamps: Sequence[str] = ()) -> None:
        """Apply ``(id, {column: value})`` changes, one executemany per set of changed columns."""
        groups: dict[tuple[str, ...], list[dict]] = defaultdict(list)
        for row_id, values in changes:
            groups[tuple(sorted(values))].append({"_id": row_id, **{f"v_{k}": v for k, v in values.items()}})
        for cols, params in groups.items():
            values: dict[str, Any] = {c: bindparam(f"v_{c}", type_=table.c[c].type) for c in cols}
            values.update({s: self.now_sql for s in stamps})
            stmt = update(table).where(table.c.id == bindparam("_id")).values(values)
            self.conn.execute(stmt, params)

    def _profile(self, name: str | None, rec: Any, kind: str, fld: str = "profile") -> None:
        """Refuse a profile that does not exist (suggesting close names) or is for another kind of device."""
        if name is None or (name, kind) in self.profiles_ok:
            return
        if self.profile_names is None:
            self.profile_names = set(self.profiles.names())
        if name not in self.profile_names:
            same_kind = [n for n in sorted(self.profile_names) if self._profile_kind(n) in (kind, None)]
            close = difflib.get_close_matches(name, same_kind, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise _refused(f"no hardware profile named {name!r}{hint}", field=fld, loc=_at(rec, fld), value=name)
        actual = self._profile_kind(name)
        if actual is not None and actual != kind:
            raise _refused(f"profile {name!r} is for a {actual}, not a {kind}", field=fld, loc=_at(rec, fld),
                           value=name)
        self.profiles_ok.add((name, kind))

    def _profile_kind(self, name: str) -> str | None:
        get = getattr(self.profiles, "get", None)
        return getattr(get(name), "kind", None) if get is not None else None

    def _nut_profiles(self) -> list[str]:
        return sorted(p.name for p in getattr(self.profiles, "of_kind", lambda _k: [])("ups")
                      if getattr(p, "nut", None) is not None)

    def _site_id(self, code: str, rec: Any, fld: str = "site") -> int:
        try:
            return self.sites[code]
        except KeyError:
            raise _refused(f"unknown site {code!r}", field=fld, loc=_at(rec, fld), value=code) from None

    def _rack_row(self, site_id: int, site: str, name: str, rec: Any, fld: str = "rack") -> Any:
        row = self.racks.get((site_id, name))
        if row is None:
            raise _refused(f"unknown rack {name!r} in site {site!r}", field=fld, loc=_at(rec, fld), value=name)
        return row

    def _feed_id(self, site_id: int, site: str, name: str, rec: Any) -> int:
        try:
            return self.feeds[(site_id, name)]
        except KeyError:
            raise _refused(f"unknown power feed {name!r} in site {site!r}", field="feed", loc=_at(rec, "feed"),
                           value=name) from None

    def _cred_id(self, name: str, rec: Any, fld: str) -> int:
        try:
            return self.creds[name]
        except KeyError:
            raise _refused(f"unknown credential {name!r}: import it with its secrets file (--secrets FILE, "
                           f"from 'fleet export --secrets FILE'), create it first ('fleet credentials set {name} "
                           "--kind ...'), or import without it (--without-credentials)", field=fld,
                           loc=_at(rec, fld), value=name) from None

    def _simple(self, kind: str, table: Table, recs: list, existing: dict[Any, Any],
                key: Callable[[Any], Any], key_columns: Sequence[str], values: Callable[[Any], dict[str, Any]],
                defaults: dict[str, Any], compare: Callable[[Any, str, Any], bool] | None = None
                ) -> tuple[dict[Any, int], set[Any]]:
        """Create or update records; returns (natural key -> id for the batch, the keys left unchanged)."""
        inserts: list[dict] = []
        changes: list[tuple[int, dict]] = []
        ids: dict[Any, int] = {}
        unchanged: set[Any] = set()
        for rec in recs:
            k = key(rec)
            vals = values(rec)
            row = existing.get(k)
            if row is None:
                inserts.append({**defaults, **{c: v for c, v in vals.items() if v is not None}})
                continue
            if self.mode == "create":
                raise _conflict(f"{kind} {'/'.join(map(str, k)) if isinstance(k, tuple) else k!r} already exists",
                                field="name" if kind not in ("site", "pod") else "code", loc=_at(rec, "name"))
            ids[k] = row["id"]
            diff = {c: v for c, v in vals.items()
                    if v is not None and not (compare(row, c, v) if compare else row[c] == v)}
            if diff:
                changes.append((row["id"], diff))
                self.report.updated[kind] += 1
            else:
                unchanged.add(k)
                self.report.unchanged[kind] += 1
        self._update(table, changes)
        ids.update(self._insert(table, inserts, key=key_columns))
        if inserts:
            self.report.created[kind] += len(inserts)
        return ids, unchanged

    # -- sites, pods, racks, feeds -----------------------------------------------------------------------

    def _sites(self, recs: list[SiteRecord]) -> None:
        existing = {r["code"]: r for r in self.conn.execute(select(_T_SITE)).mappings()}
        self.sites = {code: r["id"] for code, r in existing.items()}
        ids, _ = self._simple("site", _T_SITE, recs, existing, lambda r: r.code, ["code"],
                           lambda r: {"code": r.code, "name": r.name, "description": r.description},
                           {"name": "", "description": ""})
        self.sites.update(ids)

    def _pods(self, recs: list[PodRecord]) -> None:
        existing = {(r["site_id"], r["code"]): r for r in self.conn.execute(select(_T_POD)).mappings()}
        self.pods = {k: r["id"] for k, r in existing.items()}
        keyed = [(rec, self._site_id(rec.site, rec)) for rec in recs]
        site_of = {id(rec): sid for rec, sid in keyed}
        ids, _ = self._simple("pod", _T_POD, recs, existing, lambda r: (site_of[id(r)], r.code),
                              ["site_id", "code"],
                           lambda r: {"site_id": site_of[id(r)], "code": r.code, "name": r.name,
                                      "kind": r.pod_kind},
                           {"name": "", "kind": "room"})
        self.pods.update(ids)
        self.pod_codes = {pid: code for (_sid, code), pid in self.pods.items()}

    def _pod_id(self, site_id: int, site: str, code: str, rec: Any) -> int:
        try:
            return self.pods[(site_id, code)]
        except KeyError:
            raise _refused(f"unknown pod {code!r} in site {site!r}", field="pod", loc=_at(rec, "pod"),
                           value=code) from None

    def _racks(self, recs: list[RackRecord]) -> None:
        existing = {(r["site_id"], r["name"]): r for r in self.conn.execute(select(_T_RACK)).mappings()}
        resolved: dict[int, dict[str, Any]] = {}
        for rec in recs:
            sid = self._site_id(rec.site, rec)
            resolved[id(rec)] = {"site_id": sid, "name": rec.name,
                                 "pod_id": None if rec.pod is None else self._pod_id(sid, rec.site, rec.pod, rec),
                                 "units": rec.units, "description": rec.description}
        self._shrunk_racks: set[int] = set()
        for rec in recs:
            row = existing.get((resolved[id(rec)]["site_id"], rec.name))
            if row is not None and rec.units is not None and rec.units < row["units"]:
                self._shrunk_racks.add(row["id"])
        self._simple("rack", _T_RACK, recs, existing, lambda r: (resolved[id(r)]["site_id"], r.name),
                     ["site_id", "name"], lambda r: resolved[id(r)], {"units": 42, "description": "", "pod_id": None})
        self.racks = {(r["site_id"], r["name"]): dict(r) for r in self.conn.execute(select(_T_RACK)).mappings()}

    def _feeds(self, recs: list[FeedRecord]) -> None:
        existing = {(r["site_id"], r["name"]): r for r in self.conn.execute(select(_T_FEED)).mappings()}
        self.feeds = {k: r["id"] for k, r in existing.items()}
        resolved: dict[int, dict[str, Any]] = {}
        for rec in recs:
            sid = self._site_id(rec.site, rec)
            rack_id = None if rec.rack is None else self._rack_row(sid, rec.site, rec.rack, rec)["id"]
            resolved[id(rec)] = {"site_id": sid, "name": rec.name, "rack_id": rack_id,
                                 "capacity_w": rec.capacity_w, "voltage": rec.voltage, "phases": rec.phases}
        ids, _ = self._simple("feed", _T_FEED, recs, existing, lambda r: (resolved[id(r)]["site_id"], r.name),
                              ["site_id", "name"], lambda r: resolved[id(r)],
                              {"capacity_w": 0, "phases": 1, "voltage": None, "rack_id": None})
        self.feeds.update(ids)

    # -- credentials -------------------------------------------------------------------------------------

    def _credentials(self, recs: list[CredentialRecord]) -> None:
        existing = {r["name"]: r for r in self.conn.execute(select(_T_CRED)).mappings()}
        self.creds = {name: r["id"] for name, r in existing.items()}
        if recs and self.keyring is None:
            raise _refused("credentials need the secret key to be sealed (run 'fleet init' first)",
                           field="secret", loc=recs[0].loc)
        keyring = self.keyring

        def values(rec: CredentialRecord) -> dict[str, Any]:
            row = existing.get(rec.name)
            vals: dict[str, Any] = {"name": rec.name, "kind": rec.cred_kind, "username": rec.username,
                                    "options": None if rec.options is None else dict(rec.options)}
            if rec.secret is not None and "\n" in rec.secret and rec.cred_kind != "ssh":
                raise _refused("only an ssh credential may hold a private key block", field="secret",
                               loc=_at(rec, "secret"))
            if rec.secret is not None:
                same = row is not None and keyring.open(row["secret"], name=f"credential {rec.name}").reveal() \
                    == rec.secret
                if not same:
                    vals["secret"] = keyring.seal(rec.secret)
            elif row is None:
                raise _refused("a new credential needs its secret", field="secret", loc=_at(rec, "secret"))
            if row is not None and any(v is not None and row[c] != v for c, v in vals.items()):
                vals["updated_at"] = self.now
            return vals

        ids, _ = self._simple("credential", _T_CRED, recs, existing, lambda r: r.name, ["name"], values,
                           {"username": "", "options": {}, "created_at": self.now, "updated_at": self.now})
        self.creds.update(ids)

    # -- servers -----------------------------------------------------------------------------------------

    def _servers(self, recs: list[ServerRecord]) -> None:
        if not recs:
            return
        conn = self.conn
        hostnames = [r.hostname for r in recs]
        any_servers = conn.execute(select(_T_SERVER.c.id).limit(1)).first() is not None
        existing = {r["hostname"]: r for r in self._rows_by_keys(_T_SERVER, _T_SERVER.c.hostname, hostnames)} \
            if any_servers else {}
        if existing and self.mode == "create":
            rec = next(r for r in recs if r.hostname in existing)
            raise _conflict(f"server {rec.hostname!r} already exists", field="hostname", loc=_at(rec, "hostname"))
        ids_in_batch = {row["id"]: h for h, row in existing.items()}
        stored_nics: dict[int, set] = defaultdict(set)
        stored_disks: dict[int, set] = defaultdict(set)
        stored_tags: dict[int, set] = defaultdict(set)
        if existing:
            id_list = list(ids_in_batch)
            for r in self._rows_by_keys(_T_NIC, _T_NIC.c.server_id, id_list):
                stored_nics[r["server_id"]].add((r["name"], r["mac"], r["ip"], r["switch"], r["switch_port"],
                                                 bool(r["pxe"])))
            for r in self._rows_by_keys(_T_DISK, _T_DISK.c.server_id, id_list):
                stored_disks[r["server_id"]].add((r["slot"], r["kind"], r["model"], r["serial"], r["size_gb"]))
            for r in self._rows_by_keys(_T_TAG, _T_TAG.c.server_id, id_list):
                stored_tags[r["server_id"]].add(r["tag"])

        plain = attrgetter(*_PLAIN_COLUMNS)
        site_ids = self.sites
        racks = self.racks
        creds = self.creds
        inserts: list[dict] = []
        new_recs: list[ServerRecord] = []
        changes: list[tuple[int, dict]] = []
        rewrite_nics: list[ServerRecord] = []  # existing servers whose NICs are replaced
        rewrite_disks: list[ServerRecord] = []
        rewrite_tags: list[ServerRecord] = []
        placements: list[tuple] = []  # (rack, position, height, host, record, units)
        macs: dict[str, tuple[str, str | None]] = {}
        nic_ips: dict[str, tuple[str, str | None]] = {}
        ip_owner: dict[str, str] = {}
        state_ignored: list[str] = []
        replaced_nic_ids: set[int] = set()  # existing servers whose NICs the batch restates
        primary_restated: set[int] = set()

        pod_codes = self.pod_codes
        ups_refs = self.ups_refs
        profiles_ok: set[str] = set()  # server profiles already checked
        for rec in recs:
            host = rec.hostname
            row = existing.get(host)
            vals: dict[str, Any] = {c: v for c, v in zip(_PLAIN_COLUMNS, plain(rec), strict=True) if v is not None}
            rack_row = None
            site = rec.site
            if rec.rack is not None:
                sid = site_ids.get(site)  # type: ignore[arg-type]
                if sid is None:
                    raise _refused(f"unknown site {site!r}", field="site", loc=_at(rec, "site"), value=site)
                rack_row = racks.get((sid, rec.rack))
                if rack_row is None:
                    raise _refused(f"unknown rack {rec.rack!r} in site {site!r}", field="rack",
                                   loc=_at(rec, "rack"), value=rec.rack)
                vals["rack_id"] = rack_row["id"]
                if rec.pod is not None:
                    pod_code = pod_codes.get(rack_row["pod_id"])
                    if pod_code != rec.pod:
                        raise _refused(f"rack {rec.rack!r} is in pod {pod_code!r}, not {rec.pod!r}", field="pod",
                                       loc=_at(rec, "pod"), value=rec.pod)
            elif site is not None and site not in site_ids:
                raise _refused(f"unknown site {site!r}", field="site", loc=_at(rec, "site"), value=site)
            profile = rec.profile
            if profile is not None and profile not in profiles_ok:
                self._profile(profile, rec, "server")
                profiles_ok.add(profile)
            if rec.bmc_credential is not None:
                vals["bmc_credential_id"] = creds.get(rec.bmc_credential) or self._cred_id(
                    rec.bmc_credential, rec, "bmc_credential")
            if rec.ssh_credential is not None:
                vals["ssh_credential_id"] = creds.get(rec.ssh_credential) or self._cred_id(
                    rec.ssh_credential, rec, "ssh_credential")

            # Where the server will be, to check rack units below.
            if row is None:
                rack_id, pos, height = vals.get("rack_id"), vals.get("position"), vals.get("height", 1)
            else:
                rack_id = vals.get("rack_id", row["rack_id"])
                pos = vals.get("position", row["position"])
                height = vals.get("height", row["height"])
                if "rack_id" in vals and vals["rack_id"] != row["rack_id"] and "position" not in vals:
                    pos = None  # moved to another rack without a position: unplaced there
                    vals["position"] = None
            if rack_id is not None and pos is not None:
                units = rack_row["units"] if rack_row is not None else None
                placements.append((rack_id, pos, height, host, rec, units or 0))

            # Addresses: unique within the batch; checked against the database below.
            if rec.nics:
                seen_names: set[str] = set()
                for nic in rec.nics:
                    name, mac, ip, nic_loc = nic.name, nic.mac, nic.ip, nic.loc
                    if name in seen_names:
                        raise _conflict(f"{host} has two NICs named {name!r}", field="name", loc=nic_loc)
                    seen_names.add(name)
                    other = macs.get(mac)
                    if other is not None:
                        raise _conflict(f"MAC {mac} is given twice: {host} and {other[0]} (at {other[1]})",
                                        field="mac", loc=nic_loc)
                    macs[mac] = (host, nic_loc)
                    if ip is not None:
                        other = nic_ips.get(ip)
                        if other is not None:
                            raise _conflict(f"IP {ip} is given twice: {host} and {other[0]} (at {other[1]})",
                                            field="ip", loc=nic_loc)
                        nic_ips[ip] = (host, nic_loc)
                        owner = ip_owner.setdefault(ip, host)
                        if owner != host:
                            raise _conflict(f"IP {ip} is also the primary IP of {owner}", field="ip", loc=nic_loc)
            if rec.primary_ip is not None:
                owner = ip_owner.setdefault(rec.primary_ip, host)
                if owner != host:
                    raise _conflict(f"IP {rec.primary_ip} is already given to {owner} in this import",
                                    field="primary_ip", loc=_at(rec, "primary_ip"))
            if rec.ups is not None:
                ups_refs[rec.ups].append((host, 1, rec))

            if row is None:
                state = rec.state or "new"
                inserts.append({**_SERVER_DEFAULTS, **vals, "hostname": host, "state": state,
                                "state_reason": "imported"})
                new_recs.append(rec)
                continue
            sid_ = row["id"]
            if rec.nics is not None:
                replaced_nic_ids.add(sid_)
            if rec.primary_ip is not None:
                primary_restated.add(sid_)
            if rec.state is not None and rec.state != row["state"]:
                state_ignored.append(host)
            diff = {c: v for c, v in vals.items() if row[c] != v}
            touched = bool(diff)
            if rec.nics is not None and {n.key() for n in rec.nics} != stored_nics.get(sid_, set()):
                rewrite_nics.append(rec)
                touched = True
            if rec.disks is not None and {d.key() for d in rec.disks} != stored_disks.get(sid_, set()):
                rewrite_disks.append(rec)
                touched = True
            if rec.tags is not None and set(rec.tags) != stored_tags.get(sid_, set()):
                rewrite_tags.append(rec)
                touched = True
            if touched:
                changes.append((sid_, diff))
                self.report.updated["server"] += 1
            else:
                self.report.unchanged["server"] += 1

        if state_ignored:
            sample = ", ".join(state_ignored[:5]) + (" ..." if len(state_ignored) > 5 else "")
            self.report.warnings.append(
                f"{len(state_ignored)} existing server(s) have another state in the import; states of existing "
                f"servers are changed only by lifecycle moves ('fleet state'), so they were kept: {sample}")

        self._check_rack_units(placements, set(existing) | {r.hostname for r in new_recs}, any_servers)
        if any_servers:
            self._check_addresses_in_db(macs, nic_ips, ip_owner, ids_in_batch, replaced_nic_ids,
                                        primary_restated, recs)

        # Writes: updates and deletions first, so a MAC or a rack unit can move between servers.
        self._update(_T_SERVER, [(i, d) for i, d in changes if d], stamps=("updated_at",))
        touched_only = [i for i, d in changes if not d]
        if touched_only:
            for chunk in _chunks(touched_only):
                conn.execute(update(_T_SERVER).where(_T_SERVER.c.id.in_(chunk)).values(updated_at=self.now_sql))
        for table, recs_ in ((_T_NIC, rewrite_nics), (_T_DISK, rewrite_disks), (_T_TAG, rewrite_tags)):
            ids = [existing[r.hostname]["id"] for r in recs_]
            for chunk in _chunks(ids):
                conn.execute(delete(table).where(table.c.server_id.in_(chunk)))

        new_ids = self._insert(_T_SERVER, inserts, stamps=("created_at", "updated_at", "state_changed_at"),
                               key=["hostname"])
        id_of = {h: row["id"] for h, row in existing.items()}
        id_of.update(new_ids)
        self.server_ids.update(id_of)
        if inserts:
            self.report.created["server"] += len(inserts)

        nic_rows: list[tuple] = []
        disk_rows: list[tuple] = []
        tag_rows: list[tuple] = []
        for rec in (*new_recs, *rewrite_nics):
            sid_ = id_of[rec.hostname]
            nic_rows.extend([(sid_, n.name, n.mac, n.ip, n.switch, n.switch_port, n.pxe) for n in rec.nics or ()])
        for rec in (*new_recs, *rewrite_disks):
            sid_ = id_of[rec.hostname]
            disk_rows.extend([(sid_, d.slot, d.disk_kind, d.model, d.serial, d.size_gb) for d in rec.disks or ()])
        for rec in (*new_recs, *rewrite_tags):
            sid_ = id_of[rec.hostname]
            tag_rows.extend([(sid_, t) for t in rec.tags or ()])
        self._insert(_T_NIC, nic_rows, columns=("server_id", "name", "mac", "ip", "switch", "switch_port", "pxe"))
        self._insert(_T_DISK, disk_rows, columns=("server_id", "slot", "kind", "model", "serial", "size_gb"))
        self._insert(_T_TAG, tag_rows, columns=("server_id", "tag"))
        actor = self.actor
        self._insert(_T_CHANGE, [(id_of[r.hostname], "new", r.state or "new", actor, "imported") for r in new_recs],
                     columns=("server_id", "from_state", "to_state", "actor", "reason"), stamps=("ts",))

    def _check_rack_units(self, placements: list, batch_hosts: set[str], any_servers: bool) -> None:
        """Refuse servers that overlap in a rack or do not fit in it, counting servers already there."""
        rack_ids = {p[0] for p in placements} | getattr(self, "_shrunk_racks", set())
        if not rack_ids:
            return
        units_of = {row["id"]: row["units"] for row in self.racks.values()}
        occupied: dict[int, dict[int, tuple[str, Any]]] = defaultdict(dict)
        todo = list(placements)
        if any_servers:
            stored = []
            for chunk in _chunks(sorted(rack_ids)):
                stored.extend(self.conn.execute(
                    select(_T_SERVER.c.rack_id, _T_SERVER.c.position, _T_SERVER.c.height, _T_SERVER.c.hostname)
                    .where(_T_SERVER.c.rack_id.in_(chunk), _T_SERVER.c.position.is_not(None))).all())
            # Servers already in place come first, so the message names the newcomer.
            todo = [(r, p, h, host, None, 0) for r, p, h, host in stored if host not in batch_hosts] + todo

        def rack_name(rack_id: int) -> str:
            return next((name for (_s, name), row in self.racks.items() if row["id"] == rack_id), str(rack_id))

        for rack_id, pos, height, host, rec, _units in todo:
            units = units_of.get(rack_id, 0)
            top = pos + height - 1
            if top > units:
                msg = f"{host} at units {pos}-{top} does not fit in rack {rack_name(rack_id)} ({units} units)"
                if rec is None:
                    msg += " after this import"
                raise _conflict(msg, field="position", loc=rec and _at(rec, "position"))
            slots = occupied[rack_id]
            for unit in range(pos, top + 1):
                other = slots.get(unit)
                if other is not None:
                    first = _at(other[1], "position") if other[1] is not None else None
                    where = f" (at {first})" if first else ""
                    raise _conflict(f"{host} at units {pos}-{top} overlaps {other[0]}{where} at unit {unit} of "
                                    f"rack {rack_name(rack_id)}", field="position", loc=rec and _at(rec, "position"))
                slots[unit] = (host, rec)

    def _check_addresses_in_db(self, macs: dict, nic_ips: dict, ip_owner: dict, ids_in_batch: dict[int, str],
                               replaced_nic_ids: set[int], primary_restated: set[int], recs: list) -> None:
        """Refuse MACs and IPs stored for another server, unless this batch rewrites that server's."""
        conn = self.conn
        host_of: dict[int, str] = dict(ids_in_batch)

        def hostname(server_id: int) -> str:
            if server_id not in host_of:
                host_of[server_id] = conn.execute(
                    select(_T_SERVER.c.hostname).where(_T_SERVER.c.id == server_id)).scalar_one()
            return host_of[server_id]

        def where(ip: str) -> tuple[str, str | None]:
            if ip in nic_ips:
                return "ip", nic_ips[ip][1]
            return "primary_ip", next((r.loc for r in recs if r.hostname == ip_owner[ip]), None)

        for row in self._rows_by_keys(_T_NIC, _T_NIC.c.mac, list(macs), [_T_NIC.c.mac, _T_NIC.c.server_id]):
            if row["server_id"] not in replaced_nic_ids:
                raise _conflict(f"MAC {row['mac']} already belongs to {hostname(row['server_id'])}", field="mac",
                                loc=macs[row["mac"]][1])
        ips = list(ip_owner)
        for row in self._rows_by_keys(_T_NIC, _T_NIC.c.ip, ips, [_T_NIC.c.ip, _T_NIC.c.server_id]):
            if row["server_id"] in replaced_nic_ids:
                continue
            ip, owner = row["ip"], hostname(row["server_id"])
            if ip in nic_ips or owner != ip_owner[ip]:
                fld, loc = where(ip)
                raise _conflict(f"IP {ip} already belongs to a NIC of {owner}", field=fld, loc=loc)
        for row in self._rows_by_keys(_T_SERVER, _T_SERVER.c.primary_ip, ips,
                                      [_T_SERVER.c.primary_ip, _T_SERVER.c.id, _T_SERVER.c.hostname]):
            ip = row["primary_ip"]
            if row["id"] not in primary_restated and row["hostname"] != ip_owner[ip]:
                fld, loc = where(ip)
                raise _conflict(f"IP {ip} is already the primary IP of {row['hostname']}", field=fld, loc=loc)

    # -- UPS units, PDUs and their outlets ---------------------------------------------------------------

    def _server_id(self, host: str, loc: str | None) -> int:
        sid = self.server_ids.get(host)
        if sid is None:
            sid = self.conn.execute(select(_T_SERVER.c.id).where(_T_SERVER.c.hostname == host)).scalar()
            if sid is None:
                raise _refused(f"unknown server {host!r}", field="server", loc=loc, value=host)
            self.server_ids[host] = sid
        return sid

    def _outlet_set(self, owner: str, outlets: Iterable[OutletRecord]) -> dict[int, tuple]:
        """number -> (name, server_id, psu), refusing a number, or a server's PSU, given twice."""
        out: dict[int, tuple] = {}
        for o in outlets:
            if o.number in out:
                raise _conflict(f"outlet {o.number} of {owner} is given twice", field="number", loc=o.loc)
            server_id = None if o.server is None else self._feed_psu(owner, o.number, o.server, o.psu, o.loc)
            out[o.number] = (o.name, server_id, o.psu)
        return out

    def _feed_psu(self, owner: str, number: int, server: str, psu: int, loc: str | None) -> int:
        """The id of ``server``, whose PSU ``psu`` outlet ``number`` of ``owner`` feeds; a PSU is fed once."""
        server_id = self._server_id(server, loc)
        first = self.outlet_psus.setdefault((server_id, psu), (owner, number, loc))
        if first[0] != owner or first[1] != number:
            where = f" (at {first[2]})" if first[2] else ""
            raise _conflict(f"PSU {psu} of {server} is fed by outlet {number} of {owner} and by "
                            f"outlet {first[1]} of {first[0]}{where}", field="server", loc=loc)
        return server_id

    def _parents(self, kind: str, table: Table, parent_col: str, recs: list, resolve: Callable[[Any], dict],
                 defaults: dict[str, Any], refs: Mapping[str, list] | None = None) -> dict[str, int]:
        """Create or update UPS units or PDUs, then their outlets. Returns name -> id.

        A record that lists its outlets replaces the stored ones. A server's ``ups: NAME`` adds
        outlet 0 (the whole output) of that UPS to what is listed or stored.
        """
        refs = refs or {}
        batch_names = {r.name for r in recs}
        names = [r.name for r in recs] + [n for n in refs if n not in batch_names]
        existing = {r["name"]: r for r in self._rows_by_keys(table, table.c.name, names)}
        resolved = {r.name: resolve(r) for r in recs}
        ids, unchanged = self._simple(kind, table, recs, existing, lambda r: r.name, ["name"],
                                      lambda r: resolved[r.name], defaults)
        for name, row in existing.items():
            ids.setdefault(name, row["id"])
        full: dict[str, dict[int, tuple]] = {}
        for rec in recs:
            if rec.outlets is not None:
                full[rec.name] = self._outlet_set(rec.name, rec.outlets)
        partial: dict[str, dict[int, tuple]] = {}
        for name, servers in refs.items():
            for host, psu, server_rec in servers:
                loc = _at(server_rec, "ups")
                if name not in ids:
                    raise _refused(f"unknown UPS {name!r}", field="ups", loc=loc, value=name)
                outlets = full.get(name)
                if outlets is None:
                    outlets = partial.setdefault(name, {})
                current = outlets.get(0)
                if current is None:  # outlet 0, unnamed, feeds the server's PSU
                    outlets[0] = ("", self._feed_psu(name, 0, host, psu, loc), psu)
                elif current[1] != self._server_id(host, loc):
                    raise _conflict(f"outlet 0 (the whole output) of UPS {name} is given to two servers",
                                    field="ups", loc=loc)
        if not full and not partial:
            return ids
        parent_ids = [ids[n] for n in (*full, *partial)]
        stored: dict[int, dict[int, tuple]] = defaultdict(dict)
        for r in self._rows_by_keys(_T_OUTLET, _T_OUTLET.c[parent_col], parent_ids):
            stored[r[parent_col]][r["number"]] = (r["name"], r["server_id"], r["psu"])
        for name, outlets in partial.items() if stored else ():
            have = stored.get(ids[name], {})
            merged = dict(have)
            for number, (oname, server_id, psu) in outlets.items():
                old = have.get(number)
                if old is not None and old[1] is not None and old[1] != server_id:
                    raise _conflict(f"outlet {number} of {name} already feeds another server", field="ups",
                                    loc=self.outlet_psus.get((server_id, psu), (None, None, None))[2])
                merged[number] = (old[0] if old is not None else oname, server_id, psu)
            full[name] = merged
        if not stored:  # nothing stored to merge with (a first import)
            full.update(partial)
        replace: list[int] = []  # parents whose stored outlets are replaced
        rows: list[tuple] = []
        for name, outlets in full.items():
            pid = ids[name]
            if outlets == stored.get(pid, {}):
                continue
            if pid in stored:
                replace.append(pid)
            rows.extend([(pid, n, *v) for n, v in sorted(outlets.items())])
            if name in unchanged:
                self.report.unchanged[kind] -= 1
                self.report.updated[kind] += 1
            elif name not in batch_names:
                self.report.updated[kind] += 1
        for chunk in _chunks(replace):
            self.conn.execute(delete(_T_OUTLET).where(_T_OUTLET.c[parent_col].in_(chunk)))
        self._insert(_T_OUTLET, rows, columns=(parent_col, "number", "name", "server_id", "psu"))
        return ids

    def _located(self, rec: Any, site: str) -> tuple[int, int | None]:
        sid = self._site_id(site, rec)
        rack_id = None if rec.rack is None else self._rack_row(sid, site, rec.rack, rec)["id"]
        return sid, rack_id

    def _ups(self, recs: list[UpsRecord]) -> None:
        if not recs and not self.ups_refs:
            return
        unprofiled_nut = [r.name for r in recs if r.protocol == "nut" and r.profile is None]
        existing_names = {r["name"] for r in self._rows_by_keys(_T_UPS, _T_UPS.c.name, unprofiled_nut,
                                                                  [_T_UPS.c.name])}

        def resolve(rec: UpsRecord) -> dict[str, Any]:
            sid, rack_id = self._located(rec, rec.site)
            self._profile(rec.profile, rec, "ups")
            protocol = rec.protocol
            if protocol == "nut" and rec.profile is None and rec.name not in existing_names:
                # the default (generic-ups-mib) speaks SNMP: a NUT unit must say what it is
                raise _refused("a UPS read through NUT needs a profile; NUT profiles: "
                               + ", ".join(self._nut_profiles()), field="profile", loc=_at(rec, "protocol"))
            return {"name": rec.name, "site_id": sid, "rack_id": rack_id, "kind": rec.ups_kind,
                    "profile": rec.profile, "protocol": protocol, "host": rec.host,
                    "port": rec.port if rec.port is not None or protocol is None else DEFAULT_PORTS[protocol],
                    "nut_name": rec.nut_name,
                    "credential_id": None if rec.credential is None else self._cred_id(rec.credential, rec,
                                                                                        "credential"),
                    "feed_id": None if rec.feed is None else self._feed_id(sid, rec.site, rec.feed, rec),
                    "capacity_w": rec.capacity_w, "battery_installed": rec.battery_installed,
                    "description": rec.description}

        defaults = {"kind": "rack", "profile": DEFAULT_UPS_PROFILE, "protocol": "snmp", "port": 161,
                    "nut_name": "", "description": "", "rack_id": None, "credential_id": None, "feed_id": None,
                    "capacity_w": None, "battery_installed": None}
        self.ups_ids = self._parents("ups", _T_UPS, "ups_id", recs, resolve, defaults, self.ups_refs)

    def _pdus(self, recs: list[PduRecord]) -> None:
        if not recs:
            return
        ups_names = [r.ups for r in recs if r.ups is not None and r.ups not in self.ups_ids]
        for row in self._rows_by_keys(_T_UPS, _T_UPS.c.name, ups_names, [_T_UPS.c.name, _T_UPS.c.id]):
            self.ups_ids[row["name"]] = row["id"]

        def resolve(rec: PduRecord) -> dict[str, Any]:
            sid, rack_id = self._located(rec, rec.site)
            self._profile(rec.profile, rec, "pdu")
            ups_id = None
            if rec.ups is not None:
                ups_id = self.ups_ids.get(rec.ups)
                if ups_id is None:
                    raise _refused(f"unknown UPS {rec.ups!r}", field="ups", loc=_at(rec, "ups"), value=rec.ups)
            return {"name": rec.name, "site_id": sid, "rack_id": rack_id, "profile": rec.profile, "host": rec.host,
                    "port": rec.port,
                    "credential_id": None if rec.credential is None else self._cred_id(rec.credential, rec,
                                                                                        "credential"),
                    "feed_id": None if rec.feed is None else self._feed_id(sid, rec.site, rec.feed, rec),
                    "ups_id": ups_id, "capacity_w": rec.capacity_w, "description": rec.description}

        defaults = {"profile": DEFAULT_PDU_PROFILE, "port": 161, "description": "", "rack_id": None,
                    "credential_id": None, "feed_id": None, "ups_id": None, "capacity_w": None}
        self._parents("pdu", _T_PDU, "pdu_id", recs, resolve, defaults)

    # -- pools ------------------------------------------------------------------------------------------

    def _pools(self, recs: list[PoolRecord]) -> None:
        if not recs:
            return
        existing = {r["name"]: r for r in self.conn.execute(select(_T_POOL)).mappings()}

        def resolve(rec: PoolRecord) -> dict[str, Any]:
            sid = rack_id = None
            if rec.site is not None:
                sid, rack_id = self._located(rec, rec.site)
            return {"name": rec.name, "site_id": sid, "rack_id": rack_id, "purpose": rec.purpose, "cidr": rec.cidr,
                    "gateway": rec.gateway, "first": rec.first, "last": rec.last, "dns": rec.dns, "vlan": rec.vlan}

        resolved = {r.name: resolve(r) for r in recs}
        self._simple("pool", _T_POOL, recs, existing, lambda r: r.name, ["name"], lambda r: resolved[r.name],
                     {"purpose": "provisioning", "dns": "", "site_id": None, "rack_id": None, "gateway": None,
                      "first": None, "last": None, "vlan": None})
