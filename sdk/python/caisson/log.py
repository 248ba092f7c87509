"""The run's log, shipped to the operator's log view (and `caisson run logs`).

`print` works too: stdout and stderr are captured into the same log.
"""

from __future__ import annotations

from ._wit import Err
from ._wit import log as _log


def _emit(level: _log.Level, message: object, args: tuple) -> None:
    text = str(message)
    if args:
        text = text % args
    try:
        _log.log(level, text)
    except Err:
        # The run's log budget is spent: the record is dropped, and the run
        # fails with the log-limit error when it ends. Logging must not
        # raise into the task's own code.
        pass


def trace(message: object, *args: object) -> None:
    _emit(_log.Level.TRACE, message, args)


def debug(message: object, *args: object) -> None:
    _emit(_log.Level.DEBUG, message, args)


def info(message: object, *args: object) -> None:
    _emit(_log.Level.INFO, message, args)


def warn(message: object, *args: object) -> None:
    _emit(_log.Level.WARN, message, args)


warning = warn


def error(message: object, *args: object) -> None:
    _emit(_log.Level.ERROR, message, args)


def progress(done: int, total: int) -> None:
    """Reports `done` out of `total` units of work."""
    _log.progress(done, total)
