"""Trust on first use, made explicit: read each Redfish BMC's certificate, show it, record it (``fleet bmc trust``).

BMCs carry self-signed certificates, so the Redfish driver verifies a BMC against the fingerprint
recorded here ("sha256:" + lowercase hex of the certificate's DER), or against a site CA bundle
(``ca_file``). :func:`survey` connects to each selected server's Redfish endpoint with TLS but **without
verification**, only to read the certificate the BMC presents: it sends nothing (no request, no
credential), closes right after the handshake, and is bounded by the context's device deadline.
:func:`trust` shows what the survey found to a ``confirm`` callback and records what it accepts, in one
transaction with its audit row (who, which servers, the fingerprints, the ones replaced).

A certificate that differs from the one on record (or an endpoint trusted through a CA file) is
re-trusted only on request (``replace``): a changed certificate is what a man in the middle presents
too. What happens when a BMC later presents another certificate is the driver's business.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from fleet.core.targets import AnySelector, endpoint
from fleet.drivers.redfish.tls import fetch_fingerprint
from fleet.errors import DriverError, InputError, NotFound
from inventory.models import BmcEndpoint, Server, utcnow
from inventory.selectors import parse_selector

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["Presented", "TrustResult", "survey", "trust", "trust_ca_file"]

#: Certificates read at once.
CONCURRENCY = 64


@dataclass(frozen=True)
class Presented:
    """One server's Redfish endpoint: the certificate it presents now and what is on record.

    ``status``: ``new`` (nothing on record), ``same`` (the recorded fingerprint), ``changed`` (another
    fingerprint, or a CA file, on record), ``error`` (no certificate read: ``error`` says why).
    """

    hostname: str
    host: str
    port: int
    fingerprint: str | None
    recorded: str | None
    ca_file: str | None
    error: str = ""

    @property
    def endpoint(self) -> str:
        return endpoint(self.host, self.port) or ""

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.recorded is None and self.ca_file is None:
            return "new"
        return "same" if self.recorded == self.fingerprint else "changed"

    def to_json(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "endpoint": self.endpoint, "host": self.host, "port": self.port,
                "fingerprint": self.fingerprint, "recorded": self.recorded, "ca_file": self.ca_file,
                "status": self.status, "error": self.error}


@dataclass
class TrustResult:
    """What :func:`trust` saw and did: every endpoint, and the host names whose trust it recorded."""

    presented: list[Presented]
    recorded: list[str]
    declined: bool = False

    @property
    def ok(self) -> bool:
        """Every selected endpoint is now trusted (recorded, or on record already and unchanged)."""
        done = set(self.recorded)
        return all(p.hostname in done or p.status == "same" for p in self.presented)

    def to_json(self) -> dict[str, Any]:
        return {"servers": [p.to_json() for p in self.presented], "recorded": self.recorded,
                "declined": self.declined, "ok": self.ok}


def _endpoints(ctx: Context, selector: AnySelector) -> list[tuple[str, Any]]:
    sel = parse_selector(selector)
    if sel.is_empty:
        raise InputError("name the servers (a selector), e.g. rack=R1 or host=web-1")
    stmt = sel.apply(select(Server.hostname, BmcEndpoint).outerjoin(
        BmcEndpoint, (BmcEndpoint.server_id == Server.id) & (BmcEndpoint.protocol == "redfish"))
        .order_by(Server.hostname))
    with ctx.read() as s:
        rows = [(h, ep) for h, ep in s.execute(stmt).all()]
    if not rows:
        raise NotFound(f"no servers match {str(sel)!r}")
    return rows


async def survey(ctx: Context, selector: AnySelector) -> list[Presented]:
    """The certificate each selected server's Redfish endpoint presents, beside what is on record."""
    rows = _endpoints(ctx, selector)
    timeout = ctx.device_timeout
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(hostname: str, ep: Any) -> Presented:
        if ep is None:
            return Presented(hostname, "", 0, None, None, None,
                             error="no Redfish endpoint in the inventory (fleet set HOST --redfish ADDR[:PORT])")
        try:
            async with sem:
                got: str | None = await fetch_fingerprint(ep.host, ep.port, timeout)
            error = ""
        except DriverError as exc:
            got, error = None, str(exc)
        return Presented(hostname, ep.host, ep.port, got, ep.tls_fingerprint, ep.ca_file, error)

    return list(await asyncio.gather(*(one(h, ep) for h, ep in rows)))


async def trust(ctx: Context, selector: AnySelector, *, confirm: Callable[[list[Presented]], bool],
                replace: bool = False) -> TrustResult:
    """Read the certificates (:func:`survey`), ask ``confirm`` with them, and record the accepted fingerprints.

    Recorded: the ``new`` ones, and with ``replace`` the ``changed`` ones too. ``confirm`` is not asked
    when there is nothing to record. Audited as ``bmc.trust`` with each fingerprint (and the ones replaced).
    """
    presented = await survey(ctx, selector)
    todo = [p for p in presented if p.status == "new" or (replace and p.status == "changed")]
    result = TrustResult(presented, [])
    if not todo:
        return result
    if not confirm(presented):
        result.declined = True
        return result
    now = utcnow()
    with ctx.write() as s:
        ids = dict(s.execute(select(Server.hostname, Server.id).where(
            Server.hostname.in_([p.hostname for p in todo]))).all())
        for p in todo:
            # Only the endpoint as it was read: an address changed meanwhile is not given this certificate.
            s.execute(update(BmcEndpoint).where(
                BmcEndpoint.server_id == ids[p.hostname], BmcEndpoint.protocol == "redfish",
                BmcEndpoint.host == p.host, BmcEndpoint.port == p.port)
                .values(tls_fingerprint=p.fingerprint, ca_file=None, updated_at=now))
        replaced = {p.hostname: p.recorded or f"ca_file {p.ca_file}" for p in todo if p.status == "changed"}
        ctx.audit(s, "bmc.trust", [p.hostname for p in todo],
                  fingerprints={p.hostname: p.fingerprint for p in todo},
                  endpoints={p.hostname: p.endpoint for p in todo}, **({"replaced": replaced} if replaced else {}))
    result.recorded = [p.hostname for p in todo]
    return result


def trust_ca_file(ctx: Context, selector: AnySelector, ca_file: str | Path) -> list[str]:
    """Trust the selected servers' Redfish endpoints through the CA bundle ``ca_file`` (replacing any
    fingerprint on record); audited. The file must be a readable PEM bundle; nothing is contacted."""
    path = Path(ca_file).expanduser().resolve()
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else (exc.strerror or exc)
        raise InputError(f"{ca_file}: not a readable CA bundle ({reason})") from None
    rows = _endpoints(ctx, selector)
    bare = [h for h, ep in rows if ep is None]
    if bare:
        raise InputError(f"{len(bare)} server(s) have no Redfish endpoint ({', '.join(bare[:5])}"
                         f"{' ...' if len(bare) > 5 else ''})")
    with ctx.write() as s:
        s.execute(update(BmcEndpoint).where(BmcEndpoint.id.in_([ep.id for _, ep in rows]))
                  .values(ca_file=str(path), tls_fingerprint=None, updated_at=utcnow()))
        replaced = {h: ep.tls_fingerprint for h, ep in rows if ep.tls_fingerprint}
        ctx.audit(s, "bmc.trust", [h for h, _ in rows], ca_file=str(path),
                  **({"replaced": replaced} if replaced else {}))
    return [h for h, _ in rows]
