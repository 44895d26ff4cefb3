"""Recognising an SNMP agent: the MIB families it answers, its system OIDs, and the profile that fits.

:data:`MIB_FAMILIES` names the subtrees of RFC 1628's UPS-MIB and the vendor MIBs (APC PowerNet
UPS and rPDU, Eaton XUPS, CyberPower CPS) that :meth:`SnmpDriver.probe_mibs` looks for;
:func:`choose_profile` picks a hardware profile from an agent's sysObjectID and those families.
Pure: nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: MIB families :meth:`SnmpDriver.probe_mibs` looks for: name -> subtree answered by the agent.
MIB_FAMILIES: Mapping[str, str] = {
    "ietf-ups": "1.3.6.1.2.1.33.1",            # RFC 1628 UPS-MIB
    "apc-ups": "1.3.6.1.4.1.318.1.1.1",        # PowerNet-MIB ups
    "eaton-xups": "1.3.6.1.4.1.534.1",         # XUPS-MIB
    "cyberpower-ups": "1.3.6.1.4.1.3808.1.1.1",  # CPS-MIB ups
    "apc-rpdu": "1.3.6.1.4.1.318.1.1.12",      # PowerNet-MIB rPDU
    "apc-rpdu2": "1.3.6.1.4.1.318.1.1.26",     # PowerNet-MIB rPDU2
}

#: sysDescr, sysObjectID and sysName (SNMPv2-MIB), read by :meth:`SnmpDriver.identify`.
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"


def profile_families(profile: Any) -> set[str]:
    """The :data:`MIB_FAMILIES` a profile's SNMP objects live in."""
    snmp = getattr(profile, "snmp", None)
    if snmp is None:
        return set()
    oids = [m.oid for m in snmp.metrics.values()]
    if snmp.outlets is not None:
        oids.append(snmp.outlets.state_oid)
    out = set()
    for oid in oids:
        for fam, root in MIB_FAMILIES.items():
            if oid == root or oid.startswith(root + "."):
                out.add(fam)
    return out


def choose_profile(profiles: Iterable[Any], sys_object_id: str | None, mibs: set[str], *,
                   kind: str | None = None) -> tuple[Any | None, str]:
    """Pick a profile for an agent from its sysObjectID and the MIB families it answers.

    ``profiles`` is a :class:`~fleet.profiles.ProfileSet`. The sysObjectID match wins when the agent
    answers that profile's MIB family; otherwise the profiles whose objects all lie in answered
    families are candidates (the preferred one, or the only one, wins). Returns ``(profile, why)``;
    ``profile`` is None when nothing fits.
    """
    pool = [p for p in profiles if p.snmp is not None and (kind is None or p.kind == kind)]
    if sys_object_id and hasattr(profiles, "match_sys_object_id"):
        matched = profiles.match_sys_object_id(sys_object_id)
        if matched is not None and matched in pool:
            fams = profile_families(matched)
            if fams and fams <= mibs:
                return matched, (f"sysObjectID {sys_object_id} matches {matched.name} and the agent answers "
                                 f"{', '.join(sorted(fams))}")
    candidates = [p for p in pool if profile_families(p) and profile_families(p) <= mibs]
    if not candidates:
        return None, f"no profile's MIB families are all answered (agent answers: {', '.join(sorted(mibs)) or 'none'})"
    # the most specific family first: vendor MIBs beat the generic UPS-MIB
    vendor = [p for p in candidates if profile_families(p) - {"ietf-ups"}]
    pool2 = vendor or candidates
    if len(pool2) == 1:
        chosen = pool2[0]
    else:
        preferred = [p for p in pool2 if p.match.preferred]
        if len(preferred) != 1:
            return None, f"several profiles fit ({', '.join(p.name for p in pool2)}) and none is preferred"
        chosen = preferred[0]
    return chosen, f"the agent answers {', '.join(sorted(profile_families(chosen)))} ({chosen.name})"
