"""A harness for task authors' unit tests: runs a task function in-process,
outside any component, against real local backends.

```python
from caisson import testing
import app

def test_totals(tmp_path):
    (tmp_path / "sales").mkdir()
    (tmp_path / "sales" / "a.csv").write_text("region,amount\\nnorth,5\\n")
    result = testing.run(app.run, stores={"data": tmp_path}, params={"prefix": "sales/"})
    assert result.output["totals"] == {"north": 5}
    assert "north" in (tmp_path / "summary.json").read_text()
```

Stores are local directories (`Store` reads and writes files under them) and
SQL sources are SQLite databases (Python's `sqlite3`; `$1` placeholders work
as in a task). The run's log and progress are recorded on the result.
`caisson.dbapi` and `caisson.sqlalchemy` are not covered yet: they call the
host's SQL bindings directly.

This is a test harness, not the runtime: there is no sandbox, no limits and
no WebAssembly. What it checks is the task's own logic. Run the built
component with `caisson run` to check the rest (the real host, the grants,
the limits).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import decimal as _decimal
import io
import json
import os
import re
import sqlite3
import tempfile
import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import _task
from . import log as _log_module
from . import params as _params_module
from .errors import (
    AccessDenied,
    CaissonError,
    DatabaseError,
    InvalidInput,
    NotFound,
    SqlConflict,
)
from .objects import ObjectMeta, Store
from .sql import Db

__all__ = ["LocalDb", "LocalStore", "Result", "host", "run"]


@dataclass
class Result:
    """What a task function did under `run`."""

    #: What the function returned, as it returned it.
    output: Any
    #: The run's output as bytes, as the component would return it.
    output_bytes: bytes
    #: `(level, message)` for every log record, level in lower case.
    logs: list[tuple[str, str]] = field(default_factory=list)
    #: `(done, total)` for every progress report.
    progress: list[tuple[int, int]] = field(default_factory=list)

    def log_text(self) -> str:
        return "\n".join(message for _, message in self.logs)


def run(
    function: Callable[..., Any],
    input: bytes | str | dict | list | None = None,
    *,
    stores: dict[str, str | os.PathLike] | None = None,
    databases: dict[str, str | os.PathLike] | None = None,
    params: dict[str, str] | None = None,
) -> Result:
    """Calls the `@task` function `function` as a run would: `input` is
    encoded to bytes (a dict or list as JSON) and decoded by the function's
    annotation; `stores` maps labels to directories and `databases` maps
    labels to SQLite files (created if missing). Only those labels are
    granted: opening another raises `AccessDenied`, as in a real run.
    Exceptions from the function propagate, for the test to see."""
    if input is None:
        data = b""
    elif isinstance(input, (bytes, bytearray)):
        data = bytes(input)
    elif isinstance(input, str):
        data = input.encode()
    else:
        data = json.dumps(input).encode()
    with host(stores=stores, databases=databases, params=params) as result:
        value = _task._caller(function)(data)
        result.output = value
        result.output_bytes = _task._encode(value)
    return result


@contextlib.contextmanager
def host(
    *,
    stores: dict[str, str | os.PathLike] | None = None,
    databases: dict[str, str | os.PathLike] | None = None,
    params: dict[str, str] | None = None,
) -> Iterator[Result]:
    """Within the block, `Store.open`, `Db.open`, `log` and `params` use the
    given local backends; the yielded `Result` collects the log. For testing
    helpers that are not the task function itself."""
    result = Result(output=None, output_bytes=b"")
    stores = {label: Path(path) for label, path in (stores or {}).items()}
    databases = {label: Path(path) for label, path in (databases or {}).items()}
    fake_params = _Params(dict(params or {}))
    fake_log = _Log(result)

    def open_store(cls: type, label: str) -> Store:
        if label not in stores:
            raise AccessDenied(f"no store {label!r} in this test's stores")
        return LocalStore(stores[label], label)

    def open_db(cls: type, label: str) -> Db:
        if label not in databases:
            raise AccessDenied(f"no database {label!r} in this test's databases")
        return LocalDb(databases[label], label)

    saved = (
        Store.__dict__["open"],
        Db.__dict__["open"],
        _log_module._log,
        _params_module._params,
    )
    Store.open = classmethod(open_store)  # type: ignore[method-assign,assignment]
    Db.open = classmethod(open_db)  # type: ignore[method-assign,assignment]
    _log_module._log = fake_log  # type: ignore[assignment]
    _params_module._params = fake_params  # type: ignore[assignment]
    try:
        yield result
    finally:
        Store.open, Db.open = saved[0], saved[1]  # type: ignore[method-assign]
        _log_module._log, _params_module._params = saved[2], saved[3]


class _Level:
    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class _Log:
    """Stands in for the `log` bindings."""

    Level = _Level

    def __init__(self, result: Result):
        self._result = result

    def log(self, level: str, message: str) -> None:
        self._result.logs.append((level, message))

    def progress(self, done: int, total: int) -> None:
        self._result.progress.append((done, total))


class _Params:
    """Stands in for the `params` bindings."""

    def __init__(self, values: dict[str, str]):
        self._values = values

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def all(self) -> list[tuple[str, str]]:
        return sorted(self._values.items())


class LocalStore(Store):
    """A `Store` over a local directory: keys are `/`-separated paths under
    it, and a key may not climb out of it."""

    def __init__(self, root: str | os.PathLike, label: str = "local"):
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)
        self.label = label

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise InvalidInput(f"bad key {key!r}")
        return self._root.joinpath(*parts)

    def _meta(self, key: str, path: Path) -> ObjectMeta:
        stat = path.stat()
        return ObjectMeta(key, stat.st_size, stat.st_mtime_ns // 1000, None)

    def _file(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(key)
        return path

    def read(self, key: str) -> bytes:
        return self._file(key).read_bytes()

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        with self._file(key).open("rb") as f:
            f.seek(offset)
            return f.read(length)

    def write(self, key: str, data: bytes | str) -> ObjectMeta:
        if isinstance(data, str):
            data = data.encode()
        with self.open_write(key) as writer:
            writer.write(data)
        return writer.close()

    def head(self, key: str) -> ObjectMeta:
        return self._meta(key, self._file(key))

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_file():
            path.unlink()

    def copy(self, source: str, destination: str) -> None:
        self.write(destination, self.read(source))

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectMeta]:
        found = []
        for path in self._root.rglob("*"):
            if path.is_file():
                key = path.relative_to(self._root).as_posix()
                if key.startswith(prefix):
                    found.append((key, path))
        for key, path in sorted(found):
            yield self._meta(key, path)

    def open_read(self, key: str) -> io.BufferedReader:
        return self._file(key).open("rb")

    def _read_many(  # type: ignore[override]
        self, keys: Iterable[str] | None, prefix: str | None
    ) -> Iterator[tuple[str, bytes | CaissonError]]:
        # One at a time: a directory has no latency to hide.
        if keys is None:
            keys = [meta.key for meta in self.list(prefix or "")]
        for key in keys:
            try:
                yield key, self.read(key)
            except CaissonError as failure:
                failure.key = key
                yield key, failure

    def open_write(self, key: str) -> "_LocalWriter":  # type: ignore[override]
        return _LocalWriter(self, key)

    def close(self) -> None:
        pass


class _LocalWriter:
    """Like `caisson.Writer`: nothing is visible at the key until `close`,
    and an exception in the `with` block leaves the old object in place."""

    def __init__(self, store: LocalStore, key: str):
        self._store = store
        self._key = key
        self._path = store._path(key)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._path.parent, prefix=".caisson-upload-")
        self._file: io.BufferedWriter | None = os.fdopen(fd, "wb")
        self._temporary = Path(name)
        self.meta: ObjectMeta | None = None

    def write(self, data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode()
        if self._file is None:
            raise ValueError("write to a closed writer")
        return self._file.write(data)

    def close(self) -> ObjectMeta:
        if self.meta is not None:
            return self.meta
        if self._file is None:
            raise ValueError("the upload was aborted")
        self._file.close()
        self._file = None
        os.replace(self._temporary, self._path)
        self.meta = self._store._meta(self._key, self._path)
        return self.meta

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> "_LocalWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# `$1` becomes `?1`, SQLite's numbered placeholder, which Python's sqlite3
# binds from a sequence (a named `$1` would need a dict).
_DOLLAR = re.compile(r"\$(\d+)")


def _to_sqlite(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, (_decimal.Decimal, _uuid.UUID)):
        return str(value)
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return value


class LocalDb(Db):
    """A `Db` over a SQLite file (Python's `sqlite3`)."""

    def __init__(self, path: str | os.PathLike, label: str = "local"):
        # Transactions are the task's to open (`begin`/`transaction()`), as
        # with the host: every other statement commits on its own.
        self._connection = sqlite3.connect(str(path), isolation_level=None)
        self._connection.row_factory = sqlite3.Row
        self.label = label

    def _run(self, statement: str, params: tuple) -> sqlite3.Cursor:
        try:
            return self._connection.execute(
                _DOLLAR.sub(r"?\1", statement), [_to_sqlite(p) for p in params]
            )
        except sqlite3.IntegrityError as e:
            if "UNIQUE" in str(e):
                raise SqlConflict("23505", str(e)) from None
            raise DatabaseError("23000", str(e)) from None
        except sqlite3.Error as e:
            raise DatabaseError("HY000", str(e)) from None

    def query(self, statement: str, *params: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in self._run(statement, params).fetchall()]

    def cursor(self, statement: str, *params: Any, batch: int = 500) -> Iterator[dict[str, Any]]:
        rows = self._run(statement, params)
        while chunk := rows.fetchmany(batch):
            for row in chunk:
                yield dict(row)

    def execute(self, statement: str, *params: Any) -> int:
        return max(self._run(statement, params).rowcount, 0)

    def begin(self) -> None:
        self._connection.execute("BEGIN")

    def commit(self) -> None:
        self._connection.execute("COMMIT")

    def rollback(self) -> None:
        self._connection.execute("ROLLBACK")

    def close(self) -> None:
        self._connection.close()

