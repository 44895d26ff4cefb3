"""The server lifecycle: one table of legal moves and one function that makes them.

    new → commissioning → ready → deploying → deployed ⇄ maintenance
    any (but retired) → failed | quarantined
    ready | deployed | maintenance | failed | quarantined → decommissioning → retired | rma

Every move is recorded in ``state_changes`` (from, to, who, why, when) and in the audit log.
"""

from __future__ import annotations

from sqlalchemy import insert, update
from sqlmodel import Session

from fleet.errors import IllegalTransition, ValidationError

from .models import STATES, Audit, Server, StateChange, utcnow
from .validate import check_free_text

__all__ = ["TRANSITIONS", "allowed_moves", "transition"]

_ANY_TO = ("failed", "quarantined")

#: Legal moves, besides ``failed``/``quarantined``, which any state but ``retired`` may go to.
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"commissioning", "decommissioning"}),
    "commissioning": frozenset({"ready", "new"}),
    "ready": frozenset({"deploying", "commissioning", "maintenance", "decommissioning"}),
    "deploying": frozenset({"deployed", "ready"}),
    "deployed": frozenset({"maintenance", "deploying", "decommissioning"}),
    "maintenance": frozenset({"deployed", "ready", "commissioning", "deploying", "decommissioning"}),
    "failed": frozenset({"commissioning", "maintenance", "decommissioning", "rma"}),
    "quarantined": frozenset({"commissioning", "maintenance", "ready", "deployed", "decommissioning", "rma"}),
    "decommissioning": frozenset({"retired", "rma"}),
    "rma": frozenset({"commissioning", "retired"}),
    "retired": frozenset(),
}
assert set(TRANSITIONS) == set(STATES)


def allowed_moves(state: str) -> list[str]:
    """The states a server in ``state`` may move to, sorted."""
    moves = set(TRANSITIONS.get(state, ()))
    if state != "retired":
        moves.update(s for s in _ANY_TO if s != state)
    return sorted(moves)


def transition(session: Session, server: Server, to_state: str, *, actor: str, reason: str) -> None:
    """Move ``server`` to ``to_state``, or raise IllegalTransition. Records who, why and when.

    The caller commits. The update is conditional on the state read, so two concurrent movers
    cannot both succeed from the same starting state.
    """
    if to_state not in STATES:
        raise ValidationError(f"unknown state {to_state!r}; states: {', '.join(STATES)}", field="state",
                              value=to_state)
    reason = check_free_text(reason, "reason", 256)
    if not reason:
        raise ValidationError("a reason is required for a lifecycle move", field="reason")
    from_state = server.state
    if to_state not in allowed_moves(from_state):
        raise IllegalTransition(server.hostname, from_state, to_state, allowed_moves(from_state))
    now = utcnow()
    result = session.execute(
        update(Server)
        .where(Server.id == server.id, Server.state == from_state)
        .values(state=to_state, state_reason=reason, state_changed_at=now, updated_at=now)
    )
    if result.rowcount != 1:
        raise IllegalTransition(server.hostname, from_state + " (changed meanwhile)", to_state, [])
    session.execute(insert(StateChange).values(server_id=server.id, ts=now, from_state=from_state,
                                               to_state=to_state, actor=actor, reason=reason))
    session.execute(insert(Audit).values(ts=now, actor=actor, action="state", targets=[server.hostname],
                                         target_count=1, result="ok",
                                         detail={"from": from_state, "to": to_state, "reason": reason}))
    server.state, server.state_reason, server.state_changed_at = to_state, reason, now
