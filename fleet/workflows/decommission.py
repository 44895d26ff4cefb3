"""Decommissioning: take servers out of service, wipe every disk, keep a certificate per disk, retire.

``fleet decommission SELECTOR`` (:meth:`fleet.Fleet.decommission`):

1. **Check**: every selected server is in a state that allows it (``ready``, ``deployed``,
   ``maintenance``, ``failed``, ``quarantined``, ``new``; ``decommissioning`` again, to retry a wipe).
   A server that is being imaged, commissioned, or already retired or at RMA is refused, and nothing
   happens to any server.
2. **Drain**: the server moves to ``decommissioning`` (out of service: sweeps' remediation, imaging and
   deployment leave it alone), with the reason.
3. **Wipe**, over SSH where the OS is up (the server's pinned host key is enforced): :data:`WIPE_SCRIPT`
   lists the whole disks (``lsblk``), wipes each with the strongest method it supports, data disks
   first and the disk holding ``/`` last: NVMe format with secure erase (``nvme format -s``),
   ``blkdiscard`` (secure discard where supported) on devices that discard, ATA Secure Erase
   (``hdparm``) where supported and not frozen, else an overwrite with zeros; then it reads samples
   back to verify. One JSON line per disk: device, serial, model, size, method, result, verified,
   times.
4. **Certificates**: one :class:`~inventory.models.WipeCertificate` per disk (server and disk
   identity, method, result, verification, times, who, the job) with a SHA-256 digest over its fields.
5. **Finish**: every disk wiped and verified: the server is powered off (through its BMC, when it has
   one) and moves to ``retired`` (or ``rma`` with ``finish="rma"``). A disk that could not be wiped
   keeps the server in ``decommissioning`` with the reason: it must be wiped again or physically
   destroyed, never retired as if clean.

Booting a wipe image over PXE (for servers whose OS is gone) is not built yet: such servers are
reported ("no SSH credential" / unreachable) and stay in ``decommissioning``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from fleet.core.targets import hostnames, servers
from fleet.errors import DriverError, InputError, NotFound
from fleet.ops.lifecycle import move_to
from fleet.ops.power_action import power
from inventory.models import WipeCertificate, utcnow
from inventory.selectors import parse_selector

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["DECOMMISSION_STATES", "METHODS", "WIPE_SCRIPT", "DecommissionResult", "certificate_digest",
           "certificates", "check_decommission", "parse_wipe_output", "run_decommission"]

DECOMMISSION_STATES = ("new", "ready", "deployed", "maintenance", "failed", "quarantined", "decommissioning")
METHODS = ("auto", "overwrite")
MARK = "@@rackfleet-wipe"

#: POSIX sh, run over SSH as root (``WIPE_METHOD=auto|overwrite WIPE_ONLY='sda sdb' sh -c SCRIPT``): whole
#: disks from ``lsblk`` (or only those named), the one holding ``/`` last; one JSON line per disk.
WIPE_SCRIPT = r"""
M=@@rackfleet-wipe
METHOD="${WIPE_METHOD:-auto}"
ONLY="${WIPE_ONLY:-}"
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
root_disk=$(lsblk -n -r -o PKNAME "$(findmnt -n -o SOURCE / 2>/dev/null)" 2>/dev/null | head -n1)
disks=$(lsblk -d -n -r -o NAME,TYPE | awk '$2 == "disk" { print $1 }')
if [ -n "$ONLY" ]; then disks="$ONLY"; fi
order=""
for d in $disks; do [ "$d" = "$root_disk" ] || order="$order $d"; done
for d in $disks; do [ "$d" = "$root_disk" ] && order="$order $d"; done
for d in $order; do
  case "$d" in *[!a-z0-9]*|"") echo "$M {\"device\": \"?\", \"result\": \"refused\"}"; continue;; esac
  dev=/dev/$d
  if [ ! -b "$dev" ]; then
    echo "$M {\"device\": \"$d\", \"result\": \"failed\", \"error\": \"no such block device\"}"; continue
  fi
  serial=$(lsblk -d -n -r -o SERIAL "$dev" 2>/dev/null | tr -cd 'A-Za-z0-9._-')
  model=$(lsblk -d -n -r -o MODEL "$dev" 2>/dev/null | tr -cd 'A-Za-z0-9._ -' | sed 's/\\x20/ /g')
  size=$(blockdev --getsize64 "$dev" 2>/dev/null || echo 0)
  start=$(now); method=""; rc=1; err=""
  if [ "$METHOD" = auto ]; then
    case "$d" in
      nvme*) if command -v nvme >/dev/null 2>&1; then
               method=nvme-format; nvme format -s 1 -f "$dev" >/dev/null 2>&1; rc=$?
             fi;;
    esac
    if [ -z "$method" ] && [ "$(cat /sys/block/$d/queue/discard_max_bytes 2>/dev/null || echo 0)" != 0 ] \
       && command -v blkdiscard >/dev/null 2>&1; then
      if blkdiscard -s "$dev" >/dev/null 2>&1; then method=blkdiscard-secure; rc=0
      else method=blkdiscard; blkdiscard -f "$dev" >/dev/null 2>&1 || blkdiscard "$dev" >/dev/null 2>&1; rc=$?; fi
      # a discard need not zero what it frees: overwrite as well where reads do not come back as zeros
    fi
    if [ -z "$method" ] && command -v hdparm >/dev/null 2>&1 \
       && hdparm -I "$dev" 2>/dev/null | grep -q "supported: enhanced erase\|^\s*supported$" \
       && hdparm -I "$dev" 2>/dev/null | grep -q "not\s*frozen"; then
      method=ata-secure-erase
      hdparm --user-master u --security-set-pass rackfleet "$dev" >/dev/null 2>&1 \
        && hdparm --user-master u --security-erase rackfleet "$dev" >/dev/null 2>&1; rc=$?
    fi
  fi
  if [ -z "$method" ] || [ "$rc" != 0 ]; then
    [ -n "$method" ] && err="$method failed (exit $rc): overwritten instead"
    method=overwrite
    dd if=/dev/zero of="$dev" bs=4M oflag=direct conv=fsync status=none 2>/dev/null
    rc=0; blockdev --flushbufs "$dev" 2>/dev/null
    # dd stops at the end of the device with "No space left": check what was written by reading back
  fi
  sync
  verified=true
  blocks=$((size / 4096))
  for frac in 0 1 2 3 4 5 6 7; do
    [ "$blocks" -gt 0 ] || break
    at=$((blocks * frac / 8))
    nz=$(dd if="$dev" bs=4096 skip=$at count=1 iflag=direct status=none 2>/dev/null | tr -d '\000' | wc -c)
    [ "$nz" = 0 ] || verified=false
  done
  last=$((blocks - 1)); [ "$last" -ge 0 ] && {
    nz=$(dd if="$dev" bs=4096 skip=$last count=1 iflag=direct status=none 2>/dev/null | tr -d '\000' | wc -c)
    [ "$nz" = 0 ] || verified=false; }
  if [ "$verified" = false ] && [ "$method" != overwrite ]; then
    err="$method left data readable: overwritten"; method="$method+overwrite"
    dd if=/dev/zero of="$dev" bs=4M oflag=direct conv=fsync status=none 2>/dev/null; sync; verified=true
    for frac in 0 1 2 3 4 5 6 7; do
      at=$((blocks * frac / 8))
      nz=$(dd if="$dev" bs=4096 skip=$at count=1 iflag=direct status=none 2>/dev/null | tr -d '\000' | wc -c)
      [ "$nz" = 0 ] || verified=false
    done
  fi
  result=ok; [ "$rc" = 0 ] && [ "$verified" = true ] || result=failed
  printf '%s {"device": "%s", "serial": "%s", "model": "%s", "size": %s, "method": "%s", ' \
    "$M" "$d" "$serial" "$model" "$size" "$method"
  printf '"result": "%s", "verified": %s, "started": "%s", "finished": "%s", "error": "%s"}\n' \
    "$result" "$verified" "$start" "$(now)" "$err"
done
echo "$M end"
"""


@dataclass
class DecommissionResult:
    job_id: int
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def retired(self) -> list[str]:
        return sorted(h for h, s in self.servers.items() if s["state"] in ("retired", "rma"))

    @property
    def held(self) -> list[str]:
        return sorted(h for h, s in self.servers.items() if s["state"] not in ("retired", "rma"))

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "retired": self.retired, "held": self.held, "servers": self.servers}


def parse_wipe_output(stdout: str) -> tuple[list[dict[str, Any]], bool]:
    """The per-disk JSON lines of :data:`WIPE_SCRIPT`, and whether it ran to its end."""
    disks, complete = [], False
    for line in stdout.splitlines():
        if not line.startswith(MARK):
            continue
        body = line[len(MARK):].strip()
        if body == "end":
            complete = True
            continue
        try:
            doc = json.loads(body)
        except ValueError:
            disks.append({"device": "?", "result": "failed", "error": f"unreadable line: {body[:100]}"})
            continue
        if isinstance(doc, dict):
            disks.append(doc)
    return disks, complete


def certificate_digest(fields: dict[str, Any]) -> str:
    """SHA-256 over a certificate's fields (sorted keys, no whitespace): an edited row no longer matches."""
    keep = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()
            if k not in ("id", "digest", "detail")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def check_decommission(ctx: Context, selector: Any) -> list[str]:
    """The selected servers' host names, or :class:`InputError` naming every one whose state does not allow
    decommissioning (nothing is changed either way)."""
    names = hostnames(ctx, selector)
    if not names:
        raise NotFound(f"no servers match {parse_selector(selector)!s}")
    refused = [f"{r.hostname}: {r.state}" for r in servers(ctx, names) if r.state not in DECOMMISSION_STATES]
    if refused:
        raise InputError(f"{len(refused)} server(s) cannot be decommissioned now: {'; '.join(refused[:10])}. "
                         f"Decommissioning takes servers that are {', '.join(DECOMMISSION_STATES)}")
    return names


def _rows(ctx: Context, hostnames: Sequence[str]) -> dict[str, Any]:
    from fleet.ops.facts import ssh_servers

    known = ssh_servers(ctx, list(hostnames))
    return {r.hostname: {"row": r, "address": known.address(r), "disks": known.disks.get(r.id, [])}
            for r in known.rows}


async def run_decommission(ctx: Context, selector: Any, *, finish: str = "retired", method: str = "auto",
                           power_off: bool = True, concurrency: int = 8, timeout_s: float = 6 * 3600.0,
                           only_devices: Sequence[str] = ()) -> DecommissionResult:
    """Drain, wipe over SSH, certify, power off and retire the selected servers (module docstring)."""
    from fleet.core.jobs import JobTracker
    from fleet.ops.facts import ssh_target

    if finish not in ("retired", "rma"):
        raise InputError(f"finish must be retired or rma, not {finish!r}")
    if method not in METHODS:
        raise InputError(f"unknown wipe method {method!r}; methods: {', '.join(METHODS)}")
    for dev in only_devices:
        if not re.fullmatch(r"[a-z][a-z0-9]{1,31}", dev):
            raise InputError(f"device names are like sda or nvme0n1, not {dev!r}")
    hostnames = check_decommission(ctx, selector)
    info = _rows(ctx, hostnames)
    result = DecommissionResult(job_id=0)
    sem = asyncio.Semaphore(concurrency)
    driver = ctx.driver("ssh")
    with JobTracker(ctx, "decommission", str(parse_selector(selector)), total=len(hostnames),
                    params={"finish": finish, "method": method}) as job:
        result.job_id = job.id or 0
        for h in hostnames:
            move_to(ctx, h, "decommissioning", reason=f"decommission job {job.id}: drained for wiping")
            result.servers[h] = {"state": "decommissioning", "disks": [], "reason": ""}
        with ctx.write() as s:
            ctx.audit(s, "decommission.start", hostnames, job=job.id, finish=finish, method=method)

        async def one(host: str) -> None:
            entry = result.servers[host]
            row = info[host]["row"]
            target, why = ssh_target(ctx, row, info[host]["address"])
            if target is None:
                entry["reason"] = f"cannot wipe over SSH: {why} (a PXE wipe image is not built yet)"
                return
            env = f"WIPE_METHOD={method} WIPE_ONLY='{' '.join(only_devices)}' "
            async with sem:
                try:
                    out = await driver.run(target, env + "sh -c " + _quote(WIPE_SCRIPT) + " " + MARK,
                                           timeout=timeout_s)
                except DriverError as exc:
                    entry["reason"] = f"wipe over SSH failed: {exc}"
                    return
            disks, complete = parse_wipe_output(out.stdout)
            entry["disks"] = disks
            certificates = _certificates(ctx, job.id, row, info[host]["disks"], disks)
            with ctx.write() as s:
                if certificates:
                    s.execute(insert(WipeCertificate), certificates)
                ctx.audit(s, "decommission.wipe", [host], "ok" if disks and all(
                    d.get("result") == "ok" for d in disks) and complete else "failed",
                    disks=[{k: d.get(k) for k in ("device", "serial", "method", "result", "verified")}
                           for d in disks], job=job.id)
            missing = _missing_disks(info[host]["disks"], disks)
            bad = [d for d in disks if d.get("result") != "ok" or d.get("verified") is not True]
            if not complete:
                entry["reason"] = f"the wipe did not finish (exit {out.exit_status}): {out.stderr.strip()[:200]}"
            elif not disks:
                entry["reason"] = "no disk was found to wipe"
            elif bad:
                entry["reason"] = "not wiped: " + ", ".join(f"{d.get('device')} ({d.get('error') or d.get('result')})"
                                                            for d in bad)
            elif missing:
                entry["reason"] = "inventory disks not seen (wipe or destroy them by hand): " + ", ".join(missing)
            else:
                entry["wiped"] = True
            job.save_params(servers=_progress(result))

        await asyncio.gather(*(one(h) for h in hostnames))
        wiped = [h for h in hostnames if result.servers[h].get("wiped")]
        if wiped and power_off:
            with_bmc = [h for h in wiped if info[h]["row"].bmc_host]
            if with_bmc:
                for r in await power(ctx, "off", with_bmc, force=True):
                    if not r.ok and r.outcome != "already":
                        result.servers[r.hostname]["power"] = f"not powered off: {r.error or r.outcome}"
        for h in hostnames:
            entry = result.servers[h]
            if entry.get("wiped"):
                methods = sorted({d.get("method", "?") for d in entry["disks"]})
                move_to(ctx, h, finish, reason=f"decommission job {job.id}: {len(entry['disks'])} disk(s) wiped "
                                                f"and verified ({', '.join(methods)}); certificates on record")
                entry["state"] = finish
                job.progress(advance=1)
            else:
                job.progress(failed=job.failed + 1)
        job.result.update(retired=result.retired, held={h: result.servers[h]["reason"] for h in result.held})
        job.save_params(servers=_progress(result))
    return result


def _progress(result: DecommissionResult) -> dict[str, dict[str, Any]]:
    """Per server, for the job's params (the TUI's jobs screen): state, reason, each disk's outcome."""
    return {h: {"state": s["state"], "reason": s["reason"], "wiped": bool(s.get("wiped")),
                "disks": [f"{d.get('device')}: {d.get('method')} {d.get('result')}" for d in s["disks"]]}
            for h, s in result.servers.items()}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _missing_disks(inventory: list[Any], seen: list[dict[str, Any]]) -> list[str]:
    serials = {str(d.get("serial") or "").upper() for d in seen if d.get("result") == "ok"}
    return [d.serial for d in inventory if d.serial and d.serial.upper() not in serials]


def _certificates(ctx: Context, job_id: int | None, row: Any, inventory: list[Any],
                  disks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    slots = {str(d.serial).upper(): d for d in inventory if d.serial}
    out = []
    for d in disks:
        known = slots.get(str(d.get("serial") or "").upper())
        cert = {
            "server_id": row.id, "hostname": row.hostname, "server_serial": row.serial or "",
            "disk_slot": known.slot if known else "", "disk_serial": str(d.get("serial") or "")[:64],
            "disk_model": str(d.get("model") or (known.model if known else ""))[:64],
            "device": str(d.get("device") or "")[:64], "size_bytes": d.get("size") if isinstance(d.get("size"), int)
            else None, "method": str(d.get("method") or "none")[:32], "result": str(d.get("result") or "failed")[:16],
            "verified": d.get("verified") is True, "started_at": _ts(d.get("started")) or utcnow(),
            "finished_at": _ts(d.get("finished")), "actor": ctx.actor, "job_id": job_id,
        }
        cert["digest"] = certificate_digest(cert)
        cert["detail"] = {"error": d.get("error") or ""}
        out.append(cert)
    return out


def certificates(ctx: Context, selector: Any = None) -> list[dict[str, Any]]:
    """Wipe certificates, newest first (all, or those of the selected servers' host names)."""
    with ctx.engine.connect() as conn:
        q = select(WipeCertificate).order_by(WipeCertificate.id.desc())
        if selector:
            q = q.where(WipeCertificate.hostname.in_(hostnames(ctx, selector) or [str(selector)]))
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        fields = dict(r)
        fields["intact"] = certificate_digest({k: v for k, v in fields.items() if k != "intact"}) == r["digest"]
        for k in ("started_at", "finished_at"):
            if fields[k] is not None:
                fields[k] = fields[k].isoformat(timespec="seconds")
        out.append(fields)
    return out


