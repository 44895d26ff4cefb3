# Rackfleet's per-device variation module for snmpsim (snmpsim-command-responder loads it with
# --variation-modules-dir=fleet/lab/snmpvariation; it is exec'd by snmpsim, not imported).
#
# Why: the stock ``writecache`` module keys its cache by OID only, so a SET on one simulated PDU
# leaks into every device served by the same process. Here every value is keyed by the device:
# the data file's name (``<device>.snmprec``, a hard link to a shared template), i.e. the v2c
# community or v3 context the request came in on. State lives in one JSON file per device in a
# state directory, so that another process (fleet.lab.snmplab) can change and observe it.
#
# Options: --variation-module-options=fleetdev:state=/DIR[,reboot_s=2]
#
# State file DIR/<device>.json (written atomically, under DIR/<device>.lock with fcntl.flock):
#   {"on_battery": false, "low_battery": false, "replace_battery": false,
#    "outlets": {"3": "off"},                       # outlets changed from the recording
#    "pending": {"3": {"at": 1700000000.5, "state": "on"}}}   # delayed transitions (epoch s)
# Absent keys mean "as recorded". Outlet "0" is the UPS output as a whole.
#
# Record syntax, in the value field after ``TAG:fleetdev|`` (comma-separated key=value):
#   battery-dependent value   normal=V[,on_battery=V][,low_battery=V][,replace_battery=V][,output_off=V]
#       the first condition that holds wins, in the order output_off, low_battery, on_battery,
#       replace_battery, normal; read-only (a SET answers notWritable)
#   outlet state column       outlet=N,role=state,on=V,off=V[,pending_on=V,pending_off=V],initial=on|off
#   outlet command column     outlet=N,role=command,on=V,off=V[,reboot=V],initial=on|off
#       reads back like the state column; a SET of on/off switches now, reboot switches off now
#       and on again after reboot_s; any other value answers wrongValue
#   delay columns (Eaton)     outlet=N,role=delay_off|delay_on,idle=V
#       a SET of 0 switches now, of S > 0 after S seconds; reads back ``idle``
#   device name               role=name  (the device's own name, e.g. for sysName.0)
import fcntl
import json
import os
import time

from pysnmp.smi import error
from snmpsim.grammar.snmprec import SnmprecGrammar
from snmpsim.record.snmprec import SnmprecRecord

# snmpsim execs this file with ``moduleContext`` in its globals and sets ``recordContext`` (this
# record's own dict) before each call to variate().
moduleContext = globals().setdefault("moduleContext", {})

_CONDITIONS = ("output_off", "low_battery", "on_battery", "replace_battery")
_RECORD_KEYS = {"normal", "outlet", "role", "on", "off", "reboot", "pending_on", "pending_off",
                "initial", "idle", *_CONDITIONS}


def init(**context):
    settings = {"state": None, "reboot_s": "2"}
    for item in (context.get("options") or "").split(","):
        if "=" in item:
            key, _, value = item.partition("=")
            settings[key.strip()] = value.strip()
    if not settings["state"]:
        raise ValueError("fleetdev: option state=DIR is required")
    os.makedirs(settings["state"], exist_ok=True)
    moduleContext["state_dir"] = settings["state"]
    moduleContext["reboot_s"] = float(settings["reboot_s"])
    moduleContext["cache"] = {}  # device -> (stat key, state dict)


def shutdown(**context):
    moduleContext.get("cache", {}).clear()


# --- per-device state --------------------------------------------------------------------------


def _paths(device):
    base = os.path.join(moduleContext["state_dir"], device)
    return base + ".json", base + ".lock"


def _load(device):
    path, _ = _paths(device)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = moduleContext["cache"].get(device)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = {}
    moduleContext["cache"][device] = (key, state)
    return state


def _update(device, change):
    """Read-modify-write the device's state under its lock; ``change(state)`` edits it in place."""
    path, lock = _paths(device)
    with open(lock, "a") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {}
        change(state)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f, sort_keys=True)
        os.replace(tmp, path)
    moduleContext["cache"].pop(device, None)


def _outlet_state(state, outlet, initial):
    pending = state.get("pending", {}).get(outlet)
    if pending is not None and time.time() >= pending["at"]:
        return pending["state"]
    return state.get("outlets", {}).get(outlet, initial)


def _switch(device, outlet, new_state, delay_s=0.0, then=None):
    """Switch ``outlet`` to ``new_state`` after ``delay_s`` (now if 0); ``then``: (state, delay) after that."""

    def change(state):
        outlets = state.setdefault("outlets", {})
        pending = state.setdefault("pending", {})
        old = pending.pop(outlet, None)
        if old is not None and time.time() >= old["at"]:
            outlets[outlet] = old["state"]
        if delay_s <= 0:
            outlets[outlet] = new_state
            if then is not None:
                pending[outlet] = {"at": time.time() + then[1], "state": then[0]}
        else:
            pending[outlet] = {"at": time.time() + delay_s, "state": new_state}

    _update(device, change)


# --- records -----------------------------------------------------------------------------------


def _settings(value):
    record = globals()["recordContext"]
    settings = record.get("settings")
    if settings is None:
        settings = {}
        for item in str(value).split(","):
            key, sep, val = item.partition("=")
            key = key.strip()
            if not sep or key not in _RECORD_KEYS:
                raise ValueError(f"fleetdev: bad record parameter {item!r}")
            settings[key] = val.strip()
        record["settings"] = settings
    return settings


def _typed(tag, text):
    type_tag, _ = SnmprecRecord.unpack_tag(tag)
    return SnmprecGrammar.TAG_MAP[type_tag](text)


def _device(context):
    name = os.path.basename(context["dataFile"])
    for ext in (".snmprec.bz2", ".snmprec"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _idx(context):
    return max(0, context["varsTotal"] - context["varsRemaining"] - 1)


def variate(oid, tag, value, **context):
    if not context["nextFlag"] and not context["exactMatch"]:
        return context["origOid"], tag, context["errorStatus"]
    settings = _settings(value)
    device = _device(context)
    role = settings.get("role")

    if role == "name":
        if context["setFlag"]:
            raise error.NotWritableError(name=oid, idx=_idx(context))
        return oid, tag, _typed(tag, device)

    if role is None:  # battery-dependent value
        if context["setFlag"]:
            raise error.NotWritableError(name=oid, idx=_idx(context))
        state = _load(device)
        for condition in _CONDITIONS:
            if condition not in settings:
                continue
            held = (_outlet_state(state, "0", "on") == "off" if condition == "output_off"
                    else bool(state.get(condition)))
            if held:
                return oid, tag, _typed(tag, settings[condition])
        return oid, tag, _typed(tag, settings["normal"])

    outlet = settings["outlet"]
    if role in ("state", "command"):
        if context["setFlag"]:
            if role == "state":
                raise error.NotWritableError(name=oid, idx=_idx(context))
            wanted = str(int(context["origValue"]))
            if wanted == settings.get("on"):
                _switch(device, outlet, "on")
            elif wanted == settings.get("off"):
                _switch(device, outlet, "off")
            elif wanted == settings.get("reboot"):
                _switch(device, outlet, "off", then=("on", moduleContext["reboot_s"]))
            else:
                raise error.WrongValueError(name=oid, idx=_idx(context))
            return oid, tag, context["origValue"]
        current = _outlet_state(_load(device), outlet, settings.get("initial", "on"))
        pending = _load(device).get("pending", {}).get(outlet)
        if role == "state" and pending is not None and time.time() < pending["at"]:
            key = "pending_" + pending["state"]
            if key in settings:
                return oid, tag, _typed(tag, settings[key])
        return oid, tag, _typed(tag, settings[current])

    if role in ("delay_off", "delay_on"):
        if context["setFlag"]:
            seconds = int(context["origValue"])
            if seconds < 0:
                raise error.WrongValueError(name=oid, idx=_idx(context))
            _switch(device, outlet, "off" if role == "delay_off" else "on", delay_s=seconds)
            return oid, tag, context["origValue"]
        return oid, tag, _typed(tag, settings["idle"])

    raise ValueError(f"fleetdev: unknown role {role!r}")
