"""``fleet pxe`` as an operator runs it: render, check, serve until SIGTERM, evidence."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pxe.serve import find_dnsmasq

from .clihelp import FLEET, fleet
from .test_pxe_install import fake_sources
from .test_pxe_service import INVENTORY, MANAGER


@pytest.fixture
def inv(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    done = fleet(env, "import", str(tmp_path / "inv.yaml"))
    assert done.returncode == 0, done.stderr
    return env


def _source_args(tmp_path: Path) -> list[str]:
    src = fake_sources(tmp_path / "src")
    args = [f"--loader=undionly={src.undionly}", f"--loader=snponly={src.snponly}", f"--loader=ipxe_efi={src.ipxe_efi}",
            f"--loader=pxelinux={src.pxelinux}", f"--loader=ldlinux={src.ldlinux}", f"--loader=grub_dir={src.grub_dir}"]
    args += [f"--image={os_name}={path}" for os_name, path in src.images.items()]
    return args


def test_render_check_and_dry_run(inv: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "pxe"
    dry = fleet(inv, "pxe", "render", "rack=R01", "--out", str(out), "--manager-url", MANAGER, "--dry-run",
                *_source_args(tmp_path))
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 3 hosts" in dry.stderr and not out.exists()
    done = fleet(inv, "pxe", "render", "rack=R01", "--out", str(out), "--manager-url", MANAGER, "--interface", "br0",
                 "--json", *_source_args(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["hosts"] == ["vm1.lab.example.net", "vm2.lab.example.net", "vm3.lab.example.net"]
    assert report["install"]["written"] == report["files"] and (out / "dnsmasq.conf").exists()
    if find_dnsmasq():
        check = fleet(inv, "pxe", "check", "--root", str(out))
        assert check.returncode == 0 and "syntax check OK" in check.stderr


def test_refusals_exit_2_and_write_nothing(inv: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "pxe"
    bad = tmp_path / "bad.toml"
    bad.write_text('[host."vm1.lab.example.net"]\nkernel_args = ["a;reboot"]\n')
    done = fleet(inv, "pxe", "render", "rack=R01", "--out", str(out), "--manager-url", MANAGER, "--overrides",
                 str(bad), *_source_args(tmp_path))
    assert done.returncode == 2
    assert "server vm1.lab.example.net: kernel_args: 'a;reboot' is not a safe kernel argument" in done.stderr
    done = fleet(inv, "pxe", "render", "rack=R01", "--out", str(out), "--manager-url", MANAGER,
                 *_source_args(tmp_path), "--loader=pxelinux=/nonexistent/pxelinux.0")
    assert done.returncode == 2 and "/nonexistent/pxelinux.0 is missing" in done.stderr
    done = fleet(inv, "pxe", "render", "rack=R01", "--out", str(out), "--manager-url", "http://10.77.0.1:8080/")
    assert done.returncode == 2 and "manager_url" in done.stderr
    done = fleet(inv, "pxe", "render", "rack=R01", "--out", str(out), "--manager-url", MANAGER, "--loader=foo=x")
    assert done.returncode == 2 and "unknown name(s) foo" in done.stderr
    assert not out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_until_sigterm_then_evidence(inv: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "pxe"
    port = _free_port()
    done = fleet(inv, "pxe", "render", "rack=R01", "--out", str(out), "--manager-url", MANAGER,
                 *_source_args(tmp_path))
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen([FLEET, "pxe", "serve", "--root", str(out), "--no-dhcp", "--listen", f"127.0.0.1:{port}"],
                            env=inv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        body = b""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/answers/vm1.lab.example.net/preseed.cfg",
                                            timeout=2) as resp:
                    body = resp.read()
                break
            except OSError:
                time.sleep(0.1)
        assert body.startswith(b"# Debian preseed for vm1.lab.example.net")
        token = json.loads((out / "hosts.json").read_text())["hosts"][0]["token"]
        # the right token from an address that is not vm1's (10.77.0.11): refused, with the reason logged
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/cb/vm1.lab.example.net/late?token={token}")
        assert refused.value.code == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"serving {out} on http://127.0.0.1:{port} (HTTP only) until SIGTERM" in err
    ev = fleet(inv, "pxe", "evidence", "--root", str(out), "--json")
    assert ev.returncode == 0, ev.stderr
    assert "recorded 2 new evidence records" in ev.stderr
    records = json.loads(ev.stdout)
    assert [(r["kind"], r["hostname"], r["ok"], r.get("reason")) for r in records] == [
        ("fetch", "vm1.lab.example.net", True, None), ("callback", "vm1.lab.example.net", False, "wrong-address")]
    again = fleet(inv, "pxe", "evidence", "--root", str(out), "--host", "vm2.lab.example.net")
    assert again.returncode == 0 and "recorded 0 new" in again.stderr
    audit = fleet(inv, "audit", "--action", "pxe.callback", "--json")
    row = json.loads(audit.stdout)[0]
    assert row["targets"] == ["vm1.lab.example.net"] and row["result"] == "failed"
    assert row["detail"]["reason"] == "wrong-address" and row["detail"]["ip"] == "127.0.0.1"
