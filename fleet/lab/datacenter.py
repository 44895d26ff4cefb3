"""``fleet lab``: a virtual datacenter on loopback, for demos, tests and benches.

``start_lab(DIR, racks=R, servers_per_rack=N)`` lays out sites, a container pod per site and racks,
gives every server a lab BMC on its own loopback address, starts the lab BMC server in the
background and writes what an operator would import:

- ``DIR/inventory.yaml``: the sites, pods, racks and servers, importable with ``fleet import``;
- ``DIR/secrets.yaml`` (mode 0600): the lab's credentials, imported with ``--secrets``;
- ``DIR/lab.json``: what is running (PIDs, state folders), read by ``stop_lab`` and ``lab_fault``.

Everything binds 127.0.0.0/8 only. Port 623 as root, else 6623 (each BMC has its own address, so
one port number serves them all).

With ``redfish=True`` the lab is a mixed fleet (:data:`REDFISH_MIX`, by server index): most BMCs speak
IPMI and Redfish, one in four IPMI only, one in four Redfish only (IPMI over LAN off). The servers that
speak Redfish have the profile ``rackfleet-lab-redfish`` (Redfish first, IPMI after) and, in the
inventory, their Redfish endpoint, the ``lab-redfish`` credential and the lab certificate's fingerprint.
"""

from __future__ import annotations

import json
import os
import secrets as pysecrets
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from fleet.errors import InputError, NotFound

from .sshlab import HOST_FAULTS

__all__ = ["LAB_FILE", "LabInfo", "lab_fault", "lab_redfish_endpoints", "lab_status", "plan_lab", "start_lab",
           "stop_lab"]

LAB_FILE = "lab.json"
BMC_STATE = "bmc"
FIRST_BMC_HOST = "127.10.0.1"
FIRST_SERVER_IP = "127.20.0.1"  # the servers' own (primary) addresses, where the lab's sshd answers
# Up to 250 racks of up to 250 servers, each rack is its own network 127.20.R.0/24 (its provisioning
# pool, gateway .254); bigger labs number the servers' addresses straight through, without pools.
SERVER_FAULTS = ("dead", "slow", "wrong-password", "stuck-power", "sensor-critical", "ecc", "redfish-dead")
UPS_FAULTS = ("on-battery", "low-battery", "replace-battery", "normal")
SSH_STATE = "ssh"
NUT_STATE = "nut"
SNMP_STATE = "snmp"
RACK_UPS_MODEL, PDU_MODEL, PDU_OUTLETS = "apc-smart-ups", "apc-8641", 24
#: The protocols of a Redfish lab's servers, by server index modulo its length: (IPMI, Redfish).
REDFISH_MIX: tuple[tuple[bool, bool], ...] = ((True, True), (True, True), (True, False), (False, True))
LAB_PROFILE, LAB_REDFISH_PROFILE = "rackfleet-lab", "rackfleet-lab-redfish"
IPMI_CREDENTIAL, REDFISH_CREDENTIAL = "lab-bmc", "lab-redfish"


@dataclass(frozen=True)
class LabInfo:
    directory: Path
    servers: int
    racks: int
    sites: int
    bmc_pid: int
    port: int
    ups: int = 0
    pdus: int = 0
    ssh_hosts: int = 0
    notes: tuple[str, ...] = ()
    nut_server: str = ""  # what serves the per-server UPSes: "upsd", "builtin", or "" (none)
    #: The Redfish side (fleet.lab.redfish): port, certificate fingerprint and file, credential; None: IPMI only.
    redfish: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "servers": self.servers, "racks": self.racks,
                "sites": self.sites, "bmc_pid": self.bmc_pid, "port": self.port, "ups": self.ups,
                "pdus": self.pdus, "ssh_hosts": self.ssh_hosts, "notes": list(self.notes),
                "nut_server": self.nut_server, **({"redfish": self.redfish} if self.redfish else {})}


def _default_port() -> int:
    return 623 if os.geteuid() == 0 else 6623


def plan_lab(*, racks: int, servers_per_rack: int, sites: int = 1, port: int | None = None,
             password: str | None = None,
             redfish: bool = False) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The BMC server spec, the inventory and the secrets of a lab (pure: nothing is started).

    ``redfish``: a mixed lab (:data:`REDFISH_MIX`): the BMCs that speak Redfish answer it (fleet.lab.redfish,
    profile defaults) and carry their Redfish endpoint and credential in the inventory (its certificate's
    fingerprint is added by :func:`start_lab`, once the certificate exists)."""
    from .bmcserver import loopback_hosts
    from .redfish.lab import redfish_port_for
    from .sshlab import disks_of

    if racks < 1 or servers_per_rack < 1 or sites < 1:
        raise InputError("a lab needs at least one site, one rack and one server per rack")
    if sites > racks:
        raise InputError(f"{sites} sites need at least {sites} racks")
    if racks * servers_per_rack > 60000:
        raise InputError("at most 60,000 lab servers")
    port = port or _default_port()
    password = password or pysecrets.token_urlsafe(12)[:16]
    total = racks * servers_per_rack
    hosts = loopback_hosts(total, first=FIRST_BMC_HOST)
    per_rack_nets = racks <= 250 and servers_per_rack <= 250
    server_ips = ([f"127.20.{r + 1}.{n + 1}" for r in range(racks) for n in range(servers_per_rack)]
                  if per_rack_nets else loopback_hosts(total, first=FIRST_SERVER_IP))
    units = max(42, servers_per_rack)
    site_list: list[dict[str, Any]] = [
        {"code": f"lab{s + 1}", "name": f"Lab site {s + 1}",
         "pods": [{"code": f"c{s + 1:02d}", "name": f"Container {s + 1}", "kind": "container", "racks": []}]}
        for s in range(sites)
    ]
    bmcs: list[dict[str, Any]] = []
    index = 0
    for r in range(racks):
        site = site_list[r % sites]
        rack_name = f"R{r + 1:02d}" if racks < 100 else f"R{r + 1:03d}"
        servers = []
        for n in range(servers_per_rack):
            hostname = f"{site['code']}-{rack_name.lower()}-s{n + 1:02d}"
            mac = "02:fb:{:02x}:{:02x}:{:02x}:{:02x}".format(*(index + 1).to_bytes(4, "big"))
            ipmi, speaks_redfish = REDFISH_MIX[index % len(REDFISH_MIX)] if redfish else (True, False)
            endpoints: dict[str, Any] = {}
            if ipmi:
                endpoints |= {"bmc": f"{hosts[index]}:{port}", "bmc_credential": IPMI_CREDENTIAL}
            if speaks_redfish:
                endpoints |= {"redfish": f"{hosts[index]}:{redfish_port_for(port)}",
                              "redfish_credential": REDFISH_CREDENTIAL}
            servers.append({
                "hostname": hostname, "position": n + 1,
                "profile": LAB_REDFISH_PROFILE if speaks_redfish else LAB_PROFILE,
                "serial": f"LAB{index + 1:06d}", "state": "deployed", **endpoints, "priority": 100 if n % 4 else 50,
                "tags": ["lab"] + (["gpu"] if n % 10 == 0 else []),
                "primary_ip": server_ips[index],
                "nics": [{"name": "eth0", "mac": mac, "pxe": True}],
                "disks": [{k: d[k] for k in ("slot", "kind", "model", "serial")} | {"size_gb": d["size"] // 10**9}
                          for d in disks_of(index)],
            })
            bmcs.append({"name": hostname, "host": hosts[index], "port": port, "serial": f"LAB{index + 1:06d}",
                         **({"macs": [mac]} if redfish else {}), **({"redfish": {}} if speaks_redfish else {}),
                         **({} if ipmi else {"ipmi": False})})
            index += 1
        rack: dict[str, Any] = {
            "name": rack_name, "units": units,
            "feeds": [{"name": f"{rack_name}-A", "capacity_w": 600 * servers_per_rack}],
            "servers": servers,
        }
        if per_rack_nets:  # the rack's network, where its servers are and get imaged
            net = f"127.20.{r + 1}"
            rack["pools"] = [{"name": f"{site['code']}-{rack_name.lower()}-prov", "cidr": f"{net}.0/24",
                              "purpose": "provisioning", "gateway": f"{net}.254", "dns": [f"{net}.254"],
                              "first": f"{net}.1", "last": f"{net}.250"}]
        site["pods"][0]["racks"].append(rack)
    spec = {"defaults": {"username": "admin", "password": password, "power_on_delay": 0.5}, "bmcs": bmcs}
    inventory = {"version": 1, "sites": site_list}
    # The same lab account on both protocols, as one credential per kind (an IPMI one cannot feed Redfish).
    secrets = {"credentials": [{"name": IPMI_CREDENTIAL, "kind": "ipmi", "username": "admin", "secret": password}]
               + ([{"name": REDFISH_CREDENTIAL, "kind": "redfish", "username": "admin", "secret": password}]
                  if any("redfish" in b for b in bmcs) else [])}
    return spec, inventory, secrets


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def start_lab(directory: str | os.PathLike[str], *, racks: int = 2, servers_per_rack: int = 8, sites: int = 1,
              port: int | None = None, server_ups: bool = True, rack_power: bool = True,
              ssh: bool | None = None, redfish: bool = False) -> LabInfo:
    """Start the virtual datacenter in the background; write its inventory and secrets to ``directory``.

    ``server_ups``: every server gets its own small UPS, served by NUT's upsd with one dummy-ups each, or
    where NUT is not installed by the lab's own NUT stand-in (``FLEET_LAB_NUT``, see :mod:`fleet.lab.nutlab`).
    ``rack_power``: every rack gets an APC Smart-UPS on its feed and an APC switched PDU behind it whose
    outlets feed the servers, simulated by snmpsim from real recordings (v2c; each device's community is
    its name, so each has its own credential). Servers then have two PSUs: 1 on their own UPS, 2 on the PDU.
    ``ssh``: the servers answer SSH on their primary IPs (one real sshd, see :mod:`fleet.lab.sshlab`), so
    ``fleet facts`` and ``fleet sweep --facts`` work; ``None`` = when possible (root, OpenSSH installed).
    ``redfish``: the BMCs answer Redfish too, over HTTPS on the same addresses (:mod:`fleet.lab.redfish`,
    port 443 as root, else the BMC port over TCP); ``lab.json`` then names the certificate's fingerprint
    and :func:`lab_redfish_endpoints` gives each server's endpoint.
    """
    from . import bmcserver

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    if (root / LAB_FILE).exists() and _running(root):
        raise InputError(f"a lab is already running in {root}: 'fleet lab stop --dir {root}' first")
    spec, inventory, secrets = plan_lab(racks=racks, servers_per_rack=servers_per_rack, sites=sites, port=port,
                                        redfish=redfish)
    notes: list[str] = []
    ssh_why: str | None = "not asked for"
    if ssh is not False:
        from . import sshlab

        problem = sshlab.ssh_lab_problem()
        if problem is not None and ssh:
            raise problem
        ssh_why = str(problem) if problem is not None else None
        if ssh_why:
            notes.append(f"no SSH hosts: {ssh_why}")
    nut = None
    if server_ups:
        from .nutlab import start_nut_lab

        hostnames = [b["name"] for b in spec["bmcs"]]
        nut = start_nut_lab(root / NUT_STATE, hostnames)
        today = date.today()
        index = 0
        for site in inventory["sites"]:
            for rack in site["pods"][0]["racks"]:
                for server in rack["servers"]:
                    # Batteries of every age, so the replacement forecast has something to say.
                    installed = today - timedelta(days=(index * 211) % 1900)
                    server["ups"] = {**nut.inventory_ups(server["hostname"]), "battery_installed": installed,
                                     "feed": rack["feeds"][0]["name"]}  # plugged into the rack's feed
                    index += 1
        secrets["credentials"] += nut.credentials()
    snmp_devices = 0
    ssh_hosts = 0
    try:
        if rack_power:
            snmp_devices = _add_rack_power(root, inventory, secrets, racks)
        if ssh_why is None:
            ssh_hosts = _add_ssh_hosts(root, inventory, secrets, spec["bmcs"][0]["port"])
        _write(root / "bmc-spec.json", json.dumps(spec), 0o600)  # it holds the lab password
        extra: list[str] = []
        if redfish:
            from .redfish.lab import redfish_port_for

            extra = ["--redfish-port", str(redfish_port_for(spec["bmcs"][0]["port"]))]
        pid = bmcserver.start(root / "bmc-spec.json", root / BMC_STATE, extra_args=extra)
        if redfish:  # the certificate exists now: pin it in the inventory (what `fleet bmc trust` records)
            _pin_redfish(root, inventory)
        header = ("# The virtual datacenter of `fleet lab start`. Import with:\n"
                  f"#   fleet import {root / 'inventory.yaml'} --secrets {root / 'secrets.yaml'}\n")
        _write(root / "inventory.yaml", header + yaml.safe_dump(inventory, sort_keys=False, width=120))
        _write(root / "secrets.yaml", "# Lab credentials: import with --secrets; never commit.\n"
               + yaml.safe_dump(secrets, sort_keys=False), 0o600)
    except BaseException:
        if (root / BMC_STATE / "bmcserver.pid").exists():
            bmcserver.stop(root / BMC_STATE)
        from .nutlab import stop_nut_lab
        from .snmplab import stop_snmpsim

        if nut is not None:
            stop_nut_lab(root / NUT_STATE)
        if snmp_devices:
            stop_snmpsim(root / SNMP_STATE)
        if ssh_hosts:
            from .sshlab import stop_ssh_lab

            stop_ssh_lab(root / SSH_STATE)
        raise
    info = LabInfo(root, len(spec["bmcs"]), racks, sites, pid, spec["bmcs"][0]["port"],
                   (len(nut.ups) if nut is not None else 0) + snmp_devices // 2, snmp_devices // 2, ssh_hosts,
                   tuple(notes), nut.server if nut is not None else "", _redfish_info(root) if redfish else None)
    _write(root / LAB_FILE, json.dumps(info.to_json(), indent=2))
    return info


def _pin_redfish(root: Path, inventory: dict[str, Any]) -> None:
    """Give every server with a Redfish endpoint the running lab's certificate fingerprint."""
    endpoints = lab_redfish_endpoints(root)
    for site in inventory["sites"]:
        for rack in site["pods"][0]["racks"]:
            for server in rack["servers"]:
                if "redfish" in server:
                    ep = endpoints.get(server["hostname"])
                    if ep is None or f"{ep['host']}:{ep['port']}" != server["redfish"]:
                        raise InputError(f"the lab BMC server serves no Redfish endpoint {server['redfish']} "
                                         f"for {server['hostname']}")
                    server["redfish_tls_fingerprint"] = ep["tls_fingerprint"]


def _redfish_info(root: Path) -> dict[str, Any] | None:
    """What lab.json says of the Redfish side: the port, the certificate, the credential to use."""
    from .redfish.lab import REDFISH_STATE, read_state

    state = read_state(root / BMC_STATE)
    if state is None:
        return None
    return {"port": state["port"], "tls_fingerprint": state["tls_fingerprint"], "ca_file": state["ca_file"],
            "credential": REDFISH_CREDENTIAL, "servers": len(state["endpoints"]),
            "redfish_only": sum(1 for b in _spec_bmcs(root) if b.get("ipmi") is False),
            "endpoints_file": str(root / BMC_STATE / REDFISH_STATE)}


def lab_redfish_endpoints(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Per server host name, the Redfish endpoint of a running lab (empty when it serves no Redfish):
    ``host``, ``port``, ``credential`` (``lab-redfish``: the lab's BMC user and password, kind redfish),
    ``credential_kind`` ("redfish"), ``tls_fingerprint`` and ``system`` (its System's path)."""
    from .redfish.lab import inventory_endpoints, read_state

    state = read_state(Path(directory) / BMC_STATE)
    return {} if state is None else inventory_endpoints(state, REDFISH_CREDENTIAL)


def _spec_bmcs(root: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((root / "bmc-spec.json").read_text())["bmcs"])
    except (FileNotFoundError, ValueError, KeyError):
        return []


def _add_ssh_hosts(root: Path, inventory: dict[str, Any], secrets: dict[str, Any], port: int) -> int:
    """Start the lab's sshds for every server and give each its SSH credential and pinned host key.

    SSH listens on the lab's BMC port number (TCP on the servers' addresses, where the BMCs use UDP on
    theirs), so two labs on different ports never meet."""
    from .sshlab import disks_of, start_ssh_lab

    servers = [srv for site in inventory["sites"] for rack in site["pods"][0]["racks"] for srv in rack["servers"]]
    # The disks each server's OS reports are the ones its inventory record lists (by the lab's index).
    hosts = [{"hostname": srv["hostname"], "ip": srv["primary_ip"], "serial": srv["serial"],
              "disks": disks_of(int(srv["serial"].removeprefix("LAB")) - 1), "nics": srv["nics"]}
             for srv in servers]
    keys = start_ssh_lab(root / SSH_STATE, hosts, port=port)
    for srv in servers:
        srv["ssh_credential"] = "lab-ssh"
        srv["ssh_host_key"] = keys["host_key"]
    import pwd

    secrets["credentials"].append({"name": "lab-ssh", "kind": "ssh", "username": pwd.getpwuid(os.geteuid()).pw_name,
                                   "secret": keys["private_key"], "options": {"port": str(port)}})
    return len(hosts)


def _add_rack_power(root: Path, inventory: dict[str, Any], secrets: dict[str, Any], racks: int) -> int:
    """Start snmpsim with a Smart-UPS and a switched PDU per rack; put them in the inventory. Devices started."""
    from .snmplab import start_snmpsim

    lab = start_snmpsim(root / SNMP_STATE, ups=racks, pdu=racks, ups_models=[RACK_UPS_MODEL],
                        pdu_models=[PDU_MODEL])
    upses = [d for d in lab.devices if d.kind == "ups"]
    pdus = [d for d in lab.devices if d.kind == "pdu"]
    index = 0
    for site in inventory["sites"]:
        for rack in site["pods"][0]["racks"]:
            ups, pdu = upses[index], pdus[index]
            index += 1
            for dev in (ups, pdu):
                secrets["credentials"].append({"name": f"snmp-{dev.name}", "kind": "snmp-v2c",
                                               "secret": dev.community})
            feed = rack["feeds"][0]["name"]
            rack["ups"] = [{"name": ups.name, "kind": "rack", "profile": ups.profile, "protocol": "snmp",
                            "host": ups.host, "port": ups.port, "credential": f"snmp-{ups.name}", "feed": feed,
                            "capacity_w": 600 * len(rack["servers"]) + 300}]
            rack["pdus"] = [{"name": pdu.name, "profile": pdu.profile, "host": pdu.host, "port": pdu.port,
                             "credential": f"snmp-{pdu.name}", "ups": ups.name,
                             "capacity_w": 600 * len(rack["servers"]) + 300,
                             "outlets": [{"number": n + 1, "server": srv["hostname"], "psu": 2}
                                         for n, srv in enumerate(rack["servers"][:PDU_OUTLETS])]}]
    return len(lab.devices)


def _running(root: Path) -> bool:
    pid_file = root / BMC_STATE / "bmcserver.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def stop_lab(directory: str | os.PathLike[str]) -> bool:
    """Stop everything ``start_lab`` started in ``directory`` (by PID). True if something was running."""
    from . import bmcserver

    root = Path(directory)
    if not (root / LAB_FILE).exists():
        raise NotFound(f"no lab in {root} (no {LAB_FILE})")
    from .nutlab import stop_nut_lab
    from .snmplab import stop_snmpsim

    stopped = bmcserver.stop(root / BMC_STATE)
    if (root / NUT_STATE).exists():
        stopped = stop_nut_lab(root / NUT_STATE) or stopped
    if (root / SNMP_STATE).exists():
        stopped = stop_snmpsim(root / SNMP_STATE) or stopped
    if (root / SSH_STATE).exists():
        from .sshlab import stop_ssh_lab

        stopped = stop_ssh_lab(root / SSH_STATE) or stopped
    (root / LAB_FILE).unlink(missing_ok=True)
    return stopped


def lab_fault(directory: str | os.PathLike[str], target: str, kind: str, *, clear: bool = False,
              value: Any = None) -> dict[str, Any]:
    """Flip a fault of a lab device: a server's BMC (by host name), or a UPS (by its name or its server's).

    UPS faults: on-battery, low-battery, replace-battery; ``--clear`` (or ``normal``) puts it back on line.
    Host faults (the server's OS, over SSH): disk-failing, serial-changed.
    """
    from .bmcserver import lab_control

    root = Path(directory)
    if kind not in SERVER_FAULTS + UPS_FAULTS + HOST_FAULTS:
        raise InputError(f"unknown fault {kind!r}; server faults: {', '.join(SERVER_FAULTS)}; "
                         f"UPS faults: {', '.join(UPS_FAULTS)}; host faults: {', '.join(HOST_FAULTS)}")
    if not (root / LAB_FILE).exists():
        raise NotFound(f"no lab in {root} (start one with 'fleet lab start --dir {root}')")
    if kind in HOST_FAULTS:
        from .sshlab import ssh_fault

        if not (root / SSH_STATE / "hosts.json").exists():
            raise NotFound(f"the lab in {root} has no SSH hosts (it needs root and OpenSSH's sshd)")
        return {"name": target, "faults": ssh_fault(root / SSH_STATE, target, kind, clear=clear)}
    if kind in UPS_FAULTS:
        fault = "normal" if clear else kind
        if (root / SNMP_STATE).exists() and target.startswith("lab-ups-"):  # a rack UPS on SNMP
            from .snmplab import set_ups_fault

            return {"name": target, "ups": set_ups_fault(root / SNMP_STATE, target, fault),
                    "faults": {} if clear else {kind: True}}
        from .nutlab import nut_fault

        if not (root / NUT_STATE).exists():
            raise NotFound(f"the lab in {root} has no per-server UPSes (started with --no-ups)")
        steps = nut_fault(root / NUT_STATE, target, fault)
        return {"name": target, "ups": steps[-1] if steps else {}, "faults": {} if clear else {kind: True}}
    request: dict[str, Any] = {"op": "fault", "bmc": target, "kind": kind, "clear": clear}
    if value is not None:
        request["value"] = value
    answer = lab_control(root / BMC_STATE, request)
    if not answer.get("ok"):
        raise InputError(f"lab: {answer.get('error', 'refused')}")
    return answer["bmc"]


def lab_status(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What runs in the lab: the info written at start and the BMC server's live counters."""
    from .bmcserver import lab_control

    root = Path(directory)
    if not (root / LAB_FILE).exists():
        raise NotFound(f"no lab in {root}")
    info = json.loads((root / LAB_FILE).read_text())
    info["running"] = _running(root)
    if info["running"]:
        stats = lab_control(root / BMC_STATE, {"op": "stats"})
        info["bmc_server"] = {k: v for k, v in stats.items() if k != "ok"}
    return info
