"""Workarounds for defects of pyghmi 1.6.19, and the few hooks Rackfleet needs into its session layer.

Everything that touches pyghmi's private session module (``pyghmi.ipmi.private.session``) lives in
this one module, so that a pyghmi upgrade is a review of one file. pyghmi is pinned to exactly
:data:`PYGHMI_VERSION` in ``pyproject.toml``; :func:`apply` refuses any other version, because the
patches replace functions whose bodies they assume.

How Rackfleet uses pyghmi (see ``fleet/drivers/ipmi/worker.py``): in each worker process exactly one
thread (the *pump*) calls pyghmi. Sessions log in asynchronously (``onlogon`` callbacks) and
commands are sent with callbacks; the pump turns pyghmi's event loop with
``Session.wait_for_rsp(timeout)``. Nothing else in the process calls pyghmi, so pyghmi's
cross-thread defects (4 below) cannot occur, and deadlines are kept by the pump, outside pyghmi.

The defects, each with a test in ``tests/test_pyghmi_fixes.py`` that reproduces it, and the text we
would send upstream (https://opendev.org/x/pyghmi):

1. **String credentials break a reconnect after logout()** — worked around by :func:`as_bytes`.
   Upstream: ``Session.__new__`` looks sessions up by the caller's ``userid``/``password`` but
   ``__init__`` stores them encoded (bytes) and ``_mark_broken`` deletes the ``initting_sessions``
   entry under the encoded key, so with ``str`` credentials a broken session's entry is never removed
   and the next ``Session(...)`` with the same credentials is handed that dead object ("Session no
   longer connected"). Normalise ``userid``/``password``/``kg`` to bytes at the top of ``__new__``.

2. **Lost wake-up: a reply that arrives before the waiter registers is only noticed at the next
   retransmit timeout** (0.5-1.9 s stalls on ~10-20% of fresh sessions) — fixed by :func:`_io_wait`.
   Upstream: ``_io_wait`` appends its event to ``ioqueue`` *after* the IO thread may already have
   received the reply and drained ``ioqueue``; the poke it sends carries no address, so a directed
   waiter (or an undirected one, ``_poller``) sleeps until its deadline although the packet sits in
   the session's ``pktqueue`` (or in ``sessionqueue``). After queueing the event, ``_io_wait`` should
   check whether data for its address (any session's ``pktqueue`` for that sockaddr; for an
   undirected wait, ``sessionqueue``) is already there, and if so return at once.

3. **Lock-order deadlock between KEEPALIVE_SESSIONS and WAITING_SESSIONS under a retransmit** —
   fixed by making them one lock. Upstream: ``send_payload`` holds ``KEEPALIVE_SESSIONS`` and then
   takes ``WAITING_SESSIONS`` in ``_xmit_packet``; ``wait_for_rsp`` and ``awaitresponse`` hold
   ``WAITING_SESSIONS`` and call ``_timedout`` -> ``send_payload``, which takes
   ``KEEPALIVE_SESSIONS``. Two threads, one retransmitting, one sending, deadlock. Both tables are
   always touched together; a single ``RLock`` for both removes the inversion.

4. **Whoever turns the event loop runs every session's callbacks**: ``wait_for_rsp`` drains the
   shared ``sessionqueue``, so thread B completes thread A's login, including A's synchronous
   privilege request; with many threads logins hop between threads and stall (about 30% of
   32-thread runs took ~20 s instead of ~1 s). Worked around by design (one pyghmi thread per
   process, :func:`assert_pump_thread`). Upstream: document that the synchronous API is not safe for
   concurrent use from several threads, or route packets to the thread that owns the session.

5. **The last login step blocks even for asynchronous sessions**: ``_req_priv_level`` sends Set
   Session Privilege Level with a *synchronous* ``raw_command``, so an ``onlogon`` session holds up
   the caller's event loop for a round trip, or for the whole retry budget if the BMC stops
   answering right then. Fixed by :func:`_req_priv_level` (the same request with a callback).
   Upstream: for ``async_`` sessions, send the privilege request with a callback and call
   ``onlogon`` from it.

6. **Tearing a session down blocks while a command is in flight**: ``logout()``/``_mark_broken()``
   send Close Session through ``raw_command``, which first waits in ``_cmdwait`` until the in-flight
   command's retry budget runs out (up to ~29 s against a dead BMC). Fixed by :func:`discard`, which
   abandons the in-flight command first. Upstream: ``_mark_broken`` should clear ``incommand`` and
   ``lastpayload`` before logging out.

7. **The IO thread can block forever in recvfrom()**: ``_io_sendto`` (called from any thread) puts
   the shared UDP socket in *blocking* mode for its send, while the IO thread's ``_io_recvfrom`` sets
   non-blocking mode and then reads. If a send lands between those two steps, the IO thread's read
   blocks until some datagram arrives; every waiter (all of ``ioqueue``) hangs meanwhile. At the end
   of a sweep, with only dead BMCs left, nothing arrives and the process wedges. Fixed by
   :func:`_io_sendto` (sockets stay non-blocking; a send that would block is dropped like a lost
   packet and retransmitted) and by bounding the wait in :func:`_io_wait`. Upstream: never toggle
   the blocking mode of a socket shared between threads; keep them non-blocking and send with
   ``MSG_DONTWAIT``; and give ``_io_wait``'s ``evt.wait()`` its deadline as a timeout.

8. **The clock is a system call with 10 ms resolution**: ``_monotonic_time()`` is ``os.times()[4]``,
   read several times per packet (~49,000 calls and 1.7 s of a worker's 10 s in a 10,000-BMC
   sweep), and ticking in 10 ms steps, so every timer rounds to 10 ms. Fixed by using
   ``time.monotonic`` (vDSO, nanoseconds). Upstream: ``_monotonic_time = time.monotonic``.

9. **wait_for_rsp() scans every logged-in session, twice, on every call**, for keepalive timers: with
   2,500 sessions per process that is ~1 ms per event-loop turn, most of a warm sweep's CPU. Worked
   around by :func:`detach_keepalive`: Rackfleet's pump keeps its idle sessions alive itself, from
   its once-a-second housekeeping. Upstream: keep keepalive deadlines in a heap.

Hooks (not defects): :func:`set_login_policy` chooses the cipher suite per session (pyghmi always
proposes suite 17 and silently falls back to 3; Rackfleet follows the profile's order, and never
falls back to a suite the profile does not list), and :func:`wake` interrupts the pump's wait when a
request arrives from the parent process.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import Any

from .codes import CC_PRIVILEGE_EXCEEDS_LIMIT, CC_PRIVILEGE_NOT_AVAILABLE, AppCmd, NetFn, Privilege

__all__ = [
    "PYGHMI_VERSION",
    "SUPPORTED_CIPHER_SUITES",
    "apply",
    "as_bytes",
    "assert_pump_thread",
    "detach_keepalive",
    "discard",
    "login_policy",
    "wake",
]

PYGHMI_VERSION = "1.6.19"
#: Cipher suites pyghmi can speak: 17 (HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128) and 3 (the SHA-1 set).
SUPPORTED_CIPHER_SUITES = (17, 3)

_applied = False
_apply_lock = threading.Lock()
_policy = threading.local()
_pump_thread: int | None = None
_waker: socket.socket | None = None


def apply() -> None:
    """Install the fixes into pyghmi's session module (idempotent). Call before the first Session."""
    global _applied
    with _apply_lock:
        if _applied:
            return
        installed = metadata.version("pyghmi")
        if installed != PYGHMI_VERSION:
            raise RuntimeError(f"fleet.drivers.ipmi._pyghmi_fixes is written for pyghmi {PYGHMI_VERSION}, "
                               f"found {installed}: review the fixes before changing the pin")
        from pyghmi.ipmi.private import session as ps

        # 8: a cheap clock with sub-millisecond resolution (before any session takes a reading).
        ps._monotonic_time = time.monotonic
        # 3: one lock for both session tables.
        ps.WAITING_SESSIONS = ps.KEEPALIVE_SESSIONS
        # 2 and 7: no lost wake-ups, no unbounded waits; 7: sends never make a socket blocking.
        ps._io_wait = _io_wait
        ps._io_sendto = _io_sendto
        # 5: asynchronous privilege request for onlogon sessions.
        ps.Session._rf_orig_req_priv_level = ps.Session._req_priv_level
        ps.Session._req_priv_level = _req_priv_level
        # cipher-suite policy, applied at every (re)login.
        ps.Session._rf_orig_initsession = ps.Session._initsession
        ps.Session._initsession = _initsession
        ps.Session._rf_orig_got_rmcp_response = ps.Session._got_rmcp_response
        ps.Session._got_rmcp_response = _got_rmcp_response
        _applied = True


def as_bytes(userid: str | bytes, password: str | bytes) -> tuple[bytes, bytes]:
    """Defect 1: hand pyghmi bytes credentials, never ``str``."""
    u = userid.encode("utf-8") if isinstance(userid, str) else bytes(userid)
    p = password.encode("utf-8") if isinstance(password, str) else bytes(password)
    return u, p


# --- 2: the lost wake-up ------------------------------------------------------------------------


def _arrived(ps: Any, myaddr: Any) -> bool:
    """Is data for this waiter already queued (so the IO thread will not wake it again)?"""
    if myaddr is None:
        return bool(ps.sessionqueue)
    handlers = ps.Session.bmc_handlers.get(myaddr)
    return bool(handlers) and any(s.pktqueue for s in list(handlers.values()))


def _io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
    """pyghmi's ``_io_wait``, plus: return at once if the awaited data arrived before we queued."""
    from pyghmi.ipmi.private import session as ps

    evt = threading.Event()
    if evq is not None:
        evq.append(evt)
    deadline = timeout + ps._monotonic_time()
    ps.ioqueue.append((deadline, evt, myaddr))
    if _arrived(ps, myaddr):
        # The IO thread will still pop our entry and set the event; nobody waits on it.
        return
    if deadline < ps.selectdeadline:
        intsock = ps.iosockets[0]
        _io_sendto(intsock, b"\x01", (ps.myself, intsock.getsockname()[1]))
    # 7: bounded. Returning without the event is harmless: every caller loops and re-checks.
    evt.wait(max(0.0, timeout) + 0.1)


def _io_sendto(mysocket: socket.socket, packet: bytes, sockaddr: Any) -> None:
    """pyghmi's ``_io_sendto`` without ``setblocking(1)``: a send that would block is a lost packet."""
    with contextlib.suppress(OSError):
        mysocket.sendto(packet, socket.MSG_DONTWAIT, sockaddr)


# --- 5: asynchronous privilege request -------------------------------------------------------------


def _req_priv_level(self: Any) -> None:
    """Set Session Privilege Level with a callback for ``onlogon`` sessions (sync ones as before)."""
    if not self.async_:
        return self._rf_orig_req_priv_level()
    self.logged = 1
    self.logoutexpiry = None
    self.maxtimeout = 4
    # No silent re-login in the middle of a command: its callback would be lost (the relogin
    # resets ipmicallback). The command fails with a timeout and Rackfleet opens a new session.
    self.logontries = 0
    asked = [self.privlevel]

    def _got_priv(response: dict) -> None:
        self.incommand = False
        while self.evq:
            self.evq.popleft().set()
        code = response.get("code", 0xFFFF)
        if ("error" not in response and code in (CC_PRIVILEGE_NOT_AVAILABLE, CC_PRIVILEGE_EXCEEDS_LIMIT)
                and asked[0] == Privilege.ADMINISTRATOR):
            # As pyghmi does: some BMCs accept the session but not admin; ask for operator.
            asked[0] = self.privlevel = Privilege.OPERATOR
            self.raw_command(netfn=NetFn.APP, command=AppCmd.SET_SESSION_PRIVILEGE_LEVEL, data=[Privilege.OPERATOR],
                             callback=_got_priv)
            return
        if "error" in response or code:
            from pyghmi.ipmi.private import util

            self.logged = 0
            self.logging = False
            err = util.get_ipmi_error(response, suffix=f" while requesting privilege level {asked[0]}")
            self.onlogon({"error": err or "privilege request failed"})
            return
        self.logging = False
        from pyghmi.ipmi.private import session as ps

        with ps.KEEPALIVE_SESSIONS:
            ps.Session.keepalive_sessions[self] = {
                "ipmisession": self,
                "timeout": ps._monotonic_time() + ps.MAX_IDLE - random.random() * 4.9,
            }
        self.onlogon({"success": True})

    self.raw_command(netfn=NetFn.APP, command=AppCmd.SET_SESSION_PRIVILEGE_LEVEL, data=[self.privlevel],
                     callback=_got_priv)
    return None


# --- cipher-suite policy ----------------------------------------------------------------------------


@contextlib.contextmanager
def login_policy(cipher_suites: Sequence[int]) -> Iterator[None]:
    """Sessions created in this block propose ``cipher_suites`` in order (17 and/or 3).

    pyghmi's default is "17, then 3 if the BMC refuses 17". A profile that lists only [3]
    (ipmi_sim) skips the refused proposal; one that lists only [17] never falls back to SHA-1.
    """
    suites = tuple(s for s in cipher_suites if s in SUPPORTED_CIPHER_SUITES)
    if not suites:
        raise ValueError(f"none of the cipher suites {list(cipher_suites)} is supported "
                         f"(pyghmi speaks {list(SUPPORTED_CIPHER_SUITES)})")
    previous = getattr(_policy, "suites", None)
    _policy.suites = suites
    try:
        yield
    finally:
        _policy.suites = previous


def _initsession(self: Any) -> None:
    self._rf_orig_initsession()
    suites = self.__dict__.get("_rf_suites")
    if suites is None:
        suites = self._rf_suites = getattr(_policy, "suites", None) or SUPPORTED_CIPHER_SUITES
    # pyghmi's attemptedhash: 256 proposes suite 17, 1 proposes suite 3.
    self.attemptedhash = 256 if suites[0] == 17 else 1


def _got_rmcp_response(self: Any, data: Any) -> Any:
    suites = self.__dict__.get("_rf_suites") or SUPPORTED_CIPHER_SUITES
    if (data[1] != 0 and self.attemptedhash == 256 and 3 not in suites
            and self.sessioncontext not in (None, "ESTABLISHED") and data[0] == self.rmcptag):
        from pyghmi.ipmi.private import constants

        reason = constants.rmcp_codes.get(data[1], f"RMCP+ status {data[1]}")
        self.onlogon({"error": f"{reason} (cipher suite 17 refused; the profile allows only 17)"})
        return -9
    return self._rf_orig_got_rmcp_response(data)


# --- 4: one pyghmi thread per process -------------------------------------------------------------


def assert_pump_thread() -> None:
    """Defect 4: the first caller becomes the only thread allowed to call pyghmi in this process."""
    global _pump_thread
    me = threading.get_ident()
    if _pump_thread is None:
        _pump_thread = me
    elif _pump_thread != me:
        raise RuntimeError("pyghmi is used from a second thread; Rackfleet drives it from one pump thread")


# --- 6: non-blocking teardown ------------------------------------------------------------------------


def discard(session: Any) -> None:
    """Forget ``session`` now: stop its retransmits and keepalives without waiting for an answer."""
    from pyghmi.ipmi.private import session as ps

    session.incommand = False
    session.lastpayload = None
    session.onlogpayload = None
    session.pendingpayloads.clear()
    while session.evq:
        session.evq.popleft().set()
    with ps.KEEPALIVE_SESSIONS:
        ps.Session.waiting_sessions.pop(session, None)
        ps.Session.keepalive_sessions.pop(session, None)
    if getattr(session, "logged", 0) and session.sockaddr is not None:
        # Close Session, sent once and not awaited (retry=False returns at once).
        with contextlib.suppress(Exception):
            session.raw_command(netfn=NetFn.APP, command=AppCmd.CLOSE_SESSION,
                                data=tuple(session.sessionid.to_bytes(4, "little")),
                                retry=False, callback=lambda _rsp: None)
        session.incommand = False
        session.lastpayload = None
    session.logged = 0
    session.logging = False
    with contextlib.suppress(Exception):
        session._mark_broken("discarded")
    session.incommand = False


# --- 9: keepalives by the owner --------------------------------------------------------------------


def detach_keepalive(session: Any) -> None:
    """Take ``session`` out of pyghmi's keepalive table; its owner now keeps it alive (or lets it go)."""
    from pyghmi.ipmi.private import session as ps

    with ps.KEEPALIVE_SESSIONS:
        ps.Session.keepalive_sessions.pop(session, None)


# --- waking the pump --------------------------------------------------------------------------------


def wake() -> None:
    """Interrupt a ``Session.wait_for_rsp`` in progress (from any thread).

    pyghmi wakes undirected waiters only when a datagram of 4 bytes or more arrives from some
    address; its own 1-byte poke does not count. We send such a datagram from a private socket to
    pyghmi's first IO socket on loopback; pyghmi ignores it as coming from no known BMC.
    """
    global _waker
    from pyghmi.ipmi.private import session as ps

    if not ps.iosockets or ps.myself is None:
        return
    target = ps.iosockets[0]
    if _waker is None or _waker.family != target.family:
        _waker = socket.socket(target.family, socket.SOCK_DGRAM)
        _waker.setblocking(False)
    with contextlib.suppress(OSError):
        _waker.sendto(b"wake", (ps.myself, target.getsockname()[1]))
