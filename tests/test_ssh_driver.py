"""SshDriver against OpenSSH's own sshd on loopback (tests/sshpeer.py): commands, facts, host keys, errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.drivers.base import Target
from fleet.drivers.registry import registry
from fleet.drivers.ssh import HostKeyMismatch, HostKeyNotPinned, SshDriver, fingerprint
from fleet.errors import AuthFailed, DeviceTimeout, DeviceUnreachable, FatalError
from fleet.model.facts import InventoryDisk, InventoryNic, ServerInventoryView, reconcile
from inventory.secrets import Secret

from .sshpeer import STUB_DISKS, STUB_SERIAL, SshPeer, free_port, ssh_peer

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def peer() -> Iterator[SshPeer]:
    with ssh_peer() as p:
        yield p


@pytest.fixture
def driver() -> Iterator[SshDriver]:
    d = SshDriver(workers=4)
    yield d
    d.close()


def _sys_macs() -> dict[str, str]:
    base = Path("/sys/class/net")
    return {p.name: (p / "address").read_text().strip().lower() for p in base.iterdir()
            if p.name != "lo" and (p / "address").exists()}


def test_registry_names_the_driver():
    assert registry.load("ssh") is SshDriver
    assert registry.capabilities("ssh") == {"shell", "power"}


def test_run_returns_status_and_both_streams(peer, driver):
    result = asyncio.run(driver.run(peer.target(), "echo out; echo err >&2; exit 3"))
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_run_with_key_from_a_file_path(peer, driver):
    target = peer.target(private_key=str(peer.client_key_path))
    assert asyncio.run(driver.run(target, "id -u")).stdout.strip() == str(os.getuid())


def test_command_timeout_is_bounded(peer, driver):
    start = time.monotonic()
    with pytest.raises(DeviceTimeout) as err:
        asyncio.run(driver.run(peer.target(), "sleep 30", timeout=0.5))
    assert time.monotonic() - start < 3
    assert err.value.target == "peer" and err.value.operation == "run"


def test_facts_against_sshd(peer, driver):
    facts = asyncio.run(driver.facts(peer.target()))
    assert facts["hostname"] == socket.gethostname()
    assert facts["kernel"] == subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    dmi = Path("/sys/class/dmi/id/product_serial")
    expected_serial = dmi.read_text().strip() if os.access(dmi, os.R_OK) else STUB_SERIAL
    assert facts["serial"] == expected_serial
    assert {n["name"]: n["mac"] for n in facts["nics"]} == _sys_macs()
    disks = {d["name"]: (d["serial"], d["model"], d["size_bytes"], d["smart"]["passed"]) for d in facts["disks"]}
    assert disks == {name: (serial, model, size, ok) for name, serial, model, size, ok in STUB_DISKS}
    assert facts["host_key"] == peer.host_key_line
    assert facts["problems"] == ()


def test_reconcile_live_facts_finds_serial_missing_and_failing_disks(peer, driver):
    facts = asyncio.run(driver.collect_facts(peer.target()))
    nics = tuple(InventoryNic(n.name, n.mac) for n in facts.nics)
    inventory = ServerInventoryView(
        hostname="peer", serial="OLD-SERIAL",
        disks=(InventoryDisk("0", "S1HEALTHY", "Stub SSD 480"), InventoryDisk("1", "S2FAILING", "Stub HDD 4T"),
               InventoryDisk("2", "S3GONE", "Stub HDD 4T")),
        nics=nics)
    found = sorted((d.kind, d.subject) for d in reconcile(facts, inventory))
    assert found == [("disk-failing", "S2FAILING"), ("disk-missing", "S3GONE"), ("serial-changed", "OLD-SERIAL")]


def test_host_key_pinned_on_first_contact_then_enforced(peer, driver):
    unpinned = peer.target(known_host_key=None)
    with pytest.raises(HostKeyNotPinned, match="no pinned host key"):
        asyncio.run(driver.run(unpinned, "true"))
    commissioning = peer.target(known_host_key=None, pin_on_first_contact=True)
    seen = asyncio.run(driver.facts(commissioning))["host_key"]
    assert seen == peer.host_key_line
    assert asyncio.run(driver.host_key(commissioning)) == seen
    pinned = peer.target(known_host_key=seen)
    assert asyncio.run(driver.run(pinned, "echo ok")).stdout == "ok\n"
    other = subprocess.run(["ssh-keygen", "-l", "-f", str(peer.root / "ssh_host_ed25519_key.pub")],
                           capture_output=True, text=True).stdout.split()[1]
    assert fingerprint(seen) == other  # the same SHA256 fingerprint ssh-keygen prints


def test_changed_host_key_is_refused_before_logging_in():
    with ssh_peer() as peer:
        driver = SshDriver(workers=2)
        try:
            pinned = peer.host_key_line
            assert asyncio.run(driver.run(peer.target(), "true")).exit_status == 0
            peer.restart(new_host_key=True)  # a reinstalled server, or someone in between
            with pytest.raises(HostKeyMismatch) as err:
                asyncio.run(driver.run(peer.target(known_host_key=pinned), "true"))
            assert err.value.expected == fingerprint(pinned)
            assert err.value.seen == fingerprint(peer.host_key_line)
            assert err.value.expected in str(err.value) and err.value.seen in str(err.value)
            assert isinstance(err.value, FatalError)
            # a pinned key of a type the server does not have is a mismatch too
            with pytest.raises(HostKeyMismatch):
                asyncio.run(driver.run(peer.target(known_host_key="ecdsa-sha2-nistp256 AAAAE2VjZHNh"), "true"))
        finally:
            driver.close()


def test_wrong_key_is_auth_failed_fast(peer, driver):
    wrong = peer.new_client_key("unauthorized_key")
    start = time.monotonic()
    with pytest.raises(AuthFailed) as err:
        asyncio.run(driver.run(peer.target(private_key=Secret(wrong.read_text())), "true"))
    assert time.monotonic() - start < 3
    assert err.value.target == "peer" and err.value.operation == "run"
    assert "BEGIN" not in str(err.value)


def test_password_auth_is_tried_and_refusal_mapped(peer, driver):
    target = peer.target(private_key=None)
    target = Target(target.name, target.host, target.port, target.username, password=Secret("hunter2-not-set"),
                    timeout=5, options=target.options)
    with pytest.raises(AuthFailed) as err:
        asyncio.run(driver.run(target, "true"))
    assert "hunter2" not in str(err.value) and "hunter2" not in repr(err.value)


def test_silent_listener_is_device_timeout_within_bound(driver):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        target = Target("mute", "127.0.0.1", listener.getsockname()[1], "root", timeout=1.0,
                        options={"pin_on_first_contact": True})
        start = time.monotonic()
        with pytest.raises(DeviceTimeout):
            asyncio.run(driver.run(target, "true"))
        assert time.monotonic() - start < 2.5
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        listener.close()


def test_refused_is_device_unreachable(driver):
    target = Target("gone", "127.0.0.1", free_port(), "root", timeout=1.0, options={"pin_on_first_contact": True})
    with pytest.raises(DeviceUnreachable):
        asyncio.run(driver.run(target, "true"))


def test_concurrency_is_bounded(peer):
    driver = SshDriver(workers=4)

    async def many() -> list:
        return await asyncio.gather(*(driver.run(peer.target(), f"echo {i}") for i in range(20)))

    try:
        results = asyncio.run(many())
    finally:
        driver.close()
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(20)]
    assert driver.peak_in_flight == 4
