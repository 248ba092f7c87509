"""The component's generated bindings, or stand-ins outside a component.

Inside a component (built by `caisson build`), `wit_world` and
`componentize_py_types` are the bindings componentize-py generates. Outside
one (an editor, a type checker, `pytest`), they do not exist; this module
then provides stand-ins so that the SDK still imports. A host call made
through a stand-in raises `RuntimeError` saying so: run task functions
under `caisson.testing` there, which gives them local stores and databases.
"""

from __future__ import annotations

from typing import Any

try:
    import wit_world
    from componentize_py_types import Err, Ok
    from wit_world.imports import log, objects, params, sql, streams, task_types

    IN_COMPONENT = True
except ModuleNotFoundError as missing:
    # Only the bindings' absence means "outside a component"; any other
    # missing module is a real error.
    if missing.name not in ("wit_world", "componentize_py_types"):
        raise
    IN_COMPONENT = False

    _OUTSIDE = (
        "{name}: a Caisson host call outside a component. Build and run the task "
        "with `caisson build` / `caisson run`, or call the task function under "
        "`caisson.testing.run(...)`, which provides local stores and databases."
    )

    class _Absent(type):
        """A binding that does not exist here: any attribute is another
        absent binding (the same one each time, so it works as a dict key and
        in `isinstance`), and calling one raises."""

        _made: dict[str, "_Absent"] = {}

        def __getattr__(cls, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            return _absent(f"{cls.__name__}.{name}")

        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(_OUTSIDE.format(name=cls.__name__))

    def _absent(name: str) -> Any:
        made = _Absent._made.get(name)
        if made is None:
            made = _Absent._made[name] = _Absent(name, (), {})
        return made

    class Err(Exception):  # type: ignore[no-redef]
        """Stands in for componentize-py's `Err`: never raised outside a component."""

        def __init__(self, value: Any):
            super().__init__(value)
            self.value = value

    class Ok:  # type: ignore[no-redef]
        """Stands in for componentize-py's `Ok`: never made outside a component."""

        def __init__(self, value: Any):
            self.value = value

    wit_world = _absent("wit_world")
    log = _absent("log")
    objects = _absent("objects")
    params = _absent("params")
    sql = _absent("sql")
    streams = _absent("streams")
    task_types = _absent("task_types")

__all__ = [
    "IN_COMPONENT",
    "Err",
    "Ok",
    "log",
    "objects",
    "params",
    "sql",
    "streams",
    "task_types",
    "wit_world",
]
