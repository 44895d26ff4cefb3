"""Finding a BMC's resources by their links, never by per-vendor URLs, cached per BMC.

From the service root: ``Systems``, ``Chassis``, ``Managers``, ``UpdateService``; from the system: its
chassis (``Links.Chassis``), its manager (``Links.ManagedBy``), ``LogServices``,
``EthernetInterfaces``. Collections are read with their ``Members@odata.nextLink`` pages and members
given only as links are fetched (a few at a time).

One endpoint may serve several systems (sushy-tools, blade chassis): ``Target.options["system"]``
names the one this target is (its ``Id``, ``Name``, ``UUID`` or ``@odata.id``); without it, the
endpoint must serve exactly one, or the first is used.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fleet.errors import FatalError, Unsupported

from .client import Call

__all__ = ["all_chassis", "chassis_path", "link", "manager_path", "member_links", "members", "system_path"]

#: Pages of one collection followed at most (a log of 100,000 entries in pages of 50 is 2,000 pages).
MAX_PAGES = 2000
#: Members fetched at once when a collection lists links only.
FETCH_AT_ONCE = 4


def link(doc: dict[str, Any], *names: str) -> str | None:
    """The ``@odata.id`` at ``doc[names[0]][names[1]]...`` (a link object), or None."""
    node: Any = doc
    for name in names:
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    if isinstance(node, list):
        node = node[0] if node else None
    if isinstance(node, dict):
        value = node.get("@odata.id")
        return value if isinstance(value, str) and value else None
    return None


def _links(doc: dict[str, Any], *names: str) -> list[str]:
    node: Any = doc
    for name in names:
        node = node.get(name) if isinstance(node, dict) else None
    items = node if isinstance(node, list) else []
    return [i["@odata.id"] for i in items if isinstance(i, dict) and isinstance(i.get("@odata.id"), str)]


async def member_links(call: Call, collection: str) -> list[str]:
    """The members' links of ``collection``, following its pages."""
    out: list[str] = []
    page: str | None = collection
    for _ in range(MAX_PAGES):
        if page is None:
            return out
        doc = await call.get(page)
        out.extend(_links(doc, "Members"))
        nxt = doc.get("Members@odata.nextLink")
        page = nxt if isinstance(nxt, str) and nxt else None
    raise call.error(FatalError, f"collection {collection} has more than {MAX_PAGES} pages")


async def members(call: Call, collection: str) -> list[dict[str, Any]]:
    """The members of ``collection`` as objects (inline ones as given, links fetched)."""
    out: list[dict[str, Any] | str] = []
    page: str | None = collection
    for _ in range(MAX_PAGES):
        if page is None:
            break
        doc = await call.get(page)
        for item in doc.get("Members") or []:
            if not isinstance(item, dict):
                continue
            only_link = set(item) == {"@odata.id"} and isinstance(item["@odata.id"], str)
            out.append(item["@odata.id"] if only_link else item)  # inline members are taken as given
        nxt = doc.get("Members@odata.nextLink")
        page = nxt if isinstance(nxt, str) and nxt else None
    else:
        raise call.error(FatalError, f"collection {collection} has more than {MAX_PAGES} pages")
    sem = asyncio.Semaphore(FETCH_AT_ONCE)

    async def fetch(item: dict[str, Any] | str) -> dict[str, Any]:
        if isinstance(item, dict):
            return item
        async with sem:
            return await call.get(item)

    return list(await asyncio.gather(*(fetch(i) for i in out)))


async def _root_link(call: Call, name: str) -> str:
    root = await call.root()
    found = link(root, name)
    if found is None:
        raise call.error(Unsupported, f"the service root has no {name}")
    return found


async def system_path(call: Call) -> str:
    """The path of this target's ComputerSystem (cached per BMC and ``system`` option)."""
    wanted = call.target.options.get("system")
    key = f"system:{wanted or ''}"
    cached = call.bmc.links.get(key)
    if cached:
        return cached
    paths = await member_links(call, await _root_link(call, "Systems"))
    if not paths:
        raise call.error(Unsupported, "the BMC lists no ComputerSystem")
    chosen = paths[0]
    if wanted:
        wanted_s = str(wanted)
        hits = [p for p in paths if p == wanted_s or p.rstrip("/").rsplit("/", 1)[-1] == wanted_s]
        if not hits:
            docs = [await call.get(p) for p in paths]
            hits = [p for p, d in zip(paths, docs, strict=True)
                    if wanted_s in (d.get("Id"), d.get("Name"), d.get("UUID"))]
        if not hits:
            raise call.error(FatalError, f"the BMC has no system {wanted_s!r} (it has {len(paths)})")
        chosen = hits[0]
    call.bmc.links[key] = chosen
    return chosen


async def _linked(call: Call, system: str, kind: str, via: str, collection: str) -> str:
    key = f"{kind}:{system}"
    cached = call.bmc.links.get(key)
    if cached:
        return cached
    doc = await call.get(system)
    found = link(doc, "Links", via)
    if found is None:
        paths = await member_links(call, await _root_link(call, collection))
        if not paths:
            raise call.error(Unsupported, f"the BMC lists no {collection}")
        found = paths[0]
    call.bmc.links[key] = found
    return found


async def chassis_path(call: Call, system: str) -> str:
    """The chassis holding ``system`` (its ``Links.Chassis``, else the first chassis)."""
    return await _linked(call, system, "chassis", "Chassis", "Chassis")


async def manager_path(call: Call, system: str) -> str:
    """The manager of ``system`` (its ``Links.ManagedBy``, else the first manager)."""
    return await _linked(call, system, "manager", "ManagedBy", "Managers")


async def all_chassis(call: Call, system: str) -> list[str]:
    """Every chassis ``system`` links to (else the first of the service's)."""
    key = f"chassis-all:{system}"
    cached = call.bmc.links.get(key)
    if cached:
        return cached
    doc = await call.get(system)
    found = _links(doc, "Links", "Chassis") or [await chassis_path(call, system)]
    call.bmc.links[key] = found
    return found
