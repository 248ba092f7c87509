"""The run's parameters (`params` in the run request), all strings."""

from __future__ import annotations

from typing import overload

from ._wit import params as _params


@overload
def get(name: str) -> str | None: ...
@overload
def get(name: str, default: str) -> str: ...
def get(name: str, default: str | None = None) -> str | None:
    value = _params.get(name)
    return default if value is None else value


def all() -> dict[str, str]:  # noqa: A001 - mirrors the WIT function
    return dict(_params.all())
