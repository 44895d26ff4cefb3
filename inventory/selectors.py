"""The selection language, resolved in SQL.

A selector is a list of terms: ``rack=R12``, ``site=par1 state=deployed``, ``host=web-*``,
``tag=gpu``, ``state!=retired``, or a plain host name (``web-1``, ``web-*``). Rules:

- terms with different keys combine with AND;
- values of the same key combine with OR (``rack=R1 rack=R2`` is ``rack=R1,R2``);
- ``KEY!=VALUE`` excludes, and every exclusion must hold;
- ``*`` and ``?`` are wildcards in host, rack, pod, site, profile, serial and tag values;
- an empty selector selects every server.

Keys: host (or hostname), rack, pod, site, state, tag, profile, serial, asset, mac, ip, health.
Site, pod and rack match their codes/names without regard to case; host names are lower-case.
Every condition is a subquery on an indexed column, so no server row is filtered in Python.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Select, and_, exists, func, not_, or_, select

from fleet.errors import SelectorError, ValidationError

from .models import STATES, Nic, Pod, Rack, Server, ServerState, ServerTag, Site
from .validate import check_ip, check_mac

__all__ = ["KEYS", "Selector", "glob_to_like", "parse_selector"]

_ALIASES = {"hostname": "host", "name": "host", "asset_tag": "asset", "status": "state"}
#: Keys and whether their values may hold wildcards.
KEYS: dict[str, bool] = {
    "host": True, "rack": True, "pod": True, "site": True, "state": False, "tag": True,
    "profile": True, "serial": True, "asset": True, "mac": False, "ip": False, "health": False,
}
_HEALTH = ("ok", "warning", "critical", "unknown")
_VALUE = re.compile(r"^[A-Za-z0-9._:*?/-]+\Z")
_TERM = re.compile(r"^(?P<key>[a-z_]+)(?P<op>!=|=)(?P<value>.*)\Z")


@dataclass(frozen=True)
class Selector:
    """A parsed selector: for each key, the values that include and those that exclude."""

    include: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude: tuple[tuple[str, tuple[str, ...]], ...] = ()
    terms: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_empty(self) -> bool:
        return not self.include and not self.exclude

    def __str__(self) -> str:
        parts = [f"{k}={','.join(v)}" for k, v in self.include]
        parts += [f"{k}!={','.join(v)}" for k, v in self.exclude]
        return " ".join(parts)

    def where(self) -> ColumnElement[bool] | None:
        """The SQL condition on ``servers`` this selector stands for (None: every server)."""
        # With a narrow term to drive the query (a rack, a host name...), tags are checked per
        # candidate server (EXISTS on the tag table's key); alone, they are looked up by tag.
        narrow = any(k in _NARROW for k, _ in self.include)
        clauses = [_tag_exists(vs) if k == "tag" and narrow else _clause(k, vs) for k, vs in self.include]
        clauses += [not_(_clause(k, vs)) for k, vs in self.exclude]
        if not clauses:
            return None
        return and_(*clauses)

    def apply(self, stmt: Select) -> Select:
        """``stmt`` (a select over servers) narrowed to this selector."""
        cond = self.where()
        return stmt if cond is None else stmt.where(cond)

    def ids(self) -> Select:
        """A select of the ids of the servers matched."""
        return self.apply(select(Server.id))


def parse_selector(terms: str | Sequence[str] | Selector | None) -> Selector:
    """Parse terms (a string, split like a shell would, or a list of words) into a :class:`Selector`."""
    if isinstance(terms, Selector):
        return terms
    if terms is None:
        words: list[str] = []
    elif isinstance(terms, str):
        try:
            words = shlex.split(terms)
        except ValueError as exc:
            raise SelectorError(f"cannot read selector {terms!r}: {exc}") from None
    else:
        words = [w for t in terms for w in (t.split() if t else [])]
    include: dict[str, list[str]] = {}
    exclude: dict[str, list[str]] = {}
    for word in words:
        m = _TERM.match(word)
        if m:
            key = _ALIASES.get(m["key"], m["key"])
            op, raw = m["op"], m["value"]
            if key not in KEYS:
                raise SelectorError(f"unknown selector key {m['key']!r} in {word!r}; keys: {', '.join(KEYS)}")
        elif "=" in word:
            raise SelectorError(f"cannot read selector term {word!r}: expected KEY=VALUE, KEY!=VALUE or a host name")
        else:
            key, op, raw = "host", "=", word
        values = raw.split(",")
        if not values or any(not v for v in values):
            raise SelectorError(f"empty value in selector term {word!r}")
        target = include if op == "=" else exclude
        bucket = target.setdefault(key, [])
        for v in values:
            norm = _normalise(key, v, word)
            if norm not in bucket:
                bucket.append(norm)
    return Selector(
        include=tuple((k, tuple(v)) for k, v in sorted(include.items())),
        exclude=tuple((k, tuple(v)) for k, v in sorted(exclude.items())),
        terms=tuple(words),
    )


def _normalise(key: str, value: str, word: str) -> str:
    if not _VALUE.match(value) and key not in ("mac", "ip"):
        raise SelectorError(f"value {value!r} in {word!r} has characters a selector does not allow")
    if not KEYS[key] and ("*" in value or "?" in value):
        raise SelectorError(f"{key} does not take wildcards ({word!r})")
    try:
        if key == "mac":
            return check_mac(value, field="mac")
        if key == "ip":
            return check_ip(value, field="ip")
    except ValidationError as exc:
        raise SelectorError(f"in {word!r}: {exc.message}") from None
    if key == "state":
        v = value.lower()
        if v not in STATES:
            raise SelectorError(f"unknown state {value!r} in {word!r}; states: {', '.join(STATES)}")
        return v
    if key == "health":
        v = value.lower()
        if v not in _HEALTH:
            raise SelectorError(f"unknown health {value!r} in {word!r}; values: {', '.join(_HEALTH)}")
        return v
    if key in ("host", "tag", "profile"):
        return value.lower()
    return value


def _is_glob(value: str) -> bool:
    return "*" in value or "?" in value


def glob_to_like(value: str) -> str:
    """A shell-style glob (``*``, ``?``) as a LIKE pattern with ``\\`` as the escape."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _match(column, values: Iterable[str], *, fold_case: bool = False) -> ColumnElement[bool]:
    """``column`` equal to any value, or LIKE the glob ones. Prefix globs also get an index range."""
    col = func.lower(column) if fold_case else column
    plain = [v.lower() if fold_case else v for v in values if not _is_glob(v)]
    globs = [v.lower() if fold_case else v for v in values if _is_glob(v)]
    parts: list[ColumnElement[bool]] = []
    if plain:
        parts.append(col == plain[0] if len(plain) == 1 else col.in_(plain))
    for g in globs:
        cond = col.like(glob_to_like(g), escape="\\")
        prefix = re.split(r"[*?]", g, maxsplit=1)[0]
        if prefix and not fold_case:
            # A range on the prefix lets both engines use the column's index for 'web-*'.
            cond = and_(col >= prefix, col < prefix[:-1] + chr(ord(prefix[-1]) + 1), cond)
        parts.append(cond)
    return parts[0] if len(parts) == 1 else or_(*parts)


_NARROW = frozenset({"host", "rack", "mac", "ip", "serial", "asset"})


def _tag_exists(values: tuple[str, ...]) -> ColumnElement[bool]:
    return exists().where(ServerTag.server_id == Server.id, _match(ServerTag.tag, values))


def _clause(key: str, values: tuple[str, ...]) -> ColumnElement[bool]:
    if key == "host":
        return _match(Server.hostname, values)
    if key == "state":
        return Server.state.in_(values)
    if key == "profile":
        return _match(Server.profile, values)
    if key == "serial":
        return _match(Server.serial, values)
    if key == "asset":
        return _match(Server.asset_tag, values)
    if key == "rack":
        return Server.rack_id.in_(select(Rack.id).where(_match(Rack.name, values, fold_case=True)))
    if key == "pod":
        return Server.rack_id.in_(
            select(Rack.id).join(Pod, Pod.id == Rack.pod_id).where(_match(Pod.code, values, fold_case=True)))
    if key == "site":
        return Server.rack_id.in_(
            select(Rack.id).join(Site, Site.id == Rack.site_id).where(_match(Site.code, values, fold_case=True)))
    if key == "tag":
        return Server.id.in_(select(ServerTag.server_id).where(_match(ServerTag.tag, values)))
    if key == "mac":
        return Server.id.in_(select(Nic.server_id).where(Nic.mac.in_(values)))
    if key == "ip":
        return or_(Server.primary_ip.in_(values), Server.id.in_(select(Nic.server_id).where(Nic.ip.in_(values))))
    if key == "health":
        cond = Server.id.in_(select(ServerState.server_id).where(ServerState.health.in_(values)))
        if "unknown" in values:  # never swept counts as unknown
            cond = or_(cond, ~Server.id.in_(select(ServerState.server_id)))
        return cond
    raise SelectorError(f"unknown selector key {key!r}")  # pragma: no cover - parse refuses it first
