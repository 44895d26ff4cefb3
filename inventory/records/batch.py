"""apply(): one batch of records written, kind by kind, in one transaction the caller owns.

:func:`apply` is the entry point. :class:`BatchWriter` sorts the batch by kind, refuses a natural
key given twice, and runs the kind writers in the order of ``KINDS`` (each kind refers only to
earlier ones): :mod:`~inventory.records.writer` (sites, pods, racks, feeds, credentials, pools),
:mod:`~inventory.records.servers` and :mod:`~inventory.records.power` (UPS units, PDUs, outlets),
all on the bulk reads and writes of :mod:`~inventory.records.bulk`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .bulk import _sqlite_cache, gc_paused
from .power import PowerWriter
from .servers import ServerWriter
from .source import _at, _conflict
from .types import KINDS, Record
from .writer import ApplyReport, ProfileNames

if TYPE_CHECKING:
    from sqlmodel import Session

    from ..secrets import KeyRing

__all__ = ["BatchWriter", "apply"]


def apply(session: Session, records: Sequence[Record], *, profiles: ProfileNames, keyring: KeyRing | None = None,
          actor: str, mode: str = "upsert") -> ApplyReport:
    """Write ``records`` as one batch; the caller commits (or rolls back on any error).

    References (site code, pod code within a site, rack and feed names within a site, credential,
    UPS, PDU and host names) resolve against the batch and the database. ``mode="create"`` refuses
    records whose natural key already exists (``fleet add``); ``"upsert"`` updates them, so
    importing the same file twice changes nothing the second time. A server's lifecycle state is
    set only when the server is created (recorded as a state change "imported"): moves of
    existing servers belong to ``inventory.lifecycle``.
    """
    if mode not in ("upsert", "create"):
        raise ValueError(f"mode must be 'upsert' or 'create', not {mode!r}")
    writer = BatchWriter(session.connection(), profiles, keyring, actor, mode)
    with gc_paused(), _sqlite_cache(writer.conn, len(records)):
        writer.run(records)
    return writer.report


class BatchWriter(ServerWriter, PowerWriter):
    """All the kind writers, run in the order of :data:`~inventory.records.types.KINDS`."""

    def run(self, records: Sequence[Record]) -> None:
        by_kind: dict[str, list] = {k: [] for k in KINDS}
        for rec in records:
            try:
                by_kind[rec.kind].append(rec)
            except (KeyError, AttributeError):
                raise TypeError(f"not an inventory record: {rec!r}") from None
        keys = {
            "site": lambda r: r.code, "pod": lambda r: (r.site, r.code), "rack": lambda r: (r.site, r.name),
            "feed": lambda r: (r.site, r.name), "credential": lambda r: r.name,
            "server": lambda r: r.hostname, "ups": lambda r: r.name, "pdu": lambda r: r.name,
            "pool": lambda r: r.name,
        }
        for kind in KINDS:
            self._unique_in_batch(kind, by_kind[kind], keys[kind])
        self._sites(by_kind["site"])
        self._pods(by_kind["pod"])
        self._racks(by_kind["rack"])
        self._feeds(by_kind["feed"])
        self._credentials(by_kind["credential"])
        self._servers(by_kind["server"])
        self._ups(by_kind["ups"])
        self._pdus(by_kind["pdu"])
        self._pools(by_kind["pool"])

    @staticmethod
    def _unique_in_batch(kind: str, recs: list, key: Callable[[Any], Any]) -> None:
        seen: dict[Any, Any] = {}
        for rec in recs:
            k = key(rec)
            first = seen.setdefault(k, rec)
            if first is not rec:
                name = "/".join(k) if isinstance(k, tuple) else k
                where = f" (first at {first.loc})" if first.loc else ""
                fld = {"site": "code", "pod": "code", "server": "hostname"}.get(kind, "name")
                raise _conflict(f"{kind} {name!r} appears twice in this import{where}", field=fld,
                                loc=_at(rec, fld))
