# with: packaging==21.3
"""uv's side of the trivial pinned task: what tests/python/packaging-old
(py-packaging-old.wasm) does, as a script that `uv run --no-project --with`
the line above runs in a cached environment."""

import json

import packaging
from packaging.version import LegacyVersion, parse

version = parse("2024-banana")
if not isinstance(version, LegacyVersion):
    raise TypeError(f"expected a LegacyVersion, got {type(version).__name__}")
print(json.dumps({"packaging": packaging.__version__, "parsed": str(version)}))
