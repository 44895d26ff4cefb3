"""The PXE HTTP server under hostile or unlucky clients: requests it cannot parse, forged callbacks.

The server runs in its own process (``python -m`` of a small runner below), so that its stderr is
captured whole: a flood of bad requests must leave one bounded JSON line each in ``var/http.jsonl``
and nothing on stderr. Clients are raw sockets on loopback, bound to the address they play
(``127.77.0.x``: all of 127/8 is the loopback interface here).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pxe import EvidenceReader, install, render_tree

from .test_pxe_context import sample_tree
from .test_pxe_install import fake_sources

READ_TIMEOUT = 1.5
RUNNER = """
import asyncio, sys
from pxe.serve import PxeServer

async def main():
    srv = PxeServer(sys.argv[1], listen=("127.0.0.1", 0), dnsmasq=False, read_timeout=float(sys.argv[2]))
    await srv.start()
    print(srv.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)   # until the test closes stdin
    await srv.stop()

asyncio.run(main())
"""


@pytest.fixture
def served(tmp_path: Path) -> Any:
    """A tree served by a separate process: yields (root, port, process); its stderr is in a file."""
    root = tmp_path / "pxe"
    install(render_tree(sample_tree(root=str(root))), fake_sources(tmp_path / "src"))
    err = open(tmp_path / "stderr", "w+b")  # noqa: SIM115 - closed below
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(root), str(READ_TIMEOUT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=err, env=env)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline() or 0)
        assert port, (tmp_path / "stderr").read_text()
        yield root, port, proc
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


def _log(root: Path) -> list[dict[str, Any]]:
    path = root / "var/http.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _send(port: int, data: bytes, *, source: str = "127.0.0.1") -> bytes:
    """Send ``data`` as it is, then read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _wait_lines(root: Path, n: int, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(lines := _log(root)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return lines


BAD_REQUESTS = {
    "a 64 KiB URL": b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: pxe\r\n\r\n",
    "a header with invalid bytes": b"GET /boot.ipxe HTTP/1.1\r\nHost: pxe\r\nX-\x01Bad: \xff\x00\x1b[2J\r\n\r\n",
    "a request line of garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    "a header of 64 KiB": b"GET /boot.ipxe HTTP/1.1\r\nHost: pxe\r\nX-Big: " + b"b" * 65536 + b"\r\n\r\n",
}


def test_unparseable_requests_each_leave_one_bounded_log_line_and_nothing_on_stderr(served: Any,
                                                                                     tmp_path: Path) -> None:
    root, port, proc = served
    for what, data in BAD_REQUESTS.items():
        before = len(_log(root))
        answer = _send(port, data)
        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0], what
        lines = _wait_lines(root, before + 1)
        assert len(lines) == before + 1, f"{what}: expected one new log line, got {lines[before:]}"
        rec = lines[-1]
        assert rec["status"] == 400 and rec["bad_request"] and rec["client"] == "127.0.0.1", (what, rec)
        assert rec["method"] is None and rec["path"] is None, (what, rec)
    # a slow loris: half a request head, then nothing; the server closes it at the read deadline
    before = len(_log(root))
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT * 6) as s:
        s.sendall(b"GET /boot.ipxe HTTP/1.1\r\nHost: pxe\r\nX-Slow: ")
        assert s.recv(100) == b"", "the server closes a request head that does not come"
    assert time.monotonic() - t0 < READ_TIMEOUT * 5
    lines = _wait_lines(root, before + 1)
    assert len(lines) == before + 1 and lines[-1]["status"] is None
    assert lines[-1]["bad_request"].startswith("incomplete request (") and lines[-1]["path"] is None
    # a long URL the parser takes is logged, cut short and marked so
    long_path = "/answers/" + "x" * 4000
    assert b" 404 " in _send(port, f"GET {long_path}?token=secret HTTP/1.1\r\nHost: pxe\r\n\r\n".encode())
    rec = _wait_lines(root, before + 2)[-1]
    assert rec["status"] == 404 and rec["truncated"] is True and len(rec["path"]) == 256 and "secret" not in rec["path"]
    # the server kept serving
    answer = _send(port, b"GET /boot.ipxe HTTP/1.1\r\nHost: pxe\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith((root / "http/boot.ipxe").read_bytes())
    lines = _wait_lines(root, before + 3)
    assert (lines[-1]["method"], lines[-1]["path"], lines[-1]["status"]) == ("GET", "/boot.ipxe", 200)
    assert all(len(json.dumps(r)) < 1024 for r in lines), "every line is bounded"
    assert [(e.kind, e.status) for e in EvidenceReader(root).poll()] == [("fetch", 404), ("fetch", 200)], \
        "bad requests are no host's evidence"
    assert proc.poll() is None
    assert (tmp_path / "stderr").read_bytes() == b"", "nothing on the server's stderr"


# ---------------------------------------------------------------------------------------------------
# Forged and replayed callbacks
# ---------------------------------------------------------------------------------------------------


def _cb(port: int, source: str, host: Any, phase: str, token: str | None = None) -> int:
    answer = _send(port, f"GET /cb/{host.hostname}/{phase}?token={token or host.token} HTTP/1.1\r\nHost: pxe\r\n"
                         "Connection: close\r\n\r\n".encode(), source=source)
    return int(answer.split()[1])


def _serve(root: Path) -> Any:
    """The tree at ``root`` served in a thread of this process (HTTP only): (port, stop)."""
    import asyncio
    import threading

    from pxe.serve import PxeServer

    started: list[int] = []
    stop = threading.Event()

    def run() -> None:
        async def main() -> None:
            async with PxeServer(root, listen=("127.0.0.1", 0), dnsmasq=False) as srv:
                started.append(srv.port or 0)
                while not stop.is_set():
                    await asyncio.sleep(0.05)

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert started, "the server did not start"

    def halt() -> None:
        stop.set()
        thread.join(10)

    return started[0], halt


def test_a_callback_counts_only_from_the_hosts_address_with_its_token_once(tmp_path: Path) -> None:
    from .test_pxe_serve import lo_host, lo_tree

    root = tmp_path / "pxe"
    host, neighbour = lo_host("lo10", 10), lo_host("lo11", 11)
    install(render_tree(lo_tree(root, host, neighbour)), fake_sources(tmp_path / "src"))
    port, halt = _serve(root)
    try:
        # the right token from any other address: another loopback address, the neighbour's, the manager's
        assert [_cb(port, src, host, "late") for src in ("127.77.0.99", neighbour.ip, "127.0.0.1")] == [403] * 3
        assert _cb(port, host.ip, host, "early") == 200
        assert _cb(port, host.ip, host, "late") == 200      # counts, and spends the token
        assert _cb(port, host.ip, host, "late") == 403      # a replay
        assert _cb(port, host.ip, host, "early") == 403     # the token is spent for every phase
    finally:
        halt()
    port, halt = _serve(root)  # a restarted server still knows the token is spent
    try:
        assert _cb(port, host.ip, host, "late") == 403
        # a new render (a new boot) issues a new token: it counts, the old one is just bad now
        rebooted = lo_host("lo10", 10, nonce="boot-2")
        expired = lo_host("lo11", 11, nonce="boot-2", token_expires="2020-01-01T00:00:00+00:00")
        install(render_tree(lo_tree(root, rebooted, expired)), fake_sources(tmp_path / "src"))
        assert rebooted.token != host.token
        assert _cb(port, host.ip, rebooted, "late", host.token) == 403
        assert _cb(port, host.ip, rebooted, "late") == 200
        assert _cb(port, neighbour.ip, expired, "late") == 403
    finally:
        halt()
    reasons = [(r["host"].split(".")[0], r["phase"], r["ok"], r.get("reason"), r["client"])
               for r in _log(root) if r.get("phase")]
    assert reasons == [
        ("lo10", "late", False, "wrong-address", "127.77.0.99"), ("lo10", "late", False, "wrong-address", neighbour.ip),
        ("lo10", "late", False, "wrong-address", "127.0.0.1"), ("lo10", "early", True, None, host.ip),
        ("lo10", "late", True, None, host.ip), ("lo10", "late", False, "spent-token", host.ip),
        ("lo10", "early", False, "spent-token", host.ip), ("lo10", "late", False, "spent-token", host.ip),
        ("lo10", "late", False, "bad-token", host.ip), ("lo10", "late", True, None, host.ip),
        ("lo11", "late", False, "expired-token", neighbour.ip)]
    evidence = [e for e in EvidenceReader(root).poll() if e.kind == "callback"]
    assert [(e.ok, e.reason) for e in evidence] == [(ok, reason) for _, _, ok, reason, _ in reasons]
    spent = (root / "var/callbacks-spent.jsonl").read_text()
    assert host.token not in spent and rebooted.token not in spent, "spent tokens are kept as digests only"
