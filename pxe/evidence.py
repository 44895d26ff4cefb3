"""Evidence of a boot, read back from the logs of a served tree.

Two logs under ``ROOT/var/``:

- ``dnsmasq.log`` (dnsmasq's ``log-facility``), lines like::

      Nov 29 01:50:12 dnsmasq-dhcp[812]: 1416273 DHCPACK(br0) 10.77.0.10 52:54:00:00:00:01 vm1
      Nov 29 01:50:13 dnsmasq-tftp[812]: sent /srv/pxe/tftp/undionly.kpxe to 10.77.0.10
      Nov 29 01:50:14 dnsmasq-dhcp[812]: 3301 DHCPDISCOVER(br0) 52:54:00:aa:bb:cc ignored

- ``http.jsonl`` (written by :class:`pxe.serve.PxeServer`), one JSON object per request:
  ``{"ts", "client", "method", "path", "status", "bytes"}`` plus, for callbacks, ``"host"``,
  ``"phase"``, ``"ok"`` and, for a refused one, ``"reason"`` (:mod:`pxe.callbacks`); lines with
  ``"bad_request"`` (requests the server could not parse) are skipped.

Each becomes an :class:`Evidence` record; ``hostname`` and ``mac`` are filled in from the tree's
``hosts.json`` (by MAC, IP or the path) wherever the log line alone does not say. Kinds:

========= ================================================ =====================
kind      what                                             ok
========= ================================================ =====================
lease     DHCPACK: the host got its address                always
ignored   a DHCP request from a MAC not in the tree        never
tftp      a file sent over TFTP (``path`` under tftp/)     sent; failed: false
fetch     an HTTP GET of a file (``path`` under http/)     status 2xx
callback  ``/cb/HOST/early|late``; ``phase`` says which    accepted (``reason``
                                                           says why not)
========= ================================================ =====================

dnsmasq writes local time without a year: the year is taken from the log file's mtime (a line
dated after it belongs to the year before), and the time zone from this machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["DNSMASQ_LOG", "EVIDENCE_KINDS", "HTTP_LOG", "Evidence", "EvidenceReader", "HostIndex", "read_evidence"]

DNSMASQ_LOG = "var/dnsmasq.log"
HTTP_LOG = "var/http.jsonl"
EVIDENCE_KINDS = ("lease", "ignored", "tftp", "fetch", "callback")

_PREFIX = re.compile(r"^(?P<ts>[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}) "
                     r"dnsmasq(?:-(?P<src>dhcp|tftp))?\[[0-9]+\]: (?P<msg>.*)$")
_ACK = re.compile(r"^(?:[0-9]+ )?DHCPACK\((?P<iface>[^)]*)\) (?P<ip>[0-9.]+) (?P<mac>[0-9a-f:]{17})(?: (?P<name>\S+))?")
_IGNORED = re.compile(r"^(?:[0-9]+ )?DHCP(?:DISCOVER|REQUEST)\((?P<iface>[^)]*)\) (?:[0-9.]+ )?"
                      r"(?P<mac>[0-9a-f:]{17}) (?:ignored|no address available)")
_SENT = re.compile(r"^sent (?P<file>\S+) to (?P<ip>[0-9a-fA-F.:]+)")
_TFTP_FAIL = re.compile(r"^(?:file (?P<file>\S+) not found(?: for (?P<ip>[0-9a-fA-F.:]+))?"
                        r"|failed sending (?P<file2>\S+) to (?P<ip2>[0-9a-fA-F.:]+))")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                       "Dec"), start=1)}
_HOST_SCRIPT = re.compile(r"^/hosts/([0-9a-f]{2}(?:-[0-9a-f]{2}){5})\.ipxe$")
_ANSWER = re.compile(r"^/answers/([^/]+)/")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One thing a host was seen doing. ``path`` is relative to the tree root (``http/...``, ``tftp/...``)."""

    kind: str
    ts: datetime
    mac: str | None = None
    ip: str | None = None
    hostname: str | None = None
    path: str | None = None
    phase: str | None = None
    status: int | None = None
    ok: bool = True
    reason: str | None = None  # a refused callback: why (wrong-address, bad-token, spent-token...)

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, "ts": self.ts.isoformat(), "mac": self.mac, "ip": self.ip,
               "hostname": self.hostname, "path": self.path, "phase": self.phase, "status": self.status,
               "ok": self.ok}
        if self.reason:
            out["reason"] = self.reason
        return out


class HostIndex:
    """``hosts.json``: who is who, by hostname, short name, MAC and IP."""

    def __init__(self, hosts: list[dict[str, Any]]) -> None:
        self.hosts = hosts
        self.by_name = {h["hostname"]: h for h in hosts}
        self.by_short = {h["short_name"]: h for h in hosts}
        self.by_mac = {h["mac"]: h for h in hosts}
        self.by_ip = {h["ip"]: h for h in hosts}

    @classmethod
    def load(cls, root: str | Path) -> HostIndex:
        path = Path(root) / "hosts.json"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return cls([])
        return cls(list(doc.get("hosts", [])))

    def token(self, hostname: str) -> str | None:
        h = self.by_name.get(hostname)
        return h["token"] if h else None


class EvidenceReader:
    """Reads a served tree's logs incrementally: each :meth:`poll` returns only what is new.

    A log that shrank (rotated or truncated) is read again from its start.
    """

    def __init__(self, root: str | Path, *, index: HostIndex | None = None) -> None:
        self.root = Path(root)
        self.index = index if index is not None else HostIndex.load(self.root)
        self._tftp_root = str(self.root / "tftp") + "/"
        self.offsets = {DNSMASQ_LOG: 0, HTTP_LOG: 0}
        self._partial = {DNSMASQ_LOG: b"", HTTP_LOG: b""}

    def _read_new(self, rel: str) -> Iterator[str]:
        path = self.root / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size < self.offsets[rel]:
            self.offsets[rel], self._partial[rel] = 0, b""
        with open(path, "rb") as fh:
            fh.seek(self.offsets[rel])
            data = self._partial[rel] + fh.read()
            self.offsets[rel] = fh.tell()
        lines = data.split(b"\n")
        self._partial[rel] = lines.pop()  # an unfinished last line waits for the next poll
        for line in lines:
            yield line.decode("utf-8", "replace")

    def poll(self) -> list[Evidence]:
        """New evidence from both logs, in time order (stable for equal times)."""
        out: list[Evidence] = []
        path = self.root / DNSMASQ_LOG
        try:
            mtime = datetime.fromtimestamp(path.stat().st_mtime).astimezone()
        except FileNotFoundError:
            mtime = datetime.now().astimezone()
        for line in self._read_new(DNSMASQ_LOG):
            ev = self._dnsmasq(line, mtime)
            if ev is not None:
                out.append(ev)
        for line in self._read_new(HTTP_LOG):
            ev = self._http(line)
            if ev is not None:
                out.append(ev)
        out.sort(key=lambda e: e.ts)
        return out

    # -- dnsmasq ----------------------------------------------------------------------------------

    def _dnsmasq(self, line: str, mtime: datetime) -> Evidence | None:
        m = _PREFIX.match(line)
        if not m:
            return None
        msg = m.group("msg")
        ts = _syslog_time(m.group("ts"), mtime)
        if (a := _ACK.match(msg)) is not None:
            host = self.index.by_mac.get(a.group("mac")) or self.index.by_ip.get(a.group("ip"))
            return Evidence("lease", ts, mac=a.group("mac"), ip=a.group("ip"),
                            hostname=host["hostname"] if host else a.group("name"))
        if (i := _IGNORED.match(msg)) is not None:
            return Evidence("ignored", ts, mac=i.group("mac"), ok=False)
        if (s := _SENT.match(msg)) is not None:
            return self._tftp(ts, s.group("file"), s.group("ip"), ok=True)
        if (f := _TFTP_FAIL.match(msg)) is not None:
            return self._tftp(ts, f.group("file") or f.group("file2"), f.group("ip") or f.group("ip2"), ok=False)
        return None

    def _tftp(self, ts: datetime, file: str, ip: str | None, *, ok: bool) -> Evidence:
        rel = "tftp/" + file.removeprefix(self._tftp_root).lstrip("/") if file.startswith("/") else f"tftp/{file}"
        host = self.index.by_ip.get(ip or "")
        return Evidence("tftp", ts, mac=host["mac"] if host else None, ip=ip,
                        hostname=host["hostname"] if host else None, path=rel, ok=ok)

    # -- HTTP -------------------------------------------------------------------------------------

    def _http(self, line: str) -> Evidence | None:
        try:
            rec = json.loads(line)
            if rec.get("bad_request"):  # a request nobody could parse is no host's evidence
                return None
            ts = datetime.fromisoformat(rec["ts"])
            path, client, status = str(rec["path"]), rec.get("client"), int(rec["status"])
        except (ValueError, KeyError, TypeError):
            return None
        if rec.get("phase"):
            hostname = rec.get("host")
            host = self.index.by_name.get(hostname or "")
            return Evidence("callback", ts, mac=host["mac"] if host else None, ip=client, hostname=hostname,
                            path=path, phase=rec["phase"], status=status, ok=bool(rec.get("ok")),
                            reason=str(rec["reason"]) if rec.get("reason") else None)
        host = self._host_of_path(path) or self.index.by_ip.get(client or "")
        return Evidence("fetch", ts, mac=host["mac"] if host else None, ip=client,
                        hostname=host["hostname"] if host else None, path="http" + path, status=status,
                        ok=200 <= status < 300)

    def _host_of_path(self, path: str) -> dict[str, Any] | None:
        if (m := _HOST_SCRIPT.match(path)) is not None:
            return self.index.by_mac.get(m.group(1).replace("-", ":"))
        if (m := _ANSWER.match(path)) is not None:
            return self.index.by_name.get(m.group(1))
        return None


def _syslog_time(text: str, mtime: datetime) -> datetime:
    """``Nov 29 01:50:12`` (local time, no year) as an aware UTC datetime."""
    month, day, clock = text[:3], int(text[4:6]), text[7:]
    hh, mm, ss = (int(x) for x in clock.split(":"))
    year = mtime.year
    local = datetime(year, _MONTHS[month], day, hh, mm, ss).astimezone()
    if (local - mtime).days > 1:  # dated after the file was last written: last year's line
        local = datetime(year - 1, _MONTHS[month], day, hh, mm, ss).astimezone()
    return local.astimezone(UTC)


def read_evidence(root: str | Path, *, since: datetime | None = None) -> list[Evidence]:
    """All evidence in a served tree's logs (optionally only from ``since`` on), in time order."""
    evidence = EvidenceReader(root).poll()
    if since is not None:
        evidence = [e for e in evidence if e.ts >= since]
    return evidence
