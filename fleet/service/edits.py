"""The facade's inventory edits: credentials, imports, one-record adds and changes, removal, export, migration.

A mixin of :class:`fleet.Fleet` (it uses the facade's :class:`~fleet.core.context.Context`, ``self.ctx``,
and nothing else of it). Every edit is one transaction with its audit row; imports are all-or-nothing
and name the file and line of each bad value (:mod:`inventory.importer`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from fleet.core.targets import hostnames, servers
from fleet.errors import ConflictError, ImportFailed, InputError, NotFound, ValidationError
from fleet.model.views import CredentialRow, ImportResult
from inventory import db as inv_db
from inventory.models import (
    Audit,
    BmcEndpoint,
    Credential,
    Disk,
    Nic,
    Outlet,
    Pdu,
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
from inventory.secrets import Secret
from inventory.selectors import glob_to_like, parse_selector
from inventory.validate import check_code, check_text

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["CREDENTIAL_KINDS", "InventoryEdits"]

CREDENTIAL_KINDS = ("ipmi", "snmp-v2c", "snmp-v3", "ssh", "nut", "redfish")
_SERVER_CRED_COLUMN = {"ipmi": "bmc_credential_id", "ssh": "ssh_credential_id"}
_REMOVABLE_STATES = ("new", "retired", "rma")
_ANALYZE_AFTER = 1000  # rows an import must change before planner statistics are refreshed


class InventoryEdits:
    """Credentials, imports, adds and changes, removal, export and migration of the inventory."""

    ctx: Context

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
        if kind in ("ipmi", "ssh", "snmp-v3", "nut", "redfish") and not username:
            raise ValidationError(f"a {kind} credential needs --user", field="username")
        if kind == "ipmi" and len(secret.encode()) > 20:
            raise ValidationError("IPMI 2.0 passwords are at most 20 bytes", field="secret")
        sealed = self.ctx.keyring.seal(secret)
        now = utcnow()
        with self.ctx.write() as s:
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
            self.ctx.audit(s, action, [name], kind=kind, username=username)
        return next(c for c in self.credentials() if c.name == name)

    def credentials(self) -> list[CredentialRow]:
        with self.ctx.read() as s:
            used: dict[int, int] = defaultdict(int)
            for column in (Server.bmc_credential_id, Server.ssh_credential_id, BmcEndpoint.credential_id,
                           Ups.credential_id, Pdu.credential_id):
                for cid, n in s.execute(select(column, func.count()).where(column.is_not(None)).group_by(column)):
                    used[cid] += n
            return [CredentialRow(c.name, c.kind, c.username, used.get(c.id, 0), c.updated_at)
                    for c in s.execute(select(Credential).order_by(Credential.name)).scalars()]

    def assign_credential(self, name: str, targets: str | Sequence[str]) -> list[str]:
        """Give servers (ipmi/ssh/redfish credentials, by selector) or UPS/PDUs (snmp/nut, by name) a credential.

        A redfish credential goes to the selected servers' Redfish endpoints; a server without one is
        refused by name (give it ``redfish: HOST[:PORT]`` first), and nothing is assigned.
        """
        with self.ctx.write() as s:
            cred = s.execute(select(Credential).where(Credential.name == name)).scalar_one_or_none()
            if cred is None:
                raise NotFound(f"no credential named {name!r}")
            if cred.kind == "redfish":
                sel = parse_selector(targets)
                if sel.is_empty:
                    raise InputError("name the servers to assign to (a selector), e.g. rack=R1")
                rows = s.execute(sel.apply(select(Server.hostname, BmcEndpoint.id).outerjoin(
                    BmcEndpoint, (BmcEndpoint.server_id == Server.id) & (BmcEndpoint.protocol == "redfish")))
                    .order_by(Server.hostname)).all()
                bare = [h for h, ep in rows if ep is None]
                if bare:
                    raise InputError(f"{len(bare)} server(s) have no Redfish endpoint ({', '.join(bare[:5])}"
                                     f"{' ...' if len(bare) > 5 else ''}): give them one first (fleet set HOST "
                                     "--redfish ADDR[:PORT])")
                names = [h for h, _ in rows]
                s.execute(update(BmcEndpoint).where(BmcEndpoint.id.in_([ep for _, ep in rows]))
                          .values(credential_id=cred.id, updated_at=utcnow()))
            elif cred.kind in _SERVER_CRED_COLUMN:
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
            self.ctx.audit(s, "credentials.assign", names, credential=name, kind=cred.kind)
        return names

    def remove_credential(self, name: str) -> None:
        with self.ctx.write() as s:
            cred = s.execute(select(Credential).where(Credential.name == name)).scalar_one_or_none()
            if cred is None:
                raise NotFound(f"no credential named {name!r}")
            for row in self.credentials():
                if row.name == name and row.used_by:
                    raise InputError(f"credential {name} is still used by {row.used_by} device(s)")
            s.execute(delete(Credential).where(Credential.id == cred.id))
            self.ctx.audit(s, "credentials.remove", [name])

    def secret(self, name: str) -> tuple[str, Secret]:
        """(username, secret) of a credential, for drivers. The Secret never prints itself."""
        with self.ctx.read() as s:
            cred = s.execute(select(Credential).where(Credential.name == name)).scalar_one_or_none()
        if cred is None:
            raise NotFound(f"no credential named {name!r}")
        return cred.username, self.ctx.keyring.open(cred.secret, name=f"credential {name}")

    # -- servers, racks, UPSes, PDUs: removal ---------------------------------------------------

    def remove(self, name: str, *, force: bool = False) -> str:
        """Remove a server (only when new, retired or rma unless ``force``), or an empty rack, UPS or PDU.

        Returns what kind of thing was removed.
        """
        with self.ctx.write() as s:
            server = s.execute(select(Server).where(Server.hostname == name.strip().lower())).scalar_one_or_none()
            if server is not None:
                if server.state not in _REMOVABLE_STATES and not force:
                    raise InputError(f"{server.hostname} is {server.state}: only servers that are "
                                     f"{', '.join(_REMOVABLE_STATES)} may be removed (or use --force)")
                for table in (Nic, ServerTag, Disk, BmcEndpoint, ServerState, StateChange):
                    s.execute(delete(table).where(table.server_id == server.id))
                s.execute(update(Outlet).where(Outlet.server_id == server.id).values(server_id=None))
                s.execute(delete(Server).where(Server.id == server.id))
                self.ctx.audit(s, "remove", [server.hostname], kind="server", state=server.state, forced=force)
                return "server"
            for model, kind in ((Ups, "ups"), (Pdu, "pdu")):
                obj = s.execute(select(model).where(model.name == name)).scalar_one_or_none()
                if obj is not None:
                    if kind == "ups":
                        s.execute(update(Pdu).where(Pdu.ups_id == obj.id).values(ups_id=None))
                    s.execute(delete(Outlet).where((Outlet.ups_id if kind == "ups" else Outlet.pdu_id) == obj.id))
                    s.execute(delete(model).where(model.id == obj.id))
                    self.ctx.audit(s, "remove", [name], kind=kind)
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
                self.ctx.audit(s, "remove", [name], kind="rack")
                return "rack"
        raise NotFound(f"nothing named {name!r} (server, UPS, PDU or rack)")

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
                path_list, profiles=self.ctx.profiles,
                netbox_devices=Path(netbox_devices) if netbox_devices else None,
                netbox_interfaces=Path(netbox_interfaces) if netbox_interfaces else None,
                secrets=plain_secrets)
            recs += sealed
            needs_key = any(getattr(r, "kind", None) == "credential" for r in recs)
            with Session(inv_db.writer(self.ctx.engine), expire_on_commit=False) as s:
                try:
                    if without_credentials:
                        recs, left = backup.drop_unresolved_credentials(s.connection(), recs)
                    report = records.apply(s, recs, profiles=self.ctx.profiles,
                                           keyring=self.ctx.keyring if needs_key else None,
                                           actor=self.ctx.actor, mode="upsert")
                    sources = [str(p) for p in path_list] + [str(p) for p in (netbox_devices, netbox_interfaces) if p]
                    sources += [f"secrets:{p}" for p in secrets]
                    result = ImportResult(dict(report.created), dict(report.updated), dict(report.unchanged),
                                          tuple(warnings) + tuple(report.warnings), dry_run, tuple(left))
                    if dry_run:
                        s.rollback()
                    else:
                        extra = {"without_credentials": [f"{u.kind}:{u.name}" for u in left]} if left else {}
                        self.ctx.audit(s, "import", sources, created=result.created, updated=result.updated, **extra)
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

        with Session(inv_db.writer(self.ctx.engine), expire_on_commit=False) as s:
            try:
                report = recs.apply(s, records, profiles=self.ctx.profiles, actor=self.ctx.actor, mode=mode)
                self.ctx.audit(s, action, targets, **detail)
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
            hosts = hostnames(self.ctx, feeds)
            if not hosts:
                raise NotFound(f"--feeds {feeds!r} matches no server")
            raw["outlets"] = [{"number": 0 if len(hosts) == 1 else i + 1, "server": h} for i, h in enumerate(hosts)]
            if not raw.get("site"):  # a UPS stands where what it feeds stands
                places = {(r.site, r.rack) for r in servers(self.ctx, f"host={','.join(hosts)}") if r.site}
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
        with self.ctx.read() as s:
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
        with self.ctx.read() as s:
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
        with inv_db.write_connection(self.ctx.engine) as conn:
            conn.exec_driver_sql("ANALYZE")

    def export(self, fmt: str = "yaml") -> str | dict[str, str]:
        """The inventory as YAML text, or as CSV texts by file name. Never includes a secret."""
        from inventory import exporter

        with self.ctx.read() as s:
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

        with self.ctx.read() as s:
            creds = backup.credentials_plain(s.connection(), self.ctx.keyring)
        names = [c["name"] for c in creds]
        try:
            backup.write_secrets_file(Path(path), backup.seal_secrets(creds, passphrase))
        except BaseException as exc:
            self.ctx.audit_failure("export.secrets", names, exc, file=str(path))
            raise
        with self.ctx.write() as s:
            self.ctx.audit(s, "export.secrets", names, file=str(path), count=len(names))
        return names

    def migrate(self, to: str, *, progress: Callable[[str, int, int], None] | None = None) -> Any:
        """Copy this whole inventory into the empty database at ``to`` (see ``inventory.migrate``); audited there."""
        from inventory import migrate

        def audit(conn: Any, result: Any) -> None:  # in the copy's transaction: the target says where it came from
            conn.execute(insert(Audit).values(
                ts=utcnow(), actor=self.ctx.actor, action="migrate", targets=[result.target], target_count=1,
                result="ok", detail={"source": result.source, "rows": sum(result.counts.values())}))

        target = inv_db.make_engine(inv_db.db_url(to))
        try:
            result = migrate.migrate(self.ctx.engine, target, progress=progress, on_done=audit)
        finally:
            target.dispose()
        return result
