"""SQL sources the operator granted to this run, opened by label.

Parameters are typed: pass Python values and they bind as the matching SQL
types (`None`, `bool`, `int`, `float`, `str`, `bytes`, `datetime`, and
`dict`/`list` as JSON). Placeholders are the database's own: `$1, $2` on
PostgreSQL, `?` or `$1` on SQLite.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from typing import Any, Iterator

from wit_world.imports import sql as _sql

from .errors import call

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _to_wit(value: Any) -> _sql.Value:
    # bool before int: `True` is an `int` in Python.
    if value is None:
        return _sql.Value_Null()
    if isinstance(value, bool):
        return _sql.Value_Boolean(value)
    if isinstance(value, int):
        return _sql.Value_Int(value)
    if isinstance(value, float):
        return _sql.Value_Float(value)
    if isinstance(value, str):
        return _sql.Value_Text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _sql.Value_Blob(bytes(value))
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return _sql.Value_Timestamp((value - _EPOCH) // _dt.timedelta(microseconds=1))
    if isinstance(value, (dict, list)):
        return _sql.Value_Json(json.dumps(value))
    raise TypeError(f"cannot bind a {type(value).__name__} as a SQL parameter")


def _from_wit(value: _sql.Value) -> Any:
    # Values with no Python type of their own here (decimal, uuid, dates,
    # times, intervals, arrays, other) come back as the bindings give them
    # until the SDK maps them to `decimal`, `uuid` and `datetime` types.
    if isinstance(value, _sql.Value_Null):
        return None
    if isinstance(value, _sql.Value_Timestamp):
        if value.value in (2**63 - 1, -(2**63)):
            return value.value
        return _EPOCH + _dt.timedelta(microseconds=value.value)
    if isinstance(value, _sql.Value_Json):
        return json.loads(value.value)
    return value.value


class Db:
    """An open connection to a SQL source."""

    def __init__(self, handle: _sql.Connection, label: str):
        self._handle = handle
        self.label = label

    @classmethod
    def open(cls, label: str) -> "Db":
        """Opens the source granted under `label`; raises `AccessDenied` if
        this run was not granted it."""
        return cls(call(_sql.open, label), label)

    def query(self, statement: str, *params: Any) -> list[dict[str, Any]]:
        """Every row, as dicts keyed by column name. Large results: `cursor`."""
        result = call(self._handle.query, statement, [_to_wit(p) for p in params])
        names = [c.name for c in result.columns]
        return [dict(zip(names, map(_from_wit, row))) for row in result.rows]

    def query_one(self, statement: str, *params: Any) -> dict[str, Any] | None:
        rows = self.query(statement, *params)
        return rows[0] if rows else None

    def cursor(self, statement: str, *params: Any, batch: int = 500) -> Iterator[dict[str, Any]]:
        """The rows, fetched `batch` at a time, so a huge result streams."""
        rows = call(self._handle.cursor, statement, [_to_wit(p) for p in params])
        try:
            names = [c.name for c in rows.columns()]
            while True:
                chunk = call(rows.next, batch)
                if not chunk:
                    return
                for row in chunk:
                    yield dict(zip(names, map(_from_wit, row)))
        finally:
            rows.__exit__(None, None, None)

    def execute(self, statement: str, *params: Any) -> int:
        """Runs a statement and returns how many rows it affected."""
        return call(self._handle.execute, statement, [_to_wit(p) for p in params]).rows_affected

    def begin(self) -> None:
        call(self._handle.begin, None)

    def commit(self) -> None:
        call(self._handle.commit)

    def rollback(self) -> None:
        call(self._handle.rollback)

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Db"]:
        """Commits when the block ends, rolls back if it raises."""
        self.begin()
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def close(self) -> None:
        self._handle.__exit__(None, None, None)

    def __enter__(self) -> "Db":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
