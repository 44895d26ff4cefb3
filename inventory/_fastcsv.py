"""The fast path of the CSV reader, for the bulk import of well-formed files.

:func:`inventory.importer.read_csv` reads a set of CSV files into records; at 100,000 servers most
of its time went into the generic machinery around the validators: a :class:`SourceMap` per row,
a dict walk per record, location lookups, and every file held in memory several times over. This
module builds the very same records column by column instead: each file's header is turned once
into a list of (cell index, attribute, converter), and each row, as it is parsed, runs only those
converters, with the results of repeated values (site, rack, profile, credential, state, tags...)
remembered per column, and makes the (frozen) records through :func:`inventory._twin.maker`.

The validators are the same ones (``inventory.records.spec._SPECS``), and so are the multi-field checks
(each kind's ``finish``) and the record classes. What this path does not do is word errors: on
anything it does not handle (a file of mixed kinds, a duplicate name, a missing owner) and on
any error at all, it raises :class:`Fallback`, and the generic reader reads the files again and
reports the error exactly as it always has (same message, field and ``file:line``). So the fast
path only ever accepts what the generic reader accepts, and makes equal records (``loc``
included); it never decides what is an error.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from fleet.errors import ValidationError

from ._twin import maker
from .fileformat import CSV_COLUMNS, CSV_STEMS, csv_order
from .records import Record
from .records.spec import _SPECS

__all__ = ["Fallback", "read_csv"]

# Per column, at most this many distinct values are remembered; and a column that shows, over its
# first rows, that its values do not repeat (host names, MACs, serials) is not looked up at all.
_CACHE_LIMIT = 4096
_PROBE_ROWS = 2048
_MISS = object()

# A step run on each row's values after its cells are converted: (values, cells) -> None.
Extra = Callable[[dict[str, Any], list[str]], None]


class Fallback(Exception):
    """The fast path does not take these files: read them with the generic reader."""


def read_csv(paths: Sequence[Path]) -> list[Record]:
    """Records equal to the generic reader's, or :class:`Fallback` (never a ValidationError)."""
    files: dict[str, list[_File]] = {kind: [] for kind in CSV_COLUMNS}
    try:
        for path in sorted(paths, key=csv_order):
            kind = CSV_STEMS.get(path.stem.lower())
            if kind is None:
                raise Fallback("a file of mixed kinds")
            f = _File(path, CSV_COLUMNS[kind])
            if f.header is not None:
                files[kind].append(f)
            else:
                f.close()
        return _read(paths, files)
    except (ValidationError, csv.Error, UnicodeDecodeError) as exc:
        raise Fallback(str(exc)) from exc
    finally:
        for opened in files.values():
            for f in opened:
                f.close()


class _File:
    """One CSV file of one kind: its header, then its data rows as they are parsed."""

    def __init__(self, path: Path, allowed: Sequence[str]) -> None:
        self.file = str(path)
        # Text mode with universal newlines, as Path.read_text() in the generic reader: the
        # parser sees the same characters, and counts the same lines.
        self._fh: TextIO = open(path, encoding="utf-8-sig")  # noqa: SIM115 - closed by read_csv
        self._reader = csv.reader(self._fh, strict=True)
        self.header: list[str] | None = None
        try:
            header = next(self._reader, None)
            if header is not None:
                self.header = [h.strip().lower() for h in header]
                if any(h not in allowed for h in self.header) or len(set(self.header)) != len(self.header):
                    raise Fallback("a header the generic reader refuses")
        except BaseException:
            self._fh.close()
            raise

    def close(self) -> None:
        self._fh.close()

    def index(self, column: str) -> int | None:
        assert self.header is not None
        return self.header.index(column) if column in self.header else None

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """``(line, cells)`` of each data row, skipping blank and comment rows as the generic reader does."""
        assert self.header is not None
        reader = self._reader
        width = len(self.header)
        line = reader.line_num + 1
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not cells or (len(cells) == 1 and not cells[0].strip()) or cells[0].lstrip().startswith("#"):
                continue
            if len(cells) != width:
                raise Fallback("a row of the wrong width")
            yield start, cells


def _read(paths: Sequence[Path], files: dict[str, list[_File]]) -> list[Record]:
    # Children first (NICs, disks, outlets), by the key of the owner they name; their owners are
    # then built row by row as parsed, each taking its children. Every child must find its owner.
    nics = _children("nic", files["nic"], "hostname", lower=True)
    disks = _children("disk", files["disk"], "hostname", lower=True)
    outlets: dict[tuple[str, str], list] = {}
    for f in files["outlet"]:
        ups, pdu = f.index("ups"), f.index("pdu")
        for cells, rec in _records("outlet", f, skip=("ups", "pdu")):
            ups_cell = cells[ups] if ups is not None else ""
            pdu_cell = cells[pdu] if pdu is not None else ""
            if bool(ups_cell) == bool(pdu_cell):
                raise Fallback("an outlet of neither or both")
            key = ("ups", ups_cell.strip()) if ups_cell else ("pdu", pdu_cell.strip())
            outlets.setdefault(key, []).append(rec)

    stems = {p.stem.lower() for p in paths}
    server_columns = {c for f in files["server"] for c in f.header or ()}
    give_nics = bool(nics) or "mac" in server_columns or bool(stems & {"nics", "nic"})
    give_disks = bool(disks) or bool(stems & {"disks", "disk"})
    give_outlets = bool(outlets) or bool(stems & {"outlets", "outlet"})

    out: list[Record] = []
    for kind in ("site", "pod", "rack", "feed", "pool"):
        for f in files[kind]:
            out.extend(rec for _cells, rec in _records(kind, f))

    hosts: set[str] = set()
    nic_spec = _SPECS["nic"]
    nic_cls = maker(nic_spec.cls)  # frozen records, made at a plain class's speed
    as_mac, as_ip = nic_spec.fields["mac"][1], nic_spec.fields["ip"][1]
    eth0 = nic_spec.fields["name"][1]("eth0", "name", None)
    for f in files["server"]:
        at = _key_column(f, "hostname")
        mac_at, ip_at = f.index("mac"), f.index("ip")

        def own(values: dict[str, Any], cells: list[str], at: int = at, mac_at: int | None = mac_at,
                ip_at: int | None = ip_at) -> None:
            """The owner's side of the joins: its key, its primary NIC (mac, ip) and its children."""
            key = cells[at].strip().lower()
            if key in hosts:
                raise Fallback("a host name given twice")  # apply() refuses it, by line
            hosts.add(key)
            if give_nics:
                listed = nics.get(key, ())
                mac = cells[mac_at] if mac_at is not None else ""
                ip = cells[ip_at] if ip_at is not None else ""
                if mac or ip:
                    if not mac:
                        raise Fallback("an ip without its mac")
                    loc = values["loc"]
                    primary = nic_cls(name=eth0, mac=as_mac(mac, "mac", loc),
                                      ip=as_ip(ip, "ip", loc) if ip else None, pxe=True, loc=loc)
                    values["nics"] = (primary, *listed)
                else:
                    values["nics"] = tuple(listed)
            if give_disks:
                values["disks"] = tuple(disks.get(key, ()))

        out.extend(rec for _cells, rec in _records("server", f, skip=("mac", "ip") if give_nics else (),
                                                   extras=(own,), tags_default="tags" in server_columns))
    if not hosts.issuperset(nics) or not hosts.issuperset(disks):
        raise Fallback("a NIC or disk of a server not in this import")

    parents: set[tuple[str, str]] = set()
    for kind in ("ups", "pdu"):
        for f in files[kind]:
            at = _key_column(f, "name")

            def own_outlets(values: dict[str, Any], cells: list[str], at: int = at, kind: str = kind) -> None:
                key = (kind, cells[at].strip())
                if key in parents:
                    raise Fallback(f"a {kind} name given twice")
                parents.add(key)
                if give_outlets:
                    values["outlets"] = tuple(outlets.get(key, ()))

            out.extend(rec for _cells, rec in _records(kind, f, extras=(own_outlets,)))
    if not parents.issuperset(outlets):
        raise Fallback("an outlet of a UPS or PDU not in this import")
    return out


def _key_column(f: _File, column: str) -> int:
    at = f.index(column)
    if at is None:
        raise Fallback(f"no {column} column")
    return at


def _children(kind: str, files: list[_File], column: str, *, lower: bool) -> dict[str, list]:
    """Records of a child kind (NICs, disks) by the key of their owner, in file order."""
    owned: dict[str, list] = {}
    for f in files:
        at = _key_column(f, column)
        for cells, rec in _records(kind, f, skip=(column,)):
            cell = cells[at]
            if not cell:
                raise Fallback(f"a {kind} without its {column}")
            owned.setdefault(cell.strip().lower() if lower else cell.strip(), []).append(rec)
    return owned


def _records(kind: str, f: _File, *, skip: Sequence[str] = (), extras: Sequence[Extra] = (),
             tags_default: bool = False) -> Iterator[tuple[list[str], Any]]:
    """``(cells, record)`` for each row of one file: what ``records.spec._make`` makes of its non-empty cells.

    The owner key column, for a row that has one, is checked by the caller's ``extras``.
    """
    spec = _SPECS[kind]
    fields = spec.fields
    assert f.header is not None
    plan: list[tuple[int, str, str, Any]] = []
    for i, column in enumerate(f.header):
        if column in skip:
            continue
        entry = fields.get(column)
        if entry is None:
            raise Fallback(f"column {column!r} is not a field of a {kind}")
        plan.append((i, column, entry[0], entry[1]))
    caches: list[dict | None] = [{} for _ in plan]
    required = [fields[key][0] for key in spec.required]
    finish = spec.finish
    make = maker(spec.cls)
    # A servers.csv with a tags column clears the tags of a server whose cell is empty: ``tags: ""``.
    no_tags = fields["tags"][1]("", "tags", None) if tags_default else None
    file = f.file
    for n, (line, cells) in enumerate(f.rows()):
        if n == _PROBE_ROWS:
            caches = [c if c is not None and len(c) < n // 4 else None for c in caches]
        loc = f"{file}:{line}"
        values: dict[str, Any] = {"loc": loc}
        for (i, column, attr, convert), cache in zip(plan, caches, strict=True):
            cell = cells[i]
            if not cell:
                continue
            if cache is None:
                values[attr] = convert(cell, column, loc)
                continue
            value = cache.get(cell, _MISS)
            if value is _MISS:
                value = convert(cell, column, loc)
                if len(cache) < _CACHE_LIMIT:
                    cache[cell] = value
            values[attr] = value
        if no_tags is not None and "tags" not in values:
            values["tags"] = no_tags
        for extra in extras:
            extra(values, cells)
        for attr in required:
            if attr not in values:
                raise Fallback(f"a {kind} without its {attr}")
        if finish is not None:
            finish(values)
        yield cells, make(**values)
