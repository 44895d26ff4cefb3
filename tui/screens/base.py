"""What every screen shares: loading in a worker, failures as notifications, refresh on a re-armed timer,
and the actions (menu → confirmation → worker) on whichever servers the screen has selected."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ScreenStackError
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Header
from textual.worker import Worker, WorkerState

from fleet.errors import FleetError

from .. import actions
from .confirm import ActionMenu, ConfirmAction

if TYPE_CHECKING:
    from ..app import FleetApp


def describe_error(error: BaseException | None) -> str:
    if isinstance(error, FleetError):
        return str(error)
    return f"{error.__class__.__name__}: {error}" if error is not None else "failed"


def _freeze() -> None:
    gc.freeze()
    gc.enable()


class FleetScreen(Screen):
    """A screen that loads its data with :meth:`fetch` (in a thread) and shows it with :meth:`show`.

    After each load (or failure) the next one is armed with ``set_timer``: a sweep running in another
    process shows up within ``app.refresh_s``. A screen that is not on top skips its refreshes.
    """

    #: Seconds between refreshes (``None``: the app's ``refresh_s``).
    REFRESH_S: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refresh_timer: Timer | None = None
        self.loads = 0

    @property
    def fleet_app(self) -> FleetApp:
        return self.app  # type: ignore[return-value]

    @property
    def fleet(self) -> Any:
        return self.fleet_app.fleet

    def compose_chrome(self) -> Any:
        yield Header(show_clock=False)

    # -- loading --------------------------------------------------------------------------------------------

    def fetch(self) -> Any:  # runs in a worker thread
        return None

    def show(self, data: Any) -> None:  # runs on the event loop
        pass

    def on_mount(self) -> None:
        self.reload()

    def on_screen_resume(self) -> None:
        if self.loads:
            self.reload()

    def reload(self) -> None:
        """Load now (a newer load replaces one still running)."""
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
            self._refresh_timer = None
        self.run_worker(self.fetch, name="fetch", group="fetch", exclusive=True, thread=True, exit_on_error=False)

    def _arm(self) -> None:
        interval = self.REFRESH_S if self.REFRESH_S is not None else self.fleet_app.refresh_s
        if interval and interval > 0:
            if self._refresh_timer is not None:
                self._refresh_timer.stop()
            self._refresh_timer = self.set_timer(interval, self._tick)

    def _tick(self) -> None:
        self._refresh_timer = None
        try:
            on_top = self.app.screen is self
        except ScreenStackError:  # the app is closing
            return
        if on_top:
            self.reload()
        else:
            self._arm()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "fetch":
            if event.state == WorkerState.SUCCESS:
                self.loads += 1
                try:
                    self.show(worker.result)
                except Exception as exc:  # a bug in drawing: say so, keep the app
                    self.notify(describe_error(exc), title="could not draw", severity="error")
                finally:
                    self._arm()
                if self.loads == 1 and self.fleet_app.freeze_gc:
                    self.call_after_refresh(_freeze)
            elif event.state == WorkerState.ERROR:
                self.notify(describe_error(worker.error), title="could not load", severity="error")
                self._arm()
        elif worker.group == "action":
            if event.state == WorkerState.SUCCESS:
                lines = worker.result or []
                bad = [ln for ln in lines if "fail" in ln or "timeout" in ln or "unknown-state" in ln]
                self.notify("\n".join(lines[:12]) + (f"\n… {len(lines) - 12} more" if len(lines) > 12 else ""),
                            title=worker.description, severity="warning" if bad else "information", timeout=8)
                self.reload()
            elif event.state == WorkerState.ERROR:
                self.notify(describe_error(worker.error), title=f"{worker.description} failed", severity="error",
                            timeout=10)
                self.reload()
        elif worker.group == "prepare" and event.state == WorkerState.ERROR:
            self.notify(describe_error(worker.error), title="cannot prepare the action", severity="error")
        elif worker.group == "prepare" and event.state == WorkerState.SUCCESS:
            try:
                self._confirm(worker.result)
            except Exception as exc:
                self.notify(describe_error(exc), title="cannot confirm the action", severity="error")

    # -- actions --------------------------------------------------------------------------------------------

    def selected_hosts(self) -> list[str]:
        """The servers an action would apply to (marked rows, else the one under the cursor)."""
        return []

    def action_actions(self, kinds: tuple[str, ...] | None = None) -> None:
        hosts = self.selected_hosts()
        if not hosts:
            self.notify("select a server first", severity="warning")
            return
        self.app.push_screen(ActionMenu(hosts, kinds=kinds), lambda key: self.start_action(key, hosts))

    def start_action(self, key: str | None, hosts: list[str]) -> None:
        """Prepare ``key`` on ``hosts`` in a worker; the confirmation opens when it is ready."""
        if not key:
            return
        fleet, make = self.fleet, self.fleet_app.ops_fleet
        self.run_worker(lambda: actions.prepare(fleet, key, hosts, make_fleet=make), name="prepare", group="prepare",
                        exclusive=True, thread=True, exit_on_error=False)

    def _confirm(self, prepared: actions.Prepared) -> None:
        def go(options: dict[str, Any] | None) -> None:
            if options is None:
                return
            make = self.fleet_app.ops_fleet
            self.notify(f"{prepared.action.label}: started on {len(prepared.hosts)} target(s)", timeout=3)
            self.run_worker(lambda: actions.perform(make, prepared, **options), name="action", group="action",
                            description=prepared.action.label, thread=True, exit_on_error=False)

        self.app.push_screen(ConfirmAction(prepared), go)

    def action_quick(self, key: str) -> None:
        """A frequent action straight to its confirmation."""
        hosts = self.selected_hosts()
        if not hosts:
            self.notify("select a server first", severity="warning")
            return
        self.start_action(key, hosts)


ACTION_BINDINGS = [Binding("a", "actions", "Actions"),
                   Binding("C", "quick('power-cycle')", "Cycle", show=False),
                   Binding("X", "quick('quarantine')", "Quarantine", show=False)]

