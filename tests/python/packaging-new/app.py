"""Needs packaging >= 24.2: it uses packaging.licenses and the strict parser."""

import time

import packaging
from packaging.licenses import canonicalize_license_expression
from packaging.version import InvalidVersion, parse

from caisson import log, params, task


@task
def run() -> dict:
    started = time.time()
    time.sleep(float(params.get("hold_seconds", "0")))
    try:
        parse("2024-banana")
    except InvalidVersion:
        strict = True
    else:
        strict = False
    log.info("packaging %s", packaging.__version__)
    return {
        "packaging": packaging.__version__,
        "license": canonicalize_license_expression("mit or apache-2.0"),
        "strict": strict,
        "started": started,
        "finished": time.time(),
    }
