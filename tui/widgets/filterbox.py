"""The filter box: an Input that says what it filters and reports, debounced, what was typed."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input


class FilterBox(Input):
    """An Input that posts :class:`FilterBox.Settled` once typing pauses for ``debounce_s``."""

    DEFAULT_CSS = """
    FilterBox { margin: 0 0; }
    """

    @dataclass
    class Settled(Message):
        """The filter text after typing paused (collapses with a newer one still queued)."""

        box: FilterBox
        value: str

        @property
        def control(self) -> FilterBox:
            return self.box

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, FilterBox.Settled) and message.box is self.box

    def __init__(self, *, placeholder: str = "", value: str = "", debounce_s: float = 0.15, id: str | None = None
                 ) -> None:
        super().__init__(value=value, placeholder=placeholder, id=id)
        self.debounce_s = debounce_s
        self._timer: Timer | None = None

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.input is not self:
            return
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(self.debounce_s, self._settle)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input is not self:
            return
        if self._timer is not None:
            self._timer.stop()
        self._settle()

    def _settle(self) -> None:
        self._timer = None
        self.post_message(self.Settled(self, self.value))
