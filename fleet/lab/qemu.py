"""QEMU virtual servers for the lab: a VM spec, its command line, a QMP client and a power model.

A :class:`QemuVm` is one virtual server: QEMU started inside a network namespace (``ip netns exec``)
on a tap device, paused at start (``-S``) so that "power on" is QMP ``cont``; it never exits on a guest
shutdown (``-no-shutdown``), its firmware and kernel console go to a serial log file, and QMP listens
on a Unix socket. The power model (see ``docs/vmrack.md``):

- on: ``cont`` (QEMU is relaunched first when it was quit; a guest that shut itself down is reset);
- off: ``quit`` (``system_powerdown`` is only a request that installers ignore), then the PID is reaped;
- reset / cycle: ``system_reset``;
- next boot device: BIOS (SeaBIOS) takes ``human-monitor-command boot_set n|c`` live; OVMF keeps its boot
  order in fw_cfg, so a different device means quit and relaunch with another ``bootindex``;
- the BIOS boot type of a BMC's override (the EFI bit) is judged as real firmware does
  (:meth:`QemuVm.firmware_boot`): OVMF (built without a CSM) ignores a legacy override, SeaBIOS an EFI
  one, and either then boots its own order (``VmSpec.boot``);
- a VM without a disk booting "disk" keeps its NIC's link down for that boot: QEMU's firmware would
  otherwise fall through to the network, which a real server with an installed disk never reaches.

TCG only here (no usable KVM): ``-accel tcg,tb-size=128 -m 512`` keeps a VM near 500 MiB. Every process
is stopped by its PID (SIGTERM, then SIGKILL), never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleet.errors import MissingDependency
from fleet.lab._proc import cmdline_has, pid_alive, terminate
from fleet.lab.programs import require_program

__all__ = [
    "FIRMWARES",
    "OVMF_CODE",
    "OVMF_VARS",
    "QEMU",
    "QemuBackend",
    "QemuVm",
    "QmpClient",
    "QmpError",
    "VmSpec",
    "qemu_command",
    "stop_pid_file",
]

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FIRMWARES = ("bios", "uefi")
NIC_MODELS = ("virtio-net-pci", "e1000")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NETNS = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class QmpError(RuntimeError):
    """QMP answered with an error, closed the connection, or did not answer in time."""


@dataclasses.dataclass(frozen=True, slots=True)
class VmSpec:
    """What one virtual server is.

    ``firmware`` is ``bios`` (SeaBIOS with QEMU's iPXE NIC option ROM) or ``uefi`` (OVMF: a private copy
    of ``OVMF_VARS`` per VM in ``state_dir``; the NIC gets no option ROM, so OVMF's own PXE driver
    boots it). ``netns`` None runs QEMU in the caller's namespace. ``boot`` is the first boot device:
    ``pxe`` or ``disk``. ``disk`` is an optional disk image path (raw), attached as virtio-blk.
    """

    name: str
    mac: str
    tap: str
    state_dir: Path
    firmware: str = "bios"
    netns: str | None = None
    nic: str = "virtio-net-pci"
    memory_mb: int = 512
    boot: str = "pxe"
    disk: Path | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.firmware not in FIRMWARES:
            raise ValueError(f"firmware must be one of {', '.join(FIRMWARES)}, not {self.firmware!r}")
        if not _MAC.match(self.mac):
            raise ValueError(f"MAC must be lower-case aa:bb:cc:dd:ee:ff, not {self.mac!r}")
        if not _IFNAME.match(self.tap) or (self.netns is not None and not _NETNS.match(self.netns)):
            raise ValueError("tap names are 1-15 characters of [A-Za-z0-9_.-], netns names 1-64")
        if self.nic not in NIC_MODELS:
            raise ValueError(f"nic must be one of {', '.join(NIC_MODELS)}")
        if self.boot not in ("pxe", "disk"):
            raise ValueError("boot must be pxe or disk")
        if not re.match(r"^[A-Za-z0-9_.-]{1,63}$", self.name):
            raise ValueError("name is 1-63 characters of [A-Za-z0-9_.-]")

    @property
    def serial_log(self) -> Path:
        return Path(self.state_dir) / f"{self.name}.serial.log"

    @property
    def qmp_socket(self) -> Path:
        return Path(self.state_dir) / f"{self.name}.qmp"

    @property
    def vars_file(self) -> Path:
        return Path(self.state_dir) / f"{self.name}.OVMF_VARS.fd"

    @property
    def pid_file(self) -> Path:
        return Path(self.state_dir) / f"{self.name}.pid"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["state_dir"] = str(self.state_dir)
        out["disk"] = None if self.disk is None else str(self.disk)
        out["extra_args"] = list(self.extra_args)
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> VmSpec:
        """The spec from a JSON object (the keys of :meth:`to_dict`); unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"unknown VM spec key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        args = dict(doc)
        args["state_dir"] = Path(args["state_dir"])
        if args.get("disk") is not None:
            args["disk"] = Path(args["disk"])
        args["extra_args"] = tuple(args.get("extra_args", ()))
        return cls(**args)


def qemu_command(spec: VmSpec, boot: str | None = None, *, qemu: str = QEMU) -> list[str]:
    """The argument vector that starts ``spec`` paused, booting ``boot`` (default: ``spec.boot``) first.

    BIOS VMs take the legacy boot order (``-boot order=n|c``, which ``boot_set`` changes later); OVMF
    VMs take ``bootindex`` on the NIC or the disk. Wrapped in ``ip netns exec NS`` when ``spec.netns``.
    """
    boot = boot or spec.boot
    nic = f"{spec.nic},netdev=n0,mac={spec.mac}"
    disk: list[str] = []
    if spec.disk is not None:
        disk = ["-drive", f"file={spec.disk},format=raw,if=none,id=d0"]
        disk_dev = "virtio-blk-pci,drive=d0"
    cmd = [qemu, "-name", f"{spec.name},process=fleet-vm-{spec.name}",
           "-accel", "tcg,tb-size=128", "-m", str(spec.memory_mb), "-nographic", "-monitor", "none",
           "-S", "-no-shutdown",
           "-qmp", f"unix:{spec.qmp_socket},server=on,wait=off",
           # append: a relaunched VM (power on after quit) adds to its console log rather than truncating it
           "-chardev", f"file,id=console0,path={spec.serial_log},append=on", "-serial", "chardev:console0",
           "-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
           "-pidfile", str(spec.pid_file)]
    if spec.firmware == "bios":
        cmd += ["-device", nic, "-boot", f"order={'n' if boot == 'pxe' else 'c'}"]
        if disk:
            cmd += [*disk, "-device", disk_dev]
    else:
        cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={spec.vars_file}"]
        # No option ROM: OVMF's own virtio-net/e1000 driver and PXE stack boot the NIC ("native PXE").
        nic_index, disk_index = (1, 2) if boot == "pxe" else (2, 1)
        cmd += ["-device", f"{nic},romfile=,bootindex={nic_index}"]
        if disk:
            cmd += [*disk, "-device", f"{disk_dev},bootindex={disk_index}"]
    cmd += list(spec.extra_args)
    if spec.netns:
        cmd = ["ip", "netns", "exec", spec.netns, *cmd]
    return cmd


class QmpClient:
    """A minimal asyncio QMP client on a Unix socket: one command at a time, events are kept aside."""

    def __init__(self, path: Path | str, *, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def connect(self, *, wait: float = 10.0) -> dict[str, Any]:
        """Connect (retrying while QEMU creates the socket), read the greeting, negotiate capabilities."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= deadline:
                    raise QmpError(f"no QMP socket at {self.path} within {wait} s") from None
                await asyncio.sleep(0.05)
        greeting = await self._read()
        if "QMP" not in greeting:
            raise QmpError(f"not a QMP greeting: {greeting}")
        await self.execute("qmp_capabilities")
        return greeting

    async def _read(self) -> dict[str, Any]:
        assert self._reader is not None
        while True:
            try:
                line = await asyncio.wait_for(self._reader.readline(), self.timeout)
            except TimeoutError:
                raise QmpError(f"QMP at {self.path}: no answer within {self.timeout} s") from None
            if not line:
                raise QmpError(f"QMP at {self.path} closed the connection")
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Run one command; its ``return`` value, or :class:`QmpError` with QEMU's error description."""
        if self._writer is None:
            raise QmpError("not connected")
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = dict(arguments)
        async with self._lock:
            self._writer.write(json.dumps(request).encode() + b"\n")
            await self._writer.drain()
            msg = await self._read()
        if "error" in msg:
            raise QmpError(f"{command}: {msg['error'].get('class')}: {msg['error'].get('desc')}")
        return msg.get("return")

    async def hmp(self, command_line: str) -> str:
        """A human monitor command (``boot_set n``); its text output (an error text raises)."""
        out = await self.execute("human-monitor-command", {"command-line": command_line})
        if out and ("rror" in out or "unknown" in out.lower()):
            raise QmpError(f"{command_line}: {out.strip()}")
        return out or ""

    async def status(self) -> str:
        """QEMU's run state: ``prelaunch``, ``running``, ``paused``, ``shutdown``..."""
        return str((await self.execute("query-status"))["status"])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None


class QemuVm:
    """One virtual server and its power: :meth:`power_on`, :meth:`power_off`, :meth:`reset`, :meth:`set_boot`.

    The QEMU process is a child of this process (its PID is kept; it is stopped by that PID).
    """

    def __init__(self, spec: VmSpec, *, qemu: str = QEMU) -> None:
        self.spec = spec
        self.qemu = qemu
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QmpClient | None = None
        self.launched_boot: str | None = None  # the boot device the running QEMU was started with
        self.next_boot: str = spec.boot
        self.launches = 0
        self.resets = 0
        self.ignored: list[dict[str, Any]] = []  # overrides the firmware did not honour (the latest few)
        Path(spec.state_dir).mkdir(parents=True, exist_ok=True)

    def firmware_boot(self, device: str | None, uefi: bool) -> str:
        """The device this VM's firmware boots for a BMC's override of ``device`` with the EFI bit ``uefi``.

        As real firmware does: OVMF has no CSM, so a legacy (PC compatible) request is not one it can
        boot, and it ignores it; SeaBIOS has no EFI, so it ignores an EFI request. An ignored override,
        no override, or a device the lab does not model boots the VM's own order (``spec.boot``).
        """
        honoured = device in ("pxe", "disk") and uefi == (self.spec.firmware == "uefi")
        if device is not None and not honoured:
            self.ignored = [*self.ignored[-4:], {"device": device, "uefi": uefi, "firmware": self.spec.firmware}]
        return device if honoured and device is not None else self.spec.boot

    # -- the process ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _is_ours(self, pid: int) -> bool:
        return cmdline_has(pid, f"fleet-vm-{self.spec.name}".encode())

    async def launch(self, boot: str | None = None) -> None:
        """Start QEMU paused (power off, in ``prelaunch``) booting ``boot`` first; connect QMP."""
        if self.running():
            raise RuntimeError(f"{self.spec.name}: QEMU already runs (pid {self.pid})")
        spec = self.spec
        boot = boot or self.next_boot
        self.qemu = require_program(self.qemu, "install QEMU (Debian: apt install qemu-system-x86)")
        if spec.firmware == "uefi" and not OVMF_VARS.exists():
            raise MissingDependency(f"UEFI firmware {OVMF_VARS} is not installed", remedy="Debian: apt install ovmf")
        if spec.firmware == "uefi" and not spec.vars_file.exists():
            shutil.copyfile(OVMF_VARS, spec.vars_file)
        spec.qmp_socket.unlink(missing_ok=True)
        log = Path(spec.state_dir) / f"{spec.name}.qemu.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(qemu_command(spec, boot, qemu=self.qemu), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.launches += 1
        self.launched_boot = boot
        self.qmp = QmpClient(spec.qmp_socket)
        try:
            await self._connect()
            await self._link_for(boot)
        except BaseException:
            self.kill()
            raise

    async def _connect(self) -> None:
        assert self.qmp is not None and self.proc is not None
        deadline = time.monotonic() + 20.0
        while True:
            if self.proc.poll() is not None:
                log = (Path(self.spec.state_dir) / f"{self.spec.name}.qemu.log").read_text(errors="replace")
                raise QmpError(f"{self.spec.name}: QEMU exited with status {self.proc.returncode}: {log[-1500:]}")
            try:
                await self.qmp.connect(wait=0.5)
                return
            except QmpError:
                if time.monotonic() >= deadline:
                    raise

    async def status(self) -> str:
        """QEMU's run state, or ``stopped`` when no QEMU runs."""
        if not self.running() or self.qmp is None:
            return "stopped"
        try:
            return await self.qmp.status()
        except (QmpError, OSError):
            return "stopped" if not self.running() else "unknown"

    async def powered(self) -> bool:
        """On: QEMU runs the guest (``running``; also ``paused`` by a debugger or I/O error)."""
        return await self.status() in ("running", "debug", "io-error", "internal-error", "guest-panicked")

    # -- power ----------------------------------------------------------------------------

    async def power_on(self) -> None:
        """Power on booting :attr:`next_boot`: launch (or relaunch for another OVMF boot device), then cont."""
        state = await self.status()
        if state == "running":
            return
        if state != "stopped" and self.spec.firmware == "uefi" and self.launched_boot != self.next_boot:
            await self.power_off()
            state = "stopped"
        if state == "stopped":
            await self.launch(self.next_boot)
        elif self.spec.firmware == "bios":
            await self._boot_set(self.next_boot)
        assert self.qmp is not None
        if state == "shutdown":  # the guest powered itself off (-no-shutdown kept QEMU): start it afresh
            await self.qmp.execute("system_reset")
        await self.qmp.execute("cont")

    async def power_off(self, *, timeout: float = 10.0) -> None:
        """Power off: QMP ``quit``, then wait for the process (killed by PID after ``timeout``)."""
        if not self.running():
            self._forget()
            return
        if self.qmp is not None:
            with contextlib.suppress(QmpError, OSError, ConnectionError):
                await self.qmp.execute("quit")
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.running():
            self.kill()
        self._forget()

    async def reset(self) -> None:
        """Hard reset (``system_reset``) booting :attr:`next_boot`; an OVMF VM whose device changes restarts."""
        if not await self.powered():
            return
        self.resets += 1
        if self.spec.firmware == "uefi" and self.launched_boot != self.next_boot:
            await self.power_off()
            await self.power_on()
            return
        await self._boot_set(self.next_boot)
        assert self.qmp is not None
        await self.qmp.execute("system_reset")

    async def set_boot(self, device: str) -> None:
        """The device the next power-on or reset boots first: ``pxe`` or ``disk``."""
        if device not in ("pxe", "disk"):
            raise ValueError("boot device must be pxe or disk")
        self.next_boot = device
        if self.spec.firmware == "bios" and self.running():
            # Only what the next start boots: the link of the boot running now is left alone.
            await self._boot_set(device, starting=False)

    async def _boot_set(self, device: str, *, starting: bool = True) -> None:
        """Tell SeaBIOS what to boot; ``starting``: a boot begins now (power on, reset), so set its link."""
        if self.qmp is not None and self.running():
            await self.qmp.hmp(f"boot_set {'n' if device == 'pxe' else 'c'}")
            if starting:
                await self._link_for(device)

    async def _link_for(self, boot: str) -> None:
        """Without a disk, a "disk" boot must not reach the network: the NIC's link is down for it."""
        if self.spec.disk is None and self.qmp is not None:
            await self.qmp.execute("set_link", {"name": "n0", "up": boot == "pxe"})

    def _forget(self) -> None:
        if self.qmp is not None:
            qmp, self.qmp = self.qmp, None
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(qmp.close())
        if self.proc is not None:
            with contextlib.suppress(ChildProcessError):
                self.proc.poll()
        self.proc = None
        self.launched_boot = None
        self.spec.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Stop QEMU by its PID now (SIGTERM, then SIGKILL), without QMP."""
        if self.proc is not None:
            pid = self.proc.pid
            if pid_alive(pid):
                terminate(pid, lambda p: p == pid, timeout=5.0)
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
        self._forget()

    async def aclose(self) -> None:
        """Power off (quit) and forget; safe to call twice."""
        await self.power_off(timeout=5.0)


class QemuBackend:
    """A lab BMC's power backend driving a :class:`QemuVm` (the hook of :class:`fleet.lab.bmc.Bmc`).

    The BMC answers synchronously, so actions are queued to one task that runs them in order; the
    power state it reports is the state the last requested action leads to (what a real BMC reports
    right after accepting a Chassis Control), corrected from QEMU itself once no action is pending.
    """

    def __init__(self, vm: QemuVm) -> None:
        self.vm = vm
        self._on = False
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._pending = 0
        self._worker: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self.errors: list[str] = []
        self.actions: list[str] = []

    def _ensure_tasks(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def power_state(self) -> bool:
        return self._on

    def set_power(self, action: str, boot: Any) -> None:
        """Queue ``on``, ``off``, ``soft``, ``cycle`` or ``reset``; ``boot`` (a ``fleet.lab.bmcmodel.BootRequest``,
        None when the action starts nothing) is what the BMC's flags ask of this start."""
        self._ensure_tasks()
        if action == "on":
            self._on = True
        elif action in ("off", "soft"):
            self._on = False
        self._pending += 1
        self._queue.put_nowait((action, boot))

    async def _work(self) -> None:
        while True:
            action, boot = await self._queue.get()
            try:
                if boot is not None:  # this action starts the host: its firmware judges the override
                    await self.vm.set_boot(self.vm.firmware_boot(boot.device, boot.uefi))
                if action == "on":
                    await self.vm.power_on()
                elif action in ("off", "soft"):
                    await self.vm.power_off()
                elif action in ("reset", "cycle"):
                    await self.vm.reset()
                self.actions.append(action)
            except Exception as exc:  # recorded: the BMC keeps answering
                self.errors.append(f"{action}: {exc.__class__.__name__}: {exc}")
            finally:
                self._pending -= 1

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._pending == 0:
                on = await self.vm.powered()
                if self._pending == 0:
                    self._on = on

    def state(self) -> dict[str, Any]:
        return {"pid": self.vm.pid, "launches": self.vm.launches, "resets": self.vm.resets,
                "next_boot": self.vm.next_boot, "ignored": list(self.vm.ignored), "errors": self.errors[-5:]}

    async def aclose(self) -> None:
        for task in (self._worker, self._poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.vm.aclose()

    def kill(self) -> None:
        self.vm.kill()


def stop_pid_file(path: Path, name: str) -> bool:
    """Stop a QEMU left behind (its ``-pidfile``) if it is still the VM ``name``; by PID, never by name."""
    try:
        pid = int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    marker = f"fleet-vm-{name}".encode()
    return terminate(pid, lambda p: cmdline_has(p, marker), timeout=5.0)

