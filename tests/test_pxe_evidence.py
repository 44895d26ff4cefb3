"""PXE evidence: dnsmasq's log and the HTTP JSONL log read back as records, incrementally."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pxe import Evidence, EvidenceReader, read_evidence, render_tree
from pxe.evidence import DNSMASQ_LOG, HTTP_LOG, HostIndex, _syslog_time

from .test_pxe_context import sample_tree

ROOT = "/srv/rackfleet/pxe"

# dnsmasq 2.90 writing to log-facility with log-dhcp: a transaction id before each DHCP message.
DNSMASQ_LINES = f"""\
Nov 29 01:47:21 dnsmasq[812]: started, version 2.90 DNS disabled
Nov 29 01:47:21 dnsmasq-dhcp[812]: DHCP, static leases only on 10.77.0.0, lease time 1h
Nov 29 01:47:21 dnsmasq-tftp[812]: TFTP root is {ROOT}/tftp
Nov 29 01:50:10 dnsmasq-dhcp[812]: 1416273 available DHCP subnet: 10.77.0.0/255.255.255.0
Nov 29 01:50:10 dnsmasq-dhcp[812]: 1416273 DHCPDISCOVER(br0) 52:54:00:77:00:0a
Nov 29 01:50:10 dnsmasq-dhcp[812]: 1416273 tags: known, br0
Nov 29 01:50:10 dnsmasq-dhcp[812]: 1416273 DHCPOFFER(br0) 10.77.0.10 52:54:00:77:00:0a
Nov 29 01:50:11 dnsmasq-dhcp[812]: 1416273 DHCPREQUEST(br0) 10.77.0.10 52:54:00:77:00:0a
Nov 29 01:50:11 dnsmasq-dhcp[812]: 1416273 DHCPACK(br0) 10.77.0.10 52:54:00:77:00:0a deb-ipxe
Nov 29 01:50:11 dnsmasq-dhcp[812]: 1416273 requested options: 1:netmask, 3:router, 6:dns-server
Nov 29 01:50:12 dnsmasq-tftp[812]: sent {ROOT}/tftp/undionly.kpxe to 10.77.0.10
Nov 29 01:50:13 dnsmasq-dhcp[812]: 3301 DHCPDISCOVER(br0) 52:54:00:77:00:ee ignored
Nov 29 01:50:14 dnsmasq-tftp[812]: file {ROOT}/tftp/pxelinux.cfg/01-52-54-00-77-00-0b not found for 10.77.0.11
Nov 29 01:50:15 dnsmasq-tftp[812]: failed sending {ROOT}/tftp/pxelinux.0 to 10.77.0.11
Nov 29 01:50:16 dnsmasq-dhcp[812]: DHCPACK(br0) 10.77.0.11 52:54:00:77:00:0b
Nov  9 01:50:16 dnsmasq-dhcp[812]: garbage line that is not evidence
not a dnsmasq line at all
"""


def write_tree_logs(root: Path, dnsmasq: str = DNSMASQ_LINES, http: list[dict[str, object]] | None = None) -> None:
    (root / "var").mkdir(parents=True, exist_ok=True)
    (root / "hosts.json").write_bytes(render_tree(sample_tree(root=str(root))).files["hosts.json"])
    (root / DNSMASQ_LOG).write_text(dnsmasq.replace(ROOT, str(root)))
    (root / HTTP_LOG).write_text("".join(json.dumps(r) + "\n" for r in (http or [])))
    stamp = datetime(2026, 11, 29, 2, 0, tzinfo=UTC).timestamp()
    os.utime(root / DNSMASQ_LOG, (stamp, stamp))


@pytest.fixture
def tz(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set this process's time zone for one test, and put it back."""
    def set_tz(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()


def test_dnsmasq_lines(tmp_path: Path, tz) -> None:  # type: ignore[no-untyped-def]
    tz("UTC")
    write_tree_logs(tmp_path)
    ev = EvidenceReader(tmp_path).poll()
    got = [(e.kind, e.mac, e.ip, e.hostname, e.path, e.ok) for e in ev]
    assert got == [
        ("lease", "52:54:00:77:00:0a", "10.77.0.10", "deb-ipxe.lab.example.net", None, True),
        ("tftp", "52:54:00:77:00:0a", "10.77.0.10", "deb-ipxe.lab.example.net", "tftp/undionly.kpxe", True),
        ("ignored", "52:54:00:77:00:ee", None, None, None, False),
        ("tftp", "52:54:00:77:00:0b", "10.77.0.11", "deb-pxelinux.lab.example.net",
         "tftp/pxelinux.cfg/01-52-54-00-77-00-0b", False),
        ("tftp", "52:54:00:77:00:0b", "10.77.0.11", "deb-pxelinux.lab.example.net", "tftp/pxelinux.0", False),
        ("lease", "52:54:00:77:00:0b", "10.77.0.11", "deb-pxelinux.lab.example.net", None, True),
    ]
    assert ev[0].ts == datetime(2026, 11, 29, 1, 50, 11, tzinfo=UTC)
    assert ev[0].to_json() == {"kind": "lease", "ts": "2026-11-29T01:50:11+00:00", "mac": "52:54:00:77:00:0a",
                               "ip": "10.77.0.10", "hostname": "deb-ipxe.lab.example.net", "path": None,
                               "phase": None, "status": None, "ok": True}


def test_local_time_is_converted_to_utc(tz) -> None:  # type: ignore[no-untyped-def]
    tz("Europe/Paris")
    mtime = datetime(2026, 11, 29, 3, 0).astimezone()
    assert _syslog_time("Nov 29 02:50:11", mtime) == datetime(2026, 11, 29, 1, 50, 11, tzinfo=UTC)


def test_year_comes_from_the_log_mtime() -> None:
    jan = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)
    assert _syslog_time("Dec 31 23:59:59", jan).year == 2026
    assert _syslog_time("Jan  1 00:04:00", jan).year == 2027


def test_http_lines(tmp_path: Path) -> None:
    host = sample_tree().hosts[3]
    write_tree_logs(tmp_path, "", [
        {"ts": "2026-11-29T01:50:20.000+00:00", "client": host.ip, "method": "GET", "path": "/boot.ipxe",
         "status": 200, "bytes": 300},
        {"ts": "2026-11-29T01:50:21.000+00:00", "client": host.ip, "method": "GET",
         "path": "/answers/ubu.lab.example.net/user-data", "status": 200, "bytes": 900},
        {"ts": "2026-11-29T01:50:22.000+00:00", "client": host.ip, "method": "GET",
         "path": "/cb/ubu.lab.example.net/early", "status": 200, "bytes": 3, "host": "ubu.lab.example.net",
         "phase": "early", "ok": True},
        {"ts": "2026-11-29T01:50:23.000+00:00", "client": "10.77.0.99", "method": "GET",
         "path": "/cb/ubu.lab.example.net/late", "status": 403, "bytes": 10, "host": "ubu.lab.example.net",
         "phase": "late", "ok": False},
        {"broken": True},
    ])
    ev = read_evidence(tmp_path)
    assert [(e.kind, e.hostname, e.ip, e.path, e.phase, e.status, e.ok) for e in ev] == [
        ("fetch", "ubu.lab.example.net", host.ip, "http/boot.ipxe", None, 200, True),  # by its IP
        ("fetch", "ubu.lab.example.net", host.ip, "http/answers/ubu.lab.example.net/user-data", None, 200, True),
        ("callback", "ubu.lab.example.net", host.ip, "/cb/ubu.lab.example.net/early", "early", 200, True),
        ("callback", "ubu.lab.example.net", "10.77.0.99", "/cb/ubu.lab.example.net/late", "late", 403, False),
    ]
    assert all(e.mac == host.mac for e in ev)
    since = datetime(2026, 11, 29, 1, 50, 22, tzinfo=UTC)
    assert [e.kind for e in read_evidence(tmp_path, since=since)] == ["callback", "callback"]


def test_polls_return_only_new_lines(tmp_path: Path) -> None:
    head = DNSMASQ_LINES.split("Nov 29 01:50:13", 1)[0]
    write_tree_logs(tmp_path, head + "Nov 29 01:50:13 dnsmasq-dhcp[812]: 3301 DHCPDISC")  # a half-written line
    reader = EvidenceReader(tmp_path)
    first = reader.poll()
    assert [e.kind for e in first] == ["lease", "tftp"]
    assert reader.poll() == []
    with open(tmp_path / DNSMASQ_LOG, "a") as fh:
        fh.write("OVER(br0) 52:54:00:77:00:ee ignored\n")
    assert [e.kind for e in reader.poll()] == ["ignored"]
    # A truncated (rotated) log is read again from the start.
    (tmp_path / DNSMASQ_LOG).write_text("Nov 29 01:51:00 dnsmasq-dhcp[9]: DHCPACK(br0) 10.77.0.12 52:54:00:77:00:0c\n")
    assert [(e.kind, e.hostname) for e in reader.poll()] == [("lease", "deb-grub.lab.example.net")]


def test_no_logs_yet(tmp_path: Path) -> None:
    assert read_evidence(tmp_path) == []
    assert HostIndex.load(tmp_path).hosts == []


def test_evidence_is_frozen() -> None:
    e = Evidence("lease", datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(AttributeError):
        e.kind = "fetch"  # type: ignore[misc]
