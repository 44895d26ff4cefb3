"""The context every operation and workflow stands on: what a process needs to act on a fleet, and no more.

A :class:`Context` holds the inventory's engine, who is acting (the actor of every audit row), the key
ring that opens credentials, the hardware profiles, the shared driver instances and the deadline of one
device call. Operations (:mod:`fleet.ops`) and workflows (:mod:`fleet.workflows`) take one and use its
public methods only:

    with ctx.write() as s:                  # a writer's transaction (BEGIN IMMEDIATE on SQLite)
        ...
        ctx.audit(s, "power.off", hosts)    # in the same transaction as the change it records
    with ctx.read() as s:                   # a reader's session
        ...
    ipmi = ctx.driver("ipmi")               # one shared instance per driver, closed by ``aclose``
    with ctx.job("sweep", selector) as job: # a job row with live progress (fleet.core.jobs)
        ...

:class:`fleet.Fleet` builds one and delegates to it; a site worker (issue 15) builds its own from its
engine, key ring and drivers and runs the very same operations. Nothing here imports the facade.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, insert
from sqlmodel import Session

from fleet.errors import FleetError
from inventory import db as inv_db
from inventory.models import Audit, Meta, utcnow
from inventory.secrets import CHECK_META_KEY, KeyRing, Secret, load_or_create_key

if TYPE_CHECKING:
    from fleet.core.jobs import JobTracker
    from fleet.profiles import ProfileSet

__all__ = ["Context", "current_actor"]


def current_actor() -> str:
    """Who is acting: ``FLEET_ACTOR``, else the user behind sudo, else the login name."""
    return os.environ.get("FLEET_ACTOR") or os.environ.get("SUDO_USER") or getpass.getuser()


class Context:
    """Engine, actor, key ring, profiles, drivers and deadline: what an operation needs (see the module)."""

    def __init__(self, engine: Engine, *, profiles: ProfileSet | None = None, keyring: KeyRing | None = None,
                 key_path: Path | None = None, actor: str | None = None, device_timeout: float = 5.0,
                 drivers: dict[str, Any] | None = None) -> None:
        self.engine = engine
        #: Who is acting: the actor of every audit row, job and state change this context writes.
        self.actor = actor or current_actor()
        #: The deadline of one device call (a BMC query, an SNMP get), in seconds.
        self.device_timeout = device_timeout
        self._profiles = profiles
        self._keyring = keyring
        self._key_path = key_path
        self._drivers: dict[str, Any] = dict(drivers or {})

    # -- the inventory -----------------------------------------------------------------------------------

    def write(self) -> AbstractContextManager[Session]:
        """A writer's session, committed on leaving (``BEGIN IMMEDIATE`` on SQLite; see :mod:`inventory.db`)."""
        return inv_db.write_session(self.engine)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A reader's session (nothing is committed)."""
        with Session(self.engine) as s:
            yield s

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    # -- the audit ---------------------------------------------------------------------------------------

    def audit(self, session: Session, action: str, targets: Sequence[str], result: str = "ok",
              **detail: Any) -> None:
        """One audit row (who: this context's actor, what, the targets, the result), in ``session``'s
        transaction, so the record and the change it records commit together or not at all."""
        session.execute(insert(Audit).values(
            ts=utcnow(), actor=self.actor, action=action, targets=list(targets)[:1000],
            target_count=len(targets), result=result, detail=detail))

    def audit_failure(self, action: str, targets: Sequence[str], error: BaseException, **detail: Any) -> None:
        """Record a refused or failed action in its own transaction (the action's own was rolled back)."""
        with self.write() as s:
            self.audit(s, action, targets, "failed", error=str(error)[:500], **detail)

    # -- keys, profiles, drivers -------------------------------------------------------------------------

    @property
    def keyring(self) -> KeyRing:
        """The key ring, loaded on first use and checked against this inventory's check value."""
        if self._keyring is None:
            ring = KeyRing(load_or_create_key(self._key_path))
            with self.read() as s:
                meta = s.get(Meta, CHECK_META_KEY)
            if meta is not None:
                ring.verify(meta.value)
            self._keyring = ring
        return self._keyring

    def open_secret(self, sealed: bytes | str, name: str) -> Secret:
        """Decrypt a sealed credential (``name`` says which, in errors; the value never prints itself)."""
        return self.keyring.open(sealed, name=name)

    @property
    def profiles(self) -> ProfileSet:
        """The hardware profiles (``FLEET_PROFILES`` or the installed ``hardware-profiles/``), loaded once."""
        if self._profiles is None:
            from fleet.profiles import load_profiles

            self._profiles = load_profiles()
        return self._profiles

    def profile(self, name: str | None) -> Any:
        """The profile called ``name``, or None when there is no such profile."""
        return self.profiles.get(name) if name and name in self.profiles else None

    def driver(self, name: str) -> Any:
        """The shared instance of driver ``name`` (created on first use; closed by :meth:`aclose`)."""
        if name not in self._drivers:
            from fleet.drivers.registry import registry

            self._drivers[name] = registry.load(name)()
        return self._drivers[name]

    def use_driver(self, name: str, driver: Any) -> None:
        """Use ``driver`` as the instance of driver ``name`` (a worker's warm pool, a test's scripted BMCs)."""
        self._drivers[name] = driver

    @property
    def started_drivers(self) -> tuple[str, ...]:
        """The names of the drivers this context has started (and :meth:`aclose` will close)."""
        return tuple(self._drivers)

    async def aclose(self) -> None:
        """Stop the drivers' workers and sessions (the next :meth:`driver` call starts them again)."""
        drivers, self._drivers = self._drivers, {}
        for drv in drivers.values():
            close = getattr(drv, "aclose", None) or getattr(drv, "close", None)
            if close is not None:
                res = close()
                if hasattr(res, "__await__"):
                    await res

    # -- jobs --------------------------------------------------------------------------------------------

    def job(self, kind: str, selector: str = "", **options: Any) -> JobTracker:
        """A :class:`~fleet.core.jobs.JobTracker` writing through this context (``with ctx.job(...) as job``)."""
        from fleet.core.jobs import JobTracker

        return JobTracker(self, kind, selector, **options)

    def check_key(self, *, create: bool = False) -> None:
        """Make sure the inventory's key check value exists (``create``) or matches this key ring."""
        with self.write() as s:
            meta = s.get(Meta, CHECK_META_KEY)
            if meta is None:
                if not create:
                    raise FleetError("this inventory has no key check value: run 'fleet init'")
                s.add(Meta(key=CHECK_META_KEY, value=self.keyring.check_value()))
            else:
                self.keyring.verify(meta.value)
