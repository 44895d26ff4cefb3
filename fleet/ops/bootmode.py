"""The boot mode a server's next-boot override asks for (UEFI or legacy BIOS), and where that came from.

One rule, used by ``fleet bootdev`` (unless ``--uefi``/``--legacy`` says otherwise), by imaging's
next-boot PXE and by any driver that sets a boot override: the answer is a mode, each driver
translates it (IPMI: the EFI bit, boot flags parameter 5 data 1 bit 5; Redfish:
``BootSourceOverrideMode``). A UEFI server asked for a legacy PXE boot ignores it and boots its disk,
so getting this wrong makes imaging wait for a DHCP lease that never comes.

First that applies, per server:

1. an explicit request (``fleet bootdev --uefi`` / ``--legacy``);
2. the firmware recorded in the inventory: the server's tag ``firmware:uefi`` or ``firmware:bios``;
3. its PXE loader when that loader runs under one firmware only (``pxe.LOADER_FIRMWARES``): ``grub``
   (signed shim + GRUB EFI) means UEFI, ``pxelinux`` means BIOS; ``ipxe`` serves both and tells
   nothing. Imaging passes each host's effective loader (overrides file included); otherwise the
   server's ``pxe-loader:`` tag is read;
4. its hardware profile: the quirk ``boot-uefi-flag-required`` (``profile.boot.uefi_flag_required``)
   means the model boots UEFI;
5. else legacy, the IPMI default (the EFI bit clear).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import or_, select

from fleet.errors import ValidationError
from inventory.models import Server, ServerTag
from pxe.context import LOADER_FIRMWARES

if TYPE_CHECKING:
    from sqlmodel import Session

    from fleet.profiles import Profile, ProfileSet
    from inventory.selectors import Selector

__all__ = [
    "BOOT_MODES",
    "FIRMWARES",
    "FIRMWARE_TAG",
    "BootMode",
    "decide_boot_mode",
    "requested_mode",
    "server_boot_modes",
]

BOOT_MODES: tuple[str, ...] = ("uefi", "legacy")
#: The firmware a server may record (tag ``firmware:uefi`` / ``firmware:bios``) and the mode each boots.
FIRMWARES: Mapping[str, str] = {"uefi": "uefi", "bios": "legacy"}
FIRMWARE_TAG = "firmware:"
_LOADER_TAG = "pxe-loader:"
_CHUNK = 500


@dataclass(frozen=True)
class BootMode:
    """``mode`` (``uefi`` or ``legacy``) and ``source``: why, in words an operator can check."""

    mode: Literal["uefi", "legacy"]
    source: str

    @property
    def uefi(self) -> bool:
        return self.mode == "uefi"

    def to_json(self) -> dict[str, str]:
        return {"mode": self.mode, "source": self.source}


def requested_mode(uefi: bool) -> BootMode:
    """The mode an operator asked for explicitly (``--uefi`` / ``--legacy``)."""
    return BootMode("uefi" if uefi else "legacy", "requested (--uefi)" if uefi else "requested (--legacy)")


def decide_boot_mode(*, firmware: str | None = None, loader: str | None = None, loader_from: str = "loader",
                     profile: Profile | None = None) -> BootMode:
    """The boot mode of one server from what is known of it (see the module docstring for the order).

    ``firmware``: the recorded firmware (``uefi`` or ``bios``) or None; ``loader``: its PXE loader or
    None, ``loader_from`` saying where that came from; ``profile``: its hardware profile or None.
    """
    if firmware is not None:
        if firmware not in FIRMWARES:
            raise ValidationError(f"unknown firmware {firmware!r} (one of {', '.join(FIRMWARES)})",
                                  field="tags", value=f"{FIRMWARE_TAG}{firmware}")
        return BootMode(FIRMWARES[firmware], f"inventory: tag {FIRMWARE_TAG}{firmware}")  # type: ignore[arg-type]
    runs_under = LOADER_FIRMWARES.get(loader or "", ())
    if len(runs_under) == 1:
        return BootMode(FIRMWARES[runs_under[0]],  # type: ignore[arg-type]
                        f"{loader_from}: PXE loader {loader} boots under {runs_under[0].upper()} only")
    if profile is not None and profile.boot.uefi_flag_required:
        return BootMode("uefi", f"profile {profile.name}: quirk boot-uefi-flag-required")
    return BootMode("legacy", "default: no firmware recorded (tag firmware:uefi|bios), no UEFI-only loader, "
                              f"profile {profile.name if profile else '(none)'} without boot-uefi-flag-required")


def server_boot_modes(session: Session, selector: Selector, profiles: ProfileSet, *,
                      loaders: Mapping[str, str] | None = None) -> dict[str, BootMode]:
    """The boot mode of every server ``selector`` selects, by hostname (one query for the servers, one
    per chunk of 500 for their ``firmware:``/``pxe-loader:`` tags). ``loaders`` gives hosts' effective
    PXE loaders (imaging's rendered tree), which win over their ``pxe-loader:`` tags.

    Two different ``firmware:`` tags on one server are refused (:class:`~fleet.errors.ValidationError`).
    """
    rows = session.execute(selector.apply(select(Server.id, Server.hostname, Server.profile))).all()
    by_id = {sid: (host, profile) for sid, host, profile in rows}
    tags: dict[int, list[str]] = {sid: [] for sid in by_id}
    ids = list(by_id)
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        for sid, tag in session.execute(
                select(ServerTag.server_id, ServerTag.tag).where(ServerTag.server_id.in_(part)).where(
                    or_(ServerTag.tag.startswith(FIRMWARE_TAG), ServerTag.tag.startswith(_LOADER_TAG)))):
            tags[sid].append(tag)
    loaders = loaders or {}
    out: dict[str, BootMode] = {}
    for sid, (host, profile_name) in by_id.items():
        out[host] = mode_of(host, tags[sid], loaders.get(host),
                            profiles.get(profile_name) if profile_name in profiles else None)
    return out


def mode_of(host: str, tags: Sequence[str], loader: str | None, profile: Any) -> BootMode:
    """One server's mode from its tags, an effective loader (or None) and its profile."""
    firmwares = sorted({t[len(FIRMWARE_TAG):] for t in tags if t.startswith(FIRMWARE_TAG)})
    if len(firmwares) > 1:
        raise ValidationError(f"{host}: tags say two firmwares ({', '.join(FIRMWARE_TAG + f for f in firmwares)}); "
                              "keep one", field="tags")
    loader_from = "imaging's rendered tree"
    if loader is None:
        tagged = [t[len(_LOADER_TAG):] for t in tags if t.startswith(_LOADER_TAG)]
        loader = tagged[0] if tagged else None
        loader_from = f"inventory: tag {_LOADER_TAG}{loader}"
    try:
        return decide_boot_mode(firmware=firmwares[0] if firmwares else None, loader=loader,
                                loader_from=loader_from, profile=profile)
    except ValidationError as exc:
        raise ValidationError(f"{host}: {exc}", field="tags") from None
