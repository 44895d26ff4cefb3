"""The IPMI driver's asyncio API: :class:`IpmiDriver` (``await driver.power_status(target)``).

Power, next boot device, sensors, SEL, FRU and BMC reset, for thousands of BMCs. It maps every
failure into :mod:`fleet.errors` and hands the work to an :class:`~fleet.drivers.ipmi.pool.IpmiPool`
of worker processes, each owning a shard of the BMCs with persistent sessions (see ``docs/ipmi.md``
for the execution model and the figures behind it); the workers run the operations of
:mod:`fleet.drivers.ipmi.ops` by name.

Cipher suites follow ``Target.options["cipher_suites"]`` (from the hardware profile; default
``[17, 3]``). Quirks come from ``Target.options["quirks"]`` (profile quirk id -> value); the ones
the operations act on: ``fru-read-max-bytes``, ``boot-flags-not-persistent``,
``power-needs-chassis-control-script``; the workers' login errors: ``ipmi-over-lan-disabled-by-default``,
``ipmi-over-lan-setting``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from fleet.errors import Unsupported

from ..base import (
    BmcControl,
    BootControl,
    BootDevice,
    BootTarget,
    EventLog,
    FruInfo,
    HardwareInventory,
    PowerControl,
    PowerState,
    SelEntry,
    SensorReader,
    SensorReading,
    Setting,
    Target,
)
from .operation import ERROR_KINDS, OpError
from .pool import IpmiPool

__all__ = ["DEFAULT_CIPHER_SUITES", "IpmiDriver"]

#: The cipher suites proposed when the profile names none, in order (pyghmi speaks these two).
DEFAULT_CIPHER_SUITES = (17, 3)


class IpmiDriver(PowerControl, BootControl, SensorReader, EventLog, HardwareInventory, BmcControl):
    """IPMI 2.0 over LAN for many BMCs, on a pool of worker processes.

    ``IpmiDriver()`` starts nothing; the workers start on the first call. Close with
    ``await driver.aclose()`` (or ``driver.close()``, or ``async with IpmiDriver() as driver``).
    Settings: ``workers`` (default: two per CPU, 2 to 8), ``max_inflight`` operations per worker
    (default 128), ``session_idle_s`` before an unused session is closed (default 300),
    ``keepalive_s`` of silence before an idle session gets a keepalive (default 20),
    ``watchdog_margin_s`` past a deadline after which a silent worker is killed and replaced
    (default 2); ``test_ops`` enables the test-only operations (``_wedge``, ``_exit``, ``_stats``).
    Each call's deadline is ``Target.timeout`` seconds from when its worker takes it.
    """

    name = "ipmi"
    settings = (
        Setting("username", str, "", help="BMC user"),
        Setting("password", str, None, secret=True, help="BMC password"),
        Setting("cipher_suites", list, list(DEFAULT_CIPHER_SUITES), help="RMCP+ cipher suites, in order: 17, 3"),
        Setting("timeout", float, 5.0, help="deadline of one operation, seconds"),
    )

    def __init__(self, *, workers: int | None = None, max_inflight: int = 128, session_idle_s: float = 300.0,
                 keepalive_s: float = 20.0, watchdog_margin_s: float = 2.0, test_ops: bool = False) -> None:
        self._pool = IpmiPool(workers=workers, max_inflight=max_inflight, session_idle_s=session_idle_s,
                              keepalive_s=keepalive_s, watchdog_margin_s=watchdog_margin_s, test_ops=test_ops)

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def pool(self) -> Any:
        return self._pool

    async def _call(self, target: Target, operation: str, op: str, *args: Any) -> Any:
        suites = tuple(target.options.get("cipher_suites") or DEFAULT_CIPHER_SUITES)
        usable = tuple(s for s in suites if s in (17, 3))
        if not usable:
            raise Unsupported(f"cipher suites {list(suites)} are not supported (pyghmi speaks 17 and 3)",
                              target=target.name, operation=operation)
        options = {k: target.options[k] for k in ("quirks", "sdr_cache") if k in target.options}
        password = target.password.reveal().encode() if target.password is not None else b""
        try:
            return await self._pool.call(op, args, host=target.host, port=target.port,
                                         username=target.username.encode(), password=password,
                                         cipher_suites=usable, timeout=target.timeout, options=options)
        except OpError as exc:
            raise ERROR_KINDS[exc.kind](exc.message, target=target.name, operation=operation) from None

    # -- PowerControl --------------------------------------------------------------------------

    async def power_status(self, target: Target) -> PowerState:
        return await self._call(target, "power status", "power_status")

    async def power_on(self, target: Target) -> None:
        await self._call(target, "power on", "power_control", "on")

    async def power_off(self, target: Target) -> None:
        await self._call(target, "power off", "power_control", "off")

    async def power_cycle(self, target: Target) -> None:
        await self._call(target, "power cycle", "power_control", "cycle")

    async def power_reset(self, target: Target) -> None:
        await self._call(target, "power reset", "power_control", "reset")

    async def power_soft(self, target: Target) -> None:
        await self._call(target, "power soft", "power_control", "soft")

    # -- BootControl ---------------------------------------------------------------------------

    async def get_boot(self, target: Target) -> BootDevice:
        return await self._call(target, "get boot device", "get_boot")

    async def set_boot(self, target: Target, device: BootTarget, *, persistent: bool = False,
                       uefi: bool = False) -> None:
        await self._call(target, f"set boot device {device}", "set_boot", device, persistent, uefi)

    # -- SensorReader, EventLog, HardwareInventory, BmcControl ----------------------------------

    async def sensors(self, target: Target) -> list[SensorReading]:
        return await self._call(target, "read sensors", "sensors")

    async def sel(self, target: Target, *, clear: bool = False) -> list[SelEntry]:
        return await self._call(target, "read SEL and clear it" if clear else "read SEL", "sel", clear)

    async def clear_sel(self, target: Target) -> None:
        await self._call(target, "clear SEL", "clear_sel")

    async def fru(self, target: Target) -> FruInfo:
        return await self._call(target, "read FRU", "fru")

    async def bmc_reset(self, target: Target) -> None:
        await self._call(target, "BMC cold reset", "bmc_reset")

    # -- many at once --------------------------------------------------------------------------

    async def gather(self, method: str, targets: Iterable[Target], *args: Any,
                     **kwargs: Any) -> list[Any]:
        """``method`` on every target at once: results in order, a :class:`DriverError` where one failed.

        No thread per request: each call is a future answered by the worker owning the BMC.
        """
        fn = getattr(self, method)
        return await asyncio.gather(*(fn(t, *args, **kwargs) for t in targets), return_exceptions=True)

    async def start(self) -> None:
        """Start the worker processes now (optional: they start on the first call)."""
        await self._pool.start()

    def stats(self) -> dict[str, Any]:
        """Workers, requests in flight, worker restarts (for benches and health checks)."""
        return self._pool.stats()

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker processes (by PID) and close their sessions. Idempotent."""
        self._pool.close()

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self) -> IpmiDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
