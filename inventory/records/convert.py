"""The converters of raw values: each checks one input value and returns it normalised.

The checks are those of :mod:`inventory.validate`; here they get fast paths for values already in
canonical form (the common case, 100,000 times in a bulk import) and the uniform signature the spec
table (:mod:`inventory.records.spec`) calls: ``(value, field, loc of the record) -> value``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date
from functools import lru_cache
from typing import Any

from fleet.errors import ValidationError

from ..validate import (
    check_code,
    check_date,
    check_endpoint,
    check_hostname,
    check_int,
    check_ip,
    check_mac,
    check_tag,
    check_text,
)

__all__ = ["Converter", "parse_bool", "split_tags"]


_NIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,31}\Z")
_PURPOSE = re.compile(r"^[a-z][a-z0-9-]{0,15}\Z")
_TAG_SPLIT = re.compile(r"[\s;,]+")
_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0", ""})


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


# -- converters: what the spec table calls ------------------------------------------------------------

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

