"""BMC operations other than power: boot device, sensors, event log (SEL), FRU inventory, BMC reset.

Each goes through the capability's driver chain (:mod:`fleet.drivers.chain`): the profile's ordered
drivers, the first that answers wins, a fatal error stops the chain. :func:`each` runs one call on many
servers in bulk per driver; :func:`one_bmc` on one server, raising the driver's error as it came.
Changes (boot device, SEL clear, BMC reset) are audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fleet.core.targets import AnySelector, bmc_targets
from fleet.drivers.chain import build_chain, call_chain, gather_chain
from fleet.errors import DriverError, InputError, NotFound
from fleet.ops.bootmode import requested_mode, server_boot_modes
from inventory.selectors import parse_selector
from inventory.validate import check_hostname

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["bmc_reset", "boot_modes", "each", "fru", "one_bmc", "sel", "sensors", "set_boot"]

BOOT_DEVICES = ("pxe", "disk", "bios", "cdrom", "none")


async def each(ctx: Context, selector: AnySelector, capability: str, operation: str,
                call: Any, *, concurrency: int = 64) -> list[tuple[str, Any, str]]:
    """Run ``call(driver, target)`` on each selected server's ``capability`` chain, in bulk per driver
    (:func:`fleet.drivers.chain.gather_chain`): (hostname, value, error) each."""
    targets, problems = bmc_targets(ctx, selector)
    if not targets and not problems:
        raise NotFound(f"no servers match {str(parse_selector(selector))!r}")
    answers = await gather_chain([build_chain(capability, p, ts) for _, ts, p in targets], ctx.driver, call,
                                 capability=capability, concurrency=concurrency)
    out = [(h, a.value, str(a.error) if a.error else "") for (h, _, _), a in zip(targets, answers, strict=True)]
    out += [(p.split(": ", 1)[0], None, p.split(": ", 1)[1]) for p in problems]
    return sorted(out, key=lambda r: r[0])


async def one_bmc(ctx: Context, hostname: str, capability: str, call: Any) -> Any:
    """``call(driver, target)`` on one server's BMC; driver errors propagate with their type."""
    targets, problems = bmc_targets(ctx, f"host={check_hostname(hostname)}")
    if problems:
        raise InputError(problems[0])
    if not targets:
        raise NotFound(f"no server named {hostname!r}")
    _, endpoints, profile = targets[0]
    answer = await call_chain(build_chain(capability, profile, endpoints), ctx.driver, call,
                              capability=capability, target=hostname)
    if answer.error is not None:
        raise answer.error
    return answer.value


def boot_modes(ctx: Context, selector: AnySelector, *, uefi: bool | None = None,
               loaders: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Each selected server's boot mode (``fleet.ops.bootmode.BootMode``: UEFI or legacy, and why);
    ``uefi`` True/False is an explicit request for all of them."""
    with ctx.read() as s:
        modes = server_boot_modes(s, parse_selector(selector), ctx.profiles, loaders=loaders)
    return modes if uefi is None else {h: requested_mode(uefi) for h in modes}


async def set_boot(ctx: Context, selector: AnySelector, device: str, *,
                   persistent: bool = False, uefi: bool | None = None,
                   loaders: Mapping[str, str] | None = None) -> list[tuple[str, Any, str]]:
    """Set the next boot device in each server's boot mode (:func:`boot_modes`; ``uefi`` True/False
    overrides it), then read it back. Audited with each mode and its source.
    (hostname, BootDevice read back, error)."""
    if device not in BOOT_DEVICES:
        raise InputError(f"unknown boot device {device!r}: pxe, disk, bios, cdrom or none")
    if parse_selector(selector).is_empty:
        raise InputError("name the servers (a selector)")
    modes = boot_modes(ctx, selector, uefi=uefi, loaders=loaders)

    async def call(driver: Any, target: Any) -> Any:
        mode = modes[target.name]
        await driver.set_boot(target, device, persistent=persistent, uefi=mode.uefi)
        got = await driver.get_boot(target)
        if got.device != device:
            raise DriverError(f"BMC reports next boot {got.device!r} after setting {device!r}",
                              target=target.name, operation="set boot")
        # A BMC that keeps the flags byte must read the EFI bit back as sent (not: ipmi_sim's quirk).
        if device != "none" and got.uefi != mode.uefi and "boot-flags-not-persistent" not in (
                target.options.get("quirks") or {}):
            raise DriverError(f"BMC reports the {'EFI' if got.uefi else 'legacy'} boot type after asking for "
                              f"{mode.mode} ({mode.source})", target=target.name, operation="set boot")
        return got

    results = await each(ctx, selector, "boot", "set boot", call)
    ok = sum(1 for _, v, e in results if not e)
    with ctx.write() as s:
        ctx.audit(s, "bootdev", [h for h, _, _ in results],
                    "ok" if ok == len(results) else ("failed" if not ok else "partial"),
                    device=device, persistent=persistent, modes={h: m.to_json() for h, m in modes.items()},
                    failures={h: e for h, _, e in results if e})
    return results


async def sensors(ctx: Context, hostname: str) -> list[Any]:
    """The BMC's sensors with readings and states (thresholds from the BMC, else the profile)."""
    return await one_bmc(ctx, hostname, "sensors", lambda d, t: d.sensors(t))


async def sel(ctx: Context, hostname: str, *, clear: bool = False) -> list[Any]:
    """The BMC's system event log; with ``clear``, read it, then clear it (audited)."""
    entries = await one_bmc(ctx, hostname, "sel", lambda d, t: d.sel(t))
    if clear:
        try:
            await one_bmc(ctx, hostname, "sel", lambda d, t: d.clear_sel(t))
        except DriverError as exc:
            ctx.audit_failure("sel.clear", [hostname], exc)
            raise
        with ctx.write() as s:
            ctx.audit(s, "sel.clear", [hostname], entries=len(entries))
    return entries


async def fru(ctx: Context, hostname: str) -> Any:
    """The BMC's FRU inventory (manufacturer, product, serial...)."""
    return await one_bmc(ctx, hostname, "fru", lambda d, t: d.fru(t))


async def bmc_reset(ctx: Context, hostname: str) -> None:
    """Cold-reset the BMC itself (not the server). Audited."""
    try:
        await one_bmc(ctx, hostname, "power", lambda d, t: d.bmc_reset(t))
    except DriverError as exc:
        ctx.audit_failure("bmc.reset", [hostname], exc)
        raise
    with ctx.write() as s:
        ctx.audit(s, "bmc.reset", [hostname])
