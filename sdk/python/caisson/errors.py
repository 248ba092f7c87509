"""Exceptions raised by the SDK, one per kind of the WIT `error` variant."""

from __future__ import annotations

from componentize_py_types import Err
from wit_world.imports import types as _types


class CaissonError(Exception):
    """A host call failed. `kind` is the WIT error case, such as `not-found`."""

    kind = "other"
    #: Whether running the task again may help. Only backend failures (an
    #: unreachable store or database) are worth a retry.
    retryable = False

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


class TaskError(Exception):
    """Raise this to fail the run with `message`; set `retryable` when a
    retry may succeed (the run's retry policy then applies)."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def from_wit(error: _types.Error) -> CaissonError:
    if isinstance(error, _types.Error_NotFound):
        return NotFound()
    if isinstance(error, _types.Error_AccessDenied):
        return AccessDenied()
    if isinstance(error, _types.Error_TooLarge):
        return TooLarge(error.value)
    if isinstance(error, _types.Error_InvalidInput):
        return InvalidInput(error.value)
    if isinstance(error, _types.Error_Backend):
        return BackendError(error.value)
    if isinstance(error, _types.Error_Other):
        return OtherError(error.value)
    return OtherError(repr(error))


def call(function, *args):
    """Calls a generated binding, turning its `Err` into a `CaissonError`."""
    try:
        return function(*args)
    except Err as e:
        raise from_wit(e.value) from None
