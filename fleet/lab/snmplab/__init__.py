"""The lab's SNMP UPSes and PDUs: an snmpsim agent of many devices, and a net-snmp ``snmpd`` fleet for scale.

Two kinds of simulated SNMP device, both on loopback only (127.0.0.0/8), both started in the
background and stopped by PID:

**snmpsim devices** (:func:`start_snmpsim`): one ``snmpsim-command-responder`` process on
``127.0.0.1:PORT`` serves N UPSes and M PDUs; each device is a data file, and its **v2c community
is the device's name**. The data files are hard links to one template per model (thousands of
devices cost one template each; symlinks would collapse to the target's name). Templates are real
recordings rewritten so that outlets and battery state go through Rackfleet's variation module
``fleet/lab/snmpvariation/fleetdev.py``, which keys every value by device (the stock ``writecache``
would leak a SET into every device) and keeps state in ``DIR/state/<device>.json``:

=================  ======  ================  =========================================================
model              kind    profile           recording
=================  ======  ================  =========================================================
``apc-smart-ups``  ups     apc-smart-ups     ours (``snmpvariation/data/apc-smart-ups.snmprec``):
                                             PowerNet UPS objects, 3 outlet groups
``eaton-9px``      ups     eaton-9px         snmpsim-data ``UPS/eaton-9px-partial``: XUPS-MIB,
                                             2 receptacles
``eaton-93e``      ups     eaton-9px         snmpsim-data ``UPS/eaton-93e-80``: XUPS-MIB and
                                             RFC 1628 (runtime 65535 in XUPS)
``ietf-ups``       ups     generic-ups-mib   snmpsim-data ``UPS/phoenixtec-power``: RFC 1628 only,
                                             a sysObjectID no profile matches
``apc-7902b``,     pdu     apc-rpdu          snmpsim-data ``UPS/apc-7902b`` (16 outlets),
``apc-8641``,                                ``apc-8641`` (24), ``apc-8932`` (24): rPDU, rPDU2 and
``apc-8932``                                 sPDU outlet tables, all kept consistent
=================  ======  ================  =========================================================

What the variation module changes, per device: ``sysName.0`` answers the device's name; the UPS's
output source, battery status, charge, runtime, input voltage and replace indicator follow its
fault (``normal``, ``on-battery``, ``low-battery`` = on battery and low, ``replace-battery``), with
the recording's values when normal; outlet (group, receptacle) state and command columns are
writable and consistent with each other (rPDU state 1=on/2=off, rPDU2 state 1=off/2=on, the command
columns 1=on/2=off/3=reboot, Eaton's delay columns: 0 = now). A reboot turns the outlet off at once
and on again ``reboot_s`` seconds later. Everything else answers as recorded.

**snmpd fleet** (:func:`start_snmpd_fleet`): one net-snmp ``snmpd`` listening on many loopback
addresses (``127.20.0.1``, ``.2``, ...) given on its command line, answering RFC 1628 UPS objects
from ``override`` lines (static values, :data:`SNMPD_UPS_VALUES`); community ``public`` (or a v3
authPriv user). ~13,800 requests/s against snmpsim's ~250: for scale benches.

API (every function takes the lab directory; nothing here needs the service or a database)::

    lab = start_snmpsim(DIR, ups=4, pdu=2, port=None)   # -> SnmpsimLab; port None = a free one
    lab.devices                      # [LabDevice(name, kind, model, profile, host, port, community)]
    lab.devices[0].inventory_entry() # {"name", "kind", "model", "profile", "host", "port",
                                     #  "snmp_version": "2c", "community"}
    set_ups_fault(DIR, "lab-ups-001", "on-battery")   # normal | on-battery | low-battery | replace-battery
    ups_state(DIR, "lab-ups-001")    # {"on_battery": True, "low_battery": False, "replace_battery": False}
    outlet_states(DIR, "lab-pdu-001")            # {1: "on", 2: "off", ...} as the device holds them
    set_outlet_state(DIR, "lab-pdu-001", 3, "off")   # behind the agent's back (a tripped breaker)
    stop_snmpsim(DIR)                # True if it was running

    fleet = start_snmpd_fleet(DIR2, count=1000)   # -> SnmpdFleet(devices=[LabDevice...], pid, ...)
    stop_snmpd_fleet(DIR2)

``snmpsim-command-responder`` refuses to run as root unless ``SNMPSIM_ALLOW_ROOT=true``, which
:func:`start_snmpsim` sets for its child. ``DIR/snmpsim.json`` / ``DIR/snmpd.json`` record what runs.

The modules: :mod:`~fleet.lab.snmplab.recordings` (the models and their rewritten templates),
:mod:`~fleet.lab.snmplab.simlab` (the snmpsim agent), :mod:`~fleet.lab.snmplab.state` (faults and outlets
behind the agent), :mod:`~fleet.lab.snmplab.snmpd` (the snmpd fleet) and :mod:`~fleet.lab.snmplab.agent`
(what both agents share: the device record, children stopped by PID, a ping, port checks).
"""

from fleet.lab.snmplab.agent import LabDevice, SnmpLabError, snmp_ping, stop_pid, track
from fleet.lab.snmplab.recordings import MODELS, LabModel, build_template, variation_dir
from fleet.lab.snmplab.simlab import SnmpsimLab, spawn_snmpsim, start_snmpsim, stop_snmpsim
from fleet.lab.snmplab.snmpd import (
    SNMPD_UPS_VALUES,
    SnmpdFleet,
    snmpd_command,
    snmpd_config,
    snmpd_env,
    start_snmpd_fleet,
    stop_snmpd_fleet,
)
from fleet.lab.snmplab.state import UPS_FAULTS, outlet_states, set_outlet_state, set_ups_fault, set_ups_state, ups_state

__all__ = [
    "MODELS",
    "SNMPD_UPS_VALUES",
    "UPS_FAULTS",
    "LabDevice",
    "LabModel",
    "SnmpLabError",
    "SnmpdFleet",
    "SnmpsimLab",
    "build_template",
    "outlet_states",
    "set_outlet_state",
    "set_ups_fault",
    "set_ups_state",
    "snmp_ping",
    "snmpd_command",
    "snmpd_config",
    "snmpd_env",
    "spawn_snmpsim",
    "start_snmpd_fleet",
    "start_snmpsim",
    "stop_pid",
    "stop_snmpd_fleet",
    "stop_snmpsim",
    "track",
    "ups_state",
    "variation_dir",
]
