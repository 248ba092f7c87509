"""Needs packaging < 22: it relies on LegacyVersion, which 22.0 removed."""

import time

import packaging
from packaging.version import LegacyVersion, parse

from caisson import log, params, task


@task
def run() -> dict:
    started = time.time()
    # Hold the instance a while so the test can show both tasks running at once.
    time.sleep(float(params.get("hold_seconds", "0")))
    version = parse("2024-banana")
    if not isinstance(version, LegacyVersion):
        raise TypeError(f"expected a LegacyVersion, got {type(version).__name__}")
    log.info("packaging %s parsed a legacy version", packaging.__version__)
    return {
        "packaging": packaging.__version__,
        "parsed": str(version),
        "started": started,
        "finished": time.time(),
    }
