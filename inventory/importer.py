"""Import files to inventory records: YAML (nested or flat), CSV (one file per kind), NetBox JSON.

This module only reads: it turns files into :mod:`inventory.records` records, each carrying the
``file:line`` it came from, and leaves all writing to :func:`inventory.records.apply`. Any error
raises :class:`fleet.errors.ValidationError` naming the file, line and field; nothing is
skipped, because a half-imported fleet is worse than a refused file.

The formats are described in ``docs/import-format.md``. In brief:

- **YAML**: top-level lists ``sites``, ``pods``, ``racks``, ``feeds``, ``servers``, ``ups``,
  ``pdus``, ``pools`` (what export writes). Any list may also nest inside its parent (a site's
  ``pods``, a pod's ``racks``, a rack's ``servers``...), and the children then inherit ``site``,
  ``pod`` and ``rack``. A server's ``ups`` may be a mapping: a per-server UPS defined in place.
- **CSV**: the kind comes from the file name (``servers.csv``) or a ``kind`` column; ``nics.csv``,
  ``disks.csv`` and ``outlets.csv`` attach rows to the servers, UPS units and PDUs of the same import.
- **Secrets files** (YAML with only ``credentials:``) are the one place credentials are read from,
  and only when given as secrets files; export never writes them.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fleet.errors import ValidationError

from .fileformat import CSV_COLUMNS
from .fileformat import CSV_STEMS as _CSV_STEMS
from .fileformat import LISTS as _LISTS
from .fileformat import csv_order as _csv_order
from .records import Record, SourceMap, build, gc_paused

if TYPE_CHECKING:
    from .netbox import ProfileLookup

__all__ = ["CSV_COLUMNS", "read_csv", "read_files", "read_yaml"]

_YAML_SUFFIXES = (".yaml", ".yml")

# YAML: what each kind may nest (the list names are fileformat.LISTS).
_NESTS: dict[str, tuple[str, ...]] = {
    "site": ("pods", "racks", "feeds", "servers", "ups", "pdus", "pools"),
    "pod": ("racks", "feeds", "servers", "ups", "pdus", "pools"),
    "rack": ("feeds", "servers", "ups", "pdus", "pools"),
}
# Which inherited names each kind takes from its parents (a pod passes its code on as "pod").
_INHERITS: dict[str, tuple[str, ...]] = {
    "pod": ("site",), "rack": ("site", "pod"), "feed": ("site", "rack"), "server": ("site", "pod", "rack"),
    "ups": ("site", "rack"), "pdu": ("site", "rack"), "pool": ("site", "rack"),
}

# In a file of mixed kinds, "kind" is the record kind; a UPS's or pod's own kind is ups_kind / pod_kind.
_MIXED_COLUMNS = frozenset({"kind", "ups_kind", "pod_kind"}.union(*CSV_COLUMNS.values()))


def read_files(paths: Sequence[Path], *, profiles: ProfileLookup | None = None, netbox_devices: Path | None = None,
               netbox_interfaces: Path | None = None, secrets: Sequence[Path] = ()
               ) -> tuple[list[Record], list[str]]:
    """Read every file (a directory means its ``*.yaml``, ``*.yml`` and ``*.csv``) into records.

    CSV files read in one call form one set: ``nics.csv`` may attach NICs to the servers of
    ``servers.csv``. ``secrets`` are YAML files whose ``credentials:`` carry plain secrets; no
    other file may hold credentials. Returns the records and any warnings.
    """
    with gc_paused():
        return _read_files(paths, profiles, netbox_devices, netbox_interfaces, secrets)


def _read_files(paths: Sequence[Path], profiles: ProfileLookup | None, netbox_devices: Path | None,
                netbox_interfaces: Path | None, secrets: Sequence[Path]) -> tuple[list[Record], list[str]]:
    records: list[Record] = []
    warnings: list[str] = []
    csv_paths: list[Path] = []
    for path in _expand(paths, warnings):
        suffix = path.suffix.lower()
        if suffix in _YAML_SUFFIXES:
            records.extend(read_yaml(path))
        elif suffix == ".csv":
            csv_paths.append(path)
        elif suffix == ".json":
            raise ValidationError("NetBox JSON is read with the NetBox options (devices and interfaces files)",
                                  location=str(path))
        else:
            raise ValidationError("not an import file: use .yaml, .yml or .csv", location=str(path))
    if csv_paths:
        records.extend(read_csv(csv_paths))
    for path in secrets:
        records.extend(read_yaml(path, secrets=True))
    if netbox_interfaces is not None and netbox_devices is None:
        raise ValidationError("a NetBox interfaces file needs the devices file too", location=str(netbox_interfaces))
    if netbox_devices is not None:
        if profiles is None:
            raise TypeError("reading NetBox devices needs the hardware profiles")
        from .netbox import read_netbox

        nb_records, nb_warnings = read_netbox(netbox_devices, netbox_interfaces, profiles=profiles)
        records.extend(nb_records)
        warnings.extend(nb_warnings)
    return records, warnings


def _expand(paths: Iterable[Path], warnings: list[str]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file())
            for p in found:
                if p.suffix.lower() in (*_YAML_SUFFIXES, ".csv"):
                    out.append(p)
                elif not p.name.startswith("."):
                    warnings.append(f"{p}: not an import file (.yaml, .yml, .csv); ignored")
        elif path.exists():
            out.append(path)
        else:
            raise ValidationError("no such file or directory", location=str(path))
    return out


# -- YAML ---------------------------------------------------------------------------------------------


class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """libyaml's parser with mappings that remember their file and lines."""

    source_name = ""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> SourceMap:
    loader.flatten_mapping(node)
    out = SourceMap.of(file=loader.source_name, line=node.start_mark.line + 1)
    lines = []
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise ValidationError(f"field names are text, not {key!r}", location=f"{loader.source_name}:{line}")
        if key in out:
            raise ValidationError(f"{key!r} is given twice in this mapping", field=key,
                                  location=f"{loader.source_name}:{line}")
        out[key] = loader.construct_object(value_node, deep=True)
        lines.append(line)
    out.key_lines = lines
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"not UTF-8 text ({exc.reason})", location=str(path)) from None
    loader = _Loader(text)
    loader.source_name = str(path)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValidationError(f"YAML syntax: {exc.problem or exc.context}", location=where) from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"YAML: {exc}", location=str(path)) from None
    finally:
        loader.dispose()


def read_yaml(path: Path, *, secrets: bool = False) -> list[Record]:
    """Records from one YAML file (nested or flat form; see the module docstring)."""
    data = _load_yaml(path)
    if data is None:
        return []
    if not isinstance(data, SourceMap):
        raise ValidationError("the file must be a mapping of lists (sites:, racks:, servers: ...)",
                              location=f"{path}:1")
    out: list[Record] = []
    for key, value in data.items():
        where = data.where(key)
        if key == "version":
            if value != 1:
                raise ValidationError(f"unsupported format version {value!r} (this reader knows 1)", field=key,
                                      location=where)
            continue
        kind = _LISTS.get(key)
        if kind is None:
            raise ValidationError(f"unknown section {key!r}; sections: {', '.join(_LISTS)}", field=key,
                                  location=where)
        if secrets and kind != "credential":
            raise ValidationError("a secrets file holds only credentials:", field=key, location=where)
        if kind == "credential" and not secrets:
            raise ValidationError("credentials are read only from secrets files (given as such), so that "
                                  "secrets never sit in an inventory file", field=key, location=where)
        _walk(kind, key, value, {}, where, out)
    return out


def _walk(kind: str, list_name: str, items: Any, context: Mapping[str, str], where: str, out: list[Record]
          ) -> None:
    """Build the records of one list, then those nested in each (with the names they inherit)."""
    if items is None:
        return
    if not isinstance(items, list):
        raise ValidationError(f"{list_name} must be a list (items start with '- ')", field=list_name,
                              location=where)
    nests = _NESTS.get(kind, ())
    for item in items:
        if not isinstance(item, SourceMap):
            raise ValidationError(f"each of {list_name} must be a mapping of fields, not {item!r}",
                                  field=list_name, location=where)
        children = {name: item.pop(name) for name in nests if name in item}
        _inherit(kind, item, context)
        inline_ups = None
        if kind == "server" and isinstance(item.get("ups"), Mapping):
            inline_ups = _inline_ups(item)
        out.append(build(kind, item))
        if inline_ups is not None:
            out.append(build("ups", inline_ups))
        if not children:
            continue
        inner = dict(context)
        if kind == "site":
            inner = {"site": item["code"]}
        elif kind == "pod":
            inner["pod"] = item["code"]
        elif kind == "rack":
            inner["rack"] = item["name"]
        for name, value in children.items():
            _walk(_LISTS[name], name, value, inner, item.where(), out)


def _inherit(kind: str, item: SourceMap, context: Mapping[str, str]) -> None:
    for name in _INHERITS.get(kind, ()):
        if name not in context:
            continue
        given = item.get(name)
        if given is None:
            item[name] = context[name]
        elif str(given).strip() != context[name]:
            raise ValidationError(f"{given!r} differs from the enclosing {name} {context[name]!r}", field=name,
                                  location=item.where(name))


def _inline_ups(server: SourceMap) -> SourceMap:
    """A per-server UPS written inside its server: it inherits site and rack and feeds the server."""
    ups = server["ups"]
    if "outlets" in ups:
        raise ValidationError("a per-server UPS feeds its own server; list outlets under ups: instead",
                              field="outlets", location=ups.where("outlets"))
    for name in ("site", "rack"):
        if server.get(name) is not None and name not in ups:
            ups[name] = server[name]
    if "kind" not in ups:
        ups["kind"] = "server"
    name = ups.get("name")
    if name is None:
        raise ValidationError("name is required", field="ups.name", location=ups.where())
    server["ups"] = name
    return ups


# -- CSV ----------------------------------------------------------------------------------------------


def read_csv(paths: Sequence[Path]) -> list[Record]:
    """Records from a set of CSV files, joining nics/disks/outlets rows to their owners.

    Well-formed files of one kind each (the bulk import) take the fast path of
    :mod:`inventory._fastcsv`, which makes the same records with the same validators; anything
    else, and every error, is read (and reported) by the generic reader below.
    """
    from . import _fastcsv

    with gc_paused():
        try:
            return _fastcsv.read_csv(paths)
        except _fastcsv.Fallback:
            pass
        return _read_csv(paths)


def _read_csv(paths: Sequence[Path]) -> list[Record]:
    rows: dict[str, list[SourceMap]] = {kind: [] for kind in CSV_COLUMNS}
    columns: dict[str, set[str]] = {kind: set() for kind in CSV_COLUMNS}
    for path in sorted(paths, key=_csv_order):
        for kind, row, header in _csv_rows(path):
            rows[kind].append(row)
            columns[kind].update(header)

    # Duplicates are left in for apply() to refuse by line; joins attach to the first of a name.
    servers: dict[str, SourceMap] = {}
    for r in rows["server"]:
        servers.setdefault(_cell_key(r, "hostname"), r)
    parents: dict[tuple[str, str], SourceMap] = {}
    for kind in ("ups", "pdu"):
        for r in rows[kind]:
            parents.setdefault((kind, _cell_key(r, "name")), r)
    give_nics = bool(rows["nic"]) or "mac" in columns["server"] or any(p.stem.lower() in ("nics", "nic")
                                                                       for p in paths)
    give_disks = bool(rows["disk"]) or any(p.stem.lower() in ("disks", "disk") for p in paths)
    give_outlets = bool(rows["outlet"]) or any(p.stem.lower() in ("outlets", "outlet") for p in paths)
    nics: dict[str, list] = defaultdict(list)
    disks: dict[str, list] = defaultdict(list)
    outlets: dict[tuple[str, str], list] = defaultdict(list)

    for row in rows["nic"]:
        host = _owner(row, "hostname", servers, "servers.csv")
        nics[host].append(row)
    for row in rows["disk"]:
        host = _owner(row, "hostname", servers, "servers.csv")
        disks[host].append(row)
    for row in rows["outlet"]:
        ups, pdu = row.pop("ups", None), row.pop("pdu", None)
        if (ups is None) == (pdu is None):
            raise ValidationError("an outlet row names either its ups or its pdu", field="ups",
                                  location=row.where())
        key = ("ups", str(ups).strip()) if ups is not None else ("pdu", str(pdu).strip())
        if key not in parents:
            raise ValidationError(f"{key[0]} {key[1]!r} is not in the {key[0]}s.csv of this import", field=key[0],
                                  location=row.where())
        outlets[key].append(row)

    out: list[Record] = []
    for kind in ("site", "pod", "rack", "feed", "pool"):
        out.extend(build(kind, r) for r in rows[kind])
    for row in rows["server"]:
        host = _cell_key(row, "hostname")
        first = servers[host] is row
        if give_nics:
            listed = list(nics[host])
            mac, ip = row.pop("mac", None), row.pop("ip", None)
            if mac is not None or ip is not None:
                listed.insert(0, SourceMap.of({"name": "eth0", "mac": mac, "ip": ip, "pxe": True},
                                              file=row.file, line=row.line))
            row["nics"] = listed if first else listed[:1]
        if give_disks:
            row["disks"] = disks[host] if first else []
        if "tags" in columns["server"] and "tags" not in row:
            row["tags"] = ""
        out.append(build("server", row))
    for kind in ("ups", "pdu"):
        for row in rows[kind]:
            key = (kind, _cell_key(row, "name"))
            if give_outlets:
                row["outlets"] = outlets[key] if parents[key] is row else []
            out.append(build(kind, row))
    return out


def _cell_key(row: SourceMap, column: str) -> str:
    value = row.get(column)
    return str(value).strip().lower() if column == "hostname" and value is not None else str(value).strip()


def _owner(row: SourceMap, column: str, owners: Mapping[str, SourceMap], file: str) -> str:
    value = row.pop(column, None)
    if value is None:
        raise ValidationError(f"{column} is required", field=column, location=row.where())
    key = str(value).strip().lower()
    if key not in owners:
        raise ValidationError(f"{value!r} is not in the {file} of this import", field=column, location=row.where())
    return key


def _csv_rows(path: Path) -> Iterable[tuple[str, SourceMap, list[str]]]:
    """(kind, row, header) for each data row; empty cells are left out (absent = keep stored)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"not UTF-8 text ({exc.reason})", location=str(path)) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    file = str(path)
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip().lower() for h in header]
        stem_kind = _CSV_STEMS.get(path.stem.lower())
        if stem_kind is None and "kind" not in header:
            raise ValidationError(f"cannot tell what {path.name} holds: name it after its kind (servers.csv, "
                                  "racks.csv, ...) or give a kind column", location=f"{file}:1")
        allowed = set(CSV_COLUMNS[stem_kind]) if stem_kind else _MIXED_COLUMNS
        for i, name in enumerate(header):
            if name not in allowed:
                raise ValidationError(f"unknown column {name!r}", field=name or f"column {i + 1}",
                                      location=f"{file}:1")
            if header.index(name) != i:
                raise ValidationError(f"column {name!r} appears twice", field=name, location=f"{file}:1")
        line = reader.line_num + 1
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not cells or (len(cells) == 1 and not cells[0].strip()) or cells[0].lstrip().startswith("#"):
                continue
            if len(cells) != len(header):
                raise ValidationError(f"{len(cells)} cells where the header has {len(header)}",
                                      location=f"{file}:{start}")
            if "" in cells:  # empty cells are absent values
                row = SourceMap.of({h: c for h, c in zip(header, cells, strict=True) if c}, file=file, line=start)
            else:
                row = SourceMap.of(zip(header, cells, strict=True), file=file, line=start)
            kind = stem_kind
            if kind is None:
                given = row.pop("kind", None)
                kind = _CSV_STEMS.get(str(given).strip().lower()) if given else None
                if kind is None:
                    raise ValidationError(f"unknown kind {given!r}", field="kind", location=f"{file}:{start}")
                for alias in ("ups_kind", "pod_kind"):
                    if alias in row:
                        if alias[:3] != kind[:3]:
                            raise ValidationError(f"column {alias!r} does not apply to a {kind}", field=alias,
                                                  location=f"{file}:{start}")
                        row["kind"] = row.pop(alias)
                extra = set(row) - set(CSV_COLUMNS[kind])
                if extra:
                    raise ValidationError(f"column {sorted(extra)[0]!r} does not apply to a {kind}",
                                          field=sorted(extra)[0], location=f"{file}:{start}")
            yield kind, row, header if stem_kind else [h for h in header if h in CSV_COLUMNS[kind]]
    except csv.Error as exc:
        raise ValidationError(f"CSV syntax: {exc}", location=f"{file}:{reader.line_num}") from None

