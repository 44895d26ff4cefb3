"""The lifecycle state machine: legal moves pass and are recorded; illegal ones are refused."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlmodel import Session

from fleet import Fleet
from fleet.errors import IllegalTransition, NotFound, ValidationError
from inventory.lifecycle import TRANSITIONS, allowed_moves, transition
from inventory.models import STATES, Audit, Server, StateChange

from .factory import Spec, build


def test_the_documented_path_is_legal_end_to_end(fleet: Fleet) -> None:
    build(fleet.engine, [Spec("web-1")])
    path = ["commissioning", "ready", "deploying", "deployed", "maintenance", "deployed", "decommissioning",
            "retired"]
    for state in path:
        assert fleet.set_state("web-1", state, reason=f"to {state}").state == state
    history = fleet.history("web-1")
    assert [h.to_state for h in history] == path
    assert [h.from_state for h in history] == ["new", *path[:-1]]
    assert all(h.actor == "tester" and h.reason == f"to {h.to_state}" for h in history)


def test_illegal_moves_are_refused_and_change_nothing(fleet: Fleet) -> None:
    build(fleet.engine, [Spec("web-1")])
    with pytest.raises(IllegalTransition) as err:
        fleet.set_state("web-1", "deployed", reason="skip ahead")
    assert "cannot move from new to deployed" in str(err.value)
    assert "commissioning" in str(err.value)  # it says what is allowed
    assert fleet.servers("web-1")[0].state == "new"
    assert fleet.history("web-1") == []


def test_every_state_but_retired_can_fail_or_be_quarantined() -> None:
    for state in STATES:
        moves = allowed_moves(state)
        if state == "retired":
            assert moves == []
        else:
            assert "failed" in moves or state == "failed"
            assert "quarantined" in moves or state == "quarantined"


def test_transition_table_names_only_real_states() -> None:
    for src, dests in TRANSITIONS.items():
        assert src in STATES
        assert dests <= set(STATES)


def test_a_reason_is_required(fleet: Fleet) -> None:
    build(fleet.engine, [Spec("web-1")])
    with pytest.raises(ValidationError):
        fleet.set_state("web-1", "commissioning", reason="  ")


def test_unknown_state_and_unknown_host_are_clear_errors(fleet: Fleet) -> None:
    build(fleet.engine, [Spec("web-1")])
    with pytest.raises(ValidationError, match="unknown state"):
        fleet.set_state("web-1", "exploded", reason="x")
    with pytest.raises(NotFound):
        fleet.set_state("web-404", "failed", reason="x")


def test_each_move_is_audited_with_who_and_why(fleet: Fleet) -> None:
    build(fleet.engine, [Spec("web-1")])
    fleet.set_state("web-1", "quarantined", reason="ECC storm")
    entry = fleet.audit(action="state")[0]
    assert (entry.actor, entry.targets, entry.result) == ("tester", ("web-1",), "ok")
    assert entry.detail == {"from": "new", "to": "quarantined", "reason": "ECC storm"}


def test_a_stale_copy_cannot_move_a_server_that_moved_meanwhile(tmp_path) -> None:
    from inventory.db import make_engine, upgrade

    engine = make_engine(str(tmp_path / "f.db"))
    upgrade(engine)
    build(engine, [Spec("web-1")])
    with Session(engine) as reader:  # someone reads the server...
        stale = reader.execute(select(Server)).scalar_one()
        reader.expunge(stale)
    with Session(engine) as s1:  # ...someone else moves it...
        transition(s1, s1.execute(select(Server)).scalar_one(), "commissioning", actor="one", reason="first")
        s1.commit()
    with Session(engine) as s2, pytest.raises(IllegalTransition, match="changed meanwhile"):
        transition(s2, stale, "quarantined", actor="two", reason="second")  # ...the stale move is refused
    with Session(engine) as s:
        assert s.execute(select(Server.state)).scalar_one() == "commissioning"
        assert s.execute(select(StateChange.actor)).scalars().all() == ["one"]
        assert len(s.execute(select(Audit)).all()) == 1
    engine.dispose()
