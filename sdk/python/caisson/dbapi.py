"""A DB-API 2.0 (PEP 249) module over the SQL sources granted to a run, so
libraries written against DB-API drivers (SQLAlchemy through
`caisson.sqlalchemy`, pandas through SQLAlchemy) can use them.

```python
from caisson import dbapi

conn = dbapi.connect("warehouse")   # the label the run was granted
cur = conn.cursor()
cur.execute("SELECT name FROM users WHERE id = $1", (7,))
print(cur.fetchone())
conn.commit()
```

What differs from a network driver:

* `connect()` takes the source's label, not a URL: the operator's
  configuration holds the URL and the credentials, and the run only reaches
  the sources it was granted.
* Placeholders are the database's own: the host passes the statement to
  the database unchanged. PostgreSQL and SQLite take `$1, $2, ...`
  (`paramstyle = "numeric_dollar"`, which SQLAlchemy knows, as asyncpg
  uses it; SQLite also takes `?`); MySQL and MariaDB take `?` only. Parameters and results are typed as
  `caisson.sql` describes.
* Like every DB-API connection, the first statement opens a transaction,
  which `commit()` or `rollback()` ends; `autocommit = True` runs each
  statement on its own.
* A query's result is read whole, within the host's row limit; for huge
  results use `caisson.Db.cursor`, which streams.
"""

from __future__ import annotations

import datetime as _dt
import re
import time as _time
from collections import deque
from typing import Any, Sequence

from . import errors as _errors
from .sql import Db, _from_wit, _to_wit
from .errors import call

apilevel = "2.0"
#: Connections may not be shared between threads (a guest has one anyway).
threadsafety = 1
paramstyle = "numeric_dollar"


class Warning(Exception):  # noqa: A001  (the name PEP 249 requires)
    pass


class Error(Exception):
    """Base of the PEP 249 errors. `sqlstate` is the database's SQLSTATE
    when it refused the statement; the `caisson` error is the `__cause__`."""

    sqlstate: str | None = None


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


# SQLSTATE classes (the first two characters) to PEP 249's categories.
_SQLSTATE_CLASSES = {
    "22": DataError,
    "23": IntegrityError,
    "25": OperationalError,
    "40": OperationalError,
    "42": ProgrammingError,
    "0A": NotSupportedError,
    "53": OperationalError,
    "57": OperationalError,
    "08": OperationalError,
    "XX": InternalError,
}


def _translate(error: _errors.CaissonError) -> Error:
    if isinstance(error, _errors.DatabaseError):
        cls = _SQLSTATE_CLASSES.get(error.sqlstate[:2], DatabaseError)
        translated = cls(str(error))
        translated.sqlstate = error.sqlstate
        return translated
    cls = {
        _errors.AccessDenied: ProgrammingError,
        _errors.InvalidInput: ProgrammingError,
        _errors.Unsupported: NotSupportedError,
        _errors.BackendError: OperationalError,
        _errors.TooLarge: OperationalError,
    }.get(type(error), DatabaseError)
    return cls(f"{error.kind}: {error.detail}" if error.detail else error.kind)


def _call(function, *args):
    try:
        return call(function, *args)
    except _errors.CaissonError as e:
        raise _translate(e) from e


def connect(label: str) -> "Connection":
    """Opens the SQL source granted to this run under `label`."""
    return Connection(_call(Db.open, label))


# Statements whose result has rows (MySQL's DESCRIBE among them, which
# SQLAlchemy's `has_table` runs): run with `query`, the rest with
# `execute` (which reports the affected rows and SQLite's last row id).
# Leading comments are skipped; `RETURNING` anywhere means rows too.
_ROWS = re.compile(
    r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*(?:select|with|values|show|pragma|explain|describe|desc|table)\b",
    re.IGNORECASE | re.DOTALL,
)
_RETURNING = re.compile(r"\breturning\b", re.IGNORECASE)


class Connection:
    def __init__(self, db: Db):
        self._db = db
        self._in_transaction = False
        self._closed = False
        #: True: each statement commits on its own (no implicit BEGIN).
        self.autocommit = False

    def _check(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed")

    def _begin_if_needed(self) -> None:
        if not self.autocommit and not self._in_transaction:
            _call(self._db.begin)
            self._in_transaction = True

    def cursor(self) -> "Cursor":
        self._check()
        return Cursor(self)

    def commit(self) -> None:
        self._check()
        if self._in_transaction:
            self._in_transaction = False
            _call(self._db.commit)

    def rollback(self) -> None:
        self._check()
        if self._in_transaction:
            self._in_transaction = False
            _call(self._db.rollback)

    def close(self) -> None:
        # PEP 249: closing without commit rolls back.
        if self._closed:
            return
        try:
            self.rollback()
        finally:
            self._closed = True
            self._db.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, kind, *rest) -> None:
        if kind is None:
            self.commit()
        else:
            self.rollback()


class Cursor:
    arraysize = 1

    def __init__(self, connection: Connection):
        self.connection = connection
        self.description: list[tuple] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: deque = deque()
        self._closed = False

    def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> "Cursor":
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection._check()
        if parameters is None:
            parameters = ()
        elif isinstance(parameters, dict):
            raise ProgrammingError(
                "parameters are positional ($1, $2, ...): pass a sequence, not a mapping"
            )
        try:
            values = [_to_wit(p) for p in parameters]
        except TypeError as e:
            raise ProgrammingError(str(e)) from e
        self.connection._begin_if_needed()
        db = self.connection._db
        self._rows = deque()
        self.lastrowid = None
        if _ROWS.match(operation) or _RETURNING.search(operation):
            result = _call(db._handle.query, operation, values)
            self.description = [
                (c.name, c.type_name, None, None, None, None, None) for c in result.columns
            ] or None
            self._rows = deque(tuple(map(_from_wit, row)) for row in result.rows)
            self.rowcount = len(self._rows) if self.description else -1
        else:
            result = _call(db._handle.execute, operation, values)
            self.description = None
            self.rowcount = result.rows_affected
            self.lastrowid = result.last_insert_id
        return self

    def executemany(self, operation: str, seq_of_parameters) -> "Cursor":
        total = 0
        for parameters in seq_of_parameters:
            self.execute(operation, parameters)
            total += max(self.rowcount, 0)
        self.rowcount = total
        return self

    def _need_rows(self) -> None:
        if self.description is None:
            raise ProgrammingError("the last statement returned no rows")

    def fetchone(self) -> tuple | None:
        self._need_rows()
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[tuple]:
        self._need_rows()
        size = self.arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(size, len(self._rows)))]

    def fetchall(self) -> list[tuple]:
        self._need_rows()
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self):
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._closed = True
        self._rows.clear()

    def setinputsizes(self, sizes) -> None:
        pass

    def setoutputsize(self, size, column=None) -> None:
        pass


# Type objects and constructors (PEP 249). `description`'s type code is the
# database's own type name, as `caisson.sql` reports it.
class _TypeObject:
    def __init__(self, *names: str):
        self.names = frozenset(names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.upper() in self.names

    def __hash__(self) -> int:
        return hash(self.names)


STRING = _TypeObject("TEXT", "VARCHAR", "CHAR", "BPCHAR", "NAME", "CHARACTER VARYING")
BINARY = _TypeObject("BYTEA", "BLOB")
NUMBER = _TypeObject(
    "INT2", "INT4", "INT8", "INTEGER", "BIGINT", "SMALLINT", "FLOAT4", "FLOAT8", "REAL",
    "NUMERIC", "DOUBLE PRECISION", "DECIMAL",
)
DATETIME = _TypeObject("DATE", "TIME", "TIMESTAMP", "TIMESTAMPTZ", "DATETIME", "INTERVAL")
ROWID = _TypeObject("OID", "ROWID")

Date = _dt.date
Time = _dt.time
Timestamp = _dt.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> _dt.date:  # noqa: N802  (PEP 249's names)
    return Date(*_time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> _dt.time:  # noqa: N802
    return Time(*_time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> _dt.datetime:  # noqa: N802
    return Timestamp(*_time.localtime(ticks)[:6])
