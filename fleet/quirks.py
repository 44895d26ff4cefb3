"""Quirks the code knows: each id, the capability it applies to, the type of its value, and where it acts.

A profile's ``[[quirks]]`` entry is data (``fleet.profiles.Quirk``); an id listed in :data:`KNOWN_QUIRKS`
is also a name the code acts on. The loader checks a known id's ``applies_to`` and value type against
its :class:`QuirkSpec` (a typo'd capability or a string where a boolean is meant is refused by name) and
gathers the typed values into one small frozen record per capability, a field of the profile named
after the capability (today ``Profile.boot``: :class:`BootQuirks`, read by
:func:`fleet.bootmode.decide_boot_mode`), so code asks ``profile.boot.uefi_flag_required`` instead of
looking a string up.

The pattern for the next quirk: add its :class:`QuirkSpec` here, a field on its capability's record
(filled by that record's reader, like :func:`boot_quirks`), act on it where it applies, and test that
the behaviour goes away without it. Ids not listed here are still accepted as prose until issue 13
makes every quirk act.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

__all__ = ["KNOWN_QUIRKS", "BootQuirks", "QuirkSpec", "boot_quirks", "check_quirk"]


@dataclass(frozen=True)
class QuirkSpec:
    """A quirk the code acts on: where (``applies_to``), with what value (``value_type``), and how."""

    id: str
    applies_to: str
    value_type: type
    acts_in: str  # the function that implements it
    meaning: str


def _registry(*specs: QuirkSpec) -> Mapping[str, QuirkSpec]:
    out: dict[str, QuirkSpec] = {}
    for spec in specs:
        if spec.id in out:
            raise ValueError(f"quirk {spec.id!r} registered twice")
        out[spec.id] = spec
    return MappingProxyType(out)


KNOWN_QUIRKS: Mapping[str, QuirkSpec] = _registry(
    QuirkSpec("boot-uefi-flag-required", "boot", bool, "fleet.bootmode.decide_boot_mode",
              "the server boots UEFI: a next-boot override must carry the EFI bit (IPMI boot flags data1 "
              "bit 5, ipmitool 'options=efiboot'), else the BMC asks for a legacy boot the firmware ignores"),
)


def check_quirk(quirk_id: str, applies_to: str, value: Any) -> tuple[str, str] | None:
    """For a known id: (key, message) if ``applies_to`` or ``value`` does not fit its spec, else None."""
    spec = KNOWN_QUIRKS.get(quirk_id)
    if spec is None:
        return None
    if applies_to != spec.applies_to:
        return "applies_to", f"quirk {quirk_id!r} applies to {spec.applies_to!r}, not {applies_to!r}"
    # bool is an int in Python: a boolean quirk takes only true/false, a number quirk no boolean.
    if not isinstance(value, spec.value_type) or (spec.value_type is not bool and isinstance(value, bool)):
        return "value", f"quirk {quirk_id!r} takes a {spec.value_type.__name__}, not {value!r}"
    return None


@dataclass(frozen=True)
class BootQuirks:
    """The boot quirks of a model, typed. ``uefi_flag_required``: ``boot-uefi-flag-required``."""

    uefi_flag_required: bool = False


class _QuirkLike(Protocol):
    id: str
    value: Any


def boot_quirks(quirks: Iterable[_QuirkLike]) -> BootQuirks:
    """The boot record of a profile's quirks (values already checked by :func:`check_quirk`)."""
    by_id = {q.id: q.value for q in quirks}
    return BootQuirks(uefi_flag_required=bool(by_id.get("boot-uefi-flag-required", False)))
