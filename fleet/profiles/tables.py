"""Strict reading of TOML tables: typed getters that name the file and key path of every refusal.

:class:`Table` remembers which keys were read, so that :meth:`Table.done` refuses the others (with a
"did you mean" hint); :func:`fail` raises the :class:`~fleet.errors.ProfileError` that carries
``file`` and ``key``, e.g. ``hardware-profiles/servers/dell-r640.toml: sensors[2].critical_high: must
be a number``. Knows nothing of what a profile holds (that is :mod:`fleet.profiles.loader`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from fleet.errors import ProfileError

__all__ = ["Table", "check_int", "check_oid", "display", "fail", "hint"]

OID_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)+\Z")


def fail(file: str, key: str | None, message: str) -> NoReturn:
    err = ProfileError(f"{file}: {key}: {message}" if key else f"{file}: {message}")
    err.file = file  # type: ignore[attr-defined]
    err.key = key  # type: ignore[attr-defined]
    raise err


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


class Table:
    """A TOML table being read: typed getters that remember which keys were read, so that
    :meth:`done` can refuse the others."""

    def __init__(self, file: str, data: object, path: str) -> None:
        self.file = file
        self.path = path
        if not isinstance(data, dict):
            fail(file, path or None, f"must be a table, not {_type_name(data)}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> NoReturn:
        fail(self.file, self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, required: bool) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                self.fail(name, "is required")
            return None
        return self.data[name]

    def get_any(self, name: str) -> Any:
        """A required value of any TOML type."""
        return self._get(name, True)

    def get_str(self, name: str, *, required: bool = True, nonempty: bool = True) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(name, f"must be a string, not {_type_name(value)}")
        if nonempty and not value.strip():
            self.fail(name, "must not be empty")
        return value

    def get_int(self, name: str, *, required: bool = True,
                lo: int | None = None, hi: int | None = None) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        return check_int(self.file, self.key(name), value, lo, hi)

    def get_num(self, name: str, *, required: bool = True, positive: bool = False) -> float | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, f"must be a number, not {_type_name(value)}")
        if positive and value <= 0:
            self.fail(name, f"must be greater than 0 (got {value})")
        return float(value)

    def get_bool(self, name: str, default: bool = False) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {_type_name(value)}")
        return value

    def get_list(self, name: str, *, required: bool = False, nonempty: bool = False) -> list[Any]:
        value = self._get(name, required)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(name, f"must be an array, not {_type_name(value)}")
        if nonempty and not value:
            self.fail(name, "must not be empty")
        return value

    def get_str_list(self, name: str, *, required: bool = False, nonempty: bool = False) -> tuple[str, ...]:
        items = self.get_list(name, required=required, nonempty=nonempty)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                fail(self.file, f"{self.key(name)}[{i}]", f"must be a non-empty string, not {item!r}")
        if len(set(items)) != len(items):
            self.fail(name, "has duplicate entries")
        return tuple(items)

    def get_int_list(self, name: str, *, lo: int | None = None, hi: int | None = None) -> tuple[int, ...]:
        items = self.get_list(name)
        out = tuple(check_int(self.file, f"{self.key(name)}[{i}]", v, lo, hi) for i, v in enumerate(items))
        if len(set(out)) != len(out):
            self.fail(name, "has duplicate entries")
        return out

    def get_oid(self, name: str, *, required: bool = True) -> str | None:
        value = self.get_str(name, required=required)
        if value is None:
            return None
        return check_oid(self.file, self.key(name), value)

    def get_table(self, name: str, *, required: bool = False) -> Table | None:
        value = self._get(name, required)
        if value is None:
            return None
        return Table(self.file, value, self.key(name))

    def get_tables(self, name: str) -> list[Table]:
        """An array of tables (``[[name]]``)."""
        items = self.get_list(name)
        return [Table(self.file, item, f"{self.key(name)}[{i}]") for i, item in enumerate(items)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            name = unknown[0]
            self.fail(name, "unknown key" + hint(name, self.used, "known keys"))


def hint(name: str, choices: Iterable[str], label: str) -> str:
    """`` (did you mean 'x'?)`` when a choice is close, else ``; <label>: a, b, c``."""
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; {label}: {', '.join(sorted(choices))}"


def check_int(file: str, key: str, value: object, lo: int | None, hi: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(file, key, f"must be an integer, not {_type_name(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        fail(file, key, f"must be between {lo} and {hi} (got {value})")
    return value


def check_oid(file: str, key: str, value: str) -> str:
    if not OID_RE.match(value):
        dot = " without a leading dot" if value.startswith(".") else ""
        fail(file, key, f"must be a numeric dotted OID{dot}, like 1.3.6.1.2.1.33 (got {value!r})")
    return value


def display(path: Path, base: Path | None) -> str:
    """``path`` as error messages show it: relative to ``base``, else to the current directory."""
    for root in (base, Path.cwd()):
        if root is None:
            continue
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return str(path)
