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
