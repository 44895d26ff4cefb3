"""The wire between the IPMI driver's parent process and its workers, and what both sides assume.

Frames of ``4-byte big-endian length + pickle(list of messages)`` over a Unix socket pair.
Parent to worker: ``("run", req_id, op, args, (host, port, username, password, cipher_suites),
options, deadline, timeout)`` and ``("stop",)``; worker to parent: ``("hello", 0, pid)``,
``("done", req_id, result)`` and ``("fail", req_id, OpError)``. A request carries the BMC password
as bytes (a :class:`~inventory.secrets.Secret` refuses pickling); requests are never logged.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

__all__ = ["KEEPALIVE_S", "pack_frame", "unpack_frames"]

_HEADER = struct.Struct(">I")
#: Seconds of silence after which the pump sends a keepalive on an idle session (BMCs commonly end
#: sessions after 60 s; pyghmi uses 24-29 s).
KEEPALIVE_S = 20.0
_MAX_FRAME = 256 * 1024 * 1024


def pack_frame(messages: list[Any]) -> bytes:
    """One frame holding ``messages``."""
    body = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def unpack_frames(buf: bytearray) -> list[list[Any]]:
    """Whole frames at the start of ``buf`` (removed from it)."""
    out = []
    while len(buf) >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buf)
        if size > _MAX_FRAME:
            raise ValueError(f"frame of {size} bytes is too large")
        if len(buf) < _HEADER.size + size:
            break
        out.append(pickle.loads(bytes(buf[_HEADER.size:_HEADER.size + size])))
        del buf[:_HEADER.size + size]
    return out
