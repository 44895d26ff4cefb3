"""IPMI 2.0 over LAN (RMCP+) via pyghmi: power, next boot device, sensors, SEL, FRU and BMC reset.

- :mod:`~fleet.drivers.ipmi.driver`: :class:`IpmiDriver`, the asyncio API, which maps every failure
  into :mod:`fleet.errors`;
- :mod:`~fleet.drivers.ipmi.pool` (parent side), :mod:`~fleet.drivers.ipmi.wire` and
  :mod:`~fleet.drivers.ipmi.worker` (``python -m fleet.drivers.ipmi.worker``): the worker processes,
  each owning a shard of the BMCs with persistent sessions, driving pyghmi from one pump thread;
- :mod:`~fleet.drivers.ipmi.operation`: what an operation is (a generator of :class:`Request`,
  receiving :class:`Response`, failing with :class:`OpError`) and :func:`run_sync` to drive one;
- :mod:`~fleet.drivers.ipmi.ops` and :mod:`~fleet.drivers.ipmi.sdr`: the operations (:data:`OPS`);
- :mod:`~fleet.drivers.ipmi.codes`: the IPMI protocol numbers, shared with the lab BMC;
- :mod:`~fleet.drivers.ipmi._pyghmi_fixes`: the workarounds for pyghmi 1.6.19.

See ``docs/ipmi.md``. The names below are imported on first use, so that importing
:mod:`fleet.drivers.ipmi.codes` (as the lab's BMC server does) loads nothing else of the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .driver import DEFAULT_CIPHER_SUITES, IpmiDriver
    from .operation import (
        ERROR_KINDS,
        BmcState,
        Op,
        OpError,
        Pause,
        Request,
        Response,
        advance,
        completion_error,
        run_sync,
    )
    from .ops import DROPS_SESSION, OPS

__all__ = [
    "DEFAULT_CIPHER_SUITES",
    "DROPS_SESSION",
    "ERROR_KINDS",
    "OPS",
    "BmcState",
    "IpmiDriver",
    "Op",
    "OpError",
    "Pause",
    "Request",
    "Response",
    "advance",
    "completion_error",
    "run_sync",
]

_DRIVER_NAMES = ("DEFAULT_CIPHER_SUITES", "IpmiDriver")
_OPS_NAMES = ("DROPS_SESSION", "OPS")


def __getattr__(name: str) -> Any:
    if name in _DRIVER_NAMES:
        from . import driver as module
    elif name in _OPS_NAMES:
        from . import ops as module
    elif name in __all__:
        from . import operation as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)
