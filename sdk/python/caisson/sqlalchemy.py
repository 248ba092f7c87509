"""SQLAlchemy dialects over `caisson.dbapi`: `postgresql+caisson://LABEL`,
`mysql+caisson://LABEL` (MySQL and MariaDB) and `sqlite+caisson://LABEL`,
where LABEL is the SQL source granted to the run.

```python
import sqlalchemy as sa
import caisson.sqlalchemy  # noqa: F401  (registers the dialects)

@task
def run(input: bytes) -> bytes:
    engine = sa.create_engine("postgresql+caisson://warehouse")
    with engine.begin() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one()
```

Import this module at the top of the task's module, with `sqlalchemy`
itself: the component is a snapshot taken at build time, and SQLAlchemy
loads a dialect's modules the first time an engine names it, which inside a
run would be too late. Importing this module imports all three dialects.

Requires SQLAlchemy 2.0 (for the `numeric_dollar` parameter style).
"""

from __future__ import annotations

import re as _re

from sqlalchemy import types as _types
from sqlalchemy.dialects import registry as _registry
from sqlalchemy.dialects.mysql.base import MySQLDialect as _MySQLDialect
from sqlalchemy.dialects.postgresql.base import PGDialect as _PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect as _SQLiteDialect

from . import dbapi as _dbapi


class _PassThroughJSON(_types.JSON):
    """The host binds dicts and lists as JSON and returns JSON parsed, so
    SQLAlchemy's own (de)serializing would apply twice."""

    def bind_processor(self, dialect):
        return None

    def result_processor(self, dialect, coltype):
        return None


class _NativeDateTime(_types.DateTime):
    """The host binds and returns `datetime` objects, also on SQLite (whose
    dialect would otherwise format and parse strings itself)."""

    def bind_processor(self, dialect):
        return None

    def result_processor(self, dialect, coltype):
        return None


class _NativeDate(_types.Date):
    def bind_processor(self, dialect):
        return None

    def result_processor(self, dialect, coltype):
        return None


class _NativeTime(_types.Time):
    def bind_processor(self, dialect):
        return None

    def result_processor(self, dialect, coltype):
        return None


class _CaissonConnectArgs:
    driver = "caisson"
    supports_statement_cache = True
    supports_server_side_cursors = False

    @classmethod
    def import_dbapi(cls):
        return _dbapi

    def __init__(self, **kwargs):
        kwargs.setdefault("paramstyle", self._caisson_paramstyle)
        super().__init__(**kwargs)

    def create_connect_args(self, url):
        label = url.host or url.database
        if not label:
            raise _dbapi.InterfaceError(
                f"{url.drivername}:// needs the granted SQL source's label, e.g. "
                f"{url.drivername}://warehouse"
            )
        return [label], {}

    def is_disconnect(self, e, connection, cursor):
        return False

    def do_ping(self, dbapi_connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        return True


class PGDialect_caisson(_CaissonConnectArgs, _PGDialect):  # noqa: N801  (SQLAlchemy's naming)
    _caisson_paramstyle = "numeric_dollar"
    # SQLAlchemy reads this from each dialect class's own namespace.
    supports_statement_cache = True
    supports_native_decimal = True
    supports_native_uuid = True
    colspecs = {**_PGDialect.colspecs, _types.JSON: _PassThroughJSON}


class _SQLiteDBAPI:
    """`caisson.dbapi` with the attributes that SQLAlchemy's SQLite dialect
    reads from `sqlite3` before it connects. The host's SQLite (bundled by
    sqlx, 3.46 in this release) is newer than every feature check there;
    once connected, the dialect asks the database for its real version."""

    sqlite_version_info = (3, 46, 0)
    sqlite_version = "3.46.0"

    def __getattr__(self, name):
        return getattr(_dbapi, name)


class SQLiteDialect_caisson(_CaissonConnectArgs, _SQLiteDialect):  # noqa: N801
    _caisson_paramstyle = "qmark"
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls):
        return _SQLiteDBAPI()

    def _get_server_version_info(self, connection):
        version = connection.exec_driver_sql("SELECT sqlite_version()").scalar()
        return tuple(int(part) for part in version.split("."))
    colspecs = {
        **_SQLiteDialect.colspecs,
        _types.JSON: _PassThroughJSON,
        _types.DateTime: _NativeDateTime,
        _types.Date: _NativeDate,
        _types.Time: _NativeTime,
    }


class MySQLDialect_caisson(_CaissonConnectArgs, _MySQLDialect):  # noqa: N801
    """MySQL and MariaDB. The host prepares every statement, and MySQL's
    prepared statements take `?`, so SQLAlchemy writes `qmark`."""

    _caisson_paramstyle = "qmark"
    supports_statement_cache = True
    supports_native_decimal = True
    colspecs = {
        **_MySQLDialect.colspecs,
        _types.JSON: _PassThroughJSON,
        # MySQL's own TIME type turns the `timedelta` that network drivers
        # return into a `time`; the host already returns a `time`.
        _types.Time: _NativeTime,
    }

    def _detect_charset(self, connection):
        # The host's sessions are utf8mb4 (sqlx's MySQL default).
        return "utf8mb4"

    def _extract_error_code(self, exception):
        # SQLAlchemy's MySQL dialect tells errors apart by MySQL's error
        # number (1146, no such table, is how `has_table` learns a table is
        # missing); the host gives it in the error's detail, "MySQL error N
        # (SQLSTATE S)".
        detail = getattr(exception.__cause__, "detail", None) or ""
        found = _re.search(r"MySQL error (\d+)", detail)
        return int(found.group(1)) if found else None


_registry.register("postgresql.caisson", __name__, "PGDialect_caisson")
_registry.register("mysql.caisson", __name__, "MySQLDialect_caisson")
_registry.register("sqlite.caisson", __name__, "SQLiteDialect_caisson")
