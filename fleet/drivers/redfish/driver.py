"""The Redfish driver's asyncio API: :class:`RedfishDriver` (``await driver.power_status(target)``).

Power, next boot device, sensors, event log, FRU (plus NICs and firmware) and BMC reset, for
thousands of BMCs on one event loop. Every call names its :class:`~fleet.drivers.base.Target`:
``host``, ``port`` (443), ``username``, ``password``, ``timeout`` (the deadline of one operation and
of each request in it) and ``options``: ``tls_fingerprint`` or ``ca_file`` (one is needed; see
:mod:`~fleet.drivers.redfish.tls`), ``quirks``, ``system`` (which system of a multi-system endpoint),
``sel_log``, and for power actions ``confirm_timeout_s`` / ``poll_interval_s``
(:mod:`~fleet.drivers.redfish.control`).

Per BMC (host, port, user) the service root, the discovered resource paths and the Redfish session
are kept (:class:`~fleet.drivers.redfish.client.BmcState`); :meth:`RedfishDriver.aclose` deletes the
sessions and closes the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from fleet.errors import DeviceTimeout, DriverError, Unsupported

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
from . import control, readings
from .client import BmcState, Call, Http
from .readings import NicInfo
from .resources import manager_path, system_path

__all__ = ["RedfishDriver"]

T = TypeVar("T")
#: Seconds a power action may take to show in PowerState when the target names no window.
DEFAULT_CONFIRM_S = 60.0


class RedfishDriver(PowerControl, BootControl, SensorReader, EventLog, HardwareInventory, BmcControl):
    """Redfish over HTTPS for many BMCs, on one shared aiohttp session per event loop.

    ``limit`` bounds the connections in total, ``limit_per_bmc`` those to one BMC. Close with
    ``await driver.aclose()`` (or ``async with RedfishDriver() as driver``).
    """

    name = "redfish"
    settings = (
        Setting("username", str, "", help="BMC user"),
        Setting("password", str, None, secret=True, help="BMC password"),
        Setting("tls_fingerprint", str, None, help="sha256: fingerprint of the BMC's certificate (fleet bmc trust)"),
        Setting("ca_file", str, None, help="CA bundle that signed the BMC's certificate"),
        Setting("timeout", float, 5.0, help="deadline of one operation (and of each request), seconds"),
    )

    def __init__(self, *, limit: int = 256, limit_per_bmc: int = 4) -> None:
        self._http = Http(limit=limit, limit_per_bmc=limit_per_bmc)
        self._bmcs: dict[tuple[str, int, str], BmcState] = {}
        self._targets: dict[tuple[str, int, str], Target] = {}

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, target: Target, operation: str, seconds: float | None = None) -> Call:
        key = (target.host, target.port, target.username)
        bmc = self._bmcs.get(key)
        if bmc is None:
            bmc = self._bmcs[key] = BmcState(key)
        self._targets[key] = target
        window = float(target.timeout if seconds is None else seconds)
        return Call(self._http, bmc, target, operation, time.monotonic() + window)

    async def _run(self, target: Target, operation: str, fn: Callable[[Call, str], Awaitable[T]],
                   seconds: float | None = None) -> T:
        call = self._call(target, operation, seconds)
        guard = max(0.0, call.left()) + 0.5  # a guard only: every request has its own deadline
        try:
            async with asyncio.timeout(guard):
                return await fn(call, await system_path(call))
        except DriverError:
            raise  # DeviceTimeout is a TimeoutError too: the operation's own, kept as it is
        except TimeoutError:
            raise call.error(DeviceTimeout, f"no result within {guard:.1f}s") from None

    def bmc_state(self, target: Target) -> BmcState | None:
        """What is cached for ``target``'s BMC (for tests and health checks)."""
        return self._bmcs.get((target.host, target.port, target.username))

    # -- PowerControl --------------------------------------------------------------------------

    async def power_status(self, target: Target) -> PowerState:
        return await self._run(target, "power status", control.power_state)

    async def _power(self, target: Target, action: str) -> None:
        window = float(target.options.get("confirm_timeout_s", max(DEFAULT_CONFIRM_S, target.timeout)))
        await self._run(target, f"power {action}", lambda c, s: control.power_action(c, s, action), window)

    async def power_on(self, target: Target) -> None:
        await self._power(target, "on")

    async def power_off(self, target: Target) -> None:
        await self._power(target, "off")

    async def power_cycle(self, target: Target) -> None:
        await self._power(target, "cycle")

    async def power_reset(self, target: Target) -> None:
        await self._power(target, "reset")

    async def power_soft(self, target: Target) -> None:
        await self._power(target, "soft")

    # -- BootControl ---------------------------------------------------------------------------

    async def get_boot(self, target: Target) -> BootDevice:
        return await self._run(target, "get boot device", control.get_boot)

    async def set_boot(self, target: Target, device: BootTarget, *, persistent: bool = False,
                       uefi: bool = False) -> None:
        await self._run(target, f"set boot device {device}",
                        lambda c, s: control.set_boot(c, s, device, persistent, uefi))

    # -- SensorReader, EventLog, HardwareInventory, BmcControl ----------------------------------

    async def sensors(self, target: Target) -> list[SensorReading]:
        return await self._run(target, "read sensors", readings.sensors)

    async def sel(self, target: Target, *, clear: bool = False) -> list[SelEntry]:
        entries = await self._run(target, "read SEL", readings.read_log)
        if clear:
            await self.clear_sel(target)
        return entries

    async def clear_sel(self, target: Target) -> None:
        await self._run(target, "clear SEL", readings.clear_log)

    async def fru(self, target: Target) -> FruInfo:
        return await self._run(target, "read FRU", readings.fru)

    async def nics(self, target: Target) -> list[NicInfo]:
        """The system's network interfaces and their MACs (``EthernetInterfaces``)."""
        return await self._run(target, "read NICs", readings.nics)

    async def firmware(self, target: Target) -> dict[str, str]:
        """Firmware versions by component (``UpdateService/FirmwareInventory``, else BIOS and BMC)."""
        return await self._run(target, "read firmware versions", readings.firmware)

    async def bmc_reset(self, target: Target) -> None:
        async def reset(call: Call, system: str) -> None:
            manager = await call.get(await manager_path(call, system))
            action = (manager.get("Actions") or {}).get("#Manager.Reset")
            if not isinstance(action, dict) or not isinstance(action.get("target"), str):
                raise call.error(Unsupported, "the manager has no Manager.Reset action")
            allowed = action.get("ResetType@Redfish.AllowableValues")
            reset_type = "GracefulRestart"
            if isinstance(allowed, list) and reset_type not in allowed:
                reset_type = "ForceRestart"
            await call.action(action["target"], {"ResetType": reset_type})
            # The BMC restarts: its session and cached links go with it.
            call.bmc.token = call.bmc.session_uri = None
            call.bmc.root, call.bmc.sessions_uri = None, None
            call.bmc.links.clear()

        await self._run(target, "BMC reset", reset)

    # -- many at once --------------------------------------------------------------------------

    async def gather(self, method: str, targets: Iterable[Target], *args: Any, **kwargs: Any) -> list[Any]:
        """``method`` on every target at once: results in order, a :class:`DriverError` where one failed."""
        fn = getattr(self, method)
        return await asyncio.gather(*(fn(t, *args, **kwargs) for t in targets), return_exceptions=True)

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Delete the Redfish sessions (best effort, a few seconds at most) and close the connections."""
        calls = []
        for key, bmc in self._bmcs.items():
            if bmc.token is not None and key in self._targets:
                target = self._targets[key]
                calls.append(self._call(target, "close session", min(float(target.timeout), 3.0)).logout())
        with contextlib.suppress(Exception):
            await asyncio.gather(*calls, return_exceptions=True)
        await self._http.aclose()

    def close(self) -> None:
        """:meth:`aclose` from code that runs no event loop (sessions are deleted there)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self.aclose())
            return
        raise RuntimeError("RedfishDriver.close() inside an event loop: await driver.aclose()")

    async def __aenter__(self) -> RedfishDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
