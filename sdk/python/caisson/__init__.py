"""Caisson tasks in Python.

```python
from caisson import task, Store, Db, log

@task
def run(input: bytes) -> bytes:
    log.info("got %d bytes", len(input))
    return input
```

Build with `caisson build-python DIR -o task.wasm`. Import everything your
task needs at the top of its module: the component is a snapshot taken at
build time, and a module first imported while the task runs is not in it.
"""

from . import log, params
from ._task import task
from .errors import (
    AccessDenied,
    BackendError,
    CaissonError,
    Conflict,
    DatabaseError,
    InvalidInput,
    NotFound,
    OtherError,
    RetryTransaction,
    SqlConflict,
    TaskError,
    TooLarge,
    Unsupported,
)
from .objects import ObjectMeta, Store, Writer
from .sql import Db, Interval

__all__ = [
    "AccessDenied",
    "BackendError",
    "CaissonError",
    "Conflict",
    "DatabaseError",
    "Db",
    "Interval",
    "InvalidInput",
    "NotFound",
    "ObjectMeta",
    "OtherError",
    "RetryTransaction",
    "SqlConflict",
    "Store",
    "TaskError",
    "TooLarge",
    "Unsupported",
    "Writer",
    "log",
    "params",
    "task",
]
