"""The snmpsim agent of many devices: one ``snmpsim-command-responder`` serving N UPSes and M PDUs, each a data
file hard-linked to its model's template (and its index to the template's), community = device name.

:func:`start_snmpsim` builds the lab directory and starts the agent, :class:`SnmpsimLab` is what runs
(``DIR/snmpsim.json``), :func:`spawn_snmpsim` runs the agent on any data directory, :func:`stop_snmpsim`
stops it by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.errors import InputError, NotFound
from fleet.lab._proc import cmdline_has, pid_alive
from fleet.lab.programs import require_package
from fleet.lab.snmplab.agent import (
    LabDevice,
    SnmpLabError,
    check_loopback,
    check_udp_port,
    free_udp_port,
    log_tail,
    snmp_ping,
    stop_pid,
    track,
    write_json,
)
from fleet.lab.snmplab.recordings import (
    DEFAULT_PDU_MODELS,
    DEFAULT_UPS_MODELS,
    MODELS,
    VARIATION,
    LabModel,
    build_template,
    variation_dir,
)

__all__ = ["SNMPSIM_FILE", "SNMPSIM_MAIN", "SnmpsimLab", "spawn_snmpsim", "start_snmpsim", "stop_snmpsim"]

SNMPSIM_FILE = "snmpsim.json"


@dataclass
class SnmpsimLab:
    """A running snmpsim agent and the devices it serves (``DIR/snmpsim.json``)."""

    directory: Path
    pid: int
    host: str
    port: int
    devices: list[LabDevice]
    models: dict[str, dict[str, Any]]
    reboot_s: float
    startup_s: float = 0.0

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    def device(self, name: str) -> LabDevice:
        for d in self.devices:
            if d.name == name:
                return d
        raise NotFound(f"no simulated SNMP device {name!r} in {self.directory}")

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "port": self.port, "reboot_s": self.reboot_s,
                "startup_s": self.startup_s, "models": self.models,
                "devices": [d.inventory_entry() for d in self.devices]}

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SnmpsimLab:
        root = Path(directory)
        try:
            doc = json.loads((root / SNMPSIM_FILE).read_text())
        except FileNotFoundError:
            raise NotFound(f"no snmpsim lab in {root} (no {SNMPSIM_FILE})") from None
        devices = [LabDevice(d["name"], d["kind"], d["model"], d["profile"], d["host"], d["port"], d["community"],
                             d.get("snmp_version", "2c")) for d in doc["devices"]]
        return cls(root, doc["pid"], doc["host"], doc["port"], devices, doc["models"], doc["reboot_s"],
                   doc.get("startup_s", 0.0))


def _plan(ups: int, pdu: int, ups_models: Sequence[str], pdu_models: Sequence[str],
          prefix: str) -> list[tuple[str, LabModel]]:
    for name in (*ups_models, *pdu_models):
        if name not in MODELS:
            raise InputError(f"unknown lab SNMP model {name!r}; models: {', '.join(MODELS)}")
    if (ups and not ups_models) or (pdu and not pdu_models):
        raise InputError("no models to build the requested devices from")
    width = max(3, len(str(max(ups, pdu, 1))))
    out = [(f"{prefix}ups-{i + 1:0{width}d}", MODELS[ups_models[i % len(ups_models)]]) for i in range(ups)]
    out += [(f"{prefix}pdu-{i + 1:0{width}d}", MODELS[pdu_models[i % len(pdu_models)]]) for i in range(pdu)]
    return out


def start_snmpsim(directory: str | os.PathLike[str], *, ups: int = 4, pdu: int = 2, host: str = "127.0.0.1",
                  port: int | None = None, ups_models: Sequence[str] = DEFAULT_UPS_MODELS,
                  pdu_models: Sequence[str] = DEFAULT_PDU_MODELS, prefix: str = "lab-",
                  reboot_s: float = 2.0, timeout: float = 120.0, python: str | None = None) -> SnmpsimLab:
    """Start one snmpsim agent serving ``ups`` UPSes and ``pdu`` PDUs on ``host:port`` (v2c community = name).

    Devices are named ``{prefix}ups-001``..., ``{prefix}pdu-001``..., their models taken in turn from
    ``ups_models`` / ``pdu_models``. Returns once the agent answers the last device's sysName.
    The directory holds ``templates/``, ``data/`` (hard links), ``state/``, ``cache/``,
    ``snmpsim.log`` and ``snmpsim.json``; an earlier lab's device state there is cleared.
    """
    check_loopback(host)
    if ups < 0 or pdu < 0 or ups + pdu == 0:
        raise InputError("an snmpsim lab needs at least one device")
    require_package("snmpsim", "snmpsim")
    require_package("snmpsim_data", "snmpsim-data")
    if port:
        check_udp_port(host, port)
    root = Path(directory).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(NotFound):
        old = SnmpsimLab.load(root)
        if pid_alive(old.pid) and cmdline_has(old.pid, b"snmpsim"):
            raise InputError(f"an snmpsim lab (pid {old.pid}) already runs in {root}; stop it first")
    plan = _plan(ups, pdu, ups_models, pdu_models, prefix)
    for sub in ("data", "state", "cache"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir()
    models: dict[str, dict[str, Any]] = {}
    for _, model in plan:
        if model.name not in models:
            info = build_template(model, root / "templates" / f"{model.name}.snmprec")
            models[model.name] = {"kind": model.kind, "profile": model.profile, **info}
    indexes = {m: _build_index(root / "templates" / f"{m}.snmprec", root / "cache") for m in models}
    for name, model in plan:
        data_file = root / "data" / f"{name}.snmprec"
        os.link(root / "templates" / f"{model.name}.snmprec", data_file)
        base = _index_base(data_file, root / "cache")
        for suffix, path in indexes[model.name]:
            os.link(path, f"{base}{suffix}")
    port = port or free_udp_port(host)
    t0 = time.monotonic()
    pid = spawn_snmpsim(root / "data", workdir=root, host=host, port=port, state_dir=root / "state",
                        reboot_s=reboot_s, wait_community=plan[-1][0], timeout=timeout, python=python)
    devices = [LabDevice(name, model.kind, model.name, model.profile, host, port, name) for name, model in plan]
    lab = SnmpsimLab(root, pid, host, port, devices, models, reboot_s, round(time.monotonic() - t0, 2))
    write_json(root / SNMPSIM_FILE, lab.to_json())
    return lab


def _index_base(text_file: Path, cache: Path) -> str:
    """Where snmpsim looks for a data file's index (snmpsim.record.search.database.RecordIndex)."""
    stem = str(text_file)
    stem = stem[: stem.rindex(os.path.extsep)] if os.path.extsep in os.path.basename(stem) else stem
    return os.path.join(cache, os.path.splitdrive(stem + os.path.extsep + "dbm")[1].replace(os.path.sep, "_"))


def _build_index(template: Path, cache: Path) -> list[tuple[str, Path]]:
    """Index ``template`` once, as snmpsim would; return (suffix, file) of the index files.

    Every device's data file is a hard link to its template, so their indexes are the same bytes:
    hard-linking the template's index under each device's index name spares snmpsim indexing
    every device at start-up (1,000 devices: 20 s and 360 MB of cache without this). The template
    is dated a minute back so that snmpsim finds every index newer than its data file.
    """
    from snmpsim import confdir
    from snmpsim.record.search.database import RecordIndex
    from snmpsim.variation import SnmprecRecord

    past = time.time() - 60
    os.utime(template, (past, past))
    cache.mkdir(parents=True, exist_ok=True)
    saved = confdir.cache
    confdir.cache = str(cache)
    try:
        RecordIndex(str(template), SnmprecRecord()).create(force_index_build=True)
    finally:
        confdir.cache = saved
    base = _index_base(template, cache)
    files = [(p.name[len(os.path.basename(base)):], p) for p in cache.iterdir()
             if p.name.startswith(os.path.basename(base) + ".") or p.name == os.path.basename(base)]
    if not files:
        raise SnmpLabError(f"snmpsim left no index for {template} in {cache}")
    return files


# snmpsim keeps at most 31 data files (and their indexes) open and reopens the others on every
# request, which makes an agent of 1,000 devices 3x slower; keep them all open (one fd each).
SNMPSIM_MAIN = ("import sys; from snmpsim import datafile; datafile.DataFile.max_queue_entries = 1 << 20; "
                 "from snmpsim.commands.responder import main; sys.argv[0] = 'snmpsim'; sys.exit(main())")


def spawn_snmpsim(data_dir: str | os.PathLike[str], *, workdir: str | os.PathLike[str], host: str, port: int,
                  state_dir: str | os.PathLike[str] | None = None, reboot_s: float = 2.0,
                  wait_community: str | None = None, timeout: float = 120.0, python: str | None = None) -> int:
    """Run ``snmpsim-command-responder`` on ``data_dir`` at ``host:port`` in the background; return its PID.

    With ``state_dir`` our variation modules are loaded (``fleetdev`` keeps device state there);
    without, the agent serves plain recordings. ``workdir`` receives ``cache/`` and ``snmpsim.log``.
    Returns once ``wait_community`` (default: the first data file's name) answers sysObjectID or
    sysName; stop it with :func:`stop_pid`.
    """
    check_loopback(host)
    require_package("snmpsim", "snmpsim")
    check_udp_port(host, port)
    work = Path(workdir)
    (work / "cache").mkdir(parents=True, exist_ok=True)
    logfile = work / "snmpsim.log"
    if wait_community is None:
        names = sorted(f.name.split(".snmprec")[0] for f in Path(data_dir).iterdir() if ".snmprec" in f.name)
        if not names:
            raise SnmpLabError(f"no .snmprec files in {data_dir}")
        wait_community = names[0]
    args = [python or sys.executable, "-c",
            SNMPSIM_MAIN, f"--cache-dir={work / 'cache'}", "--log-level=error", f"--logging-method=file:{logfile}"]
    if state_dir is not None:
        args += [f"--variation-modules-dir={variation_dir()}",
                 f"--variation-module-options={VARIATION}:state={state_dir},reboot_s={reboot_s}"]
    # engine options last: each engine starts at --v3-engine-id
    args += ["--v3-engine-id=auto", f"--data-dir={data_dir}", f"--agent-udpv4-endpoint={host}:{port}"]
    env = dict(os.environ, SNMPSIM_ALLOW_ROOT="true")
    with open(logfile, "ab") as out:
        proc = track(subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env))
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SnmpLabError(f"snmpsim exited with status {proc.returncode}:\n{log_tail(logfile)}")
        if snmp_ping(host, port, wait_community, timeout=0.3) is not None:
            return proc.pid
        if time.monotonic() > deadline:
            stop_pid(proc.pid, b"snmpsim")
            raise SnmpLabError(f"snmpsim did not answer within {timeout} s:\n{log_tail(logfile)}")


def stop_snmpsim(directory: str | os.PathLike[str] | SnmpsimLab) -> bool:
    """Stop the snmpsim agent of a lab directory by its PID; True if it was running."""
    root = directory.directory if isinstance(directory, SnmpsimLab) else Path(directory)
    try:
        lab = SnmpsimLab.load(root)
    except NotFound:
        return False
    stopped = stop_pid(lab.pid, b"snmpsim")
    (root / SNMPSIM_FILE).unlink(missing_ok=True)
    return stopped
