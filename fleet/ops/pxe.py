"""PXE as an operation: inventory → frozen contexts → an installed tree; evidence back into the audit.

``pxe/`` renders from frozen contexts and knows nothing of the database; this module is the one place
that maps the inventory onto those contexts:

- a server's PXE NIC (``pxe`` flag, else its first NIC by name) gives the MAC; the NIC's IP, else the
  server's primary IP, gives the address (``fleet image`` allocates it from the rack's pool first);
- the IP pool holding that address (the rack's, else the site's, else a global pool; ``provisioning``
  pools first) gives the network: CIDR, gateway, DNS servers. A tree serves every network its hosts
  are on (one DHCP range each; networks other than dnsmasq's interface's come through a DHCP relay);
- per-host choices (OS, loader, console, kernel arguments, disk, disk layout, mirror, dnsmasq tags,
  SSH keys) come from, lowest first: built-in defaults, an overrides file's ``[defaults]``, its
  ``[profile.NAME]`` (the server's hardware profile), its ``[rack.NAME]``, the server's
  ``pxe-os:``/``pxe-loader:``/``pxe-layout:`` tags, its ``[host."NAME"]``, then an ``os=`` given to the
  call (``fleet image --os``), which wins over all;
- callback tokens are HMAC-SHA256 of the host name and a boot nonce (one per render: random, or the
  imaging job's) under the PXE callback key (:func:`pxe_callback_key`, the one place that
  reads it: today the ``meta`` row ``pxe.callback_key``, made on first use) unless a key is passed in.
  So every render (every boot) issues new tokens; the HTTP server accepts a token only from the
  host's address, until ``token_ttl_s`` if given, and its ``late`` callback once (:mod:`pxe.callbacks`).

Everything that reaches config text is checked when the contexts are built: a host name, tag, MAC or
kernel argument holding a newline, quote, ``${...}`` or ``;`` stops the render with a
:class:`~fleet.errors.ValidationError` naming the server, before any file is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import secrets
import tomllib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import insert, select

from fleet.errors import InputError, NotFound, ValidationError
from inventory.models import IpPool, Meta, Nic, Rack, Server, ServerTag, Site, utcnow
from inventory.selectors import Selector, parse_selector
from inventory.validate import check_tag
from pxe.context import HostContext, Network, TreeContext, callback_token
from pxe.evidence import DNSMASQ_LOG, HTTP_LOG, Evidence, EvidenceReader, read_evidence

if TYPE_CHECKING:
    from fleet.core.context import Context
    from pxe.install import BootSources, InstallReport

__all__ = ["HOST_SETTINGS", "PxeOverrides", "PxeRenderResult", "pxe_callback_key", "pxe_contexts", "pxe_evidence",
           "pxe_record_evidence", "pxe_render"]

#: Per-host settings an overrides file (or a call) may set, and their defaults.
HOST_SETTINGS: Mapping[str, Any] = {
    "os": "debian-12", "loader": "ipxe", "console": "ttyS0,115200", "kernel_args": (), "disk": "",
    "disk_layout": "atomic", "mirror": "", "tags": (), "ssh_keys": (), "extra_initrds": (),
}
_LIST_SETTINGS = ("kernel_args", "tags", "ssh_keys", "extra_initrds")
#: Server tags that choose a setting: ``pxe-os:debian-12``, ``pxe-loader:grub``, ``pxe-layout:lvm``.
_TAG_SETTINGS = {"pxe-os:": "os", "pxe-loader:": "loader", "pxe-layout:": "disk_layout"}
_KEY_META = "pxe.callback_key"
_CHUNK = 500


@dataclass(frozen=True)
class PxeOverrides:
    """Per-rack and per-host PXE settings (see :data:`HOST_SETTINGS`), e.g. from a TOML file::

        [defaults]
        console = "ttyS1,115200"
        ssh_keys = ["ssh-ed25519 AAAA... ops@example"]

        [profile.dell-r640]
        console = "ttyS0,115200"
        kernel_args = ["nomodeset"]

        [rack.R01]
        os = "debian-12"
        disk_layout = "lvm"

        [host."vm2.lab.example.net"]
        loader = "grub"
        kernel_args = ["quiet"]

    Unknown sections or keys are refused by name. Values are checked again when contexts are built.
    """

    defaults: Mapping[str, Any] = field(default_factory=dict)
    racks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    hosts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = "overrides"
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "overrides") -> PxeOverrides:
        unknown = set(data) - {"defaults", "profile", "rack", "host"}
        if unknown:
            raise ValidationError(f"unknown section(s) {', '.join(sorted(unknown))} "
                                  "(expected defaults, profile, rack, host)", location=source)
        defaults = _settings(data.get("defaults", {}), f"{source}: [defaults]")
        profiles = {str(k): _settings(v, f"{source}: [profile.{k}]")
                    for k, v in _table(data, "profile", source).items()}
        racks = {str(k): _settings(v, f"{source}: [rack.{k}]") for k, v in _table(data, "rack", source).items()}
        hosts = {str(k).lower(): _settings(v, f"{source}: [host.{k}]")
                 for k, v in _table(data, "host", source).items()}
        return cls(defaults=defaults, racks=racks, hosts=hosts, source=source, profiles=profiles)

    @classmethod
    def load(cls, path: str | Path) -> PxeOverrides:
        """Read a TOML overrides file (strict)."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise NotFound(f"no overrides file {p}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError(str(exc), location=str(p)) from None
        return cls.from_mapping(data, str(p))

    def for_host(self, hostname: str, rack: str | None, tag_settings: Mapping[str, Any],
                 profile: str | None = None) -> dict[str, Any]:
        merged = dict(HOST_SETTINGS)
        merged.update(self.defaults)
        if profile is not None:
            merged.update(self.profiles.get(profile, {}))
        if rack is not None:
            merged.update(self.racks.get(rack, {}))
        merged.update(tag_settings)
        merged.update(self.hosts.get(hostname, {}))
        return merged


def _table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ValidationError(f"[{key}] must be a table of tables", location=source)
    return value


def _settings(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("must be a table of settings", location=where)
    unknown = set(value) - set(HOST_SETTINGS)
    if unknown:
        raise ValidationError(f"unknown setting(s) {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(HOST_SETTINGS)})", location=where)
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key in _LIST_SETTINGS:
            if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
                raise ValidationError("must be a list of strings", field=key, value=v, location=where)
            out[key] = tuple(v)
        else:
            if not isinstance(v, str):
                raise ValidationError("must be a string", field=key, value=v, location=where)
            out[key] = v
    return out


@dataclass(frozen=True)
class PxeRenderResult:
    """What :func:`pxe_render` did: the tree's root, its hosts, the install report."""

    root: Path
    hosts: tuple[str, ...]
    files: int
    report: InstallReport | None
    tree: TreeContext = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"root": str(self.root), "hosts": list(self.hosts), "files": self.files,
                "install": self.report.to_json() if self.report else None}


@dataclass
class _Row:
    id: int
    hostname: str
    rack: str | None
    rack_id: int | None
    site_id: int | None
    primary_ip: str | None
    profile: str | None = None
    mac: str | None = None
    ip: str | None = None
    tags: list[str] = field(default_factory=list)


def pxe_callback_key(ctx: Context) -> bytes:
    """The key callback tokens are derived from; made (32 random bytes) and stored on first use.

    The only place that reads the key (issue 16 moves it into the key ring)."""
    with ctx.write() as s:
        meta = s.get(Meta, _KEY_META)
        if meta is None:
            meta = Meta(key=_KEY_META, value=secrets.token_hex(32))
            s.add(meta)
        return bytes.fromhex(meta.value)


def _pxe_rows(ctx: Context, sel: Selector) -> list[_Row]:
    stmt = sel.apply(select(Server.id, Server.hostname, Rack.name, Server.rack_id, Rack.site_id,
                            Server.primary_ip, Server.profile).outerjoin(Rack, Rack.id == Server.rack_id)
                     .order_by(Server.hostname))
    with ctx.read() as s:
        rows = {r[0]: _Row(*r) for r in s.execute(stmt)}
        ids = list(rows)
        nics: dict[int, list[tuple[bool, str, str, str | None]]] = defaultdict(list)
        for i in range(0, len(ids), _CHUNK):
            part = ids[i:i + _CHUNK]
            for sid, pxe, name, mac, ip in s.execute(
                    select(Nic.server_id, Nic.pxe, Nic.name, Nic.mac, Nic.ip).where(Nic.server_id.in_(part))):
                nics[sid].append((not pxe, name, mac, ip))
            for sid, tag in s.execute(select(ServerTag.server_id, ServerTag.tag)
                                      .where(ServerTag.server_id.in_(part)).order_by(ServerTag.tag)):
                rows[sid].tags.append(tag)
    for sid, row in rows.items():
        if nics.get(sid):
            _, _, row.mac, row.ip = min(nics[sid])  # the PXE NIC first, else the first by name
    return list(rows.values())


def _pxe_pools(ctx: Context) -> dict[tuple[str, int | None], list[tuple[IpPool, Any]]]:
    """Pools by scope: ("rack", id), ("site", id), ("any", None); provisioning pools first in each."""
    with ctx.read() as s:
        pools = list(s.execute(select(IpPool).order_by(IpPool.name)).scalars())
    scoped: dict[tuple[str, int | None], list[tuple[IpPool, Any]]] = defaultdict(list)
    for p in sorted(pools, key=lambda p: p.purpose != "provisioning"):
        key = ("rack", p.rack_id) if p.rack_id is not None else ("site", p.site_id) if p.site_id is not None \
            else ("any", None)
        scoped[key].append((p, ipaddress.ip_network(p.cidr)))
    return scoped


def _pool_for(row: _Row, ip: str, pools: dict[tuple[str, int | None], list[tuple[IpPool, Any]]]
              ) -> IpPool | None:
    """The pool holding ``ip``: the server's rack's, else its site's, else a global one."""
    addr = ipaddress.ip_address(ip)
    for key in (("rack", row.rack_id), ("site", row.site_id), ("any", None)):
        for pool, net in pools.get(key, ()):
            if addr in net:
                return pool
    return None


def pxe_contexts(ctx: Context, selector: str | Sequence[str] | Selector | None, *, root: str | Path, manager_url: str,
                 server_ip: str | None = None, interface: str = "", os: str | None = None,
                 overrides: PxeOverrides | Mapping[str, Any] | None = None, token_key: bytes | None = None,
                 lease_time: str = "1h", ra_prefix: str = "fd77::", dnsmasq_user: str = "",
                 nonce: str | None = None, token_ttl_s: float | None = None) -> TreeContext:
    """The frozen :class:`~pxe.context.TreeContext` for the servers ``selector`` matches.

    Callback tokens are for one boot: bound to ``nonce`` (random when not given), valid for
    ``token_ttl_s`` seconds from now when given.

    Raises :class:`~fleet.errors.ValidationError` (naming the server) for a value unfit for config
    text, or a server without a MAC, an address, or a pool holding that address.
    """
    sel = parse_selector(selector)
    if isinstance(overrides, Mapping):
        overrides = PxeOverrides.from_mapping(overrides)
    overrides = overrides or PxeOverrides()
    rows = _pxe_rows(ctx, sel)
    if not rows:
        raise NotFound(f"no server matches {str(sel) or 'the empty selector'}")
    key = token_key or pxe_callback_key(ctx)
    nonce = nonce or secrets.token_hex(8)
    expires = "" if token_ttl_s is None else (utcnow() + timedelta(seconds=token_ttl_s)).astimezone(UTC) \
        .replace(microsecond=0).isoformat()
    pools = _pxe_pools(ctx)
    networks: dict[str, Network] = {}
    hosts: list[HostContext] = []
    with ctx.read() as s:
        site_codes = dict(s.execute(select(Site.id, Site.code)).all())
    for row in rows:
        try:
            tag_settings = _tag_settings(row.tags)
            if not row.mac:
                raise ValidationError("has no NIC with a MAC address to boot from", field="mac")
            ip = row.ip or row.primary_ip
            if not ip:
                raise ValidationError("has no address: allocate one from its rack's IP pool first "
                                      "(fleet image does)", field="ip")
            pool = _pool_for(row, ip, pools)
            if pool is None:
                raise ValidationError(f"{ip} lies in no IP pool of its rack or site "
                                      f"({site_codes.get(row.site_id, '-')}/{row.rack or '-'})", field="ip")
            network = networks.get(pool.cidr)
            if network is None:
                network = networks[pool.cidr] = Network(cidr=pool.cidr, gateway=pool.gateway,
                                                        dns=tuple(d for d in pool.dns.split(",") if d))
            settings = overrides.for_host(row.hostname, row.rack, tag_settings, row.profile)
            if os is not None:
                settings["os"] = os
            hosts.append(HostContext(
                hostname=row.hostname, mac=row.mac, ip=ip, manager_url=manager_url, network=network,
                token=callback_token(key, row.hostname, nonce), token_expires=expires, **settings))
        except ValidationError as exc:
            raise exc.at(f"server {row.hostname}") from None
    nets = tuple(networks[c] for c in sorted(networks, key=lambda c: ipaddress.ip_network(c)))
    if server_ip is None:
        server_ip = _server_ip(manager_url, nets)
    return TreeContext(root=str(Path(root).absolute()), manager_url=manager_url, server_ip=server_ip,
                       networks=nets, hosts=tuple(hosts), interface=interface, lease_time=lease_time,
                       ra_prefix=ra_prefix, dnsmasq_user=dnsmasq_user)


def pxe_render(ctx: Context, selector: str | Sequence[str] | Selector | None, *, out: str | Path, manager_url: str,
               server_ip: str | None = None, interface: str = "", os: str | None = None,
               overrides: PxeOverrides | Mapping[str, Any] | None = None, token_key: bytes | None = None,
               sources: BootSources | None = None, template_dirs: Sequence[str | Path] = (),
               lease_time: str = "1h", ra_prefix: str = "fd77::", dnsmasq_user: str = "",
               dry_run: bool = False, nonce: str | None = None, token_ttl_s: float | None = None
               ) -> PxeRenderResult:
    """Render the tree for ``selector`` and install it at ``out``, atomically (audited).

    ``dry_run`` renders everything in memory (so every error shows) and writes nothing. Each
    render issues new callback tokens (``nonce``, ``token_ttl_s``: see :func:`pxe_contexts`).
    """
    from pxe.install import install
    from pxe.render import render_tree

    names: tuple[str, ...] = ()
    try:
        tree = pxe_contexts(ctx, selector, root=out, manager_url=manager_url, server_ip=server_ip,
                                 interface=interface, os=os, overrides=overrides, token_key=token_key,
                                 lease_time=lease_time, ra_prefix=ra_prefix, dnsmasq_user=dnsmasq_user,
                                 nonce=nonce, token_ttl_s=token_ttl_s)
        names = tuple(h.hostname for h in tree.hosts)
        rendered = render_tree(tree, template_dirs=template_dirs)
        report = None if dry_run else install(rendered, sources)
    except Exception as exc:
        if not dry_run:  # a refused or failed render is audited too: who tried what, and why it failed
            ctx.audit_failure("pxe.render", list(names) or [str(parse_selector(selector)) or "*"], exc,
                               root=str(out))
        raise
    if report is not None:
        with ctx.write() as s:
            ctx.audit(s, "pxe.render", list(names), root=tree.root, manager_url=manager_url,
                        files=len(rendered.files), oses=list(tree.oses), loaders=sorted(tree.loaders),
                        install=report.to_json(), tokens_expire=tree.hosts[0].token_expires or None)
    return PxeRenderResult(root=Path(tree.root), hosts=names, files=len(rendered.files), report=report,
                           tree=tree)


def pxe_evidence(root: str | Path, *, since: datetime | None = None) -> list[Evidence]:
    """Everything the served tree's logs show (leases, TFTP, HTTP fetches, callbacks), in time order.

    Pure read; :func:`pxe_record_evidence` also records what is new in the audit log.
    """
    return read_evidence(root, since=since)


def pxe_record_evidence(ctx: Context, root: str | Path) -> list[Evidence]:
    """Record evidence not recorded before (per tree: log offsets kept in the inventory) as audit
    entries ``pxe.<kind>`` on the host (or the unknown MAC); returns the newly recorded evidence."""
    root = Path(root).absolute()
    meta_key = "pxe.evidence:" + hashlib.sha1(str(root).encode()).hexdigest()[:16]
    reader = EvidenceReader(root)
    with ctx.write() as s:
        meta = s.get(Meta, meta_key)
        if meta is not None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                saved = json.loads(meta.value)
                reader.offsets[DNSMASQ_LOG] = int(saved.get(DNSMASQ_LOG, 0))
                reader.offsets[HTTP_LOG] = int(saved.get(HTTP_LOG, 0))
        new = reader.poll()
        now = utcnow()
        rows = [{"ts": now, "actor": ctx.actor, "action": f"pxe.{e.kind}",
                 "targets": [e.hostname or e.mac or e.ip or "unknown"], "target_count": 1,
                 "result": "ok" if e.ok else "failed", "detail": e.to_json()} for e in new]
        if rows:
            from inventory.models import Audit

            s.execute(insert(Audit), rows)
        value = json.dumps({DNSMASQ_LOG: reader.offsets[DNSMASQ_LOG], HTTP_LOG: reader.offsets[HTTP_LOG]})
        if meta is None:
            s.add(Meta(key=meta_key, value=value))
        else:
            meta.value = value
    return new



def _tag_settings(tags: Sequence[str]) -> dict[str, Any]:
    """Settings chosen by ``pxe-*:`` tags; every tag is checked (a stored tag must be canonical)."""
    out: dict[str, Any] = {}
    extra: list[str] = []
    for tag in tags:
        if check_tag(tag) != tag:
            raise ValidationError(f"{tag!r} is not in canonical form", field="tags", value=tag)
        for prefix, key in _TAG_SETTINGS.items():
            if tag.startswith(prefix):
                out[key] = tag[len(prefix):]
        if tag.startswith("pxe-tag:"):
            extra.append(tag[len("pxe-tag:"):])
    if extra:
        out["tags"] = tuple(extra)
    return out


def _server_ip(manager_url: str, networks: Sequence[Network]) -> str:
    host = urlsplit(manager_url).hostname or ""
    if not any(host in net for net in networks):
        raise InputError(f"the manager URL {manager_url} is not an address on {', '.join(n.cidr for n in networks)}: "
                         "give the manager's address on the provisioning network (--server-ip)")
    return host
