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

import asyncio
import getpass
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from fleet.drivers.chain import build_chain, call_chain, gather_chain, power_chains
from fleet.errors import ConflictError, DriverError, FleetError, ImportFailed, InputError, NotFound, ValidationError
from fleet.model.views import (
    AuditRow,
    CredentialRow,
    ImportResult,
    JobRow,
    NicRow,
    RackRow,
    ServerDetail,
    ServerRow,
    SiteRow,
    StateChangeRow,
    StateRow,
)
from fleet.service.browse import BrowseMixin
from fleet.service.latest_state import latest_state
from fleet.service.pxe import PxeMixin
from inventory import db as inv_db
from inventory.lifecycle import allowed_moves, transition
from inventory.models import (
    Audit,
    Credential,
    Disk,
    Job,
    Meta,
    Nic,
    Outlet,
    Pdu,
    Pod,
    PowerFeed,
    Rack,
    Server,
    ServerState,
    ServerTag,
    Site,
    StateChange,
    Ups,
    utcnow,
)
from inventory.powerpath import server_elements, server_paths
from inventory.secrets import CHECK_META_KEY, KeyRing, Secret, load_or_create_key
from inventory.selectors import Selector, glob_to_like, parse_selector
from inventory.validate import check_code, check_hostname, check_text, visible

if TYPE_CHECKING:
    from fleet.profiles import ProfileSet

__all__ = ["CREDENTIAL_KINDS", "Fleet", "current_actor"]

CREDENTIAL_KINDS = ("ipmi", "snmp-v2c", "snmp-v3", "ssh", "nut")
_SERVER_CRED_COLUMN = {"ipmi": "bmc_credential_id", "ssh": "ssh_credential_id"}
_REMOVABLE_STATES = ("new", "retired", "rma")
_CHUNK = 500
_ANALYZE_AFTER = 1000  # rows an import must change before planner statistics are refreshed


def _job_row(j: Job) -> JobRow:
    return JobRow(id=j.id or 0, kind=j.kind, selector=j.selector, status=j.status, total=j.total, done=j.done,
                  failed=j.failed, actor=j.actor, owner=j.owner, created_at=j.created_at, started_at=j.started_at,
                  finished_at=j.finished_at, heartbeat_at=j.heartbeat_at, params=dict(j.params or {}),
                  result=dict(j.result or {}))


def current_actor() -> str:
    """Who is acting: ``FLEET_ACTOR``, else the user behind sudo, else the login name."""
    return os.environ.get("FLEET_ACTOR") or os.environ.get("SUDO_USER") or getpass.getuser()


class Fleet(BrowseMixin, PxeMixin):
    """The fleet: inventory queries and edits now; power, sweeps and imaging as they arrive."""

    def __init__(self, engine: Engine, *, profiles: ProfileSet | None = None, keyring: KeyRing | None = None,
                 key_path: Path | None = None, actor: str | None = None, device_timeout: float = 5.0,
                 drivers: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self._drivers: dict[str, Any] = dict(drivers or {})
        #: The deadline of one device call (a BMC query, an SNMP get), in seconds.
        self.device_timeout = device_timeout
        self.actor = actor or current_actor()
        self._profiles = profiles
        self._keyring = keyring
        self._key_path = key_path

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
        with inv_db.write_session(engine) as s:
            meta = s.get(Meta, CHECK_META_KEY)
            if meta is None:
                s.add(Meta(key=CHECK_META_KEY, value=fleet._keyring.check_value()))
            else:
                fleet._keyring.verify(meta.value)
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
        if self._profiles is None:
            from fleet.profiles import load_profiles

            self._profiles = load_profiles()
        return self._profiles

    @property
    def keyring(self) -> KeyRing:
        """The key ring, loaded on first use and checked against this inventory."""
        if self._keyring is None:
            ring = KeyRing(load_or_create_key(self._key_path))
            with Session(self.engine) as s:
                meta = s.get(Meta, CHECK_META_KEY)
            if meta is not None:
                ring.verify(meta.value)
            self._keyring = ring
        return self._keyring

    def _session(self) -> Any:
        """A writer's session (``BEGIN IMMEDIATE``; see :mod:`inventory.db`); reads use ``Session(engine)``."""
        return inv_db.write_session(self.engine)

    def _audit(self, session: Session, action: str, targets: Sequence[str], result: str = "ok",
               **detail: Any) -> None:
        session.execute(insert(Audit).values(
            ts=utcnow(), actor=self.actor, action=action, targets=list(targets)[:1000],
            target_count=len(targets), result=result, detail=detail))

    def audit_failure(self, action: str, targets: Sequence[str], error: BaseException, **detail: Any) -> None:
        """Record a refused or failed action in its own transaction (the action's was rolled back)."""
        with self._session() as s:
            self._audit(s, action, targets, "failed", error=str(error)[:500], **detail)

    # -- servers: reads ------------------------------------------------------------------------------------

    def selector(self, terms: str | Sequence[str] | Selector | None) -> Selector:
        return parse_selector(terms)

    def count(self, selector: str | Sequence[str] | Selector | None = None) -> int:
        """How many servers ``selector`` matches."""
        sel = parse_selector(selector)
        with Session(self.engine) as s:
            return s.execute(sel.apply(select(func.count()).select_from(Server))).scalar_one()

    def hostnames(self, selector: str | Sequence[str] | Selector | None = None) -> list[str]:
        """The host names ``selector`` matches, sorted."""
        sel = parse_selector(selector)
        with Session(self.engine) as s:
            return list(s.execute(sel.apply(select(Server.hostname)).order_by(Server.hostname)).scalars())

    def servers(self, selector: str | Sequence[str] | Selector | None = None, *, limit: int | None = None,
                after: str | None = None) -> list[ServerRow]:
        """Servers matching ``selector``, by host name. ``after``/``limit`` page through large fleets."""
        sel = parse_selector(selector)
        stmt = (
            select(Server.id, Server.hostname, Site.code, Pod.code, Rack.name, Server.position, Server.height,
                   Server.state, Server.profile, Server.serial, Server.asset_tag, Server.bmc_host,
                   Server.bmc_port, Server.primary_ip, Server.priority, ServerState.power, ServerState.health)
            .outerjoin(Rack, Rack.id == Server.rack_id)
            .outerjoin(Site, Site.id == Rack.site_id)
            .outerjoin(Pod, Pod.id == Rack.pod_id)
            .outerjoin(ServerState, ServerState.server_id == Server.id)
            .order_by(Server.hostname)
        )
        stmt = sel.apply(stmt)
        if after:
            stmt = stmt.where(Server.hostname > after)
        if limit is not None:
            stmt = stmt.limit(limit)
        with Session(self.engine) as s:
            rows = s.execute(stmt).all()
            if not rows:
                return []
            macs, tags = self._macs_and_tags(s, sel, [r[0] for r in rows], whole=limit is None and not after)
        return [
            ServerRow(hostname=r[1], site=r[2], pod=r[3], rack=r[4], position=r[5], height=r[6], state=r[7],
                      profile=r[8], serial=r[9], asset_tag=r[10], bmc=_endpoint(r[11], r[12]),
                      macs=tuple(macs.get(r[0], ())), primary_ip=r[13], tags=tuple(tags.get(r[0], ())),
                      priority=r[14], power=r[15] or "unknown", health=r[16] or "unknown")
            for r in rows
        ]

    @staticmethod
    def _macs_and_tags(s: Session, sel: Selector, ids: list[int], *, whole: bool
                       ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
        macs: dict[int, list[str]] = defaultdict(list)
        tags: dict[int, list[str]] = defaultdict(list)
        # The whole selection in one pass (a subquery), or a page's ids in chunks.
        id_filters = [sel.ids()] if whole else [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]
        for ids_part in id_filters:
            for sid, mac in s.execute(select(Nic.server_id, Nic.mac).where(Nic.server_id.in_(ids_part))
                                      .order_by(Nic.server_id, Nic.name)):
                macs[sid].append(mac)
            for sid, tag in s.execute(select(ServerTag.server_id, ServerTag.tag)
                                      .where(ServerTag.server_id.in_(ids_part))
                                      .order_by(ServerTag.server_id, ServerTag.tag)):
                tags[sid].append(tag)
        return macs, tags

    def _server(self, s: Session, hostname: str) -> Server:
        server = s.execute(select(Server).where(Server.hostname == hostname.strip().lower())).scalar_one_or_none()
        if server is None:
            raise NotFound(f"no server named {hostname!r}")
        return server

    def server(self, hostname: str) -> ServerDetail:
        """Everything the inventory holds about one server (never a secret)."""
        rows = self.servers(f"host={hostname.strip().lower()}") if "*" not in hostname else []
        if not rows:
            raise NotFound(f"no server named {hostname!r}")
        row = rows[0]
        with Session(self.engine) as s:
            server = self._server(s, hostname)
            cred_names = dict(s.execute(select(Credential.id, Credential.name).where(
                Credential.id.in_([c for c in (server.bmc_credential_id, server.ssh_credential_id) if c]))).all())
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
            power_feeds=feeds, history=history)

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
        with self._session() as s:
            server = self._server(s, hostname)
            transition(s, server, state.strip().lower(), actor=self.actor, reason=reason)
        return self.servers(f"host={server.hostname}")[0]

    def move_to(self, hostname: str, state: str, *, reason: str) -> bool:
        """Move a server to ``state`` unless it is there already (workflows that resume); True if moved."""
        with self._session() as s:
            server = self._server(s, hostname)
            if server.state == state:
                return False
            # Workflows' reasons may quote device text: shown escaped, never refused mid-workflow.
            transition(s, server, state, actor=self.actor, reason=visible(reason)[:256])
        return True

    def allowed_states(self, hostname: str) -> list[str]:
        with Session(self.engine) as s:
            return allowed_moves(self._server(s, hostname).state)

    def remove(self, name: str, *, force: bool = False) -> str:
        """Remove a server (only when new, retired or rma unless ``force``), or an empty rack, UPS or PDU.

        Returns what kind of thing was removed.
        """
        with self._session() as s:
            server = s.execute(select(Server).where(Server.hostname == name.strip().lower())).scalar_one_or_none()
            if server is not None:
                if server.state not in _REMOVABLE_STATES and not force:
                    raise InputError(f"{server.hostname} is {server.state}: only servers that are "
                                     f"{', '.join(_REMOVABLE_STATES)} may be removed (or use --force)")
                for table in (Nic, ServerTag, Disk, ServerState, StateChange):
                    s.execute(delete(table).where(table.server_id == server.id))
                s.execute(update(Outlet).where(Outlet.server_id == server.id).values(server_id=None))
                s.execute(delete(Server).where(Server.id == server.id))
                self._audit(s, "remove", [server.hostname], kind="server", state=server.state, forced=force)
                return "server"
            for model, kind in ((Ups, "ups"), (Pdu, "pdu")):
                obj = s.execute(select(model).where(model.name == name)).scalar_one_or_none()
                if obj is not None:
                    if kind == "ups":
                        s.execute(update(Pdu).where(Pdu.ups_id == obj.id).values(ups_id=None))
                    s.execute(delete(Outlet).where((Outlet.ups_id if kind == "ups" else Outlet.pdu_id) == obj.id))
                    s.execute(delete(model).where(model.id == obj.id))
                    self._audit(s, "remove", [name], kind=kind)
                    return kind
            racks = s.execute(select(Rack).where(Rack.name == name)).scalars().all()
            if len(racks) > 1:
                raise InputError(f"rack name {name!r} exists in several sites; remove it by site")
            if racks:
                rack = racks[0]
                used = s.execute(select(func.count()).select_from(Server).where(Server.rack_id == rack.id)
                                 ).scalar_one()
                if used:
                    raise InputError(f"rack {name} still holds {used} server(s); move or remove them first")
                for model in (Ups, Pdu):
                    s.execute(update(model).where(model.rack_id == rack.id).values(rack_id=None))
                s.execute(delete(PowerFeed).where(PowerFeed.rack_id == rack.id))
                s.execute(delete(Rack).where(Rack.id == rack.id))
                self._audit(s, "remove", [name], kind="rack")
                return "rack"
        raise NotFound(f"nothing named {name!r} (server, UPS, PDU or rack)")

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

    # -- credentials ---------------------------------------------------------------------------------------

    def set_credential(self, name: str, kind: str, secret: str, *, username: str = "",
                       options: dict[str, Any] | None = None) -> CredentialRow:
        """Create or replace a credential; the secret is sealed before it reaches the database."""
        name = check_code(name, "name")
        username = check_text(username, "username", 64)
        if kind not in CREDENTIAL_KINDS:
            raise ValidationError(f"unknown kind {kind!r}; kinds: {', '.join(CREDENTIAL_KINDS)}", field="kind")
        if not secret:
            raise ValidationError("the secret is empty", field="secret")
        pem = kind == "ssh" and secret.lstrip().startswith("-----BEGIN") and "PRIVATE KEY-----" in secret
        if ("\n" in secret or "\r" in secret) and not pem:
            raise ValidationError("the secret contains a line break", field="secret")
        if kind == "snmp-v3":
            import json

            try:
                parts = json.loads(secret)
                assert isinstance(parts, dict) and {"auth", "priv"} <= set(parts)
            except (ValueError, AssertionError):
                raise ValidationError("an snmp-v3 secret holds the auth and priv passphrases "
                                      "(fleet credentials set reads them as two lines)", field="secret") from None
        if kind in ("ipmi", "ssh", "snmp-v3", "nut") and not username:
            raise ValidationError(f"a {kind} credential needs --user", field="username")
        if kind == "ipmi" and len(secret.encode()) > 20:
            raise ValidationError("IPMI 2.0 passwords are at most 20 bytes", field="secret")
        sealed = self.keyring.seal(secret)
        now = utcnow()
        with self._session() as s:
            cred = s.execute(select(Credential).where(Credential.name == name)).scalar_one_or_none()
            if cred is None:
                s.add(Credential(name=name, kind=kind, username=username, secret=sealed, options=options or {},
                                 created_at=now, updated_at=now))
                action = "credentials.set"
            else:
                if cred.kind != kind:
                    raise ConflictError(f"credential {name} is of kind {cred.kind}, not {kind}")
                cred.username, cred.secret, cred.updated_at = username, sealed, now
                cred.options = options or cred.options
                action = "credentials.replace"
            self._audit(s, action, [name], kind=kind, username=username)
        return next(c for c in self.credentials() if c.name == name)

    def credentials(self) -> list[CredentialRow]:
        with Session(self.engine) as s:
            used: dict[int, int] = defaultdict(int)
            for column in (Server.bmc_credential_id, Server.ssh_credential_id, Ups.credential_id,
                           Pdu.credential_id):
                for cid, n in s.execute(select(column, func.count()).where(column.is_not(None)).group_by(column)):
                    used[cid] += n
            return [CredentialRow(c.name, c.kind, c.username, used.get(c.id, 0), c.updated_at)
                    for c in s.execute(select(Credential).order_by(Credential.name)).scalars()]

    def assign_credential(self, name: str, targets: str | Sequence[str]) -> list[str]:
        """Give servers (ipmi/ssh credentials, by selector) or UPS/PDUs (snmp/nut, by name) a credential."""
        with self._session() as s:
            cred = s.execute(select(Credential).where(Credential.name == name)).scalar_one_or_none()
            if cred is None:
                raise NotFound(f"no credential named {name!r}")
            if cred.kind in _SERVER_CRED_COLUMN:
                sel = parse_selector(targets)
                if sel.is_empty:
                    raise InputError("name the servers to assign to (a selector), e.g. rack=R1")
                names = list(s.execute(sel.apply(select(Server.hostname)).order_by(Server.hostname)).scalars())
                s.execute(update(Server).where(Server.id.in_(sel.ids()))
                          .values({_SERVER_CRED_COLUMN[cred.kind]: cred.id, "updated_at": utcnow()}))
            else:
                words = [targets] if isinstance(targets, str) else list(targets)
                names = []
                for model in (Ups, Pdu):
                    for word in words:
                        rows = s.execute(select(model.id, model.name).where(
                            model.name.like(glob_to_like(word), escape="\\"))).all()
                        if rows:
                            s.execute(update(model).where(model.id.in_([r[0] for r in rows]))
                                      .values(credential_id=cred.id))
                            names.extend(r[1] for r in rows)
            if not names:
                raise NotFound(f"nothing matched {targets!r}")
            self._audit(s, "credentials.assign", names, credential=name, kind=cred.kind)
        return names

    def remove_credential(self, name: str) -> None:
        with self._session() as s:
            cred = s.execute(select(Credential).where(Credential.name == name)).scalar_one_or_none()
            if cred is None:
                raise NotFound(f"no credential named {name!r}")
            for row in self.credentials():
                if row.name == name and row.used_by:
                    raise InputError(f"credential {name} is still used by {row.used_by} device(s)")
            s.execute(delete(Credential).where(Credential.id == cred.id))
            self._audit(s, "credentials.remove", [name])

    def secret(self, name: str) -> tuple[str, Secret]:
        """(username, secret) of a credential, for drivers. The Secret never prints itself."""
        with Session(self.engine) as s:
            cred = s.execute(select(Credential).where(Credential.name == name)).scalar_one_or_none()
        if cred is None:
            raise NotFound(f"no credential named {name!r}")
        return cred.username, self.keyring.open(cred.secret, name=f"credential {name}")

    # -- power ----------------------------------------------------------------------------------------------

    def bmc_targets(self, selector: str | Sequence[str] | Selector | None) -> tuple[list[Any], list[str]]:
        """(hostname, Target, profile) for each selected server with a BMC, and the problems of the rest."""
        from fleet.drivers.base import Target

        sel = parse_selector(selector)
        stmt = sel.apply(select(Server.hostname, Server.bmc_host, Server.bmc_port, Server.profile,
                                Credential.username, Credential.secret, Credential.name, Credential.kind)
                         .outerjoin(Credential, Credential.id == Server.bmc_credential_id)
                         .order_by(Server.hostname))
        with Session(self.engine) as s:
            rows = s.execute(stmt).all()
        targets: list[Any] = []
        problems: list[str] = []
        for host, bmc_host, bmc_port, profile_name, user, sealed, cred_name, cred_kind in rows:
            if not bmc_host:
                problems.append(f"{host}: no BMC address in the inventory")
                continue
            if sealed is None:
                problems.append(f"{host}: no BMC credential assigned (fleet credentials assign NAME {host})")
                continue
            profile = self.profiles.get(profile_name) if profile_name in self.profiles else None
            options: dict[str, Any] = {"profile": profile_name, "credential_kind": cred_kind}
            if profile is not None and profile.ipmi is not None:
                options["cipher_suites"] = tuple(profile.ipmi.cipher_suites)
            if profile is not None:
                options["quirks"] = {q.id: q.value for q in profile.quirks}
            targets.append((host, Target(name=host, host=bmc_host, port=bmc_port, username=user,
                                         password=self.keyring.open(sealed, name=f"credential {cred_name}"),
                                         timeout=self.device_timeout, options=options), profile))
        return targets, problems

    def driver(self, name: str) -> Any:
        """The shared instance of driver ``name`` (created on first use; closed by ``aclose``)."""
        if name not in self._drivers:
            from fleet.drivers.registry import registry

            self._drivers[name] = registry.load(name)()
        return self._drivers[name]

    async def aclose(self) -> None:
        """Stop the drivers' workers and sessions."""
        drivers, self._drivers = self._drivers, {}
        for drv in drivers.values():
            close = getattr(drv, "aclose", None) or getattr(drv, "close", None)
            if close is not None:
                res = close()
                if hasattr(res, "__await__"):
                    await res

    def rack_occupancy(self, hostnames: Sequence[str]) -> dict[str, tuple[int, int]]:
        """For the racks of ``hostnames``: rack name → (how many of them are in it, how many servers it holds)."""
        picked: dict[int, int] = defaultdict(int)
        with Session(self.engine) as s:
            for i in range(0, len(hostnames), _CHUNK):
                for rid, n in s.execute(select(Server.rack_id, func.count()).where(
                        Server.hostname.in_(hostnames[i:i + _CHUNK]), Server.rack_id.is_not(None))
                        .group_by(Server.rack_id)):
                    picked[rid] += n
            if not picked:
                return {}
            totals = dict(s.execute(select(Server.rack_id, func.count()).where(Server.rack_id.in_(list(picked)))
                                    .group_by(Server.rack_id)).all())
            names = {rid: f"{site}/{name}" for rid, site, name in s.execute(
                select(Rack.id, Site.code, Rack.name).join(Site, Site.id == Rack.site_id)
                .where(Rack.id.in_(list(picked))))}
        return {names[rid]: (n, totals.get(rid, n)) for rid, n in picked.items()}

    async def power_on_plan(self, selector: str | Sequence[str] | Selector | None, *, max_wave: int = 0
                            ) -> tuple[Any, list[str]]:
        """Plan a budgeted power-on of the selected servers (see :mod:`fleet.model.budget`); nothing is switched.

        Servers already on, and those whose state cannot be read, count as drawing their steady load.
        Returns the plan and warnings.
        """
        from fleet.model.budget import plan_power_on

        targets, problems = self.bmc_targets(selector)
        hostnames = [h for h, _, _ in targets]
        if not targets:
            raise NotFound(f"no servers with a BMC match {str(parse_selector(selector))!r}")
        statuses = await self._each(f"host={','.join(hostnames)}", "power", "power status",
                                    lambda d, t: d.power_status(t))
        loads, warnings = self.power_loads(hostnames)
        off = [loads[h] for h, state, err in statuses if not err and state == "off"]
        running = [loads[h] for h, state, err in statuses if err or state != "off"]
        warnings += [f"{h}: state unknown ({err}); counted as drawing power, not switched" for h, _, err in statuses
                     if err]
        warnings += problems
        plan = plan_power_on(off, window_s=self.inrush_window(hostnames), max_wave=max_wave, already_on=running)
        plan.unknown = {h: err for h, _, err in statuses if err}
        return plan, warnings

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
        if budget:
            if action != "on":
                raise InputError("--budget plans a power-on: use it with 'on'")
            return await self._budgeted_on(selector, concurrency=concurrency, confirm_timeout_s=confirm_timeout_s,
                                           poll_interval_s=poll_interval_s, progress=progress, max_wave=wave_size)
        from fleet.ops.power import ACTIONS, BlastRadius, PowerPlan, check_blast_radius, run_power
        from fleet.ops.power_job import resume_spec, run_power_job

        spec = resume_spec(self.engine, self._session, resume) if resume is not None else None
        if spec is not None:
            action, selector = spec.action, [f"host={','.join(sorted(spec.states))}"]
        if action not in ACTIONS:
            raise InputError(f"unknown power action {action!r}; actions: {', '.join(ACTIONS)}")
        sel = parse_selector(selector)
        if sel.is_empty and action != "status":
            raise InputError("name the servers (a selector); an empty selector would mean the whole fleet")
        targets, problems = self.bmc_targets(sel)
        hostnames = [h for h, _, _ in targets]
        if not targets and not problems:
            raise NotFound(f"no servers match {str(sel)!r}")
        if spec is not None:  # the job's own limits were checked (or forced) when it started
            reasons = spec.forced_past
        else:
            try:
                everyone = hostnames + [p.split(":")[0] for p in problems]
                reasons = check_blast_radius(limits or BlastRadius(), action, everyone,
                                             self.rack_occupancy(everyone), force=force)
            except InputError as exc:
                if action != "status":
                    self.audit_failure(f"power.{action}", hostnames, exc, refused=True)
                raise
        pairs = power_chains([(t, p) for _, t, p in targets], self.driver)
        options = dict(concurrency=concurrency, wave_size=wave_size, stagger_s=stagger_s,
                       confirm_timeout_s=confirm_timeout_s, poll_interval_s=poll_interval_s)
        if action == "status":
            results = await run_power(PowerPlan(action, pairs, progress=progress, **options))  # type: ignore[arg-type]
            from fleet.ops.power import PowerResult

            for problem in problems:
                host, _, why = problem.partition(": ")
                results.append(PowerResult(host, action, ok=False, outcome="failed", error=why))
            return sorted(results, key=lambda r: r.hostname)
        return await run_power_job(self._session, self.actor, action, spec.selector if spec else str(sel), pairs,
                                   problems, forced_past=reasons, progress=progress, stop=stop, resume=spec,
                                   **(spec.options if spec else options))

    def power_loads(self, hostnames: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
        """Each server's draw (from its profile) and the feeds, UPSes and PDUs on its power path.

        A server's path is every element above each of its outlets, through any number of hops
        (:func:`inventory.powerpath.server_elements`); a server with no outlet on record hangs on its
        rack's feeds. Elements with no known capacity are left out, with a warning.
        """
        from fleet.model.budget import Element, Load

        warnings: list[str] = []
        loads: dict[str, Any] = {}
        with Session(self.engine) as s:
            servers: list[Any] = []
            for i in range(0, len(hostnames), _CHUNK):
                servers += s.execute(select(Server.id, Server.hostname, Server.profile, Server.priority,
                                            Server.rack_id).where(Server.hostname.in_(hostnames[i:i + _CHUNK]))).all()
            above = server_elements(s, [r.id for r in servers])
            objects = {kind: {o.id: o for o in s.execute(select(model).where(model.id.in_(
                {h.id for hops in above.values() for h in hops if h.kind == kind}))).scalars()}
                for kind, model in (("feed", PowerFeed), ("ups", Ups), ("pdu", Pdu))}
        cache: dict[tuple[str, int], Any] = {}

        def element(kind: str, obj: Any) -> Any:
            key = (kind, obj.id)
            if key not in cache:
                capacity = obj.capacity_w
                if not capacity and kind != "feed" and obj.profile in self.profiles:
                    power = self.profiles.get(obj.profile).power
                    capacity = getattr(power, "capacity_w", None) if power else None
                if not capacity:
                    warnings.append(f"{kind} {obj.name} has no capacity on record: not budgeted")
                cache[key] = Element(kind, obj.name, float(capacity)) if capacity else None
            return cache[key]

        for row in servers:
            profile = self.profiles.get(row.profile) if row.profile in self.profiles else None
            power = profile.power if profile is not None else None
            peak = getattr(power, "peak_w", None) if power else None
            if not peak:
                warnings.append(f"{row.hostname}: profile {row.profile} gives no peak watts; 500 W assumed")
                peak = 500.0
            factor = getattr(power, "inrush_factor", None) or 1.5
            elements = [element(h.kind, objects[h.kind][h.id]) for h in above.get(row.id, ())]
            loads[row.hostname] = Load(row.hostname, float(peak), float(factor), row.priority,
                                       tuple(el for el in elements if el is not None))
        return loads, sorted(set(warnings))

    def inrush_window(self, hostnames: Sequence[str]) -> float:
        """The longest inrush window among these servers' profiles (2 s when none says)."""
        windows = [2.0]
        for name in {r.profile for r in self.servers(f"host={','.join(hostnames)}")} if hostnames else ():
            power = self.profiles.get(name).power if name in self.profiles else None
            if power is not None and getattr(power, "inrush_window_s", None):
                windows.append(float(power.inrush_window_s))
        return max(windows)

    async def _budgeted_on(self, selector: Any, *, concurrency: int, confirm_timeout_s: float,
                           poll_interval_s: float, progress: Any, max_wave: int) -> list[Any]:
        from fleet.ops.power import PowerPlan, PowerResult, run_power, summarise

        plan, warnings = await self.power_on_plan(selector, max_wave=max_wave)
        targets = {h: (t, p) for h, t, p in self.bmc_targets(selector)[0]}
        results: list[Any] = []
        for number, wave in enumerate(plan.waves):
            if number:
                await asyncio.sleep(plan.window_s)  # the previous wave's inrush is over
            pairs = power_chains([targets[load.hostname] for load in wave], self.driver)
            wave_results = await run_power(PowerPlan("on", pairs, concurrency=concurrency,
                                                     confirm_timeout_s=confirm_timeout_s,
                                                     poll_interval_s=poll_interval_s, progress=progress))
            for r in wave_results:
                r.wave = number
            results += wave_results
        results += [PowerResult(ld.hostname, "on", ok=False, outcome="over-budget", error=why)
                    for ld, why in plan.unplannable]
        results += [PowerResult(ld.hostname, "on", ok=False, outcome="unknown-state",
                                error=f"state unknown, not acted on: {plan.unknown[ld.hostname]}")
                    if ld.hostname in plan.unknown else
                    PowerResult(ld.hostname, "on", ok=True, before="on", after="on", outcome="already")
                    for ld in plan.baseline]
        results.sort(key=lambda r: r.hostname)
        ok = sum(r.ok for r in results)
        with self._session() as s:
            self._audit(s, "power.on", [r.hostname for r in results],
                        "ok" if ok == len(results) else ("failed" if not ok else "partial"),
                        budget=plan.to_json()["peak_loads"], waves=len(plan.waves), outcomes=summarise(results),
                        warnings=warnings[:50])
        return results

    async def _each(self, selector: str | Sequence[str] | Selector | None, capability: str, operation: str,
                    call: Any, *, concurrency: int = 64) -> list[tuple[str, Any, str]]:
        """Run ``call(driver, target)`` on each selected server's ``capability`` chain, in bulk per driver
        (:func:`fleet.drivers.chain.gather_chain`): (hostname, value, error) each."""
        targets, problems = self.bmc_targets(selector)
        if not targets and not problems:
            raise NotFound(f"no servers match {str(parse_selector(selector))!r}")
        answers = await gather_chain([build_chain(capability, p, [t]) for _, t, p in targets], self.driver, call,
                                     capability=capability, concurrency=concurrency)
        out = [(h, a.value, str(a.error) if a.error else "") for (h, _, _), a in zip(targets, answers, strict=True)]
        out += [(p.split(": ", 1)[0], None, p.split(": ", 1)[1]) for p in problems]
        return sorted(out, key=lambda r: r[0])

    def boot_modes(self, selector: str | Sequence[str] | Selector | None, *, uefi: bool | None = None,
                   loaders: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Each selected server's boot mode (``fleet.ops.bootmode.BootMode``: UEFI or legacy, and why);
        ``uefi`` True/False is an explicit request for all of them."""
        from fleet.ops.bootmode import requested_mode, server_boot_modes

        with Session(self.engine) as s:
            modes = server_boot_modes(s, parse_selector(selector), self.profiles, loaders=loaders)
        return modes if uefi is None else {h: requested_mode(uefi) for h in modes}

    async def set_boot(self, selector: str | Sequence[str] | Selector | None, device: str, *,
                       persistent: bool = False, uefi: bool | None = None,
                       loaders: Mapping[str, str] | None = None) -> list[tuple[str, Any, str]]:
        """Set the next boot device in each server's boot mode (:meth:`boot_modes`; ``uefi`` True/False
        overrides it), then read it back. Audited with each mode and its source.
        (hostname, BootDevice read back, error)."""
        if device not in ("pxe", "disk", "bios", "cdrom", "none"):
            raise InputError(f"unknown boot device {device!r}: pxe, disk, bios, cdrom or none")
        if parse_selector(selector).is_empty:
            raise InputError("name the servers (a selector)")
        modes = self.boot_modes(selector, uefi=uefi, loaders=loaders)

        async def call(driver: Any, target: Any) -> Any:
            mode = modes[target.name]
            await driver.set_boot(target, device, persistent=persistent, uefi=mode.uefi)
            got = await driver.get_boot(target)
            if got.device != device:
                raise DriverError(f"BMC reports next boot {got.device!r} after setting {device!r}",
                                  target=target.name, operation="set boot")
            # A BMC that keeps the flags byte must read the EFI bit back as sent (not: ipmi_sim's quirk).
            if device != "none" and got.uefi != mode.uefi and "boot-flags-not-persistent" not in (
                    target.options.get("quirks") or {}):
                raise DriverError(f"BMC reports the {'EFI' if got.uefi else 'legacy'} boot type after asking for "
                                  f"{mode.mode} ({mode.source})", target=target.name, operation="set boot")
            return got

        results = await self._each(selector, "boot", "set boot", call)
        ok = sum(1 for _, v, e in results if not e)
        with self._session() as s:
            self._audit(s, "bootdev", [h for h, _, _ in results],
                        "ok" if ok == len(results) else ("failed" if not ok else "partial"),
                        device=device, persistent=persistent, modes={h: m.to_json() for h, m in modes.items()},
                        failures={h: e for h, _, e in results if e})
        return results

    async def _one_bmc(self, hostname: str, capability: str, call: Any) -> Any:
        """``call(driver, target)`` on one server's BMC; driver errors propagate with their type."""
        targets, problems = self.bmc_targets(f"host={check_hostname(hostname)}")
        if problems:
            raise InputError(problems[0])
        if not targets:
            raise NotFound(f"no server named {hostname!r}")
        _, target, profile = targets[0]
        answer = await call_chain(build_chain(capability, profile, [target]), self.driver, call,
                                  capability=capability, target=hostname)
        if answer.error is not None:
            raise answer.error
        return answer.value

    async def sensors(self, hostname: str) -> list[Any]:
        """The BMC's sensors with readings and states (thresholds from the BMC, else the profile)."""
        return await self._one_bmc(hostname, "sensors", lambda d, t: d.sensors(t))

    async def sel(self, hostname: str, *, clear: bool = False) -> list[Any]:
        """The BMC's system event log; with ``clear``, read it, then clear it (audited)."""
        entries = await self._one_bmc(hostname, "sel", lambda d, t: d.sel(t))
        if clear:
            try:
                await self._one_bmc(hostname, "sel", lambda d, t: d.clear_sel(t))
            except DriverError as exc:
                self.audit_failure("sel.clear", [hostname], exc)
                raise
            with self._session() as s:
                self._audit(s, "sel.clear", [hostname], entries=len(entries))
        return entries

    async def fru(self, hostname: str) -> Any:
        """The BMC's FRU inventory (manufacturer, product, serial...)."""
        return await self._one_bmc(hostname, "fru", lambda d, t: d.fru(t))

    async def bmc_reset(self, hostname: str) -> None:
        """Cold-reset the BMC itself (not the server). Audited."""
        try:
            await self._one_bmc(hostname, "power", lambda d, t: d.bmc_reset(t))
        except DriverError as exc:
            self.audit_failure("bmc.reset", [hostname], exc)
            raise
        with self._session() as s:
            self._audit(s, "bmc.reset", [hostname])

    # -- sweeps and events ---------------------------------------------------------------------------------

    async def sweep(self, selector: str | Sequence[str] | None = None, *, ups: bool = True,
                    concurrency: int = 256, min_interval_s: float = 0.0, probe_all: bool = False,
                    facts: bool = False, facts_concurrency: int = 16) -> Any:
        """One health sweep (see :mod:`fleet.ops.sweep`): readings, latest states, events opened and resolved.

        With ``facts``, SSH facts of the selected servers that have an SSH credential too (drift events).
        Recorded as a job (``kind="sweep"``) with live progress."""
        from fleet.core.jobs import JobTracker
        from fleet.ops.sweep import sweep

        with JobTracker(self, "sweep", str(parse_selector(selector)), params={"ups": ups}) as job:
            result = await sweep(self, selector, ups=ups, concurrency=concurrency, min_interval_s=min_interval_s,
                                 probe_all=probe_all, progress=lambda n, total=None, phase=None: job.progress(
                                     advance=n, total=total, force=total is not None or phase is not None,
                                     **({"phase": phase} if phase else {})))
            job.failed = len(result.errors)
            job.done = max(0, result.servers - result.servers_skipped - job.failed)
            job.total = max(job.total, result.servers - result.servers_skipped)
            if facts:
                from fleet.ops.facts import collect

                got = await collect(self, selector, concurrency=facts_concurrency, configured_only=True)
                result.facts_read = len(got.facts)
                result.opened += got.opened
                result.resolved += got.resolved
                result.errors.update({h: f"ssh: {e}" for h, e in got.errors.items() if h not in result.errors})
            job.result.update(servers=result.servers, read=result.servers_read, skipped=result.servers_skipped,
                              opened=len(result.opened), resolved=len(result.resolved))
        with self._session() as s:
            self._audit(s, "sweep", [str(parse_selector(selector)) or "all"],
                        "ok" if not result.errors else "partial", servers=result.servers,
                        read=result.servers_read, opened=len(result.opened), resolved=len(result.resolved))
        return result

    async def facts(self, selector: str | Sequence[str] | None, *, concurrency: int = 16) -> Any:
        """Collect facts over SSH, pin host keys while commissioning, record drift as events (audited)."""
        from fleet.ops.facts import collect

        return await collect(self, selector, concurrency=concurrency)

    async def remediate(self, selector: str | Sequence[str] | None = None, *, policy: str | Path | None = None,
                        apply: bool = False) -> Any:
        """Plan remediation of open events by the policies (dry run); with ``apply``, carry it out (audited)."""
        from fleet.workflows.remediate import RemediationRun, execute, load, remediation_plan

        the_plan = remediation_plan(self, load(policy), selector=selector)
        run = RemediationRun(the_plan)
        if apply:
            from fleet.core.jobs import JobTracker

            with JobTracker(self, "remediate", str(parse_selector(selector)), params={"policy": str(policy or "")},
                            total=len(the_plan.planned)) as job:
                run.applied = await execute(self, the_plan, progress=lambda ok: job.progress(
                    advance=1 if ok else 0, failed=job.failed + (0 if ok else 1)))
        return run

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
        return await run_image(self, selector, opts, resume=resume, progress=progress)

    def image_waves(self, selector: str | Sequence[str] | None, *, canary: int = 1, wave: int = 8,
                    reimage: bool = False) -> list[list[str]]:
        """The waves :meth:`image` would run; refuses (InputError) servers that cannot be imaged now."""
        from fleet.workflows.imaging import image_waves

        return image_waves(self, selector, canary=canary, wave=wave, reimage=reimage)

    def decommission_check(self, selector: str | Sequence[str] | None) -> list[str]:
        """The servers :meth:`decommission` would take; refuses (InputError) states that do not allow it."""
        from fleet.workflows.decommission import check_decommission

        return check_decommission(self, selector)

    async def decommission(self, selector: str | Sequence[str] | None, *, finish: str = "retired",
                           method: str = "auto", power_off: bool = True, only_devices: Sequence[str] = (),
                           concurrency: int = 8) -> Any:
        """Drain, wipe every disk over SSH, certify each, power off and retire.

        See :mod:`fleet.workflows.decommission`.
        """
        from fleet.workflows.decommission import run_decommission

        if parse_selector(selector).is_empty:
            raise InputError("name the servers to decommission (a selector)")
        return await run_decommission(self, selector, finish=finish, method=method, power_off=power_off,
                                      only_devices=only_devices, concurrency=concurrency)

    def wipe_certificates(self, selector: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Wipe certificates, newest first; ``intact`` says whether each still matches its digest."""
        from fleet.workflows.decommission import certificates

        return certificates(self, selector)

    # -- jobs ----------------------------------------------------------------------------------------------

    def jobs(self, *, kind: str | None = None, status: str | None = None, limit: int = 50) -> list[JobRow]:
        """Jobs newest first; a running job whose process died reads as ``interrupted``."""
        from fleet.core.jobs import mark_interrupted

        mark_interrupted(self.engine)
        with Session(self.engine) as s:
            q = select(Job).order_by(Job.id.desc()).limit(limit)
            if kind:
                q = q.where(Job.kind == kind)
            if status:
                q = q.where(Job.status == status)
            return [_job_row(j) for j in s.execute(q).scalars()]

    def job(self, job_id: int) -> JobRow:
        from fleet.core.jobs import mark_interrupted

        mark_interrupted(self.engine)
        with Session(self.engine) as s:
            j = s.get(Job, job_id)
            if j is None:
                raise NotFound(f"no job {job_id}")
            row = _job_row(j)
        from dataclasses import replace

        from fleet.core.jobsteps import steps_of

        return replace(row, steps=tuple(steps_of(self._session, job_id)))

    def work_orders(self, *, status: str | None = "open") -> list[dict[str, Any]]:
        """Work orders (RMA, battery replacement), newest first, for people or a ticketing system."""
        from inventory.models import WorkOrder

        stmt = select(WorkOrder).order_by(WorkOrder.id.desc())
        if status:
            stmt = stmt.where(WorkOrder.status == status)
        with Session(self.engine) as s:
            return [{"id": w.id, "kind": w.kind, "target_kind": w.target_kind, "target": w.target_name,
                     "status": w.status, "reason": w.reason, "created_at": w.created_at.isoformat(timespec="seconds"),
                     "actor": w.actor, "external_ref": w.external_ref} for w in s.execute(stmt).scalars()]

    _THRESHOLDS = ("critical_low", "warning_low", "warning_high", "critical_high")

    def set_threshold(self, scope: str, sensor: str, values: dict[str, float | None]) -> dict[str, Any]:
        """Override a sensor's thresholds for a rack (``rack=NAME`` or ``site/rack``) or a server (its name).

        ``None`` clears a threshold; a server's override beats its rack's, which beats the profile. Audited.
        """
        from inventory.models import ThresholdOverride

        sensor = check_text(sensor, "sensor", 64)
        if not sensor:
            raise ValidationError("name the sensor", field="sensor")
        unknown = set(values) - set(self._THRESHOLDS)
        if unknown:
            raise ValidationError(f"unknown threshold(s) {', '.join(sorted(unknown))}; thresholds: "
                                  f"{', '.join(self._THRESHOLDS)}", field="threshold")
        with self._session() as s:
            if scope.startswith("rack="):
                rack_name = scope.removeprefix("rack=")
                site, _, rack_name = rack_name.rpartition("/") if "/" in rack_name else ("", "", rack_name)
                stmt = select(Rack.id).where(func.lower(Rack.name) == rack_name.lower())
                if site:
                    stmt = stmt.join(Site, Site.id == Rack.site_id).where(func.lower(Site.code) == site.lower())
                ids = s.execute(stmt).scalars().all()
                if len(ids) != 1:
                    raise NotFound(f"{scope!r} names {len(ids)} racks: give site/rack") if ids else \
                        NotFound(f"no rack {rack_name!r}")
                key = {"rack_id": ids[0], "server_id": None}
            else:
                key = {"rack_id": None, "server_id": self._server(s, scope).id}
            row = s.execute(select(ThresholdOverride).where(
                ThresholdOverride.rack_id.is_(key["rack_id"]) if key["rack_id"] is None
                else ThresholdOverride.rack_id == key["rack_id"],
                ThresholdOverride.server_id.is_(key["server_id"]) if key["server_id"] is None
                else ThresholdOverride.server_id == key["server_id"],
                ThresholdOverride.sensor == sensor)).scalar_one_or_none()
            if row is None:
                row = ThresholdOverride(sensor=sensor, **key)
                s.add(row)
            for k, v in values.items():
                setattr(row, k, v)
            merged = {k: getattr(row, k) for k in self._THRESHOLDS}
            lows = [merged[k] for k in ("critical_low", "warning_low", "warning_high", "critical_high")
                    if merged[k] is not None]
            if lows != sorted(lows):
                raise ValidationError("thresholds must rise: critical_low <= warning_low < warning_high <= "
                                      "critical_high", field="threshold")
            self._audit(s, "threshold.set", [scope], sensor=sensor, **{k: v for k, v in merged.items()})
        return {"scope": scope, "sensor": sensor, **merged}

    def threshold_overrides(self, hostnames: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
        """host → sensor → the thresholds set for it (its rack's, then its own over them)."""
        from inventory.models import ThresholdOverride

        out: dict[str, dict[str, dict[str, float]]] = {}
        with Session(self.engine) as s:
            hosts = {}
            for i in range(0, len(hostnames), _CHUNK):
                hosts.update({sid: (h, rid) for sid, h, rid in s.execute(
                    select(Server.id, Server.hostname, Server.rack_id).where(
                        Server.hostname.in_(hostnames[i:i + _CHUNK])))})
            rows = s.execute(select(ThresholdOverride)).scalars().all()
        by_rack: dict[int, list[Any]] = defaultdict(list)
        by_server: dict[int, list[Any]] = defaultdict(list)
        for r in rows:
            (by_rack[r.rack_id] if r.rack_id is not None else by_server[r.server_id]).append(r)
        for sid, (host, rid) in hosts.items():
            for r in by_rack.get(rid, []) + by_server.get(sid, []):  # the server's own come last and win
                slot = out.setdefault(host, {}).setdefault(r.sensor, {})
                slot.update({k: getattr(r, k) for k in self._THRESHOLDS if getattr(r, k) is not None})
        return out

    def prune_readings(self, *, older_than_days: float, keep_hourly: bool = True) -> dict[str, int]:
        """Retention: readings older than N days are dropped, or (``keep_hourly``) thinned to one per hour
        per target and metric (the first of each hour). Audited. Returns the rows deleted."""
        from datetime import timedelta

        from inventory.models import Reading

        if older_than_days <= 0:
            raise InputError("--older-than must be positive")
        cutoff = utcnow() - timedelta(days=older_than_days)
        with self._session() as s:
            if keep_hourly:
                hour = func.strftime("%Y-%m-%d %H", Reading.ts) if self.engine.dialect.name == "sqlite" \
                    else func.date_trunc("hour", Reading.ts)
                keep = (select(func.min(Reading.id)).where(Reading.ts < cutoff)
                        .group_by(Reading.target_kind, Reading.target_id, Reading.metric, hour))
                deleted = s.execute(delete(Reading).where(Reading.ts < cutoff, Reading.id.not_in(keep))).rowcount
            else:
                deleted = s.execute(delete(Reading).where(Reading.ts < cutoff)).rowcount
            self._audit(s, "readings.prune", ["readings"], deleted=deleted, older_than_days=older_than_days,
                        keep_hourly=keep_hourly)
        return {"deleted": deleted}

    def events(self, *, status: str | None = "open", kind: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Events, newest first: ``status`` open (default), acked, resolved, or None for all."""
        from inventory.models import Event

        stmt = select(Event).order_by(Event.id.desc()).limit(limit)
        if status == "open":
            stmt = stmt.where(Event.status != "resolved")
        elif status:
            stmt = stmt.where(Event.status == status)
        if kind:
            stmt = stmt.where(Event.kind == kind)
        with Session(self.engine) as s:
            return [{"id": e.id, "opened_at": e.opened_at.isoformat(timespec="seconds"),
                     "updated_at": e.updated_at.isoformat(timespec="seconds"),
                     "resolved_at": e.resolved_at.isoformat(timespec="seconds") if e.resolved_at else None,
                     "target_kind": e.target_kind, "target": e.target_name, "kind": e.kind,
                     "severity": e.severity, "status": e.status, "count": e.count, "message": e.message,
                     "acked_by": e.acked_by} for e in s.execute(stmt).scalars()]

    def ack_event(self, event_id: int) -> None:
        """Acknowledge an open event (it stays open until its condition clears). Audited."""
        from inventory.models import Event

        with self._session() as s:
            ev = s.get(Event, event_id)
            if ev is None or ev.status == "resolved":
                raise NotFound(f"no open event {event_id}")
            ev.status, ev.acked_by, ev.updated_at = "acked", self.actor, utcnow()
            self._audit(s, "event.ack", [ev.target_name], event=event_id, kind=ev.kind)

    # -- UPS and PDU (fleet/ups.py does the work) ----------------------------------------------------------

    async def ups_status(self, selector: str | Sequence[str] | None = None, *, record: bool = True) -> list[Any]:
        """Read the selected UPSes now; record their latest state and readings (see :mod:`fleet.ops.ups`)."""
        from fleet.ops.ups import ups_status

        return await ups_status(self, selector, record=record)

    def battery_forecast(self, selector: str | Sequence[str] | None = None, *, min_runtime_s: float = 300.0
                         ) -> list[Any]:
        """Battery replacement forecast per UPS, from its age and its runtime-at-load trend."""
        from fleet.ops.ups import battery_forecast

        return battery_forecast(self, selector, min_runtime_s=min_runtime_s)

    async def outlet(self, target: str, action: str) -> list[Any]:
        """Switch ``DEVICE:N`` or every outlet feeding a server; confirmed by read-back; audited."""
        from fleet.ops.ups import outlet_action

        return await outlet_action(self, target, action)

    async def detect_profile(self, *, host: str, port: int, protocol: str, credential: str, nut_name: str = "",
                             kind: str | None = None) -> tuple[str, str]:
        """Recognise a UPS/PDU model from the device: (profile name, how it was chosen)."""
        from fleet.ops.ups import detect_profile

        return await detect_profile(self, host=host, port=port, protocol=protocol, credential=credential,
                                    nut_name=nut_name, kind=kind)

    @staticmethod
    def hardware_profiles() -> ProfileSet:
        """The hardware profiles (``FLEET_PROFILES`` or the checkout's ``hardware-profiles/``); no inventory needed."""
        from fleet.profiles import load_profiles

        return load_profiles()

    # -- import / export -----------------------------------------------------------------------------------

    def import_files(self, paths: Sequence[str | Path], *, netbox_devices: str | Path | None = None,
                     netbox_interfaces: str | Path | None = None, secrets: Sequence[str | Path] = (),
                     dry_run: bool = False, passphrase: str | Callable[[], str] | None = None,
                     without_credentials: bool = False) -> ImportResult:
        """Import YAML/CSV files (or a NetBox export) as one transaction: all of it, or nothing.

        ``secrets`` are files of credentials with their secrets, sealed with this inventory's key
        before they are stored: encrypted ones from ``export_secrets`` (opened with ``passphrase``,
        a string or a callable asked once) or plain YAML ``credentials:`` files.
        ``without_credentials`` imports devices whose credential is nowhere to be found without
        one, and lists them in the result, instead of refusing the import.
        """
        from inventory import backup, importer, records

        path_list = [Path(p) for p in paths]
        left: list[Any] = []
        try:
            plain_secrets, sealed = backup.read_sealed([Path(p) for p in secrets], passphrase)
            recs, warnings = importer.read_files(
                path_list, profiles=self.profiles,
                netbox_devices=Path(netbox_devices) if netbox_devices else None,
                netbox_interfaces=Path(netbox_interfaces) if netbox_interfaces else None,
                secrets=plain_secrets)
            recs += sealed
            needs_key = any(getattr(r, "kind", None) == "credential" for r in recs)
            with Session(inv_db.writer(self.engine), expire_on_commit=False) as s:
                try:
                    if without_credentials:
                        recs, left = backup.drop_unresolved_credentials(s.connection(), recs)
                    report = records.apply(s, recs, profiles=self.profiles,
                                           keyring=self.keyring if needs_key else None,
                                           actor=self.actor, mode="upsert")
                    sources = [str(p) for p in path_list] + [str(p) for p in (netbox_devices, netbox_interfaces) if p]
                    sources += [f"secrets:{p}" for p in secrets]
                    result = ImportResult(dict(report.created), dict(report.updated), dict(report.unchanged),
                                          tuple(warnings) + tuple(report.warnings), dry_run, tuple(left))
                    if dry_run:
                        s.rollback()
                    else:
                        extra = {"without_credentials": [f"{u.kind}:{u.name}" for u in left]} if left else {}
                        self._audit(s, "import", sources, created=result.created, updated=result.updated, **extra)
                        s.commit()
                        if sum(result.created.values()) + sum(result.updated.values()) >= _ANALYZE_AFTER:
                            self._analyze()
                except BaseException:
                    s.rollback()
                    raise
        except IntegrityError as exc:  # a constraint the checks did not foresee: still nothing written
            raise ImportFailed(f"the database refused the import: {exc.orig}") from None
        except ValidationError as exc:
            if type(exc) is ValidationError:  # say that the whole import was refused; keep subclasses as they are
                raise ImportFailed(exc.message, field=exc.field, value=exc.value, location=exc.location) from exc
            raise
        return result

    def _apply(self, records: list[Any], *, mode: str, action: str, targets: list[str], **detail: Any
               ) -> ImportResult:
        from inventory import records as recs

        with Session(inv_db.writer(self.engine), expire_on_commit=False) as s:
            try:
                report = recs.apply(s, records, profiles=self.profiles, actor=self.actor, mode=mode)
                self._audit(s, action, targets, **detail)
                s.commit()
            except BaseException:
                s.rollback()
                raise
        return ImportResult(dict(report.created), dict(report.updated), dict(report.unchanged),
                            tuple(report.warnings))

    def add(self, kind: str, raw: dict[str, Any], *, feeds: str | Sequence[str] | None = None) -> ImportResult:
        """Add one site, pod, rack, feed, server, UPS, PDU or pool, with the checks of an import.

        Refuses a name that exists already. For a UPS, ``feeds`` selects the servers it powers (its
        outlet 0 feeds each; one server means a per-server UPS).
        """
        from inventory import records as recs

        raw = dict(raw)
        if raw.get("rack") and not raw.get("site"):
            raw["site"] = self._site_of_rack(str(raw["rack"]))
        if feeds is not None:
            hosts = self.hostnames(feeds)
            if not hosts:
                raise NotFound(f"--feeds {feeds!r} matches no server")
            raw["outlets"] = [{"number": 0 if len(hosts) == 1 else i + 1, "server": h} for i, h in enumerate(hosts)]
            if not raw.get("site"):  # a UPS stands where what it feeds stands
                places = {(r.site, r.rack) for r in self.servers(f"host={','.join(hosts)}") if r.site}
                if len({site for site, _ in places}) == 1:
                    raw["site"] = next(iter(places))[0]
                    if len(places) == 1 and not raw.get("rack"):
                        raw["rack"] = next(iter(places))[1]
        rack_feeds = raw.pop("feeds", []) if kind == "rack" else []
        records = [recs.build(kind, raw, loc="command line")]
        records += [recs.build("feed", {**f, "site": raw.get("site"), "rack": raw.get("name")}, loc="command line")
                    for f in rack_feeds]
        key = {"server": "hostname", "site": "code", "pod": "code"}.get(kind, "name")
        return self._apply(records, mode="create", action=f"add.{kind}", targets=[str(raw.get(key))])

    def _site_of_rack(self, rack: str) -> str:
        """The site of the one rack named ``rack``; an error naming the sites when it is ambiguous."""
        with Session(self.engine) as s:
            sites = list(s.execute(select(Site.code).join(Rack, Rack.site_id == Site.id)
                                   .where(func.lower(Rack.name) == rack.lower()).order_by(Site.code)).scalars())
        if not sites:
            raise NotFound(f"no rack named {rack!r}")
        if len(sites) > 1:
            raise InputError(f"rack {rack} exists in several sites ({', '.join(sites)}): give --site")
        return sites[0]

    def set(self, name: str, changes: dict[str, Any]) -> ImportResult:
        """Change fields of one server, UPS or PDU (the same checks as an import; absent fields are kept)."""
        from inventory import records as recs

        if not changes:
            raise InputError("nothing to change: give key=value pairs")
        if "state" in changes:
            raise InputError("a lifecycle state changes with 'fleet state HOST STATE --reason ...', not 'set'")
        changes = dict(changes)
        with Session(self.engine) as s:
            row = s.execute(select(Server.rack_id, Server.position, Server.height)
                            .where(Server.hostname == name.strip().lower())).first()
            if row is not None:
                kind, key = "server", {"hostname": name.strip().lower()}
                if row.rack_id and {"position", "height"} & set(changes) and "rack" not in changes:
                    # A position means nothing without its rack: restate where the server is.
                    site, rack = s.execute(select(Site.code, Rack.name).join(Rack, Rack.site_id == Site.id)
                                           .where(Rack.id == row.rack_id)).one()
                    changes = {"site": site, "rack": rack, "position": row.position, "height": row.height,
                               **changes}
                elif "rack" in changes and "site" not in changes:
                    changes["site"] = self._site_of_rack(str(changes["rack"]))
            else:
                for model, dev_kind in ((Ups, "ups"), (Pdu, "pdu")):
                    dev = s.execute(select(Site.code, model.host).join(Site, Site.id == model.site_id)
                                    .where(model.name == name)).first()
                    if dev is not None:
                        kind, key = dev_kind, {"name": name}
                        # The fields that identify where the device is stand in every record.
                        changes = {"site": dev.code, "host": dev.host, **changes}
                        break
                else:
                    raise NotFound(f"no server, UPS or PDU named {name!r}")
        for k in changes:
            if k in key:
                raise InputError(f"{k} cannot be changed with 'set' (it names the {kind})")
        record = recs.build(kind, {**key, **changes}, loc="command line")
        return self._apply([record], mode="upsert", action=f"set.{kind}", targets=[next(iter(key.values()))],
                           changes={k: str(v) for k, v in changes.items()})

    def _analyze(self) -> None:
        """Refresh the planner's statistics after a bulk change.

        Without them SQLite drives ``rack=R12 state=deployed`` from the state index (most servers
        are deployed) and takes 15-20 ms at 100,000 servers instead of under one.
        """
        with inv_db.write_connection(self.engine) as conn:
            conn.exec_driver_sql("ANALYZE")

    def export(self, fmt: str = "yaml") -> str | dict[str, str]:
        """The inventory as YAML text, or as CSV texts by file name. Never includes a secret."""
        from inventory import exporter

        with Session(self.engine) as s:
            if fmt == "yaml":
                return exporter.export_yaml(s)
            if fmt == "csv":
                return exporter.export_csv(s)
        raise InputError(f"unknown export format {fmt!r}: yaml or csv")

    def export_secrets(self, path: str | Path, passphrase: str) -> list[str]:
        """Write every credential, secrets opened, to ``path`` encrypted to ``passphrase`` (mode 0600); audited.

        Returns the credential names. The file is what ``import_files(..., secrets=[path])`` reads.
        """
        from inventory import backup

        with Session(self.engine) as s:
            creds = backup.credentials_plain(s.connection(), self.keyring)
        names = [c["name"] for c in creds]
        try:
            backup.write_secrets_file(Path(path), backup.seal_secrets(creds, passphrase))
        except BaseException as exc:
            self.audit_failure("export.secrets", names, exc, file=str(path))
            raise
        with self._session() as s:
            self._audit(s, "export.secrets", names, file=str(path), count=len(names))
        return names

    def migrate(self, to: str, *, progress: Callable[[str, int, int], None] | None = None) -> Any:
        """Copy this whole inventory into the empty database at ``to`` (see ``inventory.migrate``); audited there."""
        from inventory import migrate

        def audit(conn: Any, result: Any) -> None:  # in the copy's transaction: the target says where it came from
            conn.execute(insert(Audit).values(ts=utcnow(), actor=self.actor, action="migrate", targets=[result.target],
                                              target_count=1, result="ok", detail={
                                                  "source": result.source, "rows": sum(result.counts.values())}))

        target = inv_db.make_engine(inv_db.db_url(to))
        try:
            result = migrate.migrate(self.engine, target, progress=progress, on_done=audit)
        finally:
            target.dispose()
        return result


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




def _endpoint(host: str | None, port: int | None) -> str | None:
    if not host:
        return None
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"

