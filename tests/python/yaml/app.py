"""PyYAML built from source: the pure-Python parser and emitter, no libyaml."""

import yaml

from caisson import task


@task
def run(input: bytes) -> dict:
    document = yaml.safe_load(input)
    return {
        "version": yaml.__version__,
        "libyaml": yaml.__with_libyaml__,
        "parsed": document,
        "dumped": yaml.safe_dump({"b": [1, 2], "a": "x"}, sort_keys=True),
    }
