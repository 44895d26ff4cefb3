"""The set of loaded profiles, by name, and the rules that recognise a device's profile.

:class:`ProfileSet` answers which profile a BMC's Get Device ID (IANA manufacturer and product id),
an SNMP agent's sysObjectID or a NetBox device type is, falling back to a manufacturer's preferred
profile or the kind's generic one; on construction it refuses duplicate names and ambiguous
matches (a shared manufacturer id, sysObjectID prefix or NetBox manufacturer needs exactly one
``match.preferred``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator

from fleet.errors import ProfileError
from fleet.profiles.model import FALLBACK_PROFILES, KINDS, Profile
from fleet.profiles.tables import display

__all__ = ["ProfileSet"]


def _key(text: str) -> str:
    """The comparison form of a NetBox name or slug: ``Dell Inc.`` → ``dell-inc``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _oid_key(oid: str) -> str:
    return oid.strip().lstrip(".")


class ProfileSet:
    """All loaded profiles, by name, with the matching rules that pick one for a device."""

    def __init__(self, profiles: Iterable[Profile]) -> None:
        self._by_name: dict[str, Profile] = {}
        for p in profiles:
            other = self._by_name.get(p.name)
            if other is not None:
                raise ProfileError(f"{_where(p)}: name: duplicate profile name {p.name!r} "
                                   f"(also defined in {_where(other)})")
            self._by_name[p.name] = p
        self._check_groups()

    # -- collection protocol
    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._by_name[n] for n in sorted(self._by_name))

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"ProfileSet({len(self)} profiles)"

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def of_kind(self, kind: str) -> list[Profile]:
        if kind not in KINDS:
            raise ProfileError(f"unknown kind {kind!r}; kinds are: {', '.join(KINDS)}")
        return [p for p in self if p.kind == kind]

    def get(self, name: str) -> Profile:
        """The profile called ``name``; a ProfileError naming close matches if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ProfileError(f"no hardware profile named {name!r}{hint}") from None

    # -- matching
    def match_ipmi(self, manufacturer_id: int, product_id: int | None = None) -> Profile | None:
        """The profile for a BMC's Get Device ID answer.

        A profile listing the product id wins; otherwise the manufacturer's only profile, or
        its preferred one; None when the manufacturer is unknown.
        """
        family = [p for p in self if p.match.ipmi_manufacturer_id == manufacturer_id]
        if product_id is not None:
            for p in family:
                if product_id in p.match.ipmi_product_ids:
                    return p
        return _pick(family)

    def match_sys_object_id(self, oid: str) -> Profile | None:
        """The profile whose sysObjectID prefix is the longest match for ``oid`` (leading dot allowed)."""
        target = _oid_key(oid)
        best: list[Profile] = []
        best_len = -1
        for p in self:
            for prefix in p.match.sys_object_ids:
                if target == prefix or target.startswith(prefix + "."):
                    n = prefix.count(".")
                    if n > best_len:
                        best, best_len = [p], n
                    elif n == best_len and p not in best:
                        best.append(p)
        return _pick(best)

    def for_netbox(self, manufacturer: str | None, device_type: str | None, *,
                   kind: str | None = None) -> tuple[Profile, str | None]:
        """The profile for a NetBox device type, and a warning when it had to fall back.

        Names and slugs compare alike (``PowerEdge R640`` = ``poweredge-r640``). Order: the
        profile listing the device type (and, if given, the manufacturer); else the
        manufacturer's preferred profile; else the generic profile for ``kind``
        (``generic-ipmi`` when ``kind`` is None).
        """
        if kind is not None and kind not in KINDS:
            raise ProfileError(f"unknown kind {kind!r}; kinds are: {', '.join(KINDS)}")
        pool = [p for p in self if kind is None or p.kind == kind]
        mkey = _key(manufacturer) if manufacturer else ""
        dkey = _key(device_type) if device_type else ""

        def made_by(p: Profile) -> bool:
            return mkey in {_key(m) for m in p.match.netbox_manufacturers}

        if dkey:
            hits = [p for p in pool if dkey in {_key(d) for d in p.match.netbox_device_types}
                    and (not mkey or made_by(p))]
            if len(hits) == 1:
                return hits[0], None
        label = f"{manufacturer or '?'} / {device_type or '?'}"
        if mkey:
            chosen = _pick([p for p in pool if made_by(p)])
            if chosen is not None:
                return chosen, (f"no hardware profile for NetBox device type {label}; "
                                f"using {chosen.name!r}, the profile preferred for that manufacturer")
        fallback = FALLBACK_PROFILES[kind or "server"]
        if fallback not in self:
            raise ProfileError(f"no hardware profile for NetBox device type {label}, "
                               f"and the fallback profile {fallback!r} is not loaded")
        return self._by_name[fallback], (f"no hardware profile for NetBox device type {label}; "
                                         f"using the generic profile {fallback!r}")

    # -- set-level validation
    def _check_groups(self) -> None:
        groups: dict[tuple[str, str], list[Profile]] = {}
        pairs: dict[tuple[int, int], Profile] = {}
        device_types: dict[tuple[str, str, str], Profile] = {}
        for p in self:
            m = p.match
            if m.ipmi_manufacturer_id is not None:
                groups.setdefault(("IPMI manufacturer id", str(m.ipmi_manufacturer_id)), []).append(p)
                for prod in m.ipmi_product_ids:
                    other = pairs.setdefault((m.ipmi_manufacturer_id, prod), p)
                    if other is not p:
                        raise ProfileError(
                            f"{_where(p)}: match.ipmi.product_ids: manufacturer {m.ipmi_manufacturer_id} "
                            f"product {prod:#x} is also claimed by {other.name!r} ({_where(other)})")
            for oid in m.sys_object_ids:
                groups.setdefault(("sysObjectID prefix", oid), []).append(p)
            for mfr in {_key(x) for x in m.netbox_manufacturers}:
                groups.setdefault((f"NetBox manufacturer ({p.kind})", mfr), []).append(p)
                for dt in {_key(x) for x in m.netbox_device_types}:
                    other = device_types.setdefault((p.kind, mfr, dt), p)
                    if other is not p:
                        raise ProfileError(
                            f"{_where(p)}: match.netbox.device_types: {dt!r} of {mfr!r} is also claimed "
                            f"by {other.name!r} ({_where(other)})")
        for (what, value), members in groups.items():
            if len(members) < 2:
                continue
            preferred = [p for p in members if p.match.preferred]
            names = ", ".join(p.name for p in members)
            if len(preferred) != 1:
                culprit = preferred[1] if len(preferred) > 1 else members[-1]
                raise ProfileError(
                    f"{_where(culprit)}: match.preferred: {what} {value} is shared by {names}; "
                    f"exactly one of them must set match.preferred = true "
                    f"({len(preferred)} do)")


def _where(p: Profile) -> str:
    return display(p.path, None) if p.path is not None else p.name


def _pick(candidates: list[Profile]) -> Profile | None:
    if len(candidates) == 1:
        return candidates[0]
    preferred = [p for p in candidates if p.match.preferred]
    return preferred[0] if len(preferred) == 1 else None
