"""The `@task` decorator and the `run` export componentize-py calls."""

from __future__ import annotations

import inspect
import json
import traceback
from typing import Any, Callable

from ._wit import wit_world
from ._wit import Err
from ._wit import log as _log
from ._wit import task_types as _task_types

from .errors import CaissonError, TaskError

_call: Callable[[bytes], Any] | None = None


def task(function: Callable[..., Any]) -> Callable[..., Any]:
    """Marks `function` as the task's entry point.

    It takes the run's input, decoded by its first parameter's annotation:
    `bytes` (the default), `str` (UTF-8) or `dict`/`list` (JSON); or no
    parameter at all. It returns `bytes`, `str`, `None`, or anything
    JSON-serialisable, which becomes the run's output.
    """
    global _call
    if _call is not None:
        raise RuntimeError(f"a second @task function: {function.__qualname__}")
    _call = _caller(function)
    return function


def _caller(function: Callable[..., Any]) -> Callable[[bytes], Any]:
    parameters = list(inspect.signature(function).parameters.values())
    if not parameters:
        return lambda _input: function()
    annotation = parameters[0].annotation
    # Annotations are strings under `from __future__ import annotations`.
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    name = name.split("[", 1)[0]
    if name == "str":
        return lambda data: function(data.decode("utf-8"))
    if name in ("dict", "list", "Any"):
        return lambda data: function(json.loads(data) if data else None)
    return lambda data: function(bytes(data))


def _encode(output: Any) -> bytes:
    if output is None:
        return b""
    if isinstance(output, (bytes, bytearray, memoryview)):
        return bytes(output)
    if isinstance(output, str):
        return output.encode("utf-8")
    return json.dumps(output, default=str).encode("utf-8")


def _fail(message: str, retryable: bool, with_traceback: bool) -> Err:
    if with_traceback:
        # The traceback goes to the run's log; the run's error stays short.
        try:
            _log.log(_log.Level.ERROR, traceback.format_exc().rstrip())
        except Err:
            pass  # the log budget is spent; the run's error says enough
    return Err(_task_types.TaskError(message=message, retryable=retryable))


class WitWorld(wit_world.WitWorld):
    """The component's `run` export."""

    def run(self, input: bytes) -> bytes:
        if _call is None:
            raise _fail("no function is marked with @caisson.task", False, False)
        try:
            return _encode(_call(input))
        except TaskError as e:
            raise _fail(e.message, e.retryable, False) from None
        except CaissonError as e:
            raise _fail(f"{e.kind}: {e}", e.retryable, True) from None
        except BaseException as e:  # noqa: BLE001 - any exception fails the run, not the instance
            raise _fail(f"{type(e).__name__}: {e}", False, True) from None
