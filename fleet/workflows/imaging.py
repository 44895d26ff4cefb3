"""Imaging a rack: addresses, boot configs, next boot PXE, power in waves (canary first), evidence.

``fleet image SELECTOR --os debian-12`` (:meth:`fleet.Fleet.image`):

1. **Check**: every selected server is ``ready`` or ``maintenance`` (``deployed`` only with
   ``reimage``; ``deploying`` only when resuming), has a BMC and a NIC to boot from.
2. **Addresses**: a server whose boot NIC has no address gets the next free one of its rack's IP pool
   (purpose ``provisioning``; else its site's), in one transaction; a clash with a concurrent job
   (the unique index on NIC addresses) is retried.
3. **Configs**: the PXE tree for the selected servers is rendered and installed atomically
   (:meth:`fleet.Fleet.pxe_render`), and served (dnsmasq + HTTP, :class:`pxe.PxeServer`) for the
   job's duration unless an outside server serves it (``serve=False``; restart it after the render).
4. **Waves**: a canary wave of ``canary`` servers, then waves of ``wave``. Per wave: the servers move to
   ``deploying``, their next boot is set to PXE (once, read back), then they are switched on (if off)
   or power-cycled (if on), and watched.
5. **Evidence** (the tree's dnsmasq and HTTP logs, :mod:`pxe.evidence`): a DHCP lease for the server's
   MAC, then its answer file fetched by its address, then the installer's late callback (token
   checked by the HTTP server: from the server's own address, with the token of this run, once).
   Each step has a timeout counted from the power action; a server that
   misses one moves to ``failed`` with the reason. A server with the late callback moves to
   ``deployed`` with the evidence in the reason.
6. **Failure budget**: a failed canary stops the job; later, more than ``failure_budget`` failures stop
   it before the next wave. Servers of waves never started stay as they were.

Everything is a job (``kind="image"``): its parameters and each server's progress live in the job's
``params``, written at every step, so ``fleet image --resume JOB`` after a crash picks up where it
was: finished servers are left alone, servers mid-install are judged on the evidence logged since
their power action and, without an answer yet, restarted (PXE once, power cycle) with fresh timeouts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fleet.core.jobs import get_job
from fleet.core.targets import hostnames, servers
from fleet.errors import ConflictError, FleetError, InputError, NotFound, ValidationError
from fleet.ops.bmc import boot_modes, set_boot
from fleet.ops.lifecycle import move_to
from fleet.ops.power_action import power
from fleet.ops.pxe import pxe_record_evidence, pxe_render
from inventory.models import IpPool, Nic, Rack, Server, utcnow
from inventory.selectors import parse_selector

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["IMAGE_STATES", "ImageOptions", "ImageResult", "allocate_addresses", "image_waves", "plan_waves",
           "run_image"]

#: States a server may be imaged from (``deployed`` needs ``reimage``; ``deploying`` is a resume).
IMAGE_STATES = ("ready", "maintenance")
_POLL_S = 1.0
_CLOCK_SLACK = timedelta(seconds=2)  # dnsmasq logs whole seconds


@dataclass(frozen=True)
class ImageOptions:
    os: str
    root: str
    manager_url: str
    interface: str = ""
    listen: str = ""  # HOST:PORT for the HTTP server (default: the manager URL's)
    canary: int = 1
    wave: int = 8
    failure_budget: int = 0  # failures tolerated after the canary wave, before the next wave starts
    dhcp_timeout_s: float = 300.0
    fetch_timeout_s: float = 900.0
    done_timeout_s: float = 3600.0
    reimage: bool = False
    serve: bool = True
    overrides: str = ""  # a PXE overrides file (see docs/pxe.md)
    extra_images: tuple[str, ...] = ()  # "REL=PATH": extra initrds to install under images/ (hosts' extra_initrds)
    dnsmasq_user: str = ""  # the user dnsmasq drops to (default: its own, nobody; the tree must be readable)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageOptions:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
                      if k in cls.__dataclass_fields__})

    def sources(self) -> Any:
        """Where boot loaders and images come from: the system's, plus ``extra_images``."""
        from pxe.install import BootSources

        extra = {}
        for item in self.extra_images:
            rel, sep, path = item.partition("=")
            if not sep or not rel or not path:
                raise InputError(f"--extra-image {item!r}: expected REL=PATH (e.g. probe/probe.gz=/srv/probe.gz)")
            if not Path(path).is_file():
                raise InputError(f"--extra-image {item!r}: no file {path}")
            extra[rel] = Path(path)
        return BootSources(extra_images=extra)


@dataclass
class ImageResult:
    job_id: int
    status: str
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    waves: list[list[str]] = field(default_factory=list)
    stopped: str = ""

    @property
    def deployed(self) -> list[str]:
        return sorted(h for h, s in self.servers.items() if s["step"] == "deployed")

    @property
    def failed(self) -> list[str]:
        return sorted(h for h, s in self.servers.items() if s["step"] == "failed")

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": self.status, "stopped": self.stopped, "waves": self.waves,
                "deployed": self.deployed, "failed": self.failed, "servers": self.servers}


# -- addresses -----------------------------------------------------------------------------------------


def _boot_nic(nics: list[Nic]) -> Nic | None:
    if not nics:
        return None
    return min(nics, key=lambda n: (not n.pxe, n.name))


def _candidates(pool: IpPool) -> Any:
    net = ipaddress.ip_network(pool.cidr)
    first = ipaddress.ip_address(pool.first) if pool.first else None
    last = ipaddress.ip_address(pool.last) if pool.last else None
    skip = {ipaddress.ip_address(pool.gateway)} if pool.gateway else set()
    skip |= {ipaddress.ip_address(d) for d in pool.dns.split(",") if d}
    for addr in net.hosts():
        if (first and addr < first) or (last and addr > last) or addr in skip:
            continue
        yield str(addr)


def allocate_addresses(ctx: Context, hostnames: Sequence[str], *, attempts: int = 5) -> dict[str, str]:
    """Give each server's boot NIC an address from its rack's (else site's) provisioning pool.

    Servers that have one keep it. Returns hostname → address for every server. One transaction;
    a concurrent allocation of the same address (unique index) is retried.
    """
    for attempt in range(attempts):
        try:
            return _allocate_once(ctx, hostnames)
        except IntegrityError:
            if attempt == attempts - 1:
                raise ConflictError("could not allocate addresses: other jobs keep taking them; try again") \
                    from None
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _allocate_once(ctx: Context, hostnames: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    given: list[tuple[str, str, str]] = []
    with ctx.write() as s:
        servers = list(s.execute(select(Server).where(Server.hostname.in_(list(hostnames)))).scalars())
        racks = {r.id: r for r in s.execute(select(Rack).where(Rack.id.in_(
            {sv.rack_id for sv in servers if sv.rack_id}))).scalars()}
        pools = list(s.execute(select(IpPool)).scalars())
        nics_of: dict[int, list[Nic]] = {}
        for nic in s.execute(select(Nic).where(Nic.server_id.in_([sv.id for sv in servers]))).scalars():
            nics_of.setdefault(nic.server_id, []).append(nic)
        used = set(s.execute(select(Nic.ip).where(Nic.ip.is_not(None))).scalars())
        used |= set(s.execute(select(Server.primary_ip).where(Server.primary_ip.is_not(None))).scalars())
        free: dict[int, Any] = {}
        for server in sorted(servers, key=lambda sv: sv.hostname):
            nic = _boot_nic(nics_of.get(server.id or 0, []))
            if nic is None:
                raise ValidationError(f"{server.hostname} has no NIC to boot from", field="nics")
            if nic.ip:
                out[server.hostname] = nic.ip
                continue
            rack = racks.get(server.rack_id)
            pool = _pool_for(pools, rack)
            if pool is None:
                where = f"rack {rack.name}" if rack else "no rack"
                raise ValidationError(f"{server.hostname}: no provisioning IP pool for {where} or its site "
                                      "(fleet add pool ...)", field="ip")
            gen = free.setdefault(pool.id or 0, _candidates(pool))
            ip = next((a for a in gen if a not in used), None)
            if ip is None:
                raise ConflictError(f"IP pool {pool.name} ({pool.cidr}) is full")
            used.add(ip)
            nic.ip = ip
            s.add(nic)
            out[server.hostname] = ip
            given.append((server.hostname, nic.mac, ip))
        if given:
            s.flush()
            ctx.audit(s, "ip.allocate", [h for h, _, _ in given],
                         addresses={h: ip for h, _, ip in given} if len(given) <= 200 else {"count": len(given)})
    return out


def _pool_for(pools: list[IpPool], rack: Rack | None) -> IpPool | None:
    def rank(p: IpPool) -> tuple[int, int]:
        if rack is not None and p.rack_id == rack.id:
            scope = 0
        elif p.rack_id is None and rack is not None and p.site_id == rack.site_id:
            scope = 1
        else:
            return (9, 9)
        return (scope, 0 if p.purpose == "provisioning" else 1)

    best = min(pools, key=rank, default=None)
    return best if best is not None and rank(best) < (9, 9) else None


# -- the job -------------------------------------------------------------------------------------------


def plan_waves(hosts: list[str], canary: int, wave: int) -> list[list[str]]:
    canary = max(0, min(canary, len(hosts)))
    out = [hosts[:canary]] if canary else []
    rest = hosts[canary:]
    size = max(1, wave)
    out += [rest[i:i + size] for i in range(0, len(rest), size)]
    return out


def image_waves(ctx: Context, selector: Any, *, canary: int = 1, wave: int = 8, reimage: bool = False
                ) -> list[list[str]]:
    """The waves imaging the selected servers would run (rack and position order, canary first); raises
    :class:`InputError` naming every server that cannot be imaged now, as :func:`run_image` does."""
    names = hostnames(ctx, selector)
    if not names:
        raise NotFound(f"no servers match {parse_selector(selector)!s}")
    _eligible(ctx, names, reimage=reimage, resuming=set())
    order = {r.hostname: (r.rack or "", r.position or 0) for r in servers(ctx, names)}
    names.sort(key=lambda h: (order[h], h))
    return plan_waves(names, canary, wave)


def _eligible(ctx: Context, hostnames: list[str], *, reimage: bool, resuming: set[str]) -> dict[str, Any]:
    with ctx.engine.connect() as conn:
        rows = {r.hostname: r for r in conn.execute(select(Server.hostname, Server.state, Server.bmc_host,
                                                           Server.rack_id).where(Server.hostname.in_(hostnames)))}
    allowed = set(IMAGE_STATES) | ({"deployed"} if reimage else set())
    refused = []
    for host in hostnames:
        row = rows[host]
        if row.state in allowed or (row.state == "deploying" and host in resuming):
            if not row.bmc_host:
                refused.append(f"{host}: no BMC to set its boot device and power it")
            continue
        hint = " (use --reimage to image a deployed server)" if row.state == "deployed" else ""
        refused.append(f"{host}: {row.state}{hint}")
    if refused:
        shown = "; ".join(refused[:10]) + (f"; and {len(refused) - 10} more" if len(refused) > 10 else "")
        raise InputError(f"{len(refused)} server(s) cannot be imaged now: {shown}. Imaging takes servers that are "
                         f"{' or '.join(sorted(allowed))}")
    return rows



async def run_image(ctx: Context, selector: Any, options: ImageOptions, *, resume: int | None = None,
                    progress: Callable[[str, dict[str, Any]], None] | None = None) -> ImageResult:
    """Image the selected servers (see the module docstring); ``resume`` continues an earlier job."""
    from fleet.core.jobs import JobTracker

    servers: dict[str, dict[str, Any]]
    if resume is not None:
        job_row = get_job(ctx, resume)
        if job_row.kind != "image":
            raise InputError(f"job {resume} is a {job_row.kind} job, not an image job")
        if job_row.status in ("done", "partial"):
            raise InputError(f"job {resume} finished ({job_row.status}); nothing to resume")
        if job_row.status == "running":
            raise ConflictError(f"job {resume} is still running ({job_row.owner}); resume it once it stopped")
        options = ImageOptions.from_json(job_row.params["options"])
        servers = job_row.params["servers"]
        waves = job_row.params["waves"]
        selector_text = job_row.selector
    else:
        waves = image_waves(ctx, selector, canary=options.canary, wave=options.wave, reimage=options.reimage)
        servers = {h: {"step": "pending", "wave": i, "reason": "", "evidence": {}}
                   for i, wave in enumerate(waves) for h in wave}
        selector_text = str(parse_selector(selector))
    tracker = JobTracker(ctx, "image", selector_text, job_id=resume, total=len(servers), min_write_s=0.5,
                         params={"options": options.to_json(), "waves": waves, "servers": servers})
    result = ImageResult(job_id=0, status="running", servers=servers, waves=waves)
    with tracker as job:
        result.job_id = job.id or 0
        run = _ImageRun(ctx, options, job, servers, waves, progress)
        try:
            await run.go(resuming=resume is not None)
        finally:
            job.done = sum(1 for s in servers.values() if s["step"] == "deployed")
            job.failed = sum(1 for s in servers.values() if s["step"] == "failed")
            job.result.update(stopped=run.stopped, deployed=job.done, failed=job.failed,
                              waves=[{"hosts": w, "deployed": sum(servers[h]["step"] == "deployed" for h in w),
                                      "failed": sum(servers[h]["step"] == "failed" for h in w)} for w in waves])
            job.save_params(servers=servers)
        result.stopped = run.stopped
        if run.stopped:
            job.status = "failed"
    result.status = job.status
    return result


class _ImageRun:
    def __init__(self, ctx: Context, options: ImageOptions, job: Any, servers: dict[str, dict[str, Any]],
                 waves: list[list[str]], progress: Callable[[str, dict[str, Any]], None] | None) -> None:
        self.ctx = ctx
        self.o = options
        self.job = job
        self.servers = servers
        self.waves = waves
        self.progress = progress
        self.stopped = ""
        self.server: Any = None
        self.reader: Any = None
        self.macs: dict[str, str] = {}
        self.ips: dict[str, str] = {}
        self.loaders: dict[str, str] = {}

    # -- bookkeeping --------------------------------------------------------------------------------

    def _set(self, host: str, step: str, reason: str = "", **evidence: Any) -> None:
        entry = self.servers[host]
        entry["step"] = step
        if reason:
            entry["reason"] = reason
        entry["evidence"].update(evidence)
        entry["at"] = utcnow().isoformat(timespec="seconds")
        self.job.save_params(servers=self.servers)
        self.job.progress(done=sum(1 for s in self.servers.values() if s["step"] == "deployed"),
                          failed=sum(1 for s in self.servers.values() if s["step"] == "failed"), force=True)
        if self.progress:
            self.progress(host, dict(entry))

    def _fail(self, host: str, reason: str) -> None:
        try:
            move_to(self.ctx, host, "failed", reason=f"imaging job {self.job.id}: {reason}")
        except FleetError as exc:  # moved meanwhile by someone else: say so, do not fight over it
            reason = f"{reason} (its state was not changed: {exc})"
        self._set(host, "failed", reason)

    # -- the run ------------------------------------------------------------------------------------

    async def go(self, *, resuming: bool) -> None:
        hosts = [h for w in self.waves for h in w]
        todo = [h for h in hosts if self.servers[h]["step"] not in ("deployed", "failed")]
        if not todo:
            return
        if resuming:
            _eligible(self.ctx, todo, reimage=self.o.reimage, resuming=set(todo))
        self.ips = allocate_addresses(self.ctx, todo)
        pxe_render(self.ctx, hosts, out=self.o.root, manager_url=self.o.manager_url, os=self.o.os,
                              interface=self.o.interface, overrides=_load_overrides(self.o.overrides),
                              sources=self.o.sources(), dnsmasq_user=self.o.dnsmasq_user,
                              **_boot_tokens(self.job.id, self.o, len(self.waves)))
        import json

        index = json.loads((Path(self.o.root) / "hosts.json").read_text())
        self.macs = {h["hostname"]: h["mac"] for h in index["hosts"]}
        self.loaders = {h["hostname"]: h["loader"] for h in index["hosts"]}  # the boot mode reads them
        from pxe.evidence import EvidenceReader

        self.reader = EvidenceReader(self.o.root)
        earlier = self.reader.poll()  # what the logs hold already: a resumed job judges its servers on it
        midway = {h for h in todo if "since" in self.servers[h]}
        for ev in earlier:
            self._evidence(ev, midway)
        if self.o.serve:
            await self._serve()
        try:
            for number, wave in enumerate(self.waves):
                pending = [h for h in wave if self.servers[h]["step"] not in ("deployed", "failed")]
                if not pending:
                    continue
                await self._wave(number, pending)
                failed = sum(1 for h in hosts if self.servers[h]["step"] == "failed")
                if number == 0 and self.o.canary and any(self.servers[h]["step"] == "failed" for h in wave):
                    self.stopped = f"the canary wave failed ({failed} server(s)): later waves not started"
                    break
                if failed > self.o.failure_budget and number < len(self.waves) - 1:
                    self.stopped = (f"{failed} failure(s), over the budget of {self.o.failure_budget}: "
                                    "later waves not started")
                    break
        finally:
            if self.server is not None:
                await self.server.stop()
            pxe_record_evidence(self.ctx, self.o.root)

    async def _serve(self) -> None:
        from pxe.serve import PxeServer

        listen = None
        if self.o.listen:
            host, _, port = self.o.listen.rpartition(":")
            listen = (host.strip("[]"), int(port))
        self.server = PxeServer(self.o.root, interface=self.o.interface or None, listen=listen,
                                dnsmasq_user=self.o.dnsmasq_user or None)
        await self.server.start()

    async def _wave(self, number: int, hosts: list[str]) -> None:
        for h in hosts:
            move_to(self.ctx, h, "deploying", reason=f"imaging job {self.job.id}: wave {number} ({self.o.os})")
        # Each server's boot mode (UEFI or legacy: fleet.ops.bootmode): a UEFI server asked for a legacy
        # PXE boot ignores it and boots its disk. The job keeps what was asked and why.
        modes = boot_modes(self.ctx, hosts, loaders=self.loaders)
        boot = await set_boot(self.ctx, hosts, "pxe", persistent=False, loaders=self.loaders)
        ready = []
        for host, _, error in boot:
            mode = modes.get(host)
            asked = f"pxe, {mode.mode} ({mode.source})" if mode else "pxe"
            if error:
                self._fail(host, f"next boot PXE ({asked}) not set: {error}")
            else:
                self.servers[host]["evidence"]["boot"] = asked
                ready.append(host)
        if not ready:
            return
        status = {r.hostname: r.after for r in await power(self.ctx, "status", ready)}
        off = [h for h in ready if status.get(h) == "off"]
        on = [h for h in ready if status.get(h) == "on"]
        for h in ready:
            if h not in off and h not in on:
                self._fail(h, f"power state unknown ({status.get(h)}): not acted on")
        acted_at = utcnow()
        results = []
        if off:
            results += await power(self.ctx, "on", off, force=True)
        if on:
            results += await power(self.ctx, "cycle", on, force=True)
        watching = []
        for r in results:
            if r.ok:
                self.servers[r.hostname]["since"] = acted_at.isoformat()
                self._set(r.hostname, "booting", power=f"{r.action} at {acted_at.isoformat(timespec='seconds')}")
                watching.append(r.hostname)
            else:
                self._fail(r.hostname, f"power {r.action} failed: {r.error or r.outcome}")
        await self._watch(watching)

    async def _watch(self, hosts: list[str]) -> None:
        pending = set(hosts)
        while pending:
            for ev in self.reader.poll():
                self._evidence(ev, pending)
            now = utcnow()
            for host in sorted(pending):
                entry = self.servers[host]
                since = datetime.fromisoformat(entry["since"])
                waited = (now - since).total_seconds()
                step = entry["step"]
                if step == "deployed":
                    pending.discard(host)
                elif step == "booting" and waited > self.o.dhcp_timeout_s:
                    self._fail(host, f"no DHCP lease for {self.macs.get(host)} within {self.o.dhcp_timeout_s:.0f} s")
                    pending.discard(host)
                elif step == "leased" and waited > self.o.fetch_timeout_s:
                    self._fail(host, f"answer file not fetched by {self.ips.get(host)} within "
                                     f"{self.o.fetch_timeout_s:.0f} s")
                    pending.discard(host)
                elif step in ("fetched", "installing") and waited > self.o.done_timeout_s:
                    self._fail(host, f"no late callback within {self.o.done_timeout_s:.0f} s")
                    pending.discard(host)
            if pending:
                await asyncio.sleep(_POLL_S)

    def _evidence(self, ev: Any, pending: set[str]) -> None:
        host = next((h for h in pending if (ev.hostname and ev.hostname == h)
                     or (ev.mac and ev.mac == self.macs.get(h))
                     or (ev.ip and ev.ip == self.ips.get(h) and ev.kind != "lease")), None)
        if host is None:
            return
        entry = self.servers[host]
        if ev.ts < datetime.fromisoformat(entry["since"]) - _CLOCK_SLACK or not ev.ok:
            return
        at = ev.ts.isoformat(timespec="seconds")
        order = ("booting", "leased", "fetched", "installing", "deployed")
        rank = order.index(entry["step"]) if entry["step"] in order else 0
        if ev.kind == "lease" and rank < 1:
            self._set(host, "leased", lease=f"{ev.ip} for {ev.mac} at {at}")
        elif ev.kind == "fetch" and (ev.path or "").startswith(f"http/answers/{host}/") and rank < 2:
            self._set(host, "fetched", fetch=f"{ev.path} by {ev.ip} at {at}")
        elif ev.kind == "callback" and ev.phase == "early" and rank < 3:
            self._set(host, "installing", early=f"from {ev.ip} at {at}")
        elif ev.kind == "callback" and ev.phase == "late":
            self._set(host, "deployed", late=f"from {ev.ip} at {at}")
            move_to(self.ctx, host, "deployed",
                               reason=f"imaging job {self.job.id}: {self.o.os} installed (lease, answer file and "
                                      f"late callback from {ev.ip} at {at})")
            pending.discard(host)


def _boot_tokens(job_id: int | None, o: ImageOptions, waves: int) -> dict[str, Any]:
    """Callback tokens for this run of the job: bound to the job and a fresh nonce (a resume, which
    reboots its servers, issues new ones), valid while the waves may run (each lasts at most its
    longest timeout), spent by each server's late callback."""
    import secrets

    longest = max(o.dhcp_timeout_s, o.fetch_timeout_s, o.done_timeout_s)
    return {"nonce": f"image-{job_id}-{secrets.token_hex(6)}", "token_ttl_s": waves * longest + 600}


def _load_overrides(path: str) -> Any:
    if not path:
        return None
    from fleet.ops.pxe import PxeOverrides

    return PxeOverrides.load(path)

