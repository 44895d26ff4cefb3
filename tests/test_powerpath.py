"""The power path queries (inventory/powerpath.py) on SQLite and PostgreSQL: what an element carries
through any number of hops, many elements at once, each server's whole path, a loop in bad data."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, insert, literal_column, select

from inventory import powerpath
from inventory.models import Outlet, Pdu, PowerFeed, Rack, Server, Site, Ups
from inventory.powerpath import carried, carried_hostnames, server_elements, server_paths

from .factory import Spec, build


def _topology(engine: Engine) -> dict[str, int]:
    """Rack R1: feeds A and B; rack UPS U1 on A behind PDU P1; PDU P2 straight on B; UPS U2 on B behind
    PDU P3; a per-server UPS U3 on A. s1: P1 + P2; s2: U1's outlet directly; s3: P1 + its own U3;
    s4: no outlet (hangs on the rack's feeds); s5: two PSUs on two UPSes (P1/U1 and P3/U2).
    Rack R2: s6 on nothing at all."""
    build(engine, [Spec(f"s{i}", rack="R1", position=i) for i in range(1, 6)] + [Spec("s6", rack="R2")])
    with engine.begin() as conn:
        ids: dict[str, int] = dict(conn.execute(select(Server.hostname, Server.id)).all())
        site = conn.execute(select(Site.id)).scalar_one()
        rack = conn.execute(select(Rack.id).where(Rack.name == "R1")).scalar_one()

        def feed(name: str) -> int:
            return conn.execute(insert(PowerFeed).values(site_id=site, rack_id=rack, name=name, capacity_w=5000,
                                                         phases=1).returning(PowerFeed.id)).scalar_one()

        def ups(name: str, feed_id: int, kind: str = "rack") -> int:
            return conn.execute(insert(Ups).values(name=name, site_id=site, rack_id=rack, kind=kind,
                                                   profile="apc-smart-ups", protocol="snmp", host="127.0.0.1",
                                                   port=161, nut_name="", feed_id=feed_id, description="")
                                .returning(Ups.id)).scalar_one()

        def pdu(name: str, **up: Any) -> int:
            return conn.execute(insert(Pdu).values(name=name, site_id=site, rack_id=rack, profile="generic-pdu",
                                                   host="127.0.0.2", port=161, description="", **up)
                                .returning(Pdu.id)).scalar_one()

        ids["A"], ids["B"] = feed("A"), feed("B")
        ids["U1"] = ups("U1", ids["A"])
        ids["U2"] = ups("U2", ids["B"])
        ids["U3"] = ups("U3", ids["A"], kind="server")
        ids["P1"] = pdu("P1", ups_id=ids["U1"])
        ids["P2"] = pdu("P2", feed_id=ids["B"])
        ids["P3"] = pdu("P3", ups_id=ids["U2"])
        for parent, number, host, psu in (("P1", 1, "s1", 1), ("P2", 1, "s1", 2), ("U1", 3, "s2", 1),
                                          ("P1", 2, "s3", 1), ("U3", 0, "s3", 2), ("P1", 3, "s5", 1),
                                          ("P3", 1, "s5", 2)):
            key = "ups_id" if parent.startswith("U") else "pdu_id"
            conn.execute(insert(Outlet).values(**{key: ids[parent]}, number=number, name="", server_id=ids[host],
                                               psu=psu))
    return ids


def test_a_rack_ups_carries_the_servers_behind_its_pdu_and_on_its_own_outlets(any_engine: Engine) -> None:
    ids = _topology(any_engine)
    with any_engine.connect() as conn:
        assert carried_hostnames(conn, {"ups": [ids["U1"]]}) == {("ups", ids["U1"]): ("s1", "s2", "s3", "s5")}
        assert carried_hostnames(conn, {"pdu": [ids["P2"]]}) == {("pdu", ids["P2"]): ("s1",)}


def test_every_element_at_once_through_every_hop_with_the_rack_feed_fallback(any_engine: Engine) -> None:
    ids = _topology(any_engine)
    with any_engine.connect() as conn:
        everything = carried_hostnames(conn, {"ups": None, "pdu": None, "feed": None})
        some = carried(conn, {"ups": [ids["U1"], ids["U3"]], "feed": [ids["B"]]})
    assert everything == {
        ("ups", ids["U1"]): ("s1", "s2", "s3", "s5"), ("ups", ids["U2"]): ("s5",), ("ups", ids["U3"]): ("s3",),
        ("pdu", ids["P1"]): ("s1", "s3", "s5"), ("pdu", ids["P2"]): ("s1",), ("pdu", ids["P3"]): ("s5",),
        # feed A: U1's servers, U3's, and s4 (no outlet: its rack's feeds); feed B: P2, U2 -> P3, s4
        ("feed", ids["A"]): ("s1", "s2", "s3", "s4", "s5"), ("feed", ids["B"]): ("s1", "s4", "s5"),
    }
    assert some == {("ups", ids["U1"]): {ids[h] for h in ("s1", "s2", "s3", "s5")}, ("ups", ids["U3"]): {ids["s3"]},
                    ("feed", ids["B"]): {ids[h] for h in ("s1", "s4", "s5")}}


def test_a_server_with_two_psus_on_two_upses_has_both_whole_paths(any_engine: Engine) -> None:
    ids = _topology(any_engine)
    with any_engine.connect() as conn:
        paths = server_paths(conn, [ids["s5"], ids["s2"], ids["s4"]])
    assert set(paths) == {ids["s5"], ids["s2"]}  # s4 has no outlet
    chain = [(p.psu, p.outlet, [(h.kind, h.name, h.depth) for h in p.hops]) for p in paths[ids["s5"]]]
    assert chain == [(1, 3, [("pdu", "P1", 0), ("ups", "U1", 1), ("feed", "A", 2)]),
                     (2, 1, [("pdu", "P3", 0), ("ups", "U2", 1), ("feed", "B", 2)])]
    assert [(h.kind, h.name) for h in paths[ids["s2"]][0].hops] == [("ups", "U1"), ("feed", "A")]
    assert paths[ids["s5"]][0].to_row() == {"psu": 1, "outlet": 3, "pdu": "P1", "ups": "U1", "ups_kind": "rack",
                                            "feed": "A"}


def test_what_a_server_hangs_below_is_exactly_what_carries_it(any_engine: Engine) -> None:
    """server_elements and carried are one relation read both ways (the budget and the sweep agree)."""
    ids = _topology(any_engine)
    servers = [ids[f"s{i}"] for i in range(1, 7)]
    with any_engine.connect() as conn:
        above = server_elements(conn, servers)
        below = carried(conn, {"ups": None, "pdu": None, "feed": None})
    inverse = {sid: {el for el, carried_ids in below.items() if sid in carried_ids} for sid in servers}
    assert {sid: {(h.kind, h.id) for h in hops} for sid, hops in above.items()} == \
        {sid: els for sid, els in inverse.items() if els}
    assert {(h.kind, h.name) for h in above[ids["s4"]]} == {("feed", "A"), ("feed", "B")}
    assert ids["s6"] not in above


def test_many_elements_are_asked_for_in_chunks(any_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _topology(any_engine)
    monkeypatch.setattr(powerpath, "_CHUNK", 1)
    with any_engine.connect() as conn:
        got = carried(conn, {"ups": [ids["U1"], ids["U2"], ids["U3"]]})
        paths = server_paths(conn, [ids["s1"], ids["s5"]])
    assert got == {("ups", ids["U1"]): {ids[h] for h in ("s1", "s2", "s3", "s5")}, ("ups", ids["U2"]): {ids["s5"]},
                   ("ups", ids["U3"]): {ids["s3"]}}
    assert [len(paths[ids[h]]) for h in ("s1", "s5")] == [2, 2]


def test_a_loop_in_bad_data_ends_and_reports_each_element_once(any_engine: Engine,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema has no hop that can loop today (PDU -> UPS -> feed); a PDU-to-PDU hop would. Given
    one that loops (P1 -> P2 -> P1), both walks stop at the depth bound instead of running for ever."""
    ids = _topology(any_engine)
    real = powerpath._hops

    def looping() -> list[Any]:
        def hop(a: int, b: int) -> Any:
            return select(literal_column("2").label("child_kind"), literal_column(str(a)).label("child_id"),
                          literal_column("2").label("parent_kind"), literal_column(str(b)).label("parent_id"))

        return [*real(), hop(ids["P1"], ids["P2"]), hop(ids["P2"], ids["P1"])]

    monkeypatch.setattr(powerpath, "_hops", looping)
    with any_engine.connect() as conn:
        paths = server_paths(conn, [ids["s1"]])
        p1 = carried_hostnames(conn, {"pdu": [ids["P1"]]})
    first = [(h.kind, h.name, h.depth) for h in paths[ids["s1"]][0].hops]  # s1's PSU 1 is on P1
    assert first == [("pdu", "P1", 0), ("ups", "U1", 1), ("pdu", "P2", 1), ("feed", "A", 2), ("feed", "B", 2)]
    assert p1 == {("pdu", ids["P1"]): ("s1", "s3", "s5")}  # P2's server s1 is P1's already
