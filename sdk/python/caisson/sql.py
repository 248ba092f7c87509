"""SQL sources the operator granted to this run, opened by label.

Parameters are typed: pass Python values and they bind as the matching SQL
types, and results come back as the same types:

| Python | SQL value |
|---|---|
| `None` | NULL |
| `bool` | boolean |
| `int` | int (s64); larger non-negative ints as uint (u64), larger still as decimal |
| `float` | float |
| `decimal.Decimal` | decimal (exact; NUMERIC) |
| `str` | text |
| `bytes` | blob |
| `uuid.UUID` | uuid |
| `datetime.datetime` with a tzinfo | timestamp (an instant; TIMESTAMPTZ) |
| naive `datetime.datetime` | datetime (a wall clock; TIMESTAMP) |
| `datetime.date` | date |
| `datetime.time` | time (no tzinfo) |
| `datetime.timedelta` | interval (no months) |
| `Interval(months, days, microseconds)` | interval |
| `dict`, `list` | JSON |

PostgreSQL arrays come back as lists. `infinity` and `-infinity` dates and
timestamps come back as the `max` and `min` of their Python type (and bind
back as infinity). Placeholders are the database's own: `$1, $2` on
PostgreSQL, `?` or `$1` on SQLite.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import decimal as _decimal
import json
import uuid as _uuid
from dataclasses import dataclass
from typing import Any, Iterator

from ._wit import sql as _sql

from .errors import call

_UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)
_NAIVE_EPOCH = _dt.datetime(1970, 1, 1)
_EPOCH_DAY = _dt.date(1970, 1, 1)
_MICRO = _dt.timedelta(microseconds=1)
_I64_MAX, _I64_MIN = 2**63 - 1, -(2**63)
_I32_MAX, _I32_MIN = 2**31 - 1, -(2**31)
_MAX_TIMESTAMP = _dt.datetime.max.replace(tzinfo=_UTC)
_MIN_TIMESTAMP = _dt.datetime.min.replace(tzinfo=_UTC)


@dataclass(frozen=True)
class Interval:
    """An interval with months, whose length depends on the date it is added
    to (one without months comes back as a `datetime.timedelta`)."""

    months: int
    days: int
    microseconds: int


def _timestamp(value: _dt.datetime) -> int:
    if value == _MAX_TIMESTAMP:
        return _I64_MAX
    if value == _MIN_TIMESTAMP:
        return _I64_MIN
    return (value - _EPOCH) // _MICRO


def _datetime(value: _dt.datetime) -> int:
    if value == _dt.datetime.max:
        return _I64_MAX
    if value == _dt.datetime.min:
        return _I64_MIN
    return (value - _NAIVE_EPOCH) // _MICRO


def _date(value: _dt.date) -> int:
    if value == _dt.date.max:
        return _I32_MAX
    if value == _dt.date.min:
        return _I32_MIN
    return (value - _EPOCH_DAY).days


def _to_wit(value: Any) -> _sql.Value:
    # bool before int (`True` is an `int`), datetime before date (a
    # `datetime` is a `date`).
    if value is None:
        return _sql.Value_Null()
    if isinstance(value, bool):
        return _sql.Value_Boolean(value)
    if isinstance(value, int):
        if _I64_MIN <= value <= _I64_MAX:
            return _sql.Value_Int(value)
        if 0 <= value < 2**64:
            return _sql.Value_Uint(value)
        return _sql.Value_Decimal(str(value))
    if isinstance(value, float):
        return _sql.Value_Float(value)
    if isinstance(value, _decimal.Decimal):
        return _sql.Value_Decimal(str(value))
    if isinstance(value, str):
        return _sql.Value_Text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _sql.Value_Blob(bytes(value))
    if isinstance(value, _uuid.UUID):
        return _sql.Value_Uuid(str(value))
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            return _sql.Value_Datetime(_datetime(value))
        return _sql.Value_Timestamp(_timestamp(value))
    if isinstance(value, _dt.date):
        return _sql.Value_Date(_date(value))
    if isinstance(value, _dt.time):
        if value.tzinfo is not None:
            raise TypeError("cannot bind a time with a tzinfo: SQL values have no such kind")
        micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 10**6
        return _sql.Value_Time(micros + value.microsecond)
    if isinstance(value, _dt.timedelta):
        return _sql.Value_Interval(
            _sql.Interval(months=0, days=value.days, microseconds=value.seconds * 10**6 + value.microseconds)
        )
    if isinstance(value, Interval):
        return _sql.Value_Interval(
            _sql.Interval(months=value.months, days=value.days, microseconds=value.microseconds)
        )
    if isinstance(value, (dict, list)):
        return _sql.Value_Json(json.dumps(value))
    raise TypeError(f"cannot bind a {type(value).__name__} as a SQL parameter")


def _from_timestamp(micros: int) -> _dt.datetime:
    if micros == _I64_MAX:
        return _MAX_TIMESTAMP
    if micros == _I64_MIN:
        return _MIN_TIMESTAMP
    return _EPOCH + micros * _MICRO


def _from_datetime(micros: int) -> _dt.datetime:
    if micros == _I64_MAX:
        return _dt.datetime.max
    if micros == _I64_MIN:
        return _dt.datetime.min
    return _NAIVE_EPOCH + micros * _MICRO


def _from_date(days: int) -> _dt.date:
    if days == _I32_MAX:
        return _dt.date.max
    if days == _I32_MIN:
        return _dt.date.min
    return _EPOCH_DAY + _dt.timedelta(days=days)


def _from_time(micros: int) -> _dt.time:
    # 24:00:00 has no `datetime.time`: the last microsecond before it.
    micros = min(micros, 86_400 * 10**6 - 1)
    seconds, micro = divmod(micros, 10**6)
    return _dt.time(seconds // 3600, seconds // 60 % 60, seconds % 60, micro)


def _from_interval(value: Any) -> Any:
    if value.months == 0:
        return _dt.timedelta(days=value.days, microseconds=value.microseconds)
    return Interval(value.months, value.days, value.microseconds)


def _optional(convert):
    return lambda items: [None if item is None else convert(item) for item in items]


_FROM_WIT = {
    _sql.Value_Timestamp: _from_timestamp,
    _sql.Value_Datetime: _from_datetime,
    _sql.Value_Date: _from_date,
    _sql.Value_Time: _from_time,
    _sql.Value_Decimal: _decimal.Decimal,
    _sql.Value_Uuid: _uuid.UUID,
    _sql.Value_Interval: _from_interval,
    _sql.Value_Json: json.loads,
    _sql.Value_Other: lambda other: other.text,
    _sql.Value_DecimalArray: _optional(_decimal.Decimal),
    _sql.Value_UuidArray: _optional(_uuid.UUID),
    _sql.Value_DateArray: _optional(_from_date),
    _sql.Value_DatetimeArray: _optional(_from_datetime),
    _sql.Value_TimestampArray: _optional(_from_timestamp),
}


def _from_wit(value: _sql.Value) -> Any:
    if isinstance(value, _sql.Value_Null):
        return None
    convert = _FROM_WIT.get(type(value))
    if convert is not None:
        return convert(value.value)
    # boolean, int, uint, float, text, blob and the arrays of those: the
    # bindings' own Python values.
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
