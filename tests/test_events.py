"""One vocabulary of event kinds: what the product emits is what fleet.model.events names, both ways.

Events are opened from two emitters: the sweep's findings (``fleet.ops.events.Finding``, which SSH
facts use too) and the drift of SSH facts (``fleet.model.facts.Drift``); every event is written by
``fleet.ops.events.record_events``. The test reads the product's source (the AST) and resolves the kind
given at each emit site: it must be a constant of ``fleet.model.events`` (or a condition between
such constants, or a kind passed through from a drift or a finding), never a spelled-out string;
and every kind of the vocabulary must be emitted somewhere, with the severity the vocabulary gives.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

from fleet.model import events
from fleet.model.events import DRIFT_KINDS, KINDS, SEVERITIES, UPS_KINDS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fleet", "inventory", "pxe", "tui")
#: The emitters: class → (position of the target kind, of the kind, of the severity; None: not an argument).
EMITTERS = {"fleet.ops.events.Finding": (0, 3, 4), "fleet.model.facts.Drift": (None, 0, None)}
KEYWORDS = ("target_kind", "kind", "severity")


class Site:
    """One emit site: where, the kinds it may emit (None: passed through), its target kind and severity."""

    def __init__(self, where: str, kinds: set[str] | None, about: str | None, severity: str | None) -> None:
        self.where, self.kinds, self.about, self.severity = where, kinds, about, severity


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _bindings(tree: ast.Module, module: str) -> tuple[dict[str, str], dict[str, str]]:
    """Names bound to an emitter class (name → class) and to a constant of fleet.model.events (name → constant)."""
    emitters: dict[str, str] = {}
    constants: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and f"{module}.{node.name}" in EMITTERS:
            emitters[node.name] = f"{module}.{node.name}"
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in EMITTERS:
                    emitters[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                if node.module == "fleet.model.events":
                    constants[alias.asname or alias.name] = alias.name
    return emitters, constants


def _kinds(expr: ast.expr, constants: dict[str, str], scope: ast.AST, where: str, problems: list[str]
           ) -> set[str] | None:
    """The kinds ``expr`` can be, or None when it passes on a kind made elsewhere (``d.kind``)."""
    if isinstance(expr, ast.IfExp):
        a, b = (_kinds(e, constants, scope, where, problems) for e in (expr.body, expr.orelse))
        return None if a is None or b is None else a | b
    if isinstance(expr, ast.Attribute):
        if isinstance(expr.value, ast.Name) and constants.get(expr.value.id) == "events":  # events.X
            return {getattr(events, expr.attr)}
        return None
    if isinstance(expr, ast.Name):
        if expr.id in constants:
            value = getattr(events, constants[expr.id])
            if not isinstance(value, str):
                problems.append(f"{where}: {expr.id} is not an event kind of fleet.model.events")
                return set()
            return {value}
        out: set[str] = set()
        bound = False
        for node in ast.walk(scope):  # a local variable: what it is assigned, or what a loop binds it to
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == expr.id
                                                    for t in node.targets):
                bound = True
                got = _kinds(node.value, constants, scope, where, problems)
                if got is None:
                    return None
                out |= got
            elif isinstance(node, ast.For | ast.comprehension) and expr.id in {
                    n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}:
                bound = True
                if isinstance(node.iter, ast.List | ast.Tuple | ast.Set):
                    problems.append(f"{where}: the kind comes from a literal list; name it in fleet.model.events")
                    return set()
                return None
        if bound:
            return out
        return None  # a parameter: passed through
    problems.append(f"{where}: the kind is spelled out ({ast.unparse(expr)}); use a constant of fleet.model.events")
    return set()


def _argument(call: ast.Call, position: int | None, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[position] if position is not None and position < len(call.args) else None


def emit_sites(files: dict[str, str]) -> tuple[list[Site], list[str]]:
    """The emit sites of ``files`` (module name → source), and what is wrong with them."""
    sites: list[Site] = []
    problems: list[str] = []
    for module, source in sorted(files.items()):
        tree = ast.parse(source)
        emitters, constants = _bindings(tree, module)
        for scope in ast.walk(tree):
            if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for call in ast.walk(scope):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in emitters):
                    continue
                where = f"{module}:{call.lineno}"
                positions = EMITTERS[emitters[call.func.id]]
                about, kind, severity = (_argument(call, p, k) for p, k in zip(positions, KEYWORDS, strict=True))
                if kind is None:
                    problems.append(f"{where}: no kind")
                    continue
                sites.append(Site(where, _kinds(kind, constants, scope, where, problems),
                                  about.value if isinstance(about, ast.Constant) else None,
                                  severity.value if isinstance(severity, ast.Constant) else None))
        for node in ast.walk(tree):  # events are written in one place, from findings
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "insert" and \
                    node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "Event" and \
                    module != "fleet.ops.events":
                problems.append(f"{module}:{node.lineno}: writes events itself; emit findings to record_events")
    return sites, problems


def product_sources() -> dict[str, str]:
    return {_module_name(p, ROOT): p.read_text(encoding="utf-8")
            for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def test_every_emitted_kind_is_in_the_vocabulary_with_its_severity_and_target() -> None:
    sites, problems = emit_sites(product_sources())
    assert sites, "no emit site found: has an emitter moved? (EMITTERS)"
    for site in sites:
        for kind in site.kinds or ():
            if kind not in KINDS:
                problems.append(f"{site.where}: {kind!r} is not in fleet.model.events.KINDS")
                continue
            if site.severity is not None and site.severity != KINDS[kind].severity:
                problems.append(f"{site.where}: {kind} emitted as {site.severity}, the vocabulary says "
                                f"{KINDS[kind].severity}")
            if site.about is not None and site.about != KINDS[kind].about:
                problems.append(f"{site.where}: {kind} emitted about a {site.about}, the vocabulary says "
                                f"{KINDS[kind].about}")
    assert problems == []


def test_every_kind_of_the_vocabulary_is_emitted_somewhere() -> None:
    sites, _ = emit_sites(product_sources())
    emitted = set().union(*(s.kinds or set() for s in sites))
    assert set(KINDS) - emitted == set(), "kinds nothing emits: drop them from fleet.model.events"


@pytest.mark.parametrize(("source", "words"), [
    ('from fleet.ops.events import Finding\ndef f(h):\n'
     '    return Finding("server", 1, h, "psu-failed", "critical", "")\n', "spelled out ('psu-failed')"),
    ('from fleet.ops.events import Finding\ndef f(h, x):\n    k = "psu-failed" if x else "psu-ok"\n'
     '    return Finding("server", 1, h, k, "critical", "")\n', "spelled out ('psu-failed')"),
    ('from fleet.model.facts import Drift\ndef f():\n    for k in ("psu-failed",):\n        yield Drift(k, "", "")\n',
     "literal list"),
    ('from sqlalchemy import insert\nfrom inventory.models import Event\ndef f(c):\n'
     '    c.execute(insert(Event).values(kind="psu-failed"))\n', "writes events itself"),
])
def test_the_scan_names_a_kind_spelled_out_at_an_emit_site(source: str, words: str) -> None:
    """The check above can fail: a kind written as a string, not a vocabulary name, is reported with its line."""
    _, problems = emit_sites({"fleet.ops.example": source})
    assert problems and all(p.startswith("fleet.ops.example:") for p in problems), problems
    assert words in problems[0], problems


def test_the_scan_resolves_vocabulary_names_and_their_values() -> None:
    source = ("from fleet.model.events import BMC_AUTH_FAILED, BMC_UNREACHABLE\nfrom fleet.ops.events import Finding\n"
              "def f(h, auth):\n    kind = BMC_AUTH_FAILED if auth else BMC_UNREACHABLE\n"
              "    return Finding('server', 1, h, kind, 'warning', '')\n")
    sites, problems = emit_sites({"fleet.ops.example": source})
    assert problems == []
    assert [(s.kinds, s.about, s.severity) for s in sites] == [
        ({"bmc-auth-failed", "bmc-unreachable"}, "server", "warning")]


def test_the_vocabulary_is_consistent() -> None:
    for name, kind in KINDS.items():
        assert kind.name == name and kind.severity in SEVERITIES and kind.about in ("server", "ups")
        assert kind.description and getattr(events, name.upper().replace("-", "_")) == name
    assert {k for k in KINDS if k.startswith("ups-")} == UPS_KINDS


def test_the_drift_kinds_of_ssh_facts_are_the_vocabulary_s() -> None:
    from fleet.model.facts import DriftKind

    assert set(get_args(DriftKind)) == DRIFT_KINDS


def test_the_docs_list_exactly_the_vocabulary() -> None:
    """docs/remediation.md's table of event kinds is the vocabulary: kind, target, source, severity, reading."""
    text = (ROOT / "docs" / "remediation.md").read_text(encoding="utf-8")
    table = text[text.index("\nEvent kinds:"):].split("\n\n")[1]
    rows = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert [tuple(r[:5]) for r in rows] == [
        (k.name, "UPS" if k.about == "ups" else "server", "SSH facts" if k.source == "facts" else "sweep",
         k.severity, k.reading or "") for k in KINDS.values()]
