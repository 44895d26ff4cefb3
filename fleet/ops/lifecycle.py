"""Lifecycle moves of one server, audited in the inventory's state history (who, why, when).

The state machine itself (which moves are legal) is :mod:`inventory.lifecycle`; these are the moves as
an operation: :func:`set_state` for people (refuses illegal moves), :func:`move_to` for workflows that
resume (a server already there is not moved twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet.core.targets import server_record, servers
from fleet.model.views import ServerRow
from inventory.lifecycle import allowed_moves, transition
from inventory.validate import visible

if TYPE_CHECKING:
    from fleet.core.context import Context

__all__ = ["allowed_states", "move_to", "set_state"]


def set_state(ctx: Context, hostname: str, state: str, *, reason: str) -> ServerRow:
    """Move one server through its lifecycle (refuses illegal moves; records who/why/when)."""
    with ctx.write() as s:
        server = server_record(s, hostname)
        transition(s, server, state.strip().lower(), actor=ctx.actor, reason=reason)
    return servers(ctx, f"host={server.hostname}")[0]


def move_to(ctx: Context, hostname: str, state: str, *, reason: str) -> bool:
    """Move a server to ``state`` unless it is there already (workflows that resume); True if moved."""
    with ctx.write() as s:
        server = server_record(s, hostname)
        if server.state == state:
            return False
        # Workflows' reasons may quote device text: shown escaped, never refused mid-workflow.
        transition(s, server, state, actor=ctx.actor, reason=visible(reason)[:256])
    return True


def allowed_states(ctx: Context, hostname: str) -> list[str]:
    """The states ``hostname`` may move to from where it is."""
    with ctx.read() as s:
        return allowed_moves(server_record(s, hostname).state)
