"""What an IPMI operation is: a generator of requests, the errors it raises by kind, how it is driven.

An operation (:data:`Op`) yields :class:`Request` (netfn, command, data) or :class:`Pause` and
receives :class:`Response`; it never does I/O itself. :func:`advance` feeds it one answer (throwing
a completion code it does not accept into it); the worker's pump (:mod:`fleet.drivers.ipmi.worker`)
drives operations over pyghmi sessions, :func:`run_sync` drives one over a plain
``pyghmi.ipmi.command.Command`` (tests). Failures are :class:`OpError` with a kind
(:data:`ERROR_KINDS`) that crosses the process boundary; :class:`fleet.drivers.ipmi.IpmiDriver`
maps it into :mod:`fleet.errors`. :class:`BmcState` is what a worker remembers about one BMC
between operations.

The operations themselves are in :mod:`fleet.drivers.ipmi.ops` and :mod:`fleet.drivers.ipmi.sdr`.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from fleet.errors import (
    AuthFailed,
    DeviceTimeout,
    DeviceUnreachable,
    DriverError,
    FatalError,
    RetryableError,
    Unsupported,
)

from .codes import COMPLETION_TEXT, Cc

__all__ = [
    "ERROR_KINDS",
    "BmcState",
    "Op",
    "OpError",
    "Pause",
    "Request",
    "Response",
    "advance",
    "completion_error",
    "run_sync",
]

# ---------------------------------------------------------------------------------------------
# The language of operations: requests out, responses in, errors by kind
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One IPMI request. ``ok`` lists the completion codes the operation handles itself.

    ``retry=False`` sends once; with ``reply_within`` the operation then receives ``None`` if no
    answer came in that many seconds (BMC cold reset, whose answer may never come).
    """

    netfn: int
    command: int
    data: bytes = b""
    lun: int = 0
    ok: tuple[int, ...] = (0,)
    retry: bool = True
    reply_within: float | None = None


@dataclass(frozen=True)
class Pause:
    """Yielded instead of a request: resume the operation after ``seconds``, sending nothing."""

    seconds: float


@dataclass(frozen=True)
class Response:
    code: int
    data: bytes


class OpError(Exception):
    """An operation failed. ``kind`` says how (see :data:`ERROR_KINDS`); the message is for people."""

    def __init__(self, kind: str, message: str, *, code: int | None = None) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code

    def __reduce__(self) -> Any:
        return (_rebuild_op_error, (self.kind, self.message, self.code))


def _rebuild_op_error(kind: str, message: str, code: int | None) -> OpError:
    return OpError(kind, message, code=code)


#: Error kinds crossing the process boundary, and the fleet error each becomes.
ERROR_KINDS: dict[str, type[DriverError]] = {
    "timeout": DeviceTimeout,
    "unreachable": DeviceUnreachable,
    "auth": AuthFailed,
    "unsupported": Unsupported,
    "retryable": RetryableError,
    "fatal": FatalError,
}

#: Completion codes worth another try later; the rest are fatal or unsupported.
_RETRYABLE_CODES = {Cc.NODE_BUSY, Cc.TIMEOUT, Cc.OUT_OF_SPACE, Cc.RESPONSE_UNAVAILABLE, Cc.DUPLICATED_REQUEST,
                    Cc.FIRMWARE_IN_UPDATE, Cc.BMC_INITIALISING, Cc.DESTINATION_UNAVAILABLE, Cc.UNSPECIFIED}
_UNSUPPORTED_CODES = {Cc.INVALID_COMMAND, Cc.INVALID_FOR_LUN, Cc.DATA_LENGTH_INVALID, Cc.DATA_LENGTH_LIMIT_EXCEEDED,
                      Cc.OUT_OF_RANGE, Cc.CANNOT_RETURN_BYTES, Cc.NOT_PRESENT, Cc.INVALID_DATA_FIELD,
                      Cc.ILLEGAL_FOR_SENSOR, Cc.SUBFUNCTION_DISABLED}


def completion_error(code: int, what: str, hint: str = "") -> OpError:
    """The :class:`OpError` for a non-zero completion code of ``what``."""
    text = COMPLETION_TEXT.get(code, "unknown completion code")
    message = f"{what} failed with completion code 0x{code:02X} ({text})" + (f"; {hint}" if hint else "")
    if code == Cc.INSUFFICIENT_PRIVILEGE:
        kind = "auth"
    elif code in _RETRYABLE_CODES:
        kind = "retryable"
    elif code in _UNSUPPORTED_CODES:
        kind = "unsupported"
    else:
        kind = "fatal"
    return OpError(kind, message, code=code)


@dataclass
class BmcState:
    """What a worker remembers about one BMC between operations (caches), plus the target's options.

    ``model_sdrs`` is shared by every BMC of the worker: the per-model SDR cache.
    """

    options: dict[str, Any] = field(default_factory=dict)
    model_sdrs: dict[tuple, Any] = field(default_factory=dict)
    device: dict[str, Any] | None = None
    sdr: Any = None
    sdr_stamp: tuple | None = None
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    fru_chunk: int | None = None
    sdr_reads: int = 0  # how many times this BMC's SDR repository was read (tests, stats)

    def quirk(self, quirk_id: str) -> Any:
        return (self.options.get("quirks") or {}).get(quirk_id)

    def forget_session_facts(self) -> None:
        """After a BMC reset: the device and its SDRs may have changed."""
        self.device = None
        self.sdr = None
        self.sdr_stamp = None
        self.thresholds.clear()


Op = Generator[Request | Pause, Response | None, Any]

# ---------------------------------------------------------------------------------------------
# Driving an operation
# ---------------------------------------------------------------------------------------------


def run_sync(op: Op, command: Any) -> Any:
    """Drive an operation over a synchronous ``pyghmi.ipmi.command.Command`` (tests, one-off use)."""
    try:
        request = next(op)
        while True:
            if isinstance(request, Pause):
                time.sleep(request.seconds)
                request = op.send(None)
                continue
            rsp = command.raw_command(netfn=request.netfn, command=request.command, data=request.data,
                                      retry=request.retry, rslun=request.lun)
            if not rsp:
                response = None
            elif "code" not in rsp or rsp.get("code") == 0xFFFF:
                raise OpError("timeout", f"no answer to netfn 0x{request.netfn:02X} cmd 0x{request.command:02X}")
            else:
                response = Response(rsp["code"], bytes(rsp.get("data", b"")))
            request = advance(op, request, response)
    except StopIteration as done:
        return done.value


def advance(op: Op, request: Request, response: Response | None) -> Request:
    """Feed ``response`` to ``op``; a completion code ``request`` does not accept is thrown into it."""
    if response is not None and response.code not in request.ok:
        return op.throw(completion_error(response.code, f"netfn 0x{request.netfn:02X} command "
                                                        f"0x{request.command:02X}"))
    return op.send(response)
