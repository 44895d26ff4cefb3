"""Where a record's values came from, and errors placed there.

:class:`SourceMap` is the mapping the importer reads from a file (one per YAML mapping or CSV row):
it remembers the ``file:line`` of itself and of each key. The helpers below put a refusal on the line
of the offending key: :func:`_place` for what :func:`inventory.records.build` refuses, :func:`_at`,
:func:`_conflict` and :func:`_refused` for what :func:`inventory.records.apply` refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fleet.errors import ConflictError, ValidationError

__all__ = ["SourceMap"]


class SourceMap(dict):
    """A mapping read from a file that remembers where it, and each of its keys, started.

    The importer builds these (one per YAML mapping or CSV row) with :meth:`of`; :func:`build`
    uses them to place an error on the line of the offending key rather than of the record.
    """

    __slots__ = ("file", "key_lines", "line")

    @classmethod
    def of(cls, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), *, file: str, line: int,
           key_lines: Sequence[int] = ()) -> SourceMap:
        # No __init__ override: a dict subclass's Python __init__ costs 5x the dict itself, and
        # the importer makes one of these per YAML mapping and per CSV row.
        out = cls(items)
        out.file = file
        out.line = line
        out.key_lines = key_lines
        return out

    def where(self, key: str | None = None) -> str:
        """``file:line`` of ``key`` (or of the mapping itself)."""
        line = self.line
        if key is not None and self.key_lines:
            try:
                index = list(self).index(key)
            except ValueError:
                index = -1
            if 0 <= index < len(self.key_lines):
                line = self.key_lines[index]
        return f"{self.file}:{line}"

    def __reduce__(self):
        return (_rebuild_source_map, (list(self.items()), self.file, self.line, tuple(self.key_lines)))


def _rebuild_source_map(items: list, file: str, line: int, key_lines: tuple) -> SourceMap:
    return SourceMap.of(items, file=file, line=line, key_lines=key_lines)


def _loc_of(raw: object, loc: str | None, key: str | None = None) -> str | None:
    if isinstance(raw, SourceMap) and getattr(raw, "file", None):
        return raw.where(key)
    return loc


def _place(err: ValidationError, raw: object, loc: str | None, prefix: str = "") -> ValidationError:
    """Put ``err`` at the line of its field (unless already placed) and prefix its field name."""
    key = re.split(r"[ .\[]", err.field or "", maxsplit=1)[0] or None
    if prefix:
        err.field = f"{prefix}.{err.field}" if err.field else prefix
        err.args = (err._render(),)
    where = _loc_of(raw, loc, key)
    if where:
        err.at(where)
    return err


def _at(rec: Any, field: str) -> str | None:
    """``file:line`` of ``field`` of a record: the key's own line when the record came from YAML."""
    src = getattr(rec, "src", None)
    if src is not None and field in src:
        return src.where(field)
    return rec.loc


def _conflict(message: str, *, field: str, loc: str | None) -> ConflictError:
    """A ConflictError naming where and which field."""
    return ConflictError(message, field=field, location=loc)


def _refused(message: str, *, field: str, loc: str | None, value: object = None) -> ValidationError:
    return ValidationError(message, field=field, value=value, location=loc)
