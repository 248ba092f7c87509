# with: packaging==21.3
"""uv's side of the idle-memory figure: the trivial task's import, then a
long sleep, as py-packaging-old.wasm holds its instance with hold_seconds."""

import time

import packaging.version  # noqa: F401

time.sleep(120)  # bounded, in case the suite dies before killing it
