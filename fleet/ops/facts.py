"""``fleet facts``: collect facts over SSH, pin host keys, and turn drift into events.

For each selected server with an SSH credential and an address (its primary IP, else its first NIC's
IP): connect with its pinned host key, or pin the key on first contact while the server is ``new`` or
``commissioning`` (never afterwards: a server in service with no pinned key is refused); collect the
facts (:data:`fleet.model.facts.FACTS_SCRIPT`); reconcile them with the inventory (serial, disks, MACs); and
record each drift as an event of the same kind (``serial-changed``, ``disk-failing``...), resolved
when a later collection no longer finds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from fleet.drivers.base import Target
from fleet.errors import DriverError
from fleet.model.events import DRIFT_KINDS, KINDS
from fleet.model.facts import InventoryDisk, InventoryNic, ServerInventoryView, reconcile
from fleet.ops.events import Finding, record_events
from inventory.db import write_connection
from inventory.models import Credential, Disk, Nic, Server, utcnow
from inventory.selectors import parse_selector

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["FactsResult", "SshServers", "collect", "ssh_servers", "ssh_target"]

_PIN_STATES = ("new", "commissioning")


@dataclass
class FactsResult:
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    drift: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pinned: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"facts": self.facts, "drift": self.drift, "pinned": self.pinned, "errors": self.errors,
                "events_opened": self.opened, "events_resolved": self.resolved}


@dataclass
class SshServers:
    """Servers as SSH work needs them: rows (id, hostname, state, serial, primary_ip, ssh_host_key, bmc_host,
    cred, username, secret, options) and, by server id, the inventory's disks, NICs and first NIC address."""

    rows: list[Any]
    disks: dict[int, list[InventoryDisk]]
    nics: dict[int, list[InventoryNic]]
    first_ip: dict[int, str]

    def address(self, row: Any) -> str | None:
        """Where to reach a server over SSH: its primary IP, else its first NIC's address (by NIC name)."""
        return row.primary_ip or self.first_ip.get(row.id)


def ssh_servers(ctx: Context, selector: Any, *, configured_only: bool = False) -> SshServers:
    """The selected servers with their SSH credential rows and inventory disks and NICs (one read)."""
    sel = parse_selector(selector)
    with ctx.engine.connect() as conn:
        query = sel.apply(select(Server.id, Server.hostname, Server.state, Server.serial, Server.primary_ip,
                                 Server.ssh_host_key, Server.bmc_host, Credential.name.label("cred"),
                                 Credential.username, Credential.secret, Credential.options)
                          .outerjoin(Credential, Credential.id == Server.ssh_credential_id))
        if configured_only:
            query = query.where(Server.ssh_credential_id.is_not(None))
        rows = conn.execute(query).all()
        ids = [r.id for r in rows]
        out = SshServers(rows, {}, {}, {})
        for sid, slot, serial, model in conn.execute(select(Disk.server_id, Disk.slot, Disk.serial, Disk.model)
                                                     .where(Disk.server_id.in_(ids))):
            out.disks.setdefault(sid, []).append(InventoryDisk(slot, serial, model))
        for sid, name, mac, ip in conn.execute(select(Nic.server_id, Nic.name, Nic.mac, Nic.ip)
                                               .where(Nic.server_id.in_(ids)).order_by(Nic.name)):
            out.nics.setdefault(sid, []).append(InventoryNic(name, mac))
            if ip and sid not in out.first_ip:
                out.first_ip[sid] = ip
    return out


def ssh_target(ctx: Context, row: Any, address: str | None) -> tuple[Target | None, str]:
    """The SSH target of a server row (hostname, state, ssh_host_key, cred, username, secret, options), or
    None and why not. A pinned host key is enforced; without one, only new/commissioning servers pin."""
    if row.cred is None:
        return None, "no SSH credential assigned"
    if not address:
        return None, "no IP address on record to reach it"
    options: dict[str, Any] = {}
    if row.ssh_host_key:
        options["known_host_key"] = row.ssh_host_key
    elif row.state in _PIN_STATES:
        options["pin_on_first_contact"] = True
    secret = ctx.keyring.open(row.secret, name=f"credential {row.cred}")
    cred_options = row.options or {}
    if secret.reveal().lstrip().startswith("-----BEGIN"):
        options["private_key"] = secret
    port = int(cred_options.get("port", 22))
    return Target(name=row.hostname, host=address, port=port, username=row.username,
                  password=None if "private_key" in options else secret, timeout=ctx.device_timeout,
                  options=options), ""


async def collect(ctx: Context, selector: str | Sequence[str] | None, *, concurrency: int = 16,
                  configured_only: bool = False) -> FactsResult:
    """Facts of the selected servers; ``configured_only`` (sweeps) skips servers with no SSH credential."""
    result = FactsResult()
    known = ssh_servers(ctx, selector, configured_only=configured_only)
    rows = known.rows
    disks, nics = known.disks, known.nics
    driver = ctx.driver("ssh")
    sem = asyncio.Semaphore(concurrency)

    async def one(row: Any) -> tuple[Any, Any, str]:
        target, why = ssh_target(ctx, row, known.address(row))
        if target is None:
            return row, None, why
        async with sem:
            try:
                return row, await driver.collect_facts(target), ""
            except DriverError as exc:
                return row, None, str(exc)

    got = await asyncio.gather(*(one(r) for r in rows))
    now = utcnow()
    findings: list[Any] = []
    judged: dict[tuple[str, int], set[str]] = {}
    pins: dict[int, str] = {}
    for row, facts, error in got:
        if error:
            result.errors[row.hostname] = error
            continue
        result.facts[row.hostname] = facts.as_dict()
        if not row.ssh_host_key and facts.host_key:
            pins[row.id] = facts.host_key
            result.pinned.append(row.hostname)
        view = ServerInventoryView(row.hostname, row.serial or "", tuple(disks.get(row.id, ())),
                                   tuple(nics.get(row.id, ())))
        drifts = reconcile(facts, view)
        result.drift[row.hostname] = [{"kind": d.kind, "subject": d.subject, "message": d.message} for d in drifts]
        judged[("server", row.id)] = set(DRIFT_KINDS)
        by_kind: dict[str, list[str]] = {}
        for d in drifts:
            by_kind.setdefault(d.kind, []).append(d.message)
        for kind, messages in by_kind.items():
            severity = KINDS[kind].severity
            findings.append(Finding("server", row.id, row.hostname, kind, severity, "; ".join(messages)[:500]))
    with write_connection(ctx.engine) as conn:  # pinned keys and drift events together, or neither
        for sid, key in pins.items():
            conn.execute(update(Server).where(Server.id == sid).values(ssh_host_key=key))
        result.opened, _updated, result.resolved = record_events(conn, now, findings, judged)
    with ctx.write() as s:
        ctx.audit(s, "facts", list(result.facts) + list(result.errors),
                     "ok" if not result.errors else "partial", pinned=result.pinned,
                     drift=sum(len(v) for v in result.drift.values()))
    return result
