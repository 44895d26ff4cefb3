"""Modals: pick an action, then confirm it seeing exactly what it touches, the verdict and the dry run."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, DataTable, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from ..actions import ACTIONS, Prepared


class ActionMenu(ModalScreen[str | None]):
    """Choose what to do with the selected servers. Returns the action's key, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, hosts: list[str], *, kinds: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.hosts = hosts
        self.kinds = kinds

    def compose(self) -> ComposeResult:
        with Vertical(id="menu", classes="modal"):
            what = self.hosts[0] if len(self.hosts) == 1 else f"{len(self.hosts)} servers"
            yield Label(f"Action on {what}" if self.hosts else "Action", classes="modal-title")
            yield OptionList(*(Option(a.label + ("  [destructive]" if a.destructive else ""), id=a.key)
                               for a in ACTIONS if self.kinds is None or a.kind in self.kinds), id="actions")
            yield Static("enter choose · esc cancel", classes="hint")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class ConfirmAction(ModalScreen[dict[str, Any] | None]):
    """The confirmation: servers touched, blast-radius verdict, dry-run plan. Returns options, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel"), Binding("y", "confirm", "Confirm"),
                Binding("f", "toggle_force", "Force", show=False)]

    def __init__(self, prepared: Prepared) -> None:
        super().__init__()
        self.prepared = prepared

    def compose(self) -> ComposeResult:
        p = self.prepared
        with Vertical(id="confirm", classes="modal"):
            what = "the policies' plan" if p.action.kind == "remediate" else f"{len(p.hosts)} server(s)"
            yield Label(f"{p.action.label} — {what}", classes="modal-title")
            with VerticalScroll(id="confirm-body"):
                yield Static(Text(f"Touches ({len(p.hosts)}): ", style="bold") + Text(", ".join(p.hosts) or "nothing"),
                             id="touches")
                if p.verdict:
                    text = Text("Blast radius: EXCEEDS the limits\n", style="bold red")
                    for reason in p.verdict:
                        text.append(f"  • {reason}\n", style="red")
                    text.append("Tick 'force' (f) to act past them.", style="red")
                else:
                    text = Text("Blast radius: within the limits", style="bold green")
                yield Static(text, id="verdict")
                if p.plan_columns:
                    title = "Dry run: the plan" if p.action.destructive else "What it would do"
                    yield Label(title, classes="section")
                    yield DataTable(id="plan", show_cursor=False, zebra_stripes=True)
                for note in p.notes:
                    yield Static(Text(note, style="dim"), classes="note")
                if p.action.kind == "quarantine":
                    yield Input(placeholder="reason (required)", id="reason")
            if p.verdict:
                yield Checkbox("force past the blast-radius limits", id="force")
            with Horizontal(id="buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button("Confirm (y)", id="ok", variant="error" if p.action.destructive else "primary",
                             disabled=bool(p.verdict) or (not p.hosts and p.action.kind != "remediate")
                             or (p.action.kind == "remediate" and not p.plan))

    def on_mount(self) -> None:
        p = self.prepared
        if p.plan_columns:
            table = self.query_one("#plan", DataTable)
            table.add_columns(*p.plan_columns)
            for row in p.plan:
                table.add_rows([row])
        if p.action.kind == "quarantine":
            self.query_one("#reason", Input).focus()
        else:
            self.query_one("#cancel", Button).focus()

    @on(Checkbox.Changed, "#force")
    def _force(self, event: Checkbox.Changed) -> None:
        self.query_one("#ok", Button).disabled = not event.value

    def action_toggle_force(self) -> None:
        if self.prepared.verdict:
            box = self.query_one("#force", Checkbox)
            box.value = not box.value

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        self.action_confirm()

    @on(Input.Submitted, "#reason")
    def _reason_done(self) -> None:
        self.action_confirm()

    def action_confirm(self) -> None:
        if self.query_one("#ok", Button).disabled:
            self.app.bell()
            return
        reason = ""
        if self.prepared.action.kind == "quarantine":
            reason = self.query_one("#reason", Input).value.strip()
            if not reason:
                self.notify("give a reason for the quarantine", severity="warning")
                return
        force = bool(self.prepared.verdict) and self.query_one("#force", Checkbox).value
        self.dismiss({"force": force, "reason": reason})
