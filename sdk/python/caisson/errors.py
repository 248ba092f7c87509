"""Exceptions raised by the SDK, one per case of the WIT interfaces' `error`
variants (the object store's and the database's)."""

from __future__ import annotations

from typing import Any

from ._wit import Err


class CaissonError(Exception):
    """A host call failed. `kind` is the WIT error case, such as `not-found`."""

    kind = "other"
    #: Whether running the task again may help. Only backend failures (an
    #: unreachable store or database) are worth a retry.
    retryable = False
    #: The object's key, for a failure yielded by `Store.read_many`.
    key: str | None = None

    def __init__(self, detail: str = ""):
        super().__init__(detail or self.kind)
        self.detail = detail


class NotFound(CaissonError):
    kind = "not-found"


class AccessDenied(CaissonError):
    kind = "access-denied"


class TooLarge(CaissonError):
    kind = "too-large"


class InvalidInput(CaissonError):
    kind = "invalid-input"


class BackendError(CaissonError):
    kind = "backend"
    retryable = True


class OtherError(CaissonError):
    kind = "other"


class Conflict(CaissonError):
    """A conditional write did not hold (the object exists, or is another
    version), or a database unique violation (`SqlConflict`)."""

    kind = "conflict"


class Unsupported(CaissonError):
    kind = "unsupported"


class DatabaseError(CaissonError):
    """The database refused a statement; `.sqlstate` says why."""

    kind = "database"

    def __init__(self, sqlstate: str, message: str, detail: str | None = None):
        super().__init__(f"{sqlstate}: {message}" + (f" ({detail})" if detail else ""))
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail


class SqlConflict(DatabaseError, Conflict):
    """A unique violation (SQLSTATE 23505): the row is already there."""

    kind = "conflict"


class RetryTransaction(DatabaseError):
    """A serialization failure or deadlock: the transaction was rolled back,
    and running it again may succeed."""

    kind = "retry-transaction"
    retryable = True


class TaskError(Exception):
    """Raise this to fail the run with `message`; set `retryable` when a
    retry may succeed (the run's retry policy then applies)."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


_SIMPLE = {
    "TooLarge": TooLarge,
    "InvalidInput": InvalidInput,
    "Unsupported": Unsupported,
    "Backend": BackendError,
    "Other": OtherError,
}


def from_wit(error: Any) -> CaissonError:
    """Any interface's WIT `error` as an exception. Each interface has its
    own `error` variant, whose cases the bindings name `Error_<Case>`, so
    the case is read from the class name."""
    case = type(error).__name__.partition("_")[2]
    value = getattr(error, "value", None)
    if case == "NotFound":
        return NotFound()
    if case == "AccessDenied":
        return AccessDenied()
    if case in _SIMPLE:
        return _SIMPLE[case](value)
    if hasattr(value, "sqlstate"):
        cls = {"Conflict": SqlConflict, "RetryTransaction": RetryTransaction}.get(
            case, DatabaseError
        )
        return cls(value.sqlstate, value.message, value.detail)
    if case == "Conflict":
        return Conflict(value)
    return OtherError(repr(error))


def call(function, *args):
    """Calls a generated binding, turning its `Err` into a `CaissonError`."""
    try:
        return function(*args)
    except Err as e:
        raise from_wit(e.value) from None
