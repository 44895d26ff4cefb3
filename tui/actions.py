"""What the TUI's actions do, apart from any widget: prepare a confirmation, then carry it out.

:func:`prepare` runs in a worker thread: it resolves exactly which servers an action touches, asks
:func:`fleet.ops.power.BlastRadius.verdict` for the blast-radius verdict (the same check ``Fleet.power``
enforces, without acting) and, for destructive actions, builds the dry-run plan (for remediation,
``Fleet.remediate`` without ``apply``). :func:`perform` carries the action out through ``fleet.Fleet``
on a fleet of its own (its drivers live and die with the operation's event loop), exactly as the CLI does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet import DISRUPTIVE, BlastRadius, Fleet
from fleet.errors import NotFound

__all__ = ["ACTIONS", "ActionSpec", "Prepared", "perform", "prepare", "run_device_op"]


@dataclass(frozen=True)
class ActionSpec:
    key: str
    label: str
    kind: str  # power | power-budget | boot | outlet | quarantine | remediate | image | decommission
    verb: str
    destructive: bool


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("power-on", "Power on", "power", "on", False),
    ActionSpec("power-on-budget", "Power on in waves within the power budget", "power-budget", "on", False),
    ActionSpec("power-off", "Power off (hard)", "power", "off", True),
    ActionSpec("power-soft", "Soft shutdown (ACPI)", "power", "soft", True),
    ActionSpec("power-cycle", "Power cycle", "power", "cycle", True),
    ActionSpec("power-reset", "Hard reset", "power", "reset", True),
    ActionSpec("boot-pxe", "Next boot: PXE", "boot", "pxe", False),
    ActionSpec("boot-disk", "Next boot: disk", "boot", "disk", False),
    ActionSpec("boot-bios", "Next boot: BIOS setup", "boot", "bios", False),
    ActionSpec("outlet-cycle", "Outlet: hard-cycle the outlets feeding it", "outlet", "cycle", True),
    ActionSpec("outlet-off", "Outlet: switch off", "outlet", "off", True),
    ActionSpec("outlet-on", "Outlet: switch on", "outlet", "on", False),
    ActionSpec("quarantine", "Quarantine (lifecycle)", "quarantine", "quarantined", False),
    ActionSpec("remediate", "Remediate by the policies", "remediate", "apply", True),
    ActionSpec("image", "Image over PXE (waves, canary first; disks overwritten)", "image", "image", True),
    ActionSpec("decommission", "Decommission: wipe every disk, certify, retire", "decommission", "retired", True),
)
_BY_KEY = {a.key: a for a in ACTIONS}


def spec(key: str) -> ActionSpec:
    return _BY_KEY[key]


@dataclass
class Prepared:
    """Everything a confirmation shows: the servers, the verdict, the dry-run plan."""

    action: ActionSpec
    hosts: list[str]
    verdict: list[str]  # empty: within the blast-radius limits
    plan_columns: tuple[str, ...] = ()
    plan: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    remediation: Any = None  # the dry-run plan, for remediate
    selection: list[str] = field(default_factory=list)  # what was selected (remediate: may differ from hosts)

    @property
    def needs_force(self) -> bool:
        return bool(self.verdict)


def _verdict_action(action: ActionSpec) -> str:
    """The power verb whose disruption an action amounts to (for the blast-radius check)."""
    if action.kind == "power":
        return action.verb
    if action.kind == "outlet":
        return action.verb if action.verb in DISRUPTIVE else "on"
    return action.kind


def prepare(fleet: Fleet, key: str, hosts: Sequence[str], *, limits: BlastRadius | None = None,
            make_fleet: Callable[[], Fleet] | None = None) -> Prepared:
    """The confirmation of action ``key`` on ``hosts`` (blocking: run it in a worker thread).

    ``make_fleet`` gives the fleet for what must ask the devices (a budgeted power-on reads power states).
    """
    action = spec(key)
    hosts = sorted(set(hosts))
    limits = limits or BlastRadius()
    if action.kind == "remediate":
        run = asyncio.run(fleet.remediate(hosts or None))
        planned = run.plan.planned
        touched = sorted({a.target for a in planned})
        servers = set(fleet.hostnames(touched)) if touched else set()
        disruptive = sorted({a.target for a in planned if a.target in servers and a.action in
                             ("power-cycle", "soft-shutdown", "outlet-cycle")})
        verdict = limits.verdict("cycle", disruptive, fleet.rack_occupancy(disruptive)) if disruptive else []
        prepared = Prepared(action, touched, verdict, ("target", "action", "rule", "reason"),
                            [(a.target, a.action, a.rule, a.reason) for a in planned], remediation=run.plan,
                            selection=list(hosts))
        prepared.notes += [f"held: {h.target} {h.action} ({h.detail})" for h in run.plan.held]
        if not planned:
            prepared.notes.append("nothing to do: no open event calls for an action")
        return prepared
    if action.kind in ("image", "decommission"):
        return _prepare_lifecycle_job(fleet, action, hosts, limits)
    missing = sorted(set(hosts) - set(fleet.hostnames(hosts))) if hosts else []
    if missing:  # e.g. a UPS picked on the events screen
        raise NotFound(f"not a server: {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else ""))
    verdict = limits.verdict(_verdict_action(action), hosts, fleet.rack_occupancy(hosts))
    prepared = Prepared(action, hosts, verdict)
    if action.kind == "power-budget":
        plan, warnings = run_device_op(make_fleet or (lambda: fleet), lambda f: f.power_on_plan(list(hosts)))
        prepared.plan_columns = ("wave", "starts", "servers")
        for i, wave in enumerate(plan.waves):
            prepared.plan.append((f"wave {i + 1}", f"+{i * plan.window_s:.0f} s",
                                  ", ".join(ld.hostname for ld in wave)))
        if plan.baseline:
            prepared.plan.append(("already on", "", ", ".join(ld.hostname for ld in plan.baseline)))
        for load, why in plan.unplannable:
            prepared.plan.append(("not switched", "", f"{load.hostname}: {why}"))
        prepared.notes += warnings[:10]
        prepared.notes.append("each wave starts when the previous one's inrush is over; every feed, UPS and PDU "
                              "stays under its capacity (the profiles' peak watts and inrush)")
        return prepared
    if action.destructive or action.kind == "power":
        states = {s.hostname: s for s in fleet.latest_state(hosts)} if hosts else {}
        prepared.plan_columns = ("server", "recorded power", "would")
        for host in hosts:
            power = states[host].power if host in states else "unknown"
            prepared.plan.append((host, power, _would(action, power)))
        prepared.notes.append("power states as last recorded; each BMC is queried before acting, and a server "
                              "whose state cannot be read is left alone")
    if action.kind == "outlet":
        for host in hosts:
            feeds = fleet.server(host).power_feeds
            outlets = ", ".join(f"{f['pdu'] or f['ups']}:{f['outlet']} (PSU {f['psu']})" for f in feeds)
            prepared.notes.append(f"{host}: {outlets or 'no outlet on record'}")
    return prepared


def image_settings() -> dict[str, Any]:
    """Where the TUI's imaging jobs put and serve their PXE tree: the environment (see docs/tui.md)."""
    import os

    return {"os": os.environ.get("FLEET_IMAGE_OS", "debian-12"), "root": os.environ.get("FLEET_PXE_ROOT", "pxe-root"),
            "manager_url": os.environ.get("FLEET_PXE_MANAGER_URL", ""),
            "interface": os.environ.get("FLEET_PXE_INTERFACE", ""),
            "dnsmasq_user": os.environ.get("FLEET_PXE_DNSMASQ_USER", "")}


def _prepare_lifecycle_job(fleet: Fleet, action: ActionSpec, hosts: list[str], limits: BlastRadius) -> Prepared:
    """Imaging and decommissioning: refuse what their workflows would refuse, show the waves or the wipe."""
    from fleet.errors import InputError

    if not hosts:
        raise InputError("select the servers first")
    waves = fleet.image_waves(hosts) if action.kind == "image" else None  # both refuse what their run would
    if action.kind == "decommission":
        fleet.decommission_check(hosts)
    verdict = limits.verdict("cycle", hosts, fleet.rack_occupancy(hosts))
    prepared = Prepared(action, hosts, verdict)
    if action.kind == "image":
        settings = image_settings()
        if not settings["manager_url"]:
            raise InputError("imaging from the TUI needs FLEET_PXE_MANAGER_URL (and FLEET_PXE_ROOT, "
                             "FLEET_PXE_INTERFACE): see docs/tui.md")
        prepared.plan_columns = ("wave", "servers")
        for i, wave in enumerate(waves or []):
            prepared.plan.append(("canary" if i == 0 else f"wave {i + 1}", ", ".join(wave)))
        prepared.notes += [f"installs {settings['os']}; PXE tree in {settings['root']}, served at "
                           f"{settings['manager_url']}" + (f" on {settings['interface']}" if settings["interface"]
                                                           else ""),
                           "addresses come from each rack's provisioning pool; next boot PXE, then power-cycle; "
                           "a server is deployed only on its lease, answer file and late callback",
                           "a failed canary stops the job; follow it on the jobs screen (6)"]
    else:
        prepared.plan_columns = ("server", "state", "SSH", "disks on record")
        for h in hosts:
            detail = fleet.server(h)
            prepared.plan.append((h, detail.row.state, detail.ssh_credential or "none (cannot wipe)",
                                  ", ".join(f"{d.get('slot')}:{d.get('serial')}" for d in detail.disks) or "-"))
        prepared.notes += ["every disk is wiped over SSH (NVMe format, secure discard, ATA secure erase, else "
                           "overwrite), verified, and certified; then power off and retired",
                           "a server with a disk not wiped stays in decommissioning"]
    return prepared


def _would(action: ActionSpec, power: str) -> str:
    verb = action.verb
    if action.kind == "outlet":
        return {"cycle": "outlet off, then on", "off": "outlet off", "on": "outlet on"}[verb]
    if verb in ("on",) and power == "on":
        return "nothing (already on)"
    if verb in ("off", "soft") and power == "off":
        return "nothing (already off)"
    if verb in ("cycle", "reset") and power == "off":
        return "skip (off: power it on instead)"
    return {"on": "power on", "off": "power off", "soft": "ACPI shutdown", "cycle": "power off, then on",
            "reset": "hard reset"}[verb]


def run_device_op(make_fleet: Callable[[], Fleet], call: Callable[[Fleet], Any]) -> Any:
    """Run ``call(fleet)`` (a coroutine function) on a fleet of its own, then close its drivers.

    Blocking: run it in a worker thread, so the TUI's event loop never waits on a BMC.
    """
    ops = make_fleet()

    async def go() -> Any:
        try:
            return await call(ops)
        finally:
            await ops.aclose()

    return asyncio.run(go())


def perform(make_fleet: Callable[[], Fleet], prepared: Prepared, *, force: bool = False, reason: str = ""
            ) -> list[str]:
    """Carry out a confirmed action; a line per target saying how it went (blocking)."""
    action, hosts = prepared.action, prepared.hosts
    if action.kind == "power":
        results = run_device_op(make_fleet, lambda f: f.power(action.verb, list(hosts), force=force))
        return [f"{r.hostname}: {r.outcome} ({r.before} → {r.after})" + (f": {r.error}" if r.error else "")
                for r in results]
    if action.kind == "power-budget":
        results = run_device_op(make_fleet, lambda f: f.power("on", list(hosts), budget=True))
        return [f"{r.hostname}: {r.outcome} ({r.before} → {r.after}, wave {r.wave + 1})"
                + (f": {r.error}" if r.error else "") for r in results]
    if action.kind == "boot":
        rows = run_device_op(make_fleet, lambda f: f.set_boot(list(hosts), action.verb))
        return [f"{h}: " + (f"failed: {e}" if e else f"next boot {getattr(v, 'device', action.verb)}")
                for h, v, e in rows]
    if action.kind == "outlet":
        async def outlets(f: Fleet) -> list[str]:
            lines = []
            for host in hosts:
                for r in await f.outlet(host, action.verb):
                    lines.append(f"{host}: {r.device}:{r.outlet} {r.before} → {r.after}"
                                 + ("" if r.ok else f": {r.error}"))
            return lines

        return run_device_op(make_fleet, outlets)
    if action.kind == "quarantine":
        fleet = make_fleet()
        lines = []
        for host in hosts:
            row = fleet.set_state(host, "quarantined", reason=reason or "quarantined from the TUI")
            lines.append(f"{host}: {row.state}")
        return lines
    if action.kind == "remediate":
        run = run_device_op(make_fleet, lambda f: f.remediate(list(prepared.selection) or None, apply=True))
        return [f"{a['target']}: {a['action']} " + ("ok" if a["ok"] else "failed") + (f": {a['note']}" if a["note"]
                                                                                     else "")
                for a in run.applied] or ["nothing to do"]
    if action.kind == "image":
        settings = image_settings()
        result = run_device_op(make_fleet, lambda f: f.image(
            list(hosts), os=settings["os"], root=settings["root"], manager_url=settings["manager_url"],
            interface=settings["interface"], dnsmasq_user=settings["dnsmasq_user"], reimage=False))
        return [f"{h}: {s['step']}" + (f" ({s['reason']})" if s.get("reason") else "")
                for h, s in sorted(result.servers.items())] + ([result.stopped] if result.stopped else [])
    if action.kind == "decommission":
        result = run_device_op(make_fleet, lambda f: f.decommission(list(hosts)))
        return [f"{h}: {s['state']}" + (f" ({s['reason']})" if s.get("reason") else "")
                for h, s in sorted(result.servers.items())]
    raise ValueError(f"unknown action kind {action.kind!r}")
