"""The virtual rack: a network namespace with a bridge, tap devices, dnsmasq, an HTTP server and QEMU VMs.

Usage (see docs/vmrack.md)::

    require_vmrack()                          # skip (or fail under FLEET_REQUIRE_PEERS=1) without root/tun/qemu
    with VmRack(tmp_path) as rack:            # namespace fvr-PID-XXXX, br0 10.77.0.1/24 + fd77::1/64
        vm = rack.add_vm("host-a", "52:54:00:77:00:01", firmware="bios")   # tap + QemuVm (not started)
        rack.start_dnsmasq(conf_path)         # dnsmasq -k -C conf inside the namespace
        rack.start_http(root)                 # an HTTP server on 10.77.0.1:80 inside the namespace
        rack.power_on(vm)                     # QEMU launched paused, then QMP cont
        rack.wait_serial(vm, r"Command line: .*token", timeout=120)

Everything runs inside the namespace (``ip netns exec``): no traffic leaves it. On exit every VM is
quit (QMP) or killed by PID, every process started here is stopped by PID, and the namespace is deleted,
also when the test failed. QMP calls run on one event loop the rack owns (:meth:`VmRack.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from fleet.lab import bmcserver
from fleet.lab._proc import pid_alive, terminate
from fleet.lab.qemu import OVMF_CODE, OVMF_VARS, QEMU, QemuVm, VmSpec

from .peers import missing_peer

T = TypeVar("T")

DI_DIR = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
DI_KERNEL = DI_DIR / "linux"
DI_INITRD = DI_DIR / "initrd.gz"
DI_GRUB_EFI = DI_DIR / "bootnetx64.efi"
IPXE_DIR = Path("/usr/lib/ipxe")
PXELINUX = Path("/usr/lib/PXELINUX/pxelinux.0")
SYSLINUX_BIOS = Path("/usr/lib/syslinux/modules/bios")
DNSMASQ = "/usr/sbin/dnsmasq"
NS_PREFIX = "fvr-"
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_]|c)")
BRIDGE = "br0"
SUBNET = "10.77.0"
SERVER_IP = f"{SUBNET}.1"
SERVER_IP6 = "fd77::1"
MAX_VMS = 4

#: The probe that replaces the Debian installer's /init (appended to its initrd as an extra cpio):
#: print the kernel command line, get an address by DHCP, fetch the preseed URL named by ``url=``,
#: print a marker with what it fetched, optionally call the answer file's callback URLs
#: (``fleet.probe.callbacks=early,late``: a stand-in for a finished install), power off.
#: Uses only the installer's own busybox, wget and kmod.
PROBE_INIT = r"""#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "FLEETPROBE start cmdline=$(cat /proc/cmdline)"
url=
token=
callbacks=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    url=*|preseed/url=*) url="${arg#*url=}" ;;
    fleet.token=*) token="${arg#fleet.token=}" ;;
    fleet.probe.callbacks=*) callbacks="$(echo "${arg#fleet.probe.callbacks=}" | tr , ' ')" ;;
  esac
done
for mod in virtio_pci virtio_net e1000; do modprobe "$mod" 2>/dev/null; done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i+1)); done
ip link set eth0 up
if udhcpc -i eth0 -n -q -t 8 -T 2 -s /etc/udhcpc/default.script >/tmp/udhcpc.log 2>&1; then
  echo "FLEETPROBE address $(ip -4 -o addr show dev eth0 | awk '{print $4}')"
  if wget -q -O /tmp/answer "$url"; then
    echo "FLEETPROBE fetched url=$url token=$token first=$(head -n 1 /tmp/answer)"
    # Stand in for the installer's callbacks named by fleet.probe.callbacks=early[,late]: the URLs
    # (with their tokens) are the ones the answer file holds.
    for phase in $callbacks; do
      cb="$(grep -o "http://[^' \"]*/cb/[^' \"]*/$phase?token=[0-9a-f]*" /tmp/answer | head -n 1)"
      if [ -n "$cb" ] && wget -q -O /dev/null "$cb"; then
        echo "FLEETPROBE callback $phase ok"
      else
        echo "FLEETPROBE callback $phase failed"
      fi
    done
  else
    echo "FLEETPROBE fetch-failed url=$url"
  fi
else
  echo "FLEETPROBE dhcp-failed"
fi
echo "FLEETPROBE done"
sync
poweroff -f
"""


# ---------------------------------------------------------------------------------------------
# Preconditions
# ---------------------------------------------------------------------------------------------


def vmrack_missing() -> str | None:
    """Why the virtual rack cannot run here, or None."""
    if os.geteuid() != 0:
        return "the virtual rack needs root (network namespaces, bridges, tap devices)"
    if not os.path.exists("/dev/net/tun") or not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "the virtual rack needs /dev/net/tun"
    for tool in (QEMU, "ip", DNSMASQ):
        if shutil.which(tool) is None:
            return f"the virtual rack needs {tool}"
    for path in (DI_KERNEL, DI_INITRD, OVMF_CODE, OVMF_VARS, IPXE_DIR / "snponly.efi", PXELINUX):
        if not path.exists():
            return f"the virtual rack needs {path} (see docs/vmrack.md for the Debian packages)"
    probe = subprocess.run(["ip", "netns", "add", f"{NS_PREFIX}probe-{os.getpid()}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", f"{NS_PREFIX}probe-{os.getpid()}"], capture_output=True)
    return None


def require_vmrack() -> None:
    """Skip the test (fail under FLEET_REQUIRE_PEERS=1) when the virtual rack cannot run here."""
    reason = vmrack_missing()
    if reason is not None:
        missing_peer(reason)


def sweep_stale_namespaces() -> list[str]:
    """Delete empty namespaces ``fvr-PID-*`` whose creating process is gone (a test killed mid-run)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    removed = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"^{NS_PREFIX}(\d+)-[0-9a-f]+$", name)
        # Only an empty one: processes left in it are not ours to stop (another run may own them).
        if m and not pid_alive(int(m.group(1))) and not _netns_pids(name):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
            removed.append(name)
    return removed


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if p.isdigit()]


# ---------------------------------------------------------------------------------------------
# The probe initrd (a newc cpio, gzip-compressed)
# ---------------------------------------------------------------------------------------------


def _cpio_entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def newc_cpio(files: Iterable[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, content) entries (directories: mode 0o040755, content b"")."""
    buf = io.BytesIO()
    ino = 1
    for name, mode, data in files:
        buf.write(_cpio_entry(name, mode, data, ino))
        ino += 1
    buf.write(_cpio_entry("TRAILER!!!", 0, b"", 0))
    raw = buf.getvalue()
    return raw + b"\0" * (-len(raw) % 512)


def write_probe_initrd(path: Path, init: str = PROBE_INIT) -> Path:
    """Write the probe (``/init``) as a gzip-compressed cpio to append after the installer's initrd."""
    path.write_bytes(gzip.compress(newc_cpio([("init", 0o100755, init.encode())]), mtime=0))
    return path


# ---------------------------------------------------------------------------------------------
# The rack
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BmcVm:
    """A VM whose power and boot device a lab BMC holds (QMP behind IPMI): where its BMC answers."""

    name: str
    mac: str
    vm: VmSpec
    host: str
    port: int
    username: str = "admin"
    password: str = "password"


class VmRack:
    """A namespace, a bridge, taps, dnsmasq, HTTP and VMs, all torn down (by PID) on exit."""

    def __init__(self, workdir: Path, *, subnet: str = SUBNET, max_vms: int = MAX_VMS) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ns = f"{NS_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.subnet = subnet
        self.server_ip = f"{subnet}.1"
        self.max_vms = max_vms
        self.vms: dict[str, QemuVm] = {}
        self.taps: list[str] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self.bmc_vms: dict[str, BmcVm] = {}
        self.bmc_state_dir = self.workdir / "bmc"
        self.bmc_pid: int | None = None
        self.loop = asyncio.new_event_loop()
        self._created = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> VmRack:
        sweep_stale_namespaces()
        try:
            self._sh("ip", "netns", "add", self.ns)
            self._created = True
            self.ip("link", "set", "lo", "up")
            self.ip("link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            self.ip("addr", "add", f"{self.server_ip}/24", "dev", BRIDGE)
            self.ip("-6", "addr", "add", f"{SERVER_IP6}/64", "dev", BRIDGE, "nodad")
            self.ip("link", "set", BRIDGE, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop every VM and process by PID, delete the namespace. Safe to call twice."""
        if self.bmc_pid is not None:  # the BMC server quits its VMs (QMP), then is stopped by PID
            with contextlib.suppress(Exception):
                bmcserver.stop(self.bmc_state_dir, pid=self.bmc_pid, timeout=20.0)
            self.bmc_pid = None
        for vm in list(self.vms.values()):
            with contextlib.suppress(Exception):
                self.run(vm.power_off(timeout=3.0))
            vm.kill()
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                terminate(proc.pid, lambda p, _pid=proc.pid: p == _pid, timeout=5.0)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            del self.procs[name]
        if self._created:
            for pid in _netns_pids(self.ns):  # nothing of ours should be left; a stray child is stopped by PID
                terminate(pid, lambda _p: True, timeout=3.0)
            subprocess.run(["ip", "netns", "delete", self.ns], capture_output=True)
            self._created = False
        if not self.loop.is_closed():
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    # -- commands in the namespace ---------------------------------------------------------

    @staticmethod
    def _sh(*cmd: str) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()}")
        return res

    def ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ip -n NS ARGS`` (raises on failure)."""
        return self._sh("ip", "-n", self.ns, *args)

    def exec(self, *cmd: str, timeout: float = 60.0, check: bool = False,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the namespace to completion (e.g. curl the HTTP server, ``fleet image``)."""
        res = subprocess.run(["ip", "netns", "exec", self.ns, *cmd], capture_output=True, text=True, timeout=timeout,
                             env=env)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()}")
        return res

    def spawn(self, name: str, cmd: Sequence[str], *, log: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in the background inside the namespace (stopped by PID on exit)."""
        if name in self.procs and self.procs[name].poll() is None:
            raise RuntimeError(f"{name} already runs")
        log = log or self.workdir / f"{name}.out"
        with open(log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.procs[name] = proc
        return proc

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            terminate(proc.pid, lambda p: p == proc.pid, timeout=5.0)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)

    # -- services --------------------------------------------------------------------------

    def start_dnsmasq(self, conf: Path, *, log: Path | None = None) -> subprocess.Popen[bytes]:
        """dnsmasq -k -C conf (as root, so it reads the test's private directories); waits for it to bind."""
        log = log or self.workdir / "dnsmasq.log"
        res = subprocess.run([DNSMASQ, "--test", "-C", str(conf)], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"dnsmasq --test -C {conf}: {res.stderr.strip()}")
        proc = self.spawn("dnsmasq", [DNSMASQ, "-k", "-C", str(conf), "--user=root", "--group=root",
                                      f"--log-facility={log}", f"--pid-file={self.workdir / 'dnsmasq.pid'}"],
                          log=self.workdir / "dnsmasq.out")
        self.wait_listening(proc, "udp", 67, "dnsmasq", self.workdir / "dnsmasq.out")
        return proc

    def start_http(self, root: Path, *, port: int = 80, log: Path | None = None,
                   cmd: Sequence[str] | None = None) -> subprocess.Popen[bytes]:
        """An HTTP server on ``server_ip:port`` serving ``root`` (default: the standard library's, which
        logs ``IP - - [date] "GET /path HTTP/1.1" 200 -`` per request to ``log``); or run ``cmd``."""
        log = log or self.workdir / "http.log"
        cmd = list(cmd) if cmd else [sys.executable, "-u", "-m", "http.server", "--bind", self.server_ip,
                                     "--directory", str(root), str(port)]
        proc = self.spawn("http", cmd, log=log)
        self.wait_listening(proc, "tcp", port, "the HTTP server", log)
        return proc

    def wait_listening(self, proc: subprocess.Popen[bytes], proto: str, port: int, what: str, log: Path,
                        timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        flag = "-uln" if proto == "udp" else "-tln"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with status {proc.returncode}: "
                                   f"{log.read_text(errors='replace')[-1500:] if log.exists() else ''}")
            out = self.exec("ss", flag, timeout=10).stdout
            if re.search(rf":{port}\s", out):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not listen on {proto}/{port} within {timeout} s")

    # -- VMs -------------------------------------------------------------------------------

    def add_tap(self) -> str:
        tap = f"tap{len(self.taps)}"
        self.ip("tuntap", "add", "dev", tap, "mode", "tap")
        self.ip("link", "set", tap, "master", BRIDGE)
        self.ip("link", "set", tap, "up")
        self.taps.append(tap)
        return tap

    def add_vm(self, name: str, mac: str, *, firmware: str = "bios", nic: str = "virtio-net-pci",
               boot: str = "pxe", disk: Path | None = None, memory_mb: int = 512) -> QemuVm:
        """A VM on a new tap of the bridge (QEMU is not started yet: :meth:`power_on`)."""
        if len(self.vms) + len(self.bmc_vms) >= self.max_vms:
            raise RuntimeError(f"at most {self.max_vms} VMs at once on this machine")
        spec = VmSpec(name=name, mac=mac, tap=self.add_tap(), state_dir=self.workdir / "vms", firmware=firmware,
                      netns=self.ns, nic=nic, boot=boot, disk=disk, memory_mb=memory_mb)
        vm = QemuVm(spec)
        self.vms[name] = vm
        return vm

    def add_bmc_vm(self, name: str, mac: str, *, port: int, firmware: str = "bios", host: str = "127.0.0.1",
                   nic: str = "virtio-net-pci", boot: str = "disk", memory_mb: int = 512) -> BmcVm:
        """A VM behind a lab BMC (``host:port``, IPMI over loopback; QEMU is launched by the BMC server on
        the first power-on). Call :meth:`start_bmcs` once every such VM is added."""
        if len(self.vms) + len(self.bmc_vms) >= self.max_vms:
            raise RuntimeError(f"at most {self.max_vms} VMs at once on this machine")
        if self.bmc_pid is not None:
            raise RuntimeError("the BMC server already runs: add every BMC VM before start_bmcs()")
        spec = VmSpec(name=name, mac=mac, tap=self.add_tap(), state_dir=self.workdir / "bmc-vms", firmware=firmware,
                      netns=self.ns, nic=nic, boot=boot, memory_mb=memory_mb)
        item = BmcVm(name=name, mac=mac, vm=spec, host=host, port=port)
        self.bmc_vms[name] = item
        return item

    def start_bmcs(self, *, in_namespace: bool = False) -> int:
        """One lab BMC server process for every :meth:`add_bmc_vm`; its PID.

        By default it listens on the root namespace's loopback (the test's own IPMI clients reach it).
        ``in_namespace`` runs it inside the rack's namespace instead, on the namespace's loopback: for a
        ``fleet image`` run there (via :meth:`exec`), which must reach both the bridge and the BMCs.
        """
        doc = {"bmcs": [{"name": b.name, "host": b.host, "port": b.port, "username": b.username,
                         "password": b.password, "power": "off", "qemu": b.vm.to_dict()}
                        for b in self.bmc_vms.values()]}
        spec = self.workdir / "bmc.json"
        spec.write_text(json.dumps(doc, indent=1))
        python = None
        if in_namespace:  # exec chain sh -> ip netns exec -> python: one PID, still "fleet.lab.bmcserver"
            wrapper = self.workdir / "bmc-python.sh"
            wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {self.ns} {sys.executable} "$@"\n')
            wrapper.chmod(0o755)
            python = str(wrapper)
        self.bmc_pid = bmcserver.start(spec, self.bmc_state_dir, python=python)
        return self.bmc_pid

    def write_inventory(self, directory: Path, *, site: str = "vlab", rack: str = "R1",
                        loaders: dict[str, str] | None = None, probe: bool = True,
                        addresses: bool = False) -> tuple[Path, Path, Path]:
        """Inventory, secrets and PXE overrides for the BMC VMs, for ``fleet import`` and ``fleet image``.

        One site/pod/rack with a provisioning pool on the bridge (10.77.0.11-99, gateway and DNS
        10.77.0.1); each BMC VM is a ``ready`` server with its BMC at ``host:port`` and one PXE NIC.
        ``loaders`` maps a VM name to ``pxe``'s loader (``ipxe`` default, ``pxelinux``, ``grub``), given
        as the server's ``pxe-loader:`` tag. With ``probe``, the overrides file loads the probe initrd
        (install it with ``--extra-image probe/probe.gz=PATH``: :meth:`probe_initrd`) and asks it to
        call back early and late, so imaging finishes in about a minute instead of a real install.
        ``addresses`` gives each NIC its address now (.11, .12, ...); else imaging allocates them.
        Each server records its VM's firmware (tag ``firmware:bios|uefi``), from which imaging chooses
        the boot flags' EFI bit: an OVMF VM ignores a legacy PXE request, as real UEFI firmware does.
        Returns (inventory.yaml, secrets.yaml, overrides.toml).
        """
        import yaml

        directory.mkdir(parents=True, exist_ok=True)
        loaders = loaders or {}
        servers = []
        for n, b in enumerate(self.bmc_vms.values()):
            loader = loaders.get(b.name, "ipxe")
            servers.append({"hostname": b.name, "position": n + 1, "profile": "rackfleet-lab",
                            "serial": f"VRACK{n + 1:04d}", "state": "ready", "bmc": f"{b.host}:{b.port}",
                            "bmc_credential": "vrack-bmc",
                            # The firmware recorded in the inventory: it decides the boot flags' EFI bit.
                            "tags": ["vrack", f"pxe-loader:{loader}", f"firmware:{b.vm.firmware}"],
                            "nics": [{"name": "eth0", "mac": b.mac, "pxe": True,
                                      **({"ip": f"{self.subnet}.{11 + n}"} if addresses else {})}]})
        inventory = {"version": 1, "sites": [{"code": site, "name": "Virtual rack", "pods": [
            {"code": "p1", "name": "Namespace", "kind": "room", "racks": [
                {"name": rack, "units": 42, "servers": servers,
                 "pools": [{"name": f"{rack.lower()}-prov", "cidr": f"{self.subnet}.0/24", "purpose": "provisioning",
                            "gateway": self.server_ip, "first": f"{self.subnet}.11", "last": f"{self.subnet}.99",
                            "dns": [self.server_ip]}]}]}]}]}
        users = {(b.username, b.password) for b in self.bmc_vms.values()}
        if len(users) != 1:
            raise ValueError("write_inventory: every BMC VM must share one credential")
        username, password = users.pop()
        secrets = {"credentials": [{"name": "vrack-bmc", "kind": "ipmi", "username": username, "secret": password}]}
        inv, sec, over = directory / "inventory.yaml", directory / "secrets.yaml", directory / "pxe-overrides.toml"
        inv.write_text(yaml.safe_dump(inventory, sort_keys=False))
        sec.write_text(yaml.safe_dump(secrets, sort_keys=False))
        sec.chmod(0o600)
        over.write_text('[defaults]\nkernel_args = ["fleet.probe.callbacks=early,late"]\n'
                        'extra_initrds = ["probe/probe.gz"]\n' if probe else "")
        return inv, sec, over

    def probe_initrd(self) -> Path:
        """The probe initrd in the rack's directory (written once)."""
        path = self.workdir / "probe.gz"
        if not path.exists():
            write_probe_initrd(path)
        return path

    def bmc_state(self, name: str) -> dict[str, Any]:
        """The lab BMC's view of one BMC VM (power, boot flags, ``vm``: QEMU pid, launches, resets, errors)."""
        answer = bmcserver.lab_control(self.bmc_state_dir, {"op": "get", "bmc": name})
        if not answer.get("ok"):
            raise RuntimeError(f"lab control: {answer}")
        return dict(answer["bmc"])

    def remove_vm(self, vm: QemuVm) -> None:
        """Power the VM off (QMP quit, then its PID) and free its slot; its tap stays on the bridge."""
        with contextlib.suppress(Exception):
            self.run(vm.power_off(timeout=5.0))
        vm.kill()
        del self.vms[vm.spec.name]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine (QMP calls) on the rack's event loop."""
        return self.loop.run_until_complete(coro)

    def power_on(self, *vms: QemuVm) -> None:
        for vm in vms:
            self.run(vm.power_on())
            self.started_at[vm.spec.name] = time.monotonic()

    def status(self, vm: QemuVm) -> str:
        return self.run(vm.status())

    # -- evidence --------------------------------------------------------------------------

    @staticmethod
    def read(path: Path) -> str:
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def serial(self, vm: QemuVm | BmcVm | VmSpec) -> str:
        """The VM's serial console log so far (firmware, boot loader, kernel), without terminal control
        sequences: firmware draws with cursor moves that can land inside a line of text (seen under load:
        ``host\x1b[25;15H\x1b[25;16H-c``)."""
        spec = vm.spec if isinstance(vm, QemuVm) else vm.vm if isinstance(vm, BmcVm) else vm
        return _ANSI.sub("", self.read(spec.serial_log))

    def wait_for(self, check: Any, *, timeout: float, interval: float = 0.5, what: str = "a condition") -> Any:
        """Poll ``check()`` until it returns a truthy value; raise TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{what} not seen within {timeout} s")
            time.sleep(interval)

    def wait_serial(self, vm: QemuVm | BmcVm | VmSpec, pattern: str, *, timeout: float) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in the VM's serial log; a timeout names the log's tail."""
        rx = re.compile(pattern)
        try:
            return self.wait_for(lambda: rx.search(self.serial(vm)), timeout=timeout,
                                 what=f"{pattern!r} in {vm.name if isinstance(vm, BmcVm | VmSpec) else vm.spec.name}'s"
                                      " serial log")
        except TimeoutError as exc:
            tail = self.serial(vm)[-1500:]
            raise TimeoutError(f"{exc}; the log ends:\n{tail}") from None

    def wait_all_serial(self, patterns: dict[str, str], *, timeout: float) -> dict[str, float]:
        """Wait until every VM's log matches its pattern; the seconds from its power-on to the match."""
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        rx = {name: re.compile(p) for name, p in patterns.items()}
        while len(seen) < len(patterns):
            for name, r in rx.items():
                if name not in seen and r.search(self.serial(self.vms[name])):
                    seen[name] = round(time.monotonic() - self.started_at.get(name, time.monotonic()), 1)
            if len(seen) == len(patterns):
                break
            if time.monotonic() >= deadline:
                missing = {n: self.serial(self.vms[n])[-600:] for n in patterns if n not in seen}
                raise TimeoutError(f"not seen within {timeout} s: " + "\n".join(
                    f"--- {n}: {patterns[n]!r}; log ends:\n{tail}" for n, tail in missing.items()))
            time.sleep(1.0)
        return seen
