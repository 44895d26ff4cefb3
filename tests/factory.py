"""Small deterministic fleets written straight into the tables (for tests that are not about import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, insert, select

from inventory.models import Nic, Pod, Rack, Server, ServerTag, Site


@dataclass
class Spec:
    hostname: str
    site: str = "par1"
    pod: str | None = "C1"
    rack: str = "R1"
    position: int = 1
    state: str = "new"
    profile: str = "generic-ipmi"
    serial: str = ""
    tags: list[str] = field(default_factory=list)
    macs: list[str] = field(default_factory=list)


def build(engine: Engine, specs: list[Spec]) -> None:
    """Create the sites, pods, racks and servers that ``specs`` name."""
    with engine.begin() as conn:
        sites: dict[str, int] = {}
        pods: dict[tuple[str, str], int] = {}
        racks: dict[tuple[str, str], int] = {}
        for spec in specs:
            if spec.site not in sites:
                sites[spec.site] = conn.execute(insert(Site).values(code=spec.site, name=spec.site.upper(),
                                                                    description="").returning(Site.id)).scalar_one()
            if spec.pod and (spec.site, spec.pod) not in pods:
                pods[(spec.site, spec.pod)] = conn.execute(insert(Pod).values(
                    site_id=sites[spec.site], code=spec.pod, name="", kind="container").returning(Pod.id)).scalar_one()
            if (spec.site, spec.rack) not in racks:
                racks[(spec.site, spec.rack)] = conn.execute(insert(Rack).values(
                    site_id=sites[spec.site], pod_id=pods.get((spec.site, spec.pod or "")), name=spec.rack,
                    units=48, description="").returning(Rack.id)).scalar_one()
            sid = conn.execute(insert(Server).values(
                hostname=spec.hostname, rack_id=racks[(spec.site, spec.rack)], position=spec.position,
                state=spec.state, profile=spec.profile, serial=spec.serial, asset_tag="",
                bmc_host="127.0.0.1", bmc_port=623, priority=100, description="", state_reason="",
            ).returning(Server.id)).scalar_one()
            for tag in spec.tags:
                conn.execute(insert(ServerTag).values(server_id=sid, tag=tag))
            for i, mac in enumerate(spec.macs):
                conn.execute(insert(Nic).values(server_id=sid, name=f"eth{i}", mac=mac, switch="", switch_port="",
                                                pxe=i == 0))


def hostnames(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(Server.hostname).order_by(Server.hostname)).scalars())
