"""A small deterministic fleet for the TUI tests and snapshots: fixed names, times and readings.

Two sites, three racks, ten servers with states, health and power, rack and per-server UPSes (one on
battery), a PDU, events, sensor readings, audit entries and jobs — every timestamp fixed, so a
snapshot renders the same bytes on every run (the app's clock is fixed too).
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Engine, insert, select

from fleet import Fleet
from inventory.db import make_engine, upgrade
from inventory.models import (
    Audit,
    Disk,
    Event,
    Job,
    Outlet,
    Pdu,
    PowerFeed,
    Rack,
    Reading,
    Server,
    ServerState,
    Site,
    Ups,
    UpsState,
)
from inventory.secrets import KeyRing

from .factory import Spec, build

T0 = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)

SPECS = [
    Spec("web01.par1", rack="R01", position=1, state="deployed", tags=["web"], macs=["02:00:00:00:01:01"]),
    Spec("web02.par1", rack="R01", position=2, state="deployed", tags=["web"], macs=["02:00:00:00:01:02"]),
    Spec("web03.par1", rack="R01", position=3, state="maintenance", tags=["web"]),
    Spec("db01.par1", rack="R01", position=10, state="deployed", tags=["db"], serial="SN-DB01"),
    Spec("db02.par1", rack="R02", position=1, state="failed", tags=["db"]),
    Spec("gpu01.par1", rack="R02", position=5, state="ready", tags=["gpu"]),
    Spec("gpu02.par1", rack="R02", position=6, state="quarantined", tags=["gpu"]),
    Spec("web01.ams1", site="ams1", pod="H1", rack="A01", position=1, state="deployed", tags=["web"]),
    Spec("web02.ams1", site="ams1", pod="H1", rack="A01", position=2, state="new"),
    Spec("web03.ams1", site="ams1", pod="H1", rack="A01", position=3, state="commissioning"),
]
HEALTH = {"web01.par1": ("on", "ok"), "web02.par1": ("on", "ok"), "web03.par1": ("off", "warning"),
          "db01.par1": ("on", "critical"), "db02.par1": ("unknown", "critical"), "gpu01.par1": ("off", "ok"),
          "web01.ams1": ("on", "ok")}


def populate(engine: Engine) -> None:
    build(engine, SPECS)
    with engine.begin() as conn:
        ids = dict(conn.execute(select(Server.hostname, Server.id)).all())
        sites = dict(conn.execute(select(Site.code, Site.id)).all())
        racks = dict(conn.execute(select(Rack.name, Rack.id)).all())
        for host, (power, health) in HEALTH.items():
            conn.execute(insert(ServerState).values(
                server_id=ids[host], updated_at=T0, power=power, health=health,
                bmc_reachable=power != "unknown", last_seen=T0 if power != "unknown" else None,
                last_error="" if power != "unknown" else "BMC did not answer within 5 s", summary={}))
        conn.execute(insert(Disk).values(server_id=ids["db01.par1"], slot="0", kind="nvme", model="PM9A3",
                                         serial="S64ANS0T", size_gb=3840))
        feed_a = conn.execute(insert(PowerFeed).values(site_id=sites["par1"], rack_id=racks["R01"], name="R01-A",
                                                       capacity_w=5000, phases=1).returning(PowerFeed.id)).scalar_one()
        conn.execute(insert(PowerFeed).values(site_id=sites["par1"], rack_id=racks["R02"], name="R02-A",
                                              capacity_w=3000, phases=1))
        rack_ups = conn.execute(insert(Ups).values(
            name="ups-r01", site_id=sites["par1"], rack_id=racks["R01"], kind="rack", profile="apc-smart-ups",
            protocol="snmp", host="127.0.0.1", port=161, nut_name="", feed_id=feed_a, capacity_w=2700,
            description="").returning(Ups.id)).scalar_one()
        pdu = conn.execute(insert(Pdu).values(
            name="pdu-r01", site_id=sites["par1"], rack_id=racks["R01"], profile="apc-switched-pdu",
            host="127.0.0.2", port=161, ups_id=rack_ups, capacity_w=3600, description="").returning(Pdu.id)
        ).scalar_one()
        own_ups = conn.execute(insert(Ups).values(
            name="ups-web01", site_id=sites["par1"], rack_id=racks["R01"], kind="server", profile="nut-dummy",
            protocol="nut", host="127.0.0.1", port=3493, nut_name="web01", capacity_w=600, description="",
        ).returning(Ups.id)).scalar_one()
        for n, host in enumerate(("web01.par1", "web02.par1", "web03.par1", "db01.par1"), start=1):
            conn.execute(insert(Outlet).values(pdu_id=pdu, number=n, name=f"o{n}", server_id=ids[host], psu=2))
        conn.execute(insert(Outlet).values(ups_id=own_ups, number=0, name="out", server_id=ids["web01.par1"], psu=1))
        conn.execute(insert(UpsState).values(ups_id=rack_ups, updated_at=T0, status="on-battery", charge_pct=81.0,
                                             runtime_s=1260.0, load_pct=38.0, input_v=0.0, reachable=True,
                                             last_error=""))
        conn.execute(insert(UpsState).values(ups_id=own_ups, updated_at=T0, status="online", charge_pct=100.0,
                                             runtime_s=2400.0, load_pct=22.0, input_v=230.0, reachable=True,
                                             last_error=""))
        for i in range(12):
            ts = T0 - timedelta(minutes=5 * (11 - i))
            for metric, base, unit in (("Inlet Temp", 22.0, "C"), ("CPU Temp", 55.0, "C"), ("Fan1", 6000.0, "RPM")):
                value = base + (i % 5) * (1 if unit == "C" else 120) + (i // 6)
                conn.execute(insert(Reading).values(ts=ts, target_kind="server", target_id=ids["db01.par1"],
                                                    metric=metric, value=value, unit=unit))
        for i, (kind, target_kind, target, sev, msg) in enumerate((
                ("sensor-critical", "server", "db01.par1", "critical", "CPU Temp 97 C"),
                ("bmc-unreachable", "server", "db02.par1", "critical", "BMC did not answer within 5 s"),
                ("sensor-warning", "server", "web03.par1", "warning", "Inlet Temp 38 C"),
                ("ups-on-battery", "ups", "ups-r01", "warning", "on-battery, 21 min left"))):
            tid = ids.get(target, rack_ups)
            conn.execute(insert(Event).values(
                opened_at=T0 + timedelta(seconds=i), updated_at=T0 + timedelta(seconds=i), target_kind=target_kind,
                target_id=tid, target_name=target, kind=kind, severity=sev, status="open", message=msg, count=1,
                acked_by="", dedup_key=f"{kind}:{target_kind}:{tid}"))
        for i, (action, targets, result) in enumerate((
                ("import", ["inventory.yaml"], "ok"), ("sweep", ["all"], "partial"),
                ("power.cycle", ["db01.par1"], "ok"), ("state", ["gpu02.par1"], "ok"))):
            conn.execute(insert(Audit).values(ts=T0 - timedelta(minutes=10 - i), actor="tech", action=action,
                                              targets=targets, target_count=len(targets), result=result,
                                              detail={"n": i}))
        for i, (kind, status, total, done, failed) in enumerate((("sweep", "done", 10, 9, 1),
                                                                 ("power", "running", 4, 2, 0),
                                                                 ("remediate", "failed", 3, 1, 2))):
            conn.execute(insert(Job).values(
                kind=kind, selector="rack=R01" if kind == "power" else "", params={"i": i}, status=status,
                total=total, done=done, failed=failed, result={}, actor="tech",
                owner=f"{socket.gethostname()}:{os.getpid()}",
                created_at=T0 - timedelta(minutes=3 - i), started_at=T0 - timedelta(minutes=3 - i),
                finished_at=None if status == "running" else T0 - timedelta(minutes=2 - i),
                heartbeat_at=T0 if status == "running" else None))


def make_fleet(tmp_path: Path) -> Fleet:
    """A Fleet on an SQLite file (workers use their own connections) holding the fleet above."""
    engine = make_engine(str(tmp_path / "tui.db"))
    upgrade(engine)
    populate(engine)
    return Fleet(engine, keyring=KeyRing(Fernet.generate_key()), actor="tester")


def clock() -> datetime:
    return NOW


class FakeBmc:
    """A power/boot/SEL driver that remembers every call (for the action tests; no network)."""

    def __init__(self, power: dict[str, str] | None = None) -> None:
        self.power = dict(power or {})
        self.calls: list[tuple[str, str]] = []
        self.boot: dict[str, str] = {}

    async def power_status(self, target: object) -> str:
        name = target.name  # type: ignore[attr-defined]
        self.calls.append(("status", name))
        return self.power.get(name, "on")

    async def _set(self, target: object, op: str, state: str) -> None:
        name = target.name  # type: ignore[attr-defined]
        self.calls.append((op, name))
        self.power[name] = state

    async def power_on(self, target: object) -> None:
        await self._set(target, "on", "on")

    async def power_off(self, target: object) -> None:
        await self._set(target, "off", "off")

    async def power_cycle(self, target: object) -> None:
        await self._set(target, "cycle", "on")

    async def power_reset(self, target: object) -> None:
        await self._set(target, "reset", "on")

    async def power_soft(self, target: object) -> None:
        await self._set(target, "soft", "off")

    async def set_boot(self, target: object, device: str, *, persistent: bool = False, uefi: bool = False) -> None:
        self.calls.append(("boot", target.name))  # type: ignore[attr-defined]
        self.boot[target.name] = device  # type: ignore[attr-defined]

    async def get_boot(self, target: object) -> object:
        from fleet.drivers.base import BootDevice

        return BootDevice(self.boot.get(target.name, "disk"))  # type: ignore[attr-defined, arg-type]

    async def sel(self, target: object) -> list[object]:
        from fleet.drivers.base import SelEntry

        return [SelEntry(1, T0, "Memory", "Uncorrectable ECC", "critical"), SelEntry(2, T0, "PSU2", "Power lost",
                                                                                        "warning")]


def with_bmc_credentials(fleet: Fleet) -> None:
    """Give every server a BMC credential, so device actions reach the (fake) driver."""
    fleet.set_credential("bmc", "ipmi", "password", username="admin")
    fleet.assign_credential("bmc", "site=par1,ams1")


def screen_text(app: object) -> str:
    """What a person sees: the current screen's rendered lines as plain text."""
    strips = app.screen._compositor.render_strips()  # type: ignore[attr-defined]
    return "\n".join(strip.text for strip in strips)


async def settle(pilot: object, pause: float = 0.05) -> None:
    """Let debounce timers fire and every worker finish, then let the screen repaint."""
    app = pilot.app  # type: ignore[attr-defined]
    for _ in range(3):
        await pilot.pause(pause)  # type: ignore[attr-defined]
        await app.workers.wait_for_complete()
    await pilot.pause(pause)  # type: ignore[attr-defined]


async def keys(pilot: object, *names: str) -> None:
    """Press keys one by one (``type:TEXT`` types each character, ``clear`` empties the focused box),
    settling after each."""
    for name in names:
        if name == "clear":  # empty the focused input box
            pilot.app.focused.value = ""  # type: ignore[attr-defined]
        elif name.startswith("type:"):
            for ch in name[5:]:
                await pilot.press(ch if ch != " " else "space")  # type: ignore[attr-defined]
        else:
            await pilot.press(name)  # type: ignore[attr-defined]
        await settle(pilot)


def make_app(fleet: Fleet, bmc: FakeBmc | None = None, **kwargs: object) -> object:
    """The TUI on ``fleet`` with a fixed clock, no timed refresh and device operations on ``bmc``."""
    from tui.app import FleetApp

    def ops() -> Fleet:
        return Fleet(fleet.engine, keyring=fleet.keyring, actor=fleet.actor, drivers={"ipmi": bmc or FakeBmc()})

    # A short debounce: a test settles well after it, however slow the machine (the debounce test sets its own).
    options = {"refresh_s": 0, "clock": clock, "read_sel": False, "ops_fleet": ops, "debounce_s": 0.02, **kwargs}
    return FleetApp(fleet, **options)  # type: ignore[arg-type]


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test on its own event loop (no pytest asyncio plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run
