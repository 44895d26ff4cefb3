"""PXE serving: the HTTP server (files, no traversal, callbacks, JSONL access log), the real dnsmasq.

HTTP tests run on 127.0.0.1 with a free port and no dnsmasq. The dnsmasq tests run the real dnsmasq
on the loopback interface (DHCP has nobody to answer there; TFTP does) and need root.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pxe import EvidenceReader, PxeServer, ServeError, TreeContext, install, render_tree
from pxe.context import HostContext, Network, callback_token
from pxe.serve import check_config, check_privileges, dnsmasq_command, find_dnsmasq, unreadable_for_others

from .peers import missing_peer
from .test_pxe_context import KEY, sample_host, sample_tree
from .test_pxe_install import fake_sources


@pytest.fixture
def tree_root(tmp_path: Path) -> Path:
    root = tmp_path / "pxe"
    install(render_tree(sample_tree(root=str(root))), fake_sources(tmp_path / "src"))
    return root


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), 60))


async def raw_get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    """A request with the path exactly as given (clients normalise '..'; an attacker does not)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: pxe\r\nConnection: close\r\n\r\n".encode("latin-1"))
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def http_server(root: Path) -> PxeServer:
    return PxeServer(root, listen=("127.0.0.1", 0), dnsmasq=False)


def access_log(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "var/http.jsonl").read_text().splitlines()]


def test_serves_files_read_only(tree_root: Path) -> None:
    async def go() -> None:
        async with http_server(tree_root) as srv:
            assert srv.port and srv.url == f"http://127.0.0.1:{srv.port}" and srv.pid is None
            status, body = await raw_get(srv.port, "/boot.ipxe")
            assert status == 200 and body == (tree_root / "http/boot.ipxe").read_bytes()
            status, body = await raw_get(srv.port, "/answers/deb-ipxe.lab.example.net/preseed.cfg")
            assert status == 200 and body.startswith(b"# Debian preseed for deb-ipxe")
            status, body = await raw_get(srv.port, "/images/debian-12/vmlinuz")
            assert status == 200 and body == b"img/debian-12/linux"
            status, body = await raw_get(srv.port, "/boot.ipxe", "HEAD")
            assert status == 200 and body == b""
            for path in ("/", "/answers/", "/answers", "/nothing.ipxe"):
                assert (await raw_get(srv.port, path))[0] == 404, path
            assert (await raw_get(srv.port, "/boot.ipxe", "POST"))[0] == 405
            assert (await raw_get(srv.port, "/boot.ipxe", "PUT"))[0] == 405

    run(go)
    log = access_log(tree_root)
    assert [(r["method"], r["path"], r["status"]) for r in log[:4]] == [
        ("GET", "/boot.ipxe", 200), ("GET", "/answers/deb-ipxe.lab.example.net/preseed.cfg", 200),
        ("GET", "/images/debian-12/vmlinuz", 200), ("HEAD", "/boot.ipxe", 200)]
    assert log[0]["bytes"] == (tree_root / "http/boot.ipxe").stat().st_size
    assert log[0]["client"] == "127.0.0.1" and log[0]["ts"].endswith("+00:00")
    assert set(log[0]) == {"ts", "client", "method", "path", "status", "bytes"}


TRAVERSALS = [
    "/../hosts.json", "/%2e%2e/hosts.json", "/answers/..%2f..%2fhosts.json", "/answers/%2e%2e/%2e%2e/hosts.json",
    "//etc/passwd", "/..%5chosts.json", "/answers/deb-ipxe.lab.example.net/../../../hosts.json",
    "/hosts.json", "/../var/http.jsonl", "/%00", "/./boot.ipxe", "/hosts//52-54-00-77-00-0a.ipxe",
    "/escape", "/escape-dir/hosts.json", "/../../../../../../etc/passwd",
]


def test_no_path_traversal(tree_root: Path) -> None:
    (tree_root / "http/escape").symlink_to(tree_root / "hosts.json")
    (tree_root / "http/escape-dir").symlink_to(tree_root)

    async def go() -> list[tuple[str, int, bytes]]:
        async with http_server(tree_root) as srv:
            return [(p, *await raw_get(srv.port or 0, p)) for p in TRAVERSALS]

    for path, status, body in run(go):
        assert status in (400, 404), (path, status)
        assert b"token" not in body and b"root:" not in body, path


LO_NET = Network("127.77.0.0/24")


def lo_host(name: str, last: int, nonce: str = "boot-1", **extra: Any) -> HostContext:
    """A host whose address is on loopback (127.77.0.LAST), so a test can play it: bind to that address."""
    fqdn = f"{name}.lab.example.net"
    return HostContext(hostname=fqdn, mac=f"52:54:00:77:02:{last:02x}", ip=f"127.77.0.{last}", os="debian-12",
                       manager_url="http://127.77.0.1:8080", network=LO_NET, token=callback_token(KEY, fqdn, nonce),
                       **extra)


def lo_tree(root: Path, *hosts: HostContext) -> TreeContext:
    return TreeContext(root=str(root), manager_url="http://127.77.0.1:8080", server_ip="127.77.0.1", network=LO_NET,
                       hosts=hosts, interface="lo")


async def raw_get_from(source: str, port: int, path: str, method: str = "GET") -> int:
    """A request from the loopback address ``source`` (the host it plays)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: pxe\r\nConnection: close\r\n\r\n".encode("latin-1"))
    await writer.drain()
    data = await reader.read()
    writer.close()
    return int(data.split()[1])


def test_callbacks(tmp_path: Path) -> None:
    root = tmp_path / "pxe"
    host, other = lo_host("lo10", 10), lo_host("lo11", 11)
    install(render_tree(lo_tree(root, host, other)), fake_sources(tmp_path / "src"))
    cb = f"/cb/{host.hostname}"

    async def go() -> list[int]:
        async with http_server(root) as srv:
            port = srv.port or 0
            return [
                await raw_get_from(host.ip, port, f"{cb}/early?token={host.token}"),
                await raw_get_from(host.ip, port, f"{cb}/early?token={'0' * 32}"),
                await raw_get_from(host.ip, port, f"{cb}/early"),
                await raw_get_from(host.ip, port, f"{cb}/done?token={host.token}"),
                await raw_get_from(host.ip, port, f"/cb/nobody.example.net/early?token={host.token}"),
                await raw_get_from(host.ip, port, f"/cb/{other.hostname}/early?token={host.token}"),
                await raw_get_from(host.ip, port, f"{cb}/late?token={host.token}", "POST"),
            ]

    assert run(go) == [200, 403, 403, 404, 404, 403, 200]
    log = access_log(root)
    assert [(r["host"], r["phase"], r["ok"], r["status"], r.get("reason")) for r in log[:3]] == [
        (host.hostname, "early", True, 200, None), (host.hostname, "early", False, 403, "bad-token"),
        (host.hostname, "early", False, 403, "bad-token")]
    assert [r.get("reason") for r in log[3:6]] == ["unknown-phase", "unknown-host", "wrong-address"]
    assert all("token" not in r["path"] for r in log), "tokens are not written to the log"
    evidence = [e for e in EvidenceReader(root).poll() if e.kind == "callback"]
    assert [(e.hostname, e.phase, e.ok, e.mac, e.reason) for e in (evidence[0], evidence[-1])] == [
        (host.hostname, "early", True, host.mac, None), (host.hostname, "late", True, host.mac, None)]


def test_fetch_evidence_names_the_host(tree_root: Path) -> None:
    async def go() -> None:
        async with http_server(tree_root) as srv:
            await raw_get(srv.port or 0, "/hosts/52-54-00-77-00-0d.ipxe")
            await raw_get(srv.port or 0, "/answers/rocky.lab.example.net/ks.cfg")
            await raw_get(srv.port or 0, "/answers/rocky.lab.example.net/missing")

    run(go)
    ev = EvidenceReader(tree_root).poll()
    assert [(e.kind, e.hostname, e.path, e.status, e.ok) for e in ev] == [
        ("fetch", "ubu.lab.example.net", "http/hosts/52-54-00-77-00-0d.ipxe", 200, True),
        ("fetch", "rocky.lab.example.net", "http/answers/rocky.lab.example.net/ks.cfg", 200, True),
        ("fetch", "rocky.lab.example.net", "http/answers/rocky.lab.example.net/missing", 404, False)]


def test_a_new_tree_is_served_without_a_restart(tree_root: Path, tmp_path: Path) -> None:
    newcomer = sample_host("newcomer", 0x50)

    async def go() -> tuple[int, int, int]:
        async with http_server(tree_root) as srv:
            port = srv.port or 0
            before = (await raw_get(port, f"/cb/{newcomer.hostname}/early?token={newcomer.token}"))[0]
            tree = sample_tree(root=str(tree_root), hosts=(*sample_tree().hosts, newcomer))
            await asyncio.to_thread(install, render_tree(tree), fake_sources(tmp_path / "src"))
            # known now (403: this test's 127.0.0.1 is not its address), no longer 404
            after = (await raw_get(port, f"/cb/{newcomer.hostname}/early?token={newcomer.token}"))[0]
            script = (await raw_get(port, "/hosts/52-54-00-77-00-50.ipxe"))[0]
            return before, after, script

    assert run(go) == (404, 403, 200)
    log = access_log(tree_root)
    assert len(log) == 3 and log[1]["reason"] == "wrong-address"  # the log went on in the new tree's var/


def test_not_a_tree(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match="not an installed tree"):
        PxeServer(tmp_path)
    with pytest.raises(ServeError, match="render it first"):
        run(PxeServer(tmp_path, listen=("127.0.0.1", 0), dnsmasq=False).start)


def test_port_in_use(tree_root: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        srv = PxeServer(tree_root, listen=("127.0.0.1", port), dnsmasq=False)
        with pytest.raises(ServeError, match=f"cannot listen on 127.0.0.1:{port}"):
            run(srv.start)


def test_dnsmasq_command(tree_root: Path, tmp_path: Path) -> None:
    cmd = dnsmasq_command(tree_root, dnsmasq="/usr/sbin/dnsmasq")
    assert cmd == ["/usr/sbin/dnsmasq", "--keep-in-foreground", f"--conf-file={tree_root}/dnsmasq.conf"]
    assert dnsmasq_command(tree_root, interface="br0", dnsmasq="d", user="root") == [
        "d", "--keep-in-foreground", f"--conf-file={tree_root}/dnsmasq.conf", "--user=root"]
    with pytest.raises(ServeError, match="serves interface br0, not eth9"):
        dnsmasq_command(tree_root, interface="eth9", dnsmasq="d")
    bare = tmp_path / "bare"
    install(render_tree(sample_tree(root=str(bare), interface="")), fake_sources(tmp_path / "src"))
    with pytest.raises(ServeError, match="names no interface"):
        dnsmasq_command(bare, dnsmasq="d")
    assert dnsmasq_command(bare, interface="eth9", dnsmasq="d")[-1] == "--interface=eth9"


# ---------------------------------------------------------------------------------------------------
# The real dnsmasq
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def dnsmasq() -> str:
    exe = find_dnsmasq()
    if exe is None:
        missing_peer("dnsmasq is not installed")
    return exe  # type: ignore[return-value]


@pytest.mark.peer
@pytest.mark.parametrize("variant", ["full", "bare", "one-loader", "two-networks", "many-networks"])
def test_dnsmasq_accepts_every_generated_config(tmp_path: Path, dnsmasq: str, variant: str) -> None:
    net2 = Network("10.78.0.0/24", dns=("10.78.0.53",), domain="far.example.net")
    far = HostContext(hostname="far.example.net", mac="52:54:00:77:00:10", ip="10.78.0.5", os="debian-12",
                      manager_url="http://10.77.0.1:8080", network=net2,
                      token=callback_token(KEY, "far.example.net", "boot-1"))
    kwargs: dict[str, Any] = {"full": {}, "bare": {"interface": "", "ra_prefix": "", "dnsmasq_user": "nobody"},
                              "one-loader": {"hosts": (sample_host(),)},
                              "two-networks": {"hosts": (*sample_tree().hosts, far), "network": None},
                              "many-networks": {"hosts": _many(300), "network": None}}[variant]
    root = tmp_path / "pxe"
    install(render_tree(sample_tree(root=str(root), **kwargs)), fake_sources(tmp_path / "src"))
    assert "syntax check OK" in check_config(root / "dnsmasq.conf", dnsmasq=dnsmasq)


def _many(n: int) -> tuple[HostContext, ...]:
    """n hosts, each on its own /24 (a tree for many racks)."""
    hosts = []
    for i in range(n):
        net = Network(f"10.{100 + i // 256}.{i % 256}.0/24", gateway=f"10.{100 + i // 256}.{i % 256}.1")
        name = f"h{i:04d}.example.net"
        hosts.append(HostContext(hostname=name, mac=f"52:54:01:00:{i // 256:02x}:{i % 256:02x}",
                                 ip=f"10.{100 + i // 256}.{i % 256}.10", os="debian-12",
                                 manager_url="http://10.77.0.1:8080", network=net,
                                 token=callback_token(KEY, name, "boot-1")))
    return tuple(hosts)


@pytest.mark.peer
def test_dnsmasq_refusal_is_reported(tmp_path: Path, dnsmasq: str) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("port=0\ndhcp-range=not-an-address\n")
    with pytest.raises(ServeError, match="dnsmasq refuses"):
        check_config(conf, dnsmasq=dnsmasq)


def _lo_tree(root: Path, port: int) -> TreeContext:
    net = Network("127.77.0.0/24")
    host = HostContext(hostname="lo1.lab.example.net", mac="52:54:00:77:01:01", ip="127.77.0.11", os="debian-12",
                       manager_url=f"http://127.0.0.1:{port}", network=net,
                       token=callback_token(KEY, "lo1.lab.example.net", "boot-1"))
    return TreeContext(root=str(root), manager_url=f"http://127.0.0.1:{port}", server_ip="127.0.0.1", network=net,
                       hosts=(host,), interface="lo", ra_prefix="", dnsmasq_user="root")


def tftp_get(name: str, port: int = 69) -> bytes:
    """A minimal TFTP read (RFC 1350, octet mode)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", ("127.0.0.1", port))
        data = b""
        while True:
            pkt, addr = s.recvfrom(70000)
            op, block = struct.unpack("!HH", pkt[:4])
            if op == 5:
                raise FileNotFoundError(pkt[4:].rstrip(b"\x00").decode())
            data += pkt[4:]
            s.sendto(struct.pack("!HH", 4, block), addr)
            if len(pkt) - 4 < 512:
                return data


@pytest.mark.peer
def test_real_dnsmasq_serves_tftp_and_leaves_evidence(tmp_path: Path, dnsmasq: str) -> None:
    if os.geteuid() != 0:
        missing_peer("running dnsmasq's DHCP/TFTP needs root")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "pxe"
    install(render_tree(_lo_tree(root, port)), fake_sources(tmp_path / "src"))

    async def go() -> tuple[int | None, bytes, str]:
        async with PxeServer(root, dnsmasq=dnsmasq) as srv:
            pid = srv.pid
            assert pid and Path(f"/proc/{pid}").exists()
            data = await asyncio.to_thread(tftp_get, "undionly.kpxe")
            with pytest.raises(FileNotFoundError) as err:
                await asyncio.to_thread(tftp_get, "nothing.efi")
            status, _ = await raw_get(port, "/boot.ipxe")
            assert status == 200
        return pid, data, str(err.value)

    pid, data, err = run(go)
    assert data == (root / "tftp/undionly.kpxe").read_bytes()
    assert "not found" in err
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    log = (root / "var/dnsmasq.log").read_text()
    assert "started, version" in log and "exiting on receipt of SIGTERM" in log
    evidence = EvidenceReader(root).poll()
    tftp = [(e.path, e.ip, e.ok) for e in evidence if e.kind == "tftp"]
    assert ("tftp/undionly.kpxe", "127.0.0.1", True) in tftp and ("tftp/nothing.efi", "127.0.0.1", False) in tftp
    assert [e.path for e in evidence if e.kind == "fetch"] == ["http/boot.ipxe"]


def test_privileges_checked_before_dnsmasq_starts(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root's dnsmasq drops privileges")
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    root = private / "pxe"
    install(render_tree(sample_tree(root=str(root))), fake_sources(tmp_path / "src"))
    blocked = unreadable_for_others(root / "tftp")
    assert blocked is not None and blocked in (private, *private.parents)
    with pytest.raises(ServeError, match=r"drops to user nobody, which cannot enter .* \(no o\+x\)"):
        check_privileges(root)
    check_privileges(root, "root")  # dnsmasq stays root: fine
    srv = PxeServer(root, listen=("127.0.0.1", 0), dnsmasq="/bin/false")
    with pytest.raises(ServeError, match="cannot enter"):
        run(srv.start)
    assert not (root / "var/http.jsonl").read_text()  # the HTTP server was stopped again


@pytest.mark.peer
def test_dnsmasq_start_failure_is_reported(tmp_path: Path, dnsmasq: str) -> None:
    root = tmp_path / "pxe"
    tree = _lo_tree(root, 1)
    install(render_tree(TreeContext(**{**{f: getattr(tree, f) for f in tree.__slots__}, "interface": ""})),
            fake_sources(tmp_path / "src"))
    srv = PxeServer(root, interface="nosuch0", listen=("127.0.0.1", 0), dnsmasq=dnsmasq)
    with pytest.raises(ServeError, match=r"dnsmasq exited at start.*nosuch0"):
        run(srv.start)


@pytest.mark.peer
def test_dnsmasq_restarts_for_a_new_config_and_its_death_is_noticed(tmp_path: Path, dnsmasq: str) -> None:
    if os.geteuid() != 0:
        missing_peer("running dnsmasq's DHCP/TFTP needs root")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "pxe"
    tree = _lo_tree(root, port)
    sources = fake_sources(tmp_path / "src")
    install(render_tree(tree), sources)

    async def until(cond: Callable[[], bool], seconds: float = 15) -> bool:
        for _ in range(int(seconds / 0.05)):
            if cond():
                return True
            await asyncio.sleep(0.05)
        return cond()

    async def go() -> None:
        async with PxeServer(root, dnsmasq=dnsmasq, watch_interval=0.1) as srv:
            waiter = asyncio.ensure_future(srv.wait())
            first = srv.pid
            await asyncio.to_thread(install, render_tree(tree), sources)  # nothing changed
            await asyncio.sleep(0.5)
            assert srv.restarts == 0 and srv.pid == first
            more = HostContext(hostname="lo2.lab.example.net", mac="52:54:00:77:01:02", ip="127.77.0.12",
                               os="debian-12", manager_url=tree.manager_url, network=tree.network,
                               token=callback_token(KEY, "lo2.lab.example.net", "boot-1"))
            bigger = TreeContext(**{**{f: getattr(tree, f) for f in tree.__slots__}, "hosts": (*tree.hosts, more),
                                    "networks": ()})
            await asyncio.to_thread(install, render_tree(bigger), sources)
            assert await until(lambda: srv.restarts == 1), "dnsmasq was not restarted for the new config"
            assert srv.pid and srv.pid != first
            assert not waiter.done()
            data = await asyncio.to_thread(tftp_get, "undionly.kpxe")  # the new dnsmasq serves
            assert data == (root / "tftp/undionly.kpxe").read_bytes()
            os.kill(srv.pid, signal.SIGKILL)  # dnsmasq dies behind our back
            assert await asyncio.wait_for(waiter, 10) == -signal.SIGKILL

    run(go)
    assert (root / "var/dnsmasq.log").read_text().count("started, version") == 2
