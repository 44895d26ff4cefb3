"""Which servers an operation acts on: selectors resolved in SQL, and BMC targets with their credentials.

:func:`bmc_targets` turns a selector into (hostname, [:class:`~fleet.drivers.base.Target`, ...], profile)
per server with a BMC: one target per endpoint (IPMI, Redfish) with a credential, opened from the key
ring, and the profile's IPMI settings, the endpoint's TLS trust and the quirks in each target's options;
and says why each other server cannot be reached. :func:`servers` is the row view
(:class:`~fleet.model.views.ServerRow`) that listings, workflows and the facade share.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlmodel import Session

from fleet.errors import NotFound
from fleet.model.views import ServerRow
from inventory.models import BmcEndpoint, Credential, Nic, Pod, Rack, Server, ServerState, ServerTag, Site
from inventory.selectors import Selector, parse_selector

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["CHUNK", "AnySelector", "bmc_targets", "count", "endpoint", "hostnames", "rack_occupancy", "server_record",
           "servers"]

#: Host names per ``IN (...)`` list.
CHUNK = 500

AnySelector = str | Sequence[str] | Selector | None


def count(ctx: Context, selector: AnySelector = None) -> int:
    """How many servers ``selector`` matches."""
    sel = parse_selector(selector)
    with ctx.read() as s:
        return s.execute(sel.apply(select(func.count()).select_from(Server))).scalar_one()


def hostnames(ctx: Context, selector: AnySelector = None) -> list[str]:
    """The host names ``selector`` matches, sorted."""
    sel = parse_selector(selector)
    with ctx.read() as s:
        return list(s.execute(sel.apply(select(Server.hostname)).order_by(Server.hostname)).scalars())


def servers(ctx: Context, selector: AnySelector = None, *, limit: int | None = None,
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
    with ctx.read() as s:
        rows = s.execute(stmt).all()
        if not rows:
            return []
        macs, tags = _macs_and_tags(s, sel, [r[0] for r in rows], whole=limit is None and not after)
    return [
        ServerRow(hostname=r[1], site=r[2], pod=r[3], rack=r[4], position=r[5], height=r[6], state=r[7],
                  profile=r[8], serial=r[9], asset_tag=r[10], bmc=endpoint(r[11], r[12]),
                  macs=tuple(macs.get(r[0], ())), primary_ip=r[13], tags=tuple(tags.get(r[0], ())),
                  priority=r[14], power=r[15] or "unknown", health=r[16] or "unknown")
        for r in rows
    ]


def _macs_and_tags(s: Session, sel: Selector, ids: list[int], *, whole: bool
                   ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    macs: dict[int, list[str]] = defaultdict(list)
    tags: dict[int, list[str]] = defaultdict(list)
    # The whole selection in one pass (a subquery), or a page's ids in chunks.
    id_filters = [sel.ids()] if whole else [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)]
    for ids_part in id_filters:
        for sid, mac in s.execute(select(Nic.server_id, Nic.mac).where(Nic.server_id.in_(ids_part))
                                  .order_by(Nic.server_id, Nic.name)):
            macs[sid].append(mac)
        for sid, tag in s.execute(select(ServerTag.server_id, ServerTag.tag)
                                  .where(ServerTag.server_id.in_(ids_part))
                                  .order_by(ServerTag.server_id, ServerTag.tag)):
            tags[sid].append(tag)
    return macs, tags


def server_record(s: Session, hostname: str) -> Server:
    """The server row called ``hostname`` in session ``s`` (NotFound otherwise)."""
    server = s.execute(select(Server).where(Server.hostname == hostname.strip().lower())).scalar_one_or_none()
    if server is None:
        raise NotFound(f"no server named {hostname!r}")
    return server


def bmc_targets(ctx: Context, selector: AnySelector) -> tuple[list[Any], list[str]]:
    """(hostname, [Target, ...], profile) for each selected server with a usable BMC endpoint, and the
    problems of the rest.

    The targets are the server's BMC endpoints that have a credential: its IPMI endpoint (the server's
    ``bmc_*`` columns) first, then its Redfish endpoint (a ``bmc_endpoints`` row), each with its
    credential kind in ``options`` so that :func:`fleet.drivers.chain.build_chain` gives every driver
    the endpoint it speaks. A server with only a Redfish endpoint is a BMC target like any other.
    """
    from sqlalchemy.orm import aliased

    sel = parse_selector(selector)
    rf_cred = aliased(Credential)
    stmt = sel.apply(select(Server.hostname, Server.bmc_host, Server.bmc_port, Server.profile,
                            Credential.username, Credential.secret, Credential.name, Credential.kind,
                            BmcEndpoint.host, BmcEndpoint.port, BmcEndpoint.tls_fingerprint, BmcEndpoint.ca_file,
                            rf_cred.username, rf_cred.secret, rf_cred.name)
                     .outerjoin(Credential, Credential.id == Server.bmc_credential_id)
                     .outerjoin(BmcEndpoint, (BmcEndpoint.server_id == Server.id)
                                & (BmcEndpoint.protocol == "redfish"))
                     .outerjoin(rf_cred, rf_cred.id == BmcEndpoint.credential_id)
                     .order_by(Server.hostname))
    with ctx.read() as s:
        rows = s.execute(stmt).all()
    targets: list[Any] = []
    problems: list[str] = []
    for (host, bmc_host, bmc_port, profile_name, user, sealed, cred_name, cred_kind,
         rf_host, rf_port, fingerprint, ca_file, rf_user, rf_sealed, rf_cred_name) in rows:
        if not bmc_host and not rf_host:
            problems.append(f"{host}: no BMC address in the inventory")
            continue
        if (not bmc_host or sealed is None) and (not rf_host or rf_sealed is None):
            if rf_host and not bmc_host:
                problems.append(f"{host}: no Redfish credential assigned (fleet credentials assign NAME {host})")
            else:
                problems.append(f"{host}: no BMC credential assigned (fleet credentials assign NAME {host})")
            continue
        profile = ctx.profile(profile_name)
        quirks = {q.id: q.value for q in profile.quirks} if profile is not None else None
        endpoints = []
        if bmc_host and sealed is not None:
            options: dict[str, Any] = {"profile": profile_name, "credential_kind": cred_kind}
            if profile is not None and profile.ipmi is not None:
                options["cipher_suites"] = tuple(profile.ipmi.cipher_suites)
            if quirks is not None:
                options["quirks"] = quirks
            endpoints.append(_target(ctx, host, bmc_host, bmc_port, user, sealed, cred_name, options))
        if rf_host and rf_sealed is not None:
            options = {"profile": profile_name, "credential_kind": "redfish", "tls_fingerprint": fingerprint,
                       "ca_file": ca_file, "quirks": quirks or {}}
            endpoints.append(_target(ctx, host, rf_host, rf_port, rf_user, rf_sealed, rf_cred_name, options))
        targets.append((host, endpoints, profile))
    return targets, problems


def _target(ctx: Context, name: str, host: str, port: int, user: str, sealed: bytes, cred_name: str,
            options: dict[str, Any]) -> Any:
    from fleet.drivers.base import Target

    return Target(name=name, host=host, port=port, username=user,
                  password=ctx.open_secret(sealed, f"credential {cred_name}"), timeout=ctx.device_timeout,
                  options=options)


def rack_occupancy(ctx: Context, hostnames: Sequence[str]) -> dict[str, tuple[int, int]]:
    """For the racks of ``hostnames``: rack name → (how many of them are in it, how many servers it holds)."""
    picked: dict[int, int] = defaultdict(int)
    with ctx.read() as s:
        for i in range(0, len(hostnames), CHUNK):
            for rid, n in s.execute(select(Server.rack_id, func.count()).where(
                    Server.hostname.in_(hostnames[i:i + CHUNK]), Server.rack_id.is_not(None))
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


def endpoint(host: str | None, port: int | None) -> str | None:
    """``host:port`` (``[v6]:port``) of a BMC, or None without a host."""
    if not host:
        return None
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"
