"""Jobs: sweeps, remediation, power waves, imaging (per wave and server) and decommissioning, with progress."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static

from ..widgets.keybar import KeyBar
from ..widgets.render import fmt_ts, progress
from ..widgets.windowtable import WindowTable
from .base import FleetScreen

_STATUS_STYLE = {"running": "bold cyan", "done": "green", "partial": "yellow", "failed": "bold red",
                 "interrupted": "bold magenta", "cancelled": "dim", "pending": "dim"}


class JobsScreen(FleetScreen):
    """Key 6."""

    TITLE = "Jobs"
    REFRESH_S = 1.0
    BINDINGS = [Binding("r", "reload", "Refresh")]

    def compose(self) -> ComposeResult:
        yield from self.compose_chrome()
        with Vertical():
            yield Static("", id="status")
            yield WindowTable("id", "kind", "selector", "status", "progress", "done", "failed", "total", "actor",
                              "started", "finished", id="jobs")
            yield Static("", id="job-detail", classes="panel")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#jobs", WindowTable).focus()
        super().on_mount()

    def fetch(self) -> list[Any]:
        return self.fleet.jobs(limit=100)

    def show(self, data: Any) -> None:
        self.rows = {str(j.id): j for j in data}
        cells = []
        for j in data:
            frac = (j.done + j.failed) / j.total if j.total else (1.0 if j.status != "running" else None)
            colour = _STATUS_STYLE.get(j.status, "cyan")
            cells.append((str(j.id), j.kind, j.selector or "all", Text(j.status, style=colour),
                          progress(frac, colour.replace("bold ", ""), 20), str(j.done),
                          Text(str(j.failed), style="bold red" if j.failed else ""),
                          str(j.total), j.actor, fmt_ts(j.started_at), fmt_ts(j.finished_at)))
        self.query_one("#jobs", WindowTable).set_rows(cells, [str(j.id) for j in data])
        running = sum(1 for j in data if j.status == "running")
        self.query_one("#status", Static).update(
            Text(f"{len(data)} recent jobs", style="bold") + Text(f" · {running} running" if running else "",
                                                               style="bold cyan"))
        self._detail()

    @on(WindowTable.RowHighlighted, "#jobs")
    def _highlighted(self, event: WindowTable.RowHighlighted) -> None:
        self._detail()

    def _detail(self) -> None:
        table = self.query_one("#jobs", WindowTable)
        if not table.row_count or not getattr(self, "rows", None):
            self.query_one("#job-detail", Static).update(Text("no jobs yet", style="dim"))
            return
        job = self.rows.get(table.cursor_key or "")
        if job is None:
            return
        text = Text(f"job {job.id} ({job.kind})\n", style="bold")
        if job.kind == "image" and job.params.get("waves"):
            text.append_text(_image_detail(job))
        elif job.kind == "decommission" and job.params.get("servers"):
            text.append_text(_decommission_detail(job))
        else:
            text.append(f"params: {json.dumps(job.params, default=str)[:300]}\n")
            text.append(f"result: {json.dumps(job.result, default=str)[:600]}")
        self.query_one("#job-detail", Static).update(text)

    def action_reload(self) -> None:
        self.reload()


_STEP_STYLE = {"deployed": "green", "failed": "bold red", "pending": "dim", "booting": "cyan", "leased": "cyan",
               "fetched": "cyan", "installing": "bold cyan"}


def _image_detail(job: Any) -> Text:
    """Per wave a progress bar; per server its step and the evidence so far (or why it failed)."""
    servers = job.params.get("servers", {})
    options = job.params.get("options", {})
    text = Text(f"{options.get('os', '?')} · tree {options.get('root', '?')}", style="dim")
    if job.result.get("stopped"):
        text.append(f"\nstopped: {job.result['stopped']}", style="bold red")
    for n, wave in enumerate(job.params.get("waves", [])):
        done = sum(1 for h in wave if servers.get(h, {}).get("step") == "deployed")
        failed = sum(1 for h in wave if servers.get(h, {}).get("step") == "failed")
        text.append(f"\n{'canary' if n == 0 and options.get('canary') else f'wave {n + 1}':>8} ", style="bold")
        text.append_text(progress((done + failed) / len(wave) if wave else 1.0, "red" if failed else "green", 16))
        text.append(f" {done}/{len(wave)} deployed" + (f", {failed} failed" if failed else ""))
        for h in wave:
            entry = servers.get(h, {})
            step = entry.get("step", "?")
            text.append(f"\n    {h} ", style="")
            text.append(step, style=_STEP_STYLE.get(step, ""))
            if entry.get("reason"):
                text.append(f"  {entry['reason']}", style="red" if step == "failed" else "dim")
            else:
                evidence = entry.get("evidence", {})
                shown = [f"{k}: {evidence[k]}" for k in ("lease", "fetch", "late") if k in evidence]
                if shown:
                    text.append("  " + " · ".join(shown), style="dim")
    return text


def _decommission_detail(job: Any) -> Text:
    text = Text(f"finish: {job.params.get('finish', 'retired')} · method: {job.params.get('method', 'auto')}",
                style="dim")
    for host, entry in sorted(job.params.get("servers", {}).items()):
        state = entry.get("state", "?")
        text.append(f"\n  {host} ", style="")
        text.append(state, style="green" if state in ("retired", "rma") else "yellow")
        if entry.get("disks"):
            text.append("  " + "; ".join(entry["disks"]), style="dim")
        if entry.get("reason"):
            text.append(f"  {entry['reason']}", style="red")
    return text
