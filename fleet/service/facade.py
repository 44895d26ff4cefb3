"""``fleet.Fleet``: the one public API. The CLI, the TUI, the scheduler and scripts all call it.

Inventory reads and edits are plain synchronous methods (each is one short transaction); device
operations, which wait on the network, are ``async`` and arrive with the drivers. Dependencies
(engine, hardware profiles, key ring) are passed in, so tests build a Fleet on ``sqlite://``.

    from fleet import Fleet
    with Fleet.open("sqlite:///fleet.db") as fleet:
        for s in fleet.servers("rack=R12 state=deployed"):
            print(s.hostname, s.bmc)
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from fleet.core import jobs, targets
from fleet.core.context import Context, current_actor
from fleet.core.targets import endpoint, server_record
from fleet.errors import FleetError, InputError, NotFound
from fleet.model.views import (
    AuditRow,
    JobRow,
    NicRow,
    RackRow,
    ServerDetail,
    ServerRow,
    SiteRow,
    StateChangeRow,
    StateRow,
)
from fleet.ops import bmc, bmc_trust, events, lifecycle, power_action, thresholds
from fleet.service.browse import BrowseMixin
from fleet.service.edits import CREDENTIAL_KINDS, InventoryEdits
from fleet.service.latest_state import latest_state
from fleet.service.pxe import PxeMixin
from inventory import db as inv_db
from inventory.models import (
    Audit,
    BmcEndpoint,
    Credential,
    Disk,
    Nic,
    Pod,
    PowerFeed,
    Rack,
    Server,
    ServerState,
    Site,
    StateChange,
)
from inventory.powerpath import server_paths
from inventory.secrets import KeyRing, load_or_create_key
from inventory.selectors import Selector, parse_selector

if TYPE_CHECKING:
    from fleet.profiles import ProfileSet

__all__ = ["CREDENTIAL_KINDS", "Fleet", "current_actor"]



class Fleet(BrowseMixin, PxeMixin, InventoryEdits):
    """The fleet: inventory queries and edits now; power, sweeps and imaging as they arrive."""

    def __init__(self, engine: Engine, *, profiles: ProfileSet | None = None, keyring: KeyRing | None = None,
                 key_path: Path | None = None, actor: str | None = None, device_timeout: float = 5.0,
                 drivers: dict[str, Any] | None = None) -> None:
        #: What every operation stands on (:class:`fleet.core.context.Context`): the facade delegates to
        #: the operations and workflows with it.
        self.ctx = Context(engine, profiles=profiles, keyring=keyring, key_path=key_path, actor=actor,
                           device_timeout=device_timeout, drivers=drivers)

    @property
    def engine(self) -> Engine:
        return self.ctx.engine

    @property
    def actor(self) -> str:
        """Who is acting (the actor of every audit row this Fleet writes)."""
        return self.ctx.actor

    @property
    def device_timeout(self) -> float:
        """The deadline of one device call (a BMC query, an SNMP get), in seconds."""
        return self.ctx.device_timeout

    # -- opening -------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str | None = None, **kwargs: Any) -> Fleet:
        """Open an existing inventory (``url``, else ``FLEET_DB``, else ``./fleet.db``).

        Refuses a database whose schema is not at the latest migration: run ``fleet init``.
        """
        resolved = inv_db.db_url(url)
        if resolved.startswith("sqlite:///") and not resolved.startswith("sqlite:///:memory:"):
            path = Path(resolved.removeprefix("sqlite:///"))
            if not path.exists():
                raise NotFound(f"no inventory at {path}: run 'fleet init' (or set FLEET_DB / --db)")
        engine = inv_db.make_engine(resolved)
        fleet = cls(engine, **kwargs)
        fleet._check_schema()
        return fleet

    @classmethod
    def init(cls, url: str | None = None, *, key_path: Path | None = None, **kwargs: Any) -> Fleet:
        """Create or upgrade the inventory to the latest schema and make sure a secret key exists."""
        resolved = inv_db.db_url(url)
        _check_sqlite_folder(resolved)
        engine = inv_db.make_engine(resolved)
        inv_db.upgrade(engine)
        key = load_or_create_key(key_path, create=True)
        fleet = cls(engine, keyring=KeyRing(key), key_path=key_path, **kwargs)
        fleet.ctx.check_key(create=True)
        return fleet

    def _check_schema(self) -> None:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(inv_db.__file__).with_name("migrations")))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        current = inv_db.current_revision(self.engine)
        if current != head:
            raise FleetError(f"the inventory schema is at {current or 'nothing'}, this Rackfleet needs {head}: "
                             "run 'fleet init' to upgrade")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def profiles(self) -> ProfileSet:
        return self.ctx.profiles

    @property
    def keyring(self) -> KeyRing:
        """The key ring, loaded on first use and checked against this inventory."""
        return self.ctx.keyring

    def audit_failure(self, action: str, targets: Sequence[str], error: BaseException, **detail: Any) -> None:
        """Record a refused or failed action in its own transaction (the action's was rolled back)."""
        self.ctx.audit_failure(action, targets, error, **detail)

    # -- servers: reads ------------------------------------------------------------------------------------

    def selector(self, terms: str | Sequence[str] | Selector | None) -> Selector:
        return parse_selector(terms)

    def count(self, selector: str | Sequence[str] | Selector | None = None) -> int:
        """How many servers ``selector`` matches."""
        return targets.count(self.ctx, selector)

    def hostnames(self, selector: str | Sequence[str] | Selector | None = None) -> list[str]:
        """The host names ``selector`` matches, sorted."""
        return targets.hostnames(self.ctx, selector)

    def servers(self, selector: str | Sequence[str] | Selector | None = None, *, limit: int | None = None,
                after: str | None = None) -> list[ServerRow]:
        """Servers matching ``selector``, by host name. ``after``/``limit`` page through large fleets."""
        return targets.servers(self.ctx, selector, limit=limit, after=after)

    def server(self, hostname: str) -> ServerDetail:
        """Everything the inventory holds about one server (never a secret)."""
        rows = self.servers(f"host={hostname.strip().lower()}") if "*" not in hostname else []
        if not rows:
            raise NotFound(f"no server named {hostname!r}")
        row = rows[0]
        with Session(self.engine) as s:
            server = server_record(s, hostname)
            extra = list(s.execute(select(BmcEndpoint).where(BmcEndpoint.server_id == server.id)
                                   .order_by(BmcEndpoint.protocol)).scalars())
            cred_ids = [server.bmc_credential_id, server.ssh_credential_id, *(e.credential_id for e in extra)]
            cred_names = dict(s.execute(select(Credential.id, Credential.name).where(
                Credential.id.in_([c for c in cred_ids if c]))).all())
            nics = tuple(NicRow(n.name, n.mac, n.ip, n.switch, n.switch_port, n.pxe) for n in s.execute(
                select(Nic).where(Nic.server_id == server.id).order_by(Nic.name)).scalars())
            disks = tuple({"slot": d.slot, "kind": d.kind, "model": d.model, "serial": d.serial,
                           "size_gb": d.size_gb}
                          for d in s.execute(select(Disk).where(Disk.server_id == server.id)
                                             .order_by(Disk.slot)).scalars())
            history = tuple(StateChangeRow(h.ts, h.from_state, h.to_state, h.actor, h.reason) for h in s.execute(
                select(StateChange).where(StateChange.server_id == server.id).order_by(StateChange.id)).scalars())
            feeds = tuple(self._power_path(s, server.id))
        return ServerDetail(
            row=row, state_reason=server.state_reason, state_changed_at=server.state_changed_at,
            description=server.description, bmc_credential=cred_names.get(server.bmc_credential_id),
            ssh_credential=cred_names.get(server.ssh_credential_id), nics=nics, disks=disks,
            power_feeds=feeds, history=history,
            bmc_endpoints=tuple(self._bmc_endpoints(server, extra, cred_names)))

    @staticmethod
    def _bmc_endpoints(server: Server, extra: Sequence[BmcEndpoint], cred_names: dict[int, str]
                       ) -> Iterable[dict[str, Any]]:
        """The server's BMC endpoints, IPMI first: where, which credential (by name) and the TLS trust."""
        if server.bmc_host:
            yield {"protocol": "ipmi", "endpoint": endpoint(server.bmc_host, server.bmc_port),
                   "credential": cred_names.get(server.bmc_credential_id)}
        for e in extra:
            out: dict[str, Any] = {"protocol": e.protocol, "endpoint": endpoint(e.host, e.port),
                                   "credential": cred_names.get(e.credential_id)}
            if e.tls_fingerprint:
                out["tls_fingerprint"] = e.tls_fingerprint
            if e.ca_file:
                out["ca_file"] = e.ca_file
            yield out

    @staticmethod
    def _power_path(s: Session, server_id: int) -> Iterable[dict[str, Any]]:
        """The outlets feeding a server and what is upstream of each (see :mod:`inventory.powerpath`)."""
        return [p.to_row() for p in server_paths(s, [server_id]).get(server_id, [])]

    def latest_state(self, selector: str | Sequence[str] | Selector | None = None) -> list[StateRow]:
        """The latest state of every selected server in one query (never-swept servers: unknown)."""
        return latest_state(self.engine, selector)

    def summary(self, selector: str | Sequence[str] | Selector | None = None) -> dict[str, dict[str, int]]:
        """Counts of the selected servers by lifecycle state, by health and by power state."""
        sel = parse_selector(selector)
        out: dict[str, dict[str, int]] = {}
        with Session(self.engine) as s:
            for name, column in (("state", Server.state),
                                 ("health", func.coalesce(ServerState.health, "unknown")),
                                 ("power", func.coalesce(ServerState.power, "unknown"))):
                stmt = sel.apply(select(column, func.count()).select_from(Server)
                                 .outerjoin(ServerState, ServerState.server_id == Server.id).group_by(column))
                out[name] = {k: n for k, n in s.execute(stmt)}
        return out

    def history(self, hostname: str) -> list[StateChangeRow]:
        return list(self.server(hostname).history)

    # -- servers: lifecycle and edits ----------------------------------------------------------------------

    def set_state(self, hostname: str, state: str, *, reason: str) -> ServerRow:
        """Move one server through its lifecycle (refuses illegal moves; records who/why/when)."""
        return lifecycle.set_state(self.ctx, hostname, state, reason=reason)

    def move_to(self, hostname: str, state: str, *, reason: str) -> bool:
        """Move a server to ``state`` unless it is there already (workflows that resume); True if moved."""
        return lifecycle.move_to(self.ctx, hostname, state, reason=reason)

    def allowed_states(self, hostname: str) -> list[str]:
        return lifecycle.allowed_states(self.ctx, hostname)

    # -- sites, racks, audit -------------------------------------------------------------------------------

    def sites(self) -> list[SiteRow]:
        with Session(self.engine) as s:
            pods = dict(s.execute(select(Pod.site_id, func.count()).group_by(Pod.site_id)).all())
            racks = dict(s.execute(select(Rack.site_id, func.count()).group_by(Rack.site_id)).all())
            servers = dict(s.execute(select(Rack.site_id, func.count()).join(Server, Server.rack_id == Rack.id)
                                     .group_by(Rack.site_id)).all())
            return [SiteRow(site.code, site.name, pods.get(site.id, 0), racks.get(site.id, 0),
                            servers.get(site.id, 0))
                    for site in s.execute(select(Site).order_by(Site.code)).scalars()]

    def racks(self, site: str | None = None) -> list[RackRow]:
        stmt = (select(Rack.id, Site.code, Pod.code, Rack.name, Rack.units)
                .join(Site, Site.id == Rack.site_id).outerjoin(Pod, Pod.id == Rack.pod_id)
                .order_by(Site.code, Rack.name))
        if site:
            stmt = stmt.where(func.lower(Site.code) == site.lower())
        with Session(self.engine) as s:
            rows = s.execute(stmt).all()
            usage = {rid: (n, u or 0) for rid, n, u in s.execute(
                select(Server.rack_id, func.count(), func.sum(Server.height)).group_by(Server.rack_id))}
            feeds: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for f in s.execute(select(PowerFeed).where(PowerFeed.rack_id.is_not(None)).order_by(PowerFeed.name)
                               ).scalars():
                feeds[f.rack_id].append({"name": f.name, "capacity_w": f.capacity_w})
        return [RackRow(site=r[1], pod=r[2], name=r[3], units=r[4], servers=usage.get(r[0], (0, 0))[0],
                        used_units=usage.get(r[0], (0, 0))[1], feeds=tuple(feeds.get(r[0], ())))
                for r in rows]

    def audit(self, *, limit: int = 50, action: str | None = None, actor: str | None = None,
              target: str | None = None) -> list[AuditRow]:
        """The newest audit entries first, optionally filtered."""
        stmt = select(Audit).order_by(Audit.id.desc()).limit(limit)
        if action:
            stmt = stmt.where(Audit.action == action)
        if actor:
            stmt = stmt.where(Audit.actor == actor)
        with Session(self.engine) as s:
            rows = s.execute(stmt).scalars().all()
        out = [AuditRow(a.id, a.ts, a.actor, a.action, tuple(a.targets), a.target_count, a.result, a.detail)
               for a in rows]
        if target:
            out = [a for a in out if target in a.targets]
        return out

    # -- power ----------------------------------------------------------------------------------------------

    def bmc_targets(self, selector: str | Sequence[str] | Selector | None) -> tuple[list[Any], list[str]]:
        """(hostname, [Target, ...], profile) for each selected server with a BMC endpoint (IPMI, Redfish), and the
        problems of the rest."""
        return targets.bmc_targets(self.ctx, selector)

    def driver(self, name: str) -> Any:
        """The shared instance of driver ``name`` (created on first use; closed by ``aclose``)."""
        return self.ctx.driver(name)

    async def aclose(self) -> None:
        """Stop the drivers' workers and sessions."""
        await self.ctx.aclose()

    def rack_occupancy(self, hostnames: Sequence[str]) -> dict[str, tuple[int, int]]:
        """For the racks of ``hostnames``: rack name → (how many of them are in it, how many servers it holds)."""
        return targets.rack_occupancy(self.ctx, hostnames)

    async def power_on_plan(self, selector: str | Sequence[str] | Selector | None, *, max_wave: int = 0
                            ) -> tuple[Any, list[str]]:
        """Plan a budgeted power-on of the selected servers (see :mod:`fleet.model.budget`); nothing is switched.

        Servers already on, and those whose state cannot be read, count as drawing their steady load.
        Returns the plan and warnings.
        """
        return await power_action.power_on_plan(self.ctx, selector, max_wave=max_wave)

    async def power(self, action: str, selector: str | Sequence[str] | Selector | None, *, force: bool = False,
                    concurrency: int = 64, wave_size: int = 0, stagger_s: float = 0.0,
                    confirm_timeout_s: float = 60.0, poll_interval_s: float = 1.0,
                    limits: Any = None, progress: Any = None, budget: bool = False,
                    resume: int | None = None, stop: Any = None) -> list[Any]:
        """Query, act and confirm ``action`` on the selected servers (see :mod:`fleet.ops.power`). Audited.

        A disruptive action runs as a job with a step per server, "sent" recorded before each command
        (:mod:`fleet.ops.power_job`); ``resume`` (a job id; ``action``/``selector`` are then the job's)
        confirms what that job sent and acts only on what it never sent. ``stop`` (an asyncio.Event)
        stops sending. With ``budget`` (``on`` only), servers are switched on in the waves of
        :meth:`power_on_plan`, an inrush window apart; servers that would put a feed, UPS or PDU over
        capacity are not switched.
        """
        return await power_action.power(self.ctx, action, selector, force=force, concurrency=concurrency,
                                        wave_size=wave_size, stagger_s=stagger_s,
                                        confirm_timeout_s=confirm_timeout_s, poll_interval_s=poll_interval_s,
                                        limits=limits, progress=progress, budget=budget, resume=resume, stop=stop)

    def power_loads(self, hostnames: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
        """Each server's draw (from its profile) and the feeds, UPSes and PDUs on its power path.

        A server's path is every element above each of its outlets, through any number of hops
        (:func:`inventory.powerpath.server_elements`); a server with no outlet on record hangs on its
        rack's feeds. Elements with no known capacity are left out, with a warning.
        """
        return power_action.power_loads(self.ctx, hostnames)

    def inrush_window(self, hostnames: Sequence[str]) -> float:
        """The longest inrush window among these servers' profiles (2 s when none says)."""
        return power_action.inrush_window(self.ctx, hostnames)

    def boot_modes(self, selector: str | Sequence[str] | Selector | None, *, uefi: bool | None = None,
                   loaders: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Each selected server's boot mode (``fleet.ops.bootmode.BootMode``: UEFI or legacy, and why);
        ``uefi`` True/False is an explicit request for all of them."""
        return bmc.boot_modes(self.ctx, selector, uefi=uefi, loaders=loaders)

    async def set_boot(self, selector: str | Sequence[str] | Selector | None, device: str, *,
                       persistent: bool = False, uefi: bool | None = None,
                       loaders: Mapping[str, str] | None = None) -> list[tuple[str, Any, str]]:
        """Set the next boot device in each server's boot mode (:meth:`boot_modes`; ``uefi`` True/False
        overrides it), then read it back. Audited with each mode and its source.
        (hostname, BootDevice read back, error)."""
        return await bmc.set_boot(self.ctx, selector, device, persistent=persistent, uefi=uefi, loaders=loaders)

    async def sensors(self, hostname: str) -> list[Any]:
        """The BMC's sensors with readings and states (thresholds from the BMC, else the profile)."""
        return await bmc.sensors(self.ctx, hostname)

    async def sel(self, hostname: str, *, clear: bool = False) -> list[Any]:
        """The BMC's system event log; with ``clear``, read it, then clear it (audited)."""
        return await bmc.sel(self.ctx, hostname, clear=clear)

    async def fru(self, hostname: str) -> Any:
        """The BMC's FRU inventory (manufacturer, product, serial...)."""
        return await bmc.fru(self.ctx, hostname)

    async def bmc_reset(self, hostname: str) -> None:
        """Cold-reset the BMC itself (not the server). Audited."""
        await bmc.bmc_reset(self.ctx, hostname)

    async def bmc_trust(self, selector: str | Sequence[str] | Selector | None, *,
                        confirm: Callable[[list[Any]], bool], replace: bool = False) -> Any:
        """Read the selected Redfish BMCs' certificates, ``confirm`` them, record their fingerprints; audited
        (see :mod:`fleet.ops.bmc_trust`; a changed certificate is re-trusted only with ``replace``)."""
        return await bmc_trust.trust(self.ctx, selector, confirm=confirm, replace=replace)

    def bmc_trust_ca_file(self, selector: str | Sequence[str] | Selector | None, ca_file: str | Path) -> list[str]:
        """Trust the selected Redfish BMCs through a CA bundle instead of fingerprints; audited."""
        return bmc_trust.trust_ca_file(self.ctx, selector, ca_file)

    # -- sweeps and events ---------------------------------------------------------------------------------

    async def sweep(self, selector: str | Sequence[str] | None = None, *, ups: bool = True,
                    concurrency: int = 256, min_interval_s: float = 0.0, probe_all: bool = False,
                    facts: bool = False, facts_concurrency: int = 16) -> Any:
        """One health sweep (see :mod:`fleet.ops.sweep`): readings, latest states, events opened and resolved.

        With ``facts``, SSH facts of the selected servers that have an SSH credential too (drift events).
        Recorded as a job (``kind="sweep"``) with live progress."""
        from fleet.ops.sweep import run_sweep

        return await run_sweep(self.ctx, selector, ups=ups, concurrency=concurrency, min_interval_s=min_interval_s,
                               probe_all=probe_all, facts=facts, facts_concurrency=facts_concurrency)

    async def facts(self, selector: str | Sequence[str] | None, *, concurrency: int = 16) -> Any:
        """Collect facts over SSH, pin host keys while commissioning, record drift as events (audited)."""
        from fleet.ops.facts import collect

        return await collect(self.ctx, selector, concurrency=concurrency)

    async def remediate(self, selector: str | Sequence[str] | None = None, *, policy: str | Path | None = None,
                        apply: bool = False) -> Any:
        """Plan remediation of open events by the policies (dry run); with ``apply``, carry it out (audited)."""
        from fleet.workflows.remediate import run_remediation

        return await run_remediation(self.ctx, selector, policy=policy, apply=apply)

    # -- imaging and decommissioning ---------------------------------------------------------------------

    async def image(self, selector: str | Sequence[str] | None, *, os: str = "", root: str | Path = "",
                    manager_url: str = "", resume: int | None = None, progress: Any = None, **options: Any) -> Any:
        """Image the selected servers in waves, on evidence (see :mod:`fleet.workflows.imaging`); or ``resume`` a job.

        ``options``: interface, listen, canary, wave, failure_budget, dhcp_timeout_s, fetch_timeout_s,
        done_timeout_s, reimage, serve, overrides (:class:`fleet.workflows.imaging.ImageOptions`)."""
        from fleet.workflows.imaging import ImageOptions, run_image

        if resume is None:
            if not os or not root or not manager_url:
                raise InputError("imaging needs --os, --root (where the PXE tree goes) and --manager-url")
            if parse_selector(selector).is_empty:
                raise InputError("name the servers to image (a selector)")
            opts = ImageOptions(os=os, root=str(Path(root).absolute()), manager_url=manager_url, **options)
        else:
            opts = ImageOptions(os=os or "-", root=str(root or "-"), manager_url=manager_url or "-")
        return await run_image(self.ctx, selector, opts, resume=resume, progress=progress)

    def image_waves(self, selector: str | Sequence[str] | None, *, canary: int = 1, wave: int = 8,
                    reimage: bool = False) -> list[list[str]]:
        """The waves :meth:`image` would run; refuses (InputError) servers that cannot be imaged now."""
        from fleet.workflows.imaging import image_waves

        return image_waves(self.ctx, selector, canary=canary, wave=wave, reimage=reimage)

    def decommission_check(self, selector: str | Sequence[str] | None) -> list[str]:
        """The servers :meth:`decommission` would take; refuses (InputError) states that do not allow it."""
        from fleet.workflows.decommission import check_decommission

        return check_decommission(self.ctx, selector)

    async def decommission(self, selector: str | Sequence[str] | None, *, finish: str = "retired",
                           method: str = "auto", power_off: bool = True, only_devices: Sequence[str] = (),
                           concurrency: int = 8) -> Any:
        """Drain, wipe every disk over SSH, certify each, power off and retire.

        See :mod:`fleet.workflows.decommission`.
        """
        from fleet.workflows.decommission import run_decommission

        if parse_selector(selector).is_empty:
            raise InputError("name the servers to decommission (a selector)")
        return await run_decommission(self.ctx, selector, finish=finish, method=method, power_off=power_off,
                                      only_devices=only_devices, concurrency=concurrency)

    def wipe_certificates(self, selector: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Wipe certificates, newest first; ``intact`` says whether each still matches its digest."""
        from fleet.workflows.decommission import certificates

        return certificates(self.ctx, selector)

    # -- jobs ----------------------------------------------------------------------------------------------

    def jobs(self, *, kind: str | None = None, status: str | None = None, limit: int = 50) -> list[JobRow]:
        """Jobs newest first; a running job whose process died reads as ``interrupted``."""
        return jobs.list_jobs(self.ctx, kind=kind, status=status, limit=limit)

    def job(self, job_id: int) -> JobRow:
        return jobs.get_job(self.ctx, job_id)

    def work_orders(self, *, status: str | None = "open") -> list[dict[str, Any]]:
        """Work orders (RMA, battery replacement), newest first, for people or a ticketing system."""
        return events.work_orders(self.ctx, status=status)

    _THRESHOLDS = ("critical_low", "warning_low", "warning_high", "critical_high")

    def set_threshold(self, scope: str, sensor: str, values: dict[str, float | None]) -> dict[str, Any]:
        """Override a sensor's thresholds for a rack (``rack=NAME`` or ``site/rack``) or a server (its name).

        ``None`` clears a threshold; a server's override beats its rack's, which beats the profile. Audited.
        """
        return thresholds.set_threshold(self.ctx, scope, sensor, values)

    def threshold_overrides(self, hostnames: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
        """host → sensor → the thresholds set for it (its rack's, then its own over them)."""
        return thresholds.threshold_overrides(self.ctx, hostnames)

    def prune_readings(self, *, older_than_days: float, keep_hourly: bool = True) -> dict[str, int]:
        """Retention: readings older than N days are dropped, or (``keep_hourly``) thinned to one per hour
        per target and metric (the first of each hour). Audited. Returns the rows deleted."""
        return events.prune_readings(self.ctx, older_than_days=older_than_days, keep_hourly=keep_hourly)

    def events(self, *, status: str | None = "open", kind: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Events, newest first: ``status`` open (default), acked, resolved, or None for all."""
        return events.events(self.ctx, status=status, kind=kind, limit=limit)

    def ack_event(self, event_id: int) -> None:
        """Acknowledge an open event (it stays open until its condition clears). Audited."""
        events.ack_event(self.ctx, event_id)

    # -- UPS and PDU (fleet/ups.py does the work) ----------------------------------------------------------

    async def ups_status(self, selector: str | Sequence[str] | None = None, *, record: bool = True) -> list[Any]:
        """Read the selected UPSes now; record their latest state and readings (see :mod:`fleet.ops.ups`)."""
        from fleet.ops.ups import ups_status

        return await ups_status(self.ctx, selector, record=record)

    def battery_forecast(self, selector: str | Sequence[str] | None = None, *, min_runtime_s: float = 300.0
                         ) -> list[Any]:
        """Battery replacement forecast per UPS, from its age and its runtime-at-load trend."""
        from fleet.ops.ups import battery_forecast

        return battery_forecast(self.ctx, selector, min_runtime_s=min_runtime_s)

    async def outlet(self, target: str, action: str) -> list[Any]:
        """Switch ``DEVICE:N`` or every outlet feeding a server; confirmed by read-back; audited."""
        from fleet.ops.ups import outlet_action

        return await outlet_action(self.ctx, target, action)

    async def detect_profile(self, *, host: str, port: int, protocol: str, credential: str, nut_name: str = "",
                             kind: str | None = None) -> tuple[str, str]:
        """Recognise a UPS/PDU model from the device: (profile name, how it was chosen)."""
        from fleet.ops.ups import detect_profile

        return await detect_profile(self.ctx, host=host, port=port, protocol=protocol, credential=credential,
                                    nut_name=nut_name, kind=kind)

    @staticmethod
    def hardware_profiles() -> ProfileSet:
        """The hardware profiles (``FLEET_PROFILES`` or the checkout's ``hardware-profiles/``); no inventory needed."""
        from fleet.profiles import load_profiles

        return load_profiles()

def _check_sqlite_folder(url: str) -> None:
    """A new SQLite inventory needs a folder it can write: say so in one line, not as an OperationalError."""
    if not url.startswith("sqlite:///") or url.startswith("sqlite:///:memory:"):
        return
    folder = Path(url.removeprefix("sqlite:///")).parent
    if not folder.is_dir():
        raise NotFound(f"no folder {folder} for the inventory: create it (mkdir -p {folder}) or choose another "
                       "FLEET_DB / --db")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the inventory in {folder}: choose a folder you can write (FLEET_DB / --db)")
