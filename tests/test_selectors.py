"""The selector language: parsing, and SQL resolution equal to a plain reference on any fleet."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select

from fleet.errors import SelectorError
from inventory.models import STATES, Nic, Pod, Rack, Server, ServerTag, Site
from inventory.selectors import parse_selector

from .factory import Spec, build


def test_terms_with_different_keys_combine_with_and_same_key_with_or() -> None:
    sel = parse_selector("rack=R1 rack=R2 state=deployed")
    assert dict(sel.include) == {"rack": ("R1", "R2"), "state": ("deployed",)}
    assert parse_selector("rack=R1,R2 state=deployed") == sel


def test_plain_words_are_host_names_and_aliases_normalise() -> None:
    assert dict(parse_selector(["Web-1", "hostname=db-*"]).include) == {"host": ("web-1", "db-*")}


def test_mac_values_are_normalised() -> None:
    assert dict(parse_selector("mac=AA-BB-CC-DD-EE-FE").include) == {"mac": ("aa:bb:cc:dd:ee:fe",)}


@pytest.mark.parametrize("bad", [
    "colour=red", "state=flying", "state=dep*", "mac=zz:zz", "rack=", "host=a;b", "=x", "ip=300.1.1.1",
    "host=web$(reboot)", "rack=R1;R2", "tag={x}",
])
def test_bad_terms_are_refused_with_a_clear_error(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector([bad])


def _fleet(engine: Engine) -> None:
    build(engine, [
        Spec("web-1", rack="R12", state="deployed", tags=["gpu"], macs=["02:00:00:00:00:01"]),
        Spec("web-2", rack="R12", position=2, state="maintenance"),
        Spec("web-10", rack="R13", state="deployed", tags=["gpu", "ssd"]),
        Spec("db-1", site="lon1", pod="H2", rack="R12", state="ready", serial="SN-42"),
        Spec("web_x".replace("_", "-") + "y", site="lon1", pod=None, rack="R9", state="retired"),
    ])


@pytest.mark.parametrize(("selector", "expected"), [
    ("", ["db-1", "web-1", "web-10", "web-2", "web-xy"]),
    ("rack=R12", ["db-1", "web-1", "web-2"]),
    ("rack=r12 site=par1", ["web-1", "web-2"]),
    ("site=LON1", ["db-1", "web-xy"]),
    ("pod=C1 state=deployed", ["web-1", "web-10"]),
    ("host=web-*", ["web-1", "web-10", "web-2", "web-xy"]),
    ("web-?", ["web-1", "web-2"]),
    ("tag=gpu", ["web-1", "web-10"]),
    ("tag=gpu tag=ssd", ["web-1", "web-10"]),
    ("state!=retired host=web-*", ["web-1", "web-10", "web-2"]),
    ("mac=02:00:00:00:00:01", ["web-1"]),
    ("serial=SN-*", ["db-1"]),
    ("health=unknown rack=R13", ["web-10"]),
    ("host=web_1", []),  # '_' is literal, not a LIKE wildcard
])
def test_selectors_resolve_in_sql_on_sqlite_and_postgresql(any_engine: Engine, selector: str,
                                                            expected: list[str]) -> None:
    _fleet(any_engine)
    with any_engine.connect() as conn:
        got = sorted(conn.execute(parse_selector(selector).apply(select(Server.hostname))).scalars())
    assert got == expected


# -- property: SQL resolution equals a straightforward Python reference --------------------------------------

_hosts = st.from_regex(r"[a-c]{1,2}-[0-9]{1,2}", fullmatch=True)
_spec = st.builds(
    lambda h, site, rack, state, tags: Spec(h, site=site, pod="P" + site[-1], rack=rack, state=state, tags=tags),
    _hosts, st.sampled_from(["s1", "s2"]), st.sampled_from(["R1", "R2", "R3"]), st.sampled_from(STATES),
    st.lists(st.sampled_from(["gpu", "ssd", "edge"]), unique=True, max_size=2))
_fleets = st.lists(_spec, max_size=12, unique_by=lambda s: s.hostname)
_term = st.one_of(
    st.tuples(st.just("host"), st.sampled_from(["a-*", "*-1", "b-?", "c-12", "*", "a*"])),
    st.tuples(st.just("rack"), st.sampled_from(["R1", "R2", "r3", "R*"])),
    st.tuples(st.just("site"), st.sampled_from(["s1", "S2"])),
    st.tuples(st.just("pod"), st.sampled_from(["P1", "P2"])),
    st.tuples(st.just("state"), st.sampled_from(STATES)),
    st.tuples(st.just("tag"), st.sampled_from(["gpu", "ssd", "edge", "g*"])),
)
_terms = st.lists(st.tuples(_term, st.booleans()), max_size=4)


def _reference(specs: list[Spec], terms: list[tuple[tuple[str, str], bool]]) -> list[str]:
    include: dict[str, list[str]] = {}
    exclude: dict[str, list[str]] = {}
    for (key, value), negate in terms:
        (exclude if negate else include).setdefault(key, []).append(value)

    def field(spec: Spec, key: str) -> list[str]:
        return {"host": [spec.hostname], "rack": [spec.rack.lower()], "site": [spec.site.lower()],
                "pod": [(spec.pod or "").lower()], "state": [spec.state], "tag": spec.tags}[key]

    def hit(spec: Spec, key: str, values: list[str]) -> bool:
        fold = key in ("rack", "site", "pod")
        return any(fnmatch.fnmatchcase(f, v.lower() if fold else v) for f in field(spec, key) for v in values)

    return sorted(s.hostname for s in specs
                  if all(hit(s, k, vs) for k, vs in include.items())
                  and not any(hit(s, k, [v]) for k, vs in exclude.items() for v in vs))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=_fleets, terms=_terms)
def test_any_selector_matches_exactly_what_the_reference_matches(sqlite_engine: Engine, specs: list[Spec],
                                                                  terms: list) -> None:
    with sqlite_engine.begin() as conn:
        for table in (ServerTag, Nic, Server, Rack, Pod, Site):
            conn.execute(delete(table))
    build(sqlite_engine, specs)
    words = [f"{k}{'!=' if neg else '='}{v}" for (k, v), neg in terms]
    with sqlite_engine.connect() as conn:
        got = sorted(conn.execute(parse_selector(words).apply(select(Server.hostname))).scalars())
    assert got == _reference(specs, terms), words

