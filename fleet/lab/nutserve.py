"""The lab's own stand-in for NUT's ``upsd`` + ``dummy-ups``, for machines without NUT installed.

``python -m fleet.lab.nutserve CONFDIR`` reads the very files :mod:`fleet.lab.nutlab` writes for NUT
(``upsd.conf``: ``LISTEN host port``; ``ups.conf``: each UPS's ``[name]``, ``port = FILE.dev`` and
``desc``; ``upsd.users``: users, passwords, ``actions``/``instcmds``/``upsmon``) and serves every UPS
over NUT's network protocol (RFC 9271) from its ``.dev`` file, as dummy-ups in ``dummy-once`` mode
does: ``var: value`` lines, ``TIMER n`` pauses between steps, the file replayed from the top whenever
its modification time changes (checked every ``pollinterval`` seconds, 1 here).

It answers what :mod:`fleet.drivers.nut` and NUT's ``upsc``/``upscmd``/``upsrw`` send, the way upsd
2.8.0 in front of dummy-ups answers (checked side by side, ``tests/test_nut_builtin.py``): ``VER``,
``NETVER``/``PROTVER``, ``HELP``, ``LIST UPS|VAR|RW|CMD|ENUM|RANGE|CLIENT``, ``GET VAR|UPSDESC|
NUMLOGINS|DESC|CMDDESC|TYPE|TRACKING``, ``USERNAME``/``PASSWORD``/``LOGIN``/``LOGOUT``, ``SET VAR``,
``SET TRACKING``, ``INSTCMD`` (dummy-ups lists ``load.off`` and does not implement it: tracking says
``ERR UNKNOWN``), and upsd's errors (``UNKNOWN-UPS``, ``VAR-NOT-SUPPORTED``, ``CMD-NOT-SUPPORTED``,
``READONLY``, ``ACCESS-DENIED``, ``USERNAME-REQUIRED``, ``ALREADY-SET-*``, ``INVALID-ARGUMENT``,
``UNKNOWN-COMMAND``...). One asyncio process serves every UPS (no process per UPS). No TLS (``STARTTLS``
answers ``ERR FEATURE-NOT-CONFIGURED``, as upsd without certificates).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fleet.drivers.nut import parse_line

__all__ = ["VERSION_LINE", "NutServer", "UpsUser", "load_config", "main", "parse_dev"]

VERSION_LINE = "Network UPS Tools upsd stand-in (Rackfleet lab) - serving dummy-ups .dev files"
NETVER = "1.3"
#: Variables the driver adds to every dummy-ups UPS (read-only, as dummy-ups marks them).
_DRIVER_VARS = {"device.type": "ups", "driver.name": "dummy-ups", "driver.parameter.mode": "dummy-once",
                "driver.parameter.synchronous": "auto", "driver.version": "rackfleet-lab",
                "driver.version.internal": "0.15"}
#: What dummy-ups lists (and does not implement).
_COMMANDS = ("load.off",)
_DESCRIPTIONS = {"ups.status": "UPS status", "battery.charge": "Battery charge (percent of full)",
                 "battery.runtime": "Battery runtime (seconds)", "ups.load": "Load on UPS (percent of full)",
                 "input.voltage": "Input voltage (V)", "load.off": "Turn off the load immediately"}
_HELP = "Commands: HELP VER GET LIST SET INSTCMD LOGIN LOGOUT USERNAME PASSWORD STARTTLS"


def quote(value: str) -> str:
    """A value as upsd sends it: always in double quotes, ``\\`` and ``"`` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_dev(text: str) -> list[tuple[dict[str, str], float]]:
    """The steps of a ``.dev`` file: (variables, seconds to wait after them) in order.

    >>> parse_dev("a: 1\\nTIMER 2\\nb: x y\\n")
    [({'a': '1'}, 2.0), ({'b': 'x y'}, 0.0)]
    """
    steps: list[tuple[dict[str, str], float]] = []
    current: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("TIMER"):
            with contextlib.suppress(ValueError, IndexError):
                steps.append((current, float(line.split()[1])))
                current = {}
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip():
            current[name.strip()] = value.strip().strip('"')
    steps.append((current, 0.0))
    return steps


@dataclass
class UpsUser:
    """One ``upsd.users`` entry."""

    name: str
    password: str = ""
    actions: frozenset[str] = frozenset()
    instcmds: frozenset[str] = frozenset()
    upsmon: bool = False


@dataclass
class _Ups:
    name: str
    desc: str
    dev: Path
    variables: dict[str, str] = field(default_factory=dict)
    mtime: float | None = None
    steps: list[tuple[dict[str, str], float]] = field(default_factory=list)
    next_step: int = 0
    due: float = 0.0
    logins: int = 0


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    poll: float
    ups: Mapping[str, tuple[str, Path]]  # name -> (desc, .dev path)
    users: Mapping[str, UpsUser]


def _sections(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    out: list[tuple[str, list[tuple[str, str]]]] = [("", [])]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            out.append((line[1:-1], []))
            continue
        words = parse_line(line.replace("=", " = ", 1) if "=" in line else line)
        if len(words) >= 3 and words[1] == "=":
            out[-1][1].append((words[0], " ".join(words[2:])))
        elif words:
            out[-1][1].append((words[0], " ".join(words[1:])))
    return out


def load_config(conf: Path) -> Config:
    """The listen address, UPSes and users of a NUT configuration folder (as nutlab writes it)."""
    host, port = "127.0.0.1", 3493
    for raw in (conf / "upsd.conf").read_text().splitlines():
        words = raw.split()
        if len(words) >= 2 and words[0] == "LISTEN":
            host = words[1]
            port = int(words[2]) if len(words) > 2 else port
    poll = 1.0
    ups: dict[str, tuple[str, Path]] = {}
    for name, pairs in _sections((conf / "ups.conf").read_text()):
        values = dict(pairs)
        if not name:
            poll = float(values.get("pollinterval", poll))
        elif "port" in values:
            ups[name] = (values.get("desc", "Unavailable"), Path(values["port"]))
    users: dict[str, UpsUser] = {}
    for name, pairs in _sections((conf / "upsd.users").read_text()):
        if not name:
            continue
        user = UpsUser(name)
        for key, value in pairs:
            if key == "password":
                user.password = value
            elif key == "actions":
                user.actions = frozenset(value.upper().split())
            elif key == "instcmds":
                user.instcmds = frozenset(value.split())
            elif key == "upsmon":
                user.upsmon = True
        users[name] = user
    return Config(host, port, poll, ups, users)


class _Session:
    def __init__(self) -> None:
        self.username: str | None = None
        self.password: str | None = None
        self.tracking = False
        self.logged_in: _Ups | None = None


class NutServer:
    """Every UPS of a configuration, served on its ``LISTEN`` address."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.ups = {name: _Ups(name, desc, dev) for name, (desc, dev) in config.ups.items()}
        self.tracking: dict[str, list[str]] = {}  # id -> verdicts still to give, last one kept
        self._server: asyncio.Server | None = None

    # -- the .dev files, played as dummy-ups plays them ------------------------------------------

    def refresh(self, now: float | None = None) -> None:
        """Replay a changed ``.dev`` file from its first step; apply steps whose ``TIMER`` ran out."""
        now = time.monotonic() if now is None else now
        for u in self.ups.values():
            try:
                mtime = u.dev.stat().st_mtime
            except OSError:
                continue
            if mtime != u.mtime:
                try:
                    u.steps = parse_dev(u.dev.read_text())
                except OSError:
                    continue
                u.mtime, u.next_step, u.due = mtime, 0, now
            while u.next_step < len(u.steps) and u.due <= now:
                variables, wait = u.steps[u.next_step]
                u.variables.update(variables)
                u.next_step += 1
                u.due = now + wait

    def values(self, u: _Ups) -> dict[str, str]:
        """The UPS's variables as upsc lists them (sorted), the driver's own added."""
        merged = dict(u.variables)
        for src, dst in (("ups.mfr", "device.mfr"), ("ups.model", "device.model"), ("ups.serial", "device.serial")):
            if src in merged:
                merged.setdefault(dst, merged[src])
        merged.update(_DRIVER_VARS)
        merged["driver.parameter.pollinterval"] = f"{self.config.poll:g}"
        merged["driver.parameter.port"] = str(u.dev)
        return dict(sorted(merged.items()))

    # -- the protocol ------------------------------------------------------------------------------

    async def serve(self) -> None:
        self.refresh()
        self._server = await asyncio.start_server(self._client, self.config.host, self.config.port,
                                                  reuse_address=True, limit=1 << 16)
        async with self._server:
            while True:
                await asyncio.sleep(min(self.config.poll, 0.25))
                self.refresh()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session()
        try:
            while True:
                raw = await reader.readline()
                if not raw.endswith(b"\n"):
                    break
                try:
                    words = parse_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
                except ValueError:
                    words = None
                lines, close = self.answer(session, words)
                writer.write("".join(f"{line}\n" for line in lines).encode())
                await writer.drain()
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if session.logged_in is not None:
                session.logged_in.logins -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def answer(self, session: _Session, words: list[str] | None) -> tuple[list[str], bool]:
        """upsd's answer lines to one request, and whether to close the connection after them."""
        if words is None:
            return ["ERR INVALID-ARGUMENT"], False
        if not words:
            return ["ERR UNKNOWN-COMMAND"], False
        cmd, args = words[0].upper(), words[1:]
        handler = {"VER": self._ver, "NETVER": self._netver, "PROTVER": self._netver, "HELP": self._help,
                   "LIST": self._list, "GET": self._get, "SET": self._set, "INSTCMD": self._instcmd,
                   "USERNAME": self._username, "PASSWORD": self._password, "LOGIN": self._login,
                   "STARTTLS": self._starttls}.get(cmd)
        if cmd == "LOGOUT":
            return ["OK Goodbye"], True
        if handler is None:
            return ["ERR UNKNOWN-COMMAND"], False
        return handler(session, args), False

    def _ver(self, session: _Session, args: list[str]) -> list[str]:
        return [VERSION_LINE]

    def _netver(self, session: _Session, args: list[str]) -> list[str]:
        return [NETVER]

    def _help(self, session: _Session, args: list[str]) -> list[str]:
        return [_HELP]

    def _starttls(self, session: _Session, args: list[str]) -> list[str]:
        return ["ERR FEATURE-NOT-CONFIGURED"]

    def _find(self, name: str) -> _Ups | None:
        return self.ups.get(name)

    def _list(self, session: _Session, args: list[str]) -> list[str]:
        if not args:
            return ["ERR INVALID-ARGUMENT"]
        kind = args[0].upper()
        if kind == "UPS" and len(args) == 1:
            return ["BEGIN LIST UPS", *(f"UPS {u.name} {quote(u.desc)}" for u in self.ups.values()), "END LIST UPS"]
        if kind in ("VAR", "RW", "CMD", "CLIENT") and len(args) == 2:
            u = self._find(args[1])
            if u is None:
                return ["ERR UNKNOWN-UPS"]
            head = f"{kind} {u.name}"
            if kind == "VAR":
                body = [f"VAR {u.name} {k} {quote(v)}" for k, v in self.values(u).items()]
            elif kind == "RW":
                body = [f"RW {u.name} {k} {quote(v)}" for k, v in self.values(u).items() if self._writable(u, k)]
            elif kind == "CMD":
                body = [f"CMD {u.name} {c}" for c in _COMMANDS]
            else:
                body = []
            return [f"BEGIN LIST {head}", *body, f"END LIST {head}"]
        if kind in ("ENUM", "RANGE") and len(args) == 3:
            u = self._find(args[1])
            if u is None:
                return ["ERR UNKNOWN-UPS"]
            if args[2] not in self.values(u):
                return ["ERR VAR-NOT-SUPPORTED"]
            head = f"{kind} {u.name} {args[2]}"
            return [f"BEGIN LIST {head}", f"END LIST {head}"]
        return ["ERR INVALID-ARGUMENT"]

    @staticmethod
    def _writable(u: _Ups, var: str) -> bool:
        return var in u.variables and not var.startswith(("driver.", "device."))

    def _get(self, session: _Session, args: list[str]) -> list[str]:
        if not args:
            return ["ERR INVALID-ARGUMENT"]
        kind = args[0].upper()
        if kind == "TRACKING":
            if len(args) == 1:
                return ["ON" if session.tracking else "OFF"]
            if not session.tracking:
                return ["ERR FEATURE-NOT-CONFIGURED"]
            verdicts = self.tracking.get(args[1].upper())
            if not verdicts:
                return ["ERR UNKNOWN"]
            return [verdicts.pop(0) if len(verdicts) > 1 else verdicts[0]]
        if kind in ("UPSDESC", "NUMLOGINS") and len(args) == 2:
            u = self._find(args[1])
            if u is None:
                return ["ERR UNKNOWN-UPS"]
            return [f"UPSDESC {u.name} {quote(u.desc)}" if kind == "UPSDESC" else f"NUMLOGINS {u.name} {u.logins}"]
        if kind in ("VAR", "TYPE", "DESC", "CMDDESC") and len(args) == 3:
            u = self._find(args[1])
            if u is None:
                return ["ERR UNKNOWN-UPS"]
            name = args[2]
            if kind in ("DESC", "CMDDESC"):
                return [f"{kind} {u.name} {name} {quote(_DESCRIPTIONS.get(name, 'Description unavailable'))}"]
            values = self.values(u)
            if name not in values:
                return ["ERR VAR-NOT-SUPPORTED"]
            if kind == "VAR":
                return [f"VAR {u.name} {name} {quote(values[name])}"]
            if not self._writable(u, name):
                return [f"TYPE {u.name} {name} NUMBER"]
            return [f"TYPE {u.name} {name} RW " + ("NUMBER" if _is_number(values[name]) else "STRING:32")]
        return ["ERR INVALID-ARGUMENT"]

    def _user(self, session: _Session) -> UpsUser | None:
        """The session's user if its name and password match ``upsd.users`` (None: access denied)."""
        user = self.config.users.get(session.username or "")
        if user is None or session.password is None or user.password != session.password:
            return None
        return user

    def _set(self, session: _Session, args: list[str]) -> list[str]:
        if len(args) == 2 and args[0].upper() == "TRACKING":
            if session.username is None:
                return ["ERR USERNAME-REQUIRED"]
            if args[1].upper() not in ("ON", "OFF"):
                return ["ERR INVALID-ARGUMENT"]
            session.tracking = args[1].upper() == "ON"
            return ["OK"]
        if len(args) != 4 or args[0].upper() != "VAR":
            return ["ERR INVALID-ARGUMENT"]
        u = self._find(args[1])
        if u is None:
            return ["ERR UNKNOWN-UPS"]
        if session.username is None:
            return ["ERR USERNAME-REQUIRED"]
        if session.password is None:
            return ["ERR PASSWORD-REQUIRED"]
        user = self._user(session)
        if user is None or "SET" not in user.actions:
            return ["ERR ACCESS-DENIED"]
        name, value = args[2], args[3]
        if name not in self.values(u):
            return ["ERR VAR-NOT-SUPPORTED"]
        if not self._writable(u, name):
            return ["ERR READONLY"]
        u.variables[name] = value  # in memory until the .dev file changes, as dummy-ups keeps it
        return self._tracked(session, ["SUCCESS"])

    def _instcmd(self, session: _Session, args: list[str]) -> list[str]:
        if len(args) not in (2, 3):
            return ["ERR INVALID-ARGUMENT"]
        u = self._find(args[0])
        if u is None:
            return ["ERR UNKNOWN-UPS"]
        if session.username is None:
            return ["ERR USERNAME-REQUIRED"]
        if session.password is None:
            return ["ERR PASSWORD-REQUIRED"]
        if args[1] not in _COMMANDS:
            return ["ERR CMD-NOT-SUPPORTED"]
        user = self._user(session)
        if user is None or not ({"ALL", args[1]} & user.instcmds):
            return ["ERR ACCESS-DENIED"]
        return self._tracked(session, ["PENDING", "ERR UNKNOWN"])  # dummy-ups: "instcmd: unknown command"

    def _tracked(self, session: _Session, verdicts: list[str]) -> list[str]:
        if not session.tracking:
            return ["OK"]
        ident = str(uuid.uuid4()).upper()
        self.tracking[ident] = verdicts
        if len(self.tracking) > 4096:  # bounded, oldest first
            del self.tracking[next(iter(self.tracking))]
        return [f"OK TRACKING {ident}"]

    def _username(self, session: _Session, args: list[str]) -> list[str]:
        if len(args) != 1:
            return ["ERR INVALID-ARGUMENT"]
        if session.username is not None:
            return ["ERR ALREADY-SET-USERNAME"]
        session.username = args[0]
        return ["OK"]

    def _password(self, session: _Session, args: list[str]) -> list[str]:
        if len(args) != 1:
            return ["ERR INVALID-ARGUMENT"]
        if session.password is not None:
            return ["ERR ALREADY-SET-PASSWORD"]
        session.password = args[0]
        return ["OK"]

    def _login(self, session: _Session, args: list[str]) -> list[str]:
        if len(args) != 1:
            return ["ERR INVALID-ARGUMENT"]
        if session.username is None:
            return ["ERR USERNAME-REQUIRED"]
        if session.password is None:
            return ["ERR PASSWORD-REQUIRED"]
        if session.logged_in is not None:
            return ["ERR ALREADY-LOGGED-IN"]
        u = self._find(args[0])
        user = self._user(session)
        if user is None or not user.upsmon:
            return ["ERR ACCESS-DENIED"]
        if u is None:
            return ["ERR UNKNOWN-UPS"]
        session.logged_in = u
        u.logins += 1
        return ["OK"]


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m fleet.lab.nutserve CONFDIR``: serve until SIGTERM/SIGINT."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m fleet.lab.nutserve CONFDIR", file=sys.stderr)
        return 2
    server = NutServer(load_config(Path(args[0])))

    async def run() -> None:
        task = asyncio.ensure_future(server.serve())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
    except OSError as exc:  # the address is taken: say so, as upsd does, and exit non-zero
        print(f"nutserve: cannot listen on {server.config.host}:{server.config.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
