"""One call into each package of the README's compatibility table that
works when built from source; tests/all/python_packages.rs checks every
result."""

import decimal
import importlib.util

import jsonschema
import msgpack
import msgpack.fallback
import pyrsistent
import simplejson

from caisson import task

# Read while building: none of the C parts may be in the component.
NATIVE = {
    name: importlib.util.find_spec(name) is not None
    for name in ("pvectorc", "msgpack._cmsgpack", "simplejson._speedups")
}

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
# Made while building: a validator reads jsonschema's metaschemas, which are
# data files, and the component holds only the modules' snapshot.
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


@task
def run() -> dict:
    validator = VALIDATOR
    return {
        "native": NATIVE,
        "jsonschema": [validator.is_valid({"n": 1}), [e.message for e in validator.iter_errors({"n": "x"})]],
        "pyrsistent": dict(pyrsistent.pmap({"a": 1}).set("b", 2)),
        "msgpack": [msgpack.unpackb(msgpack.packb({"k": [1, 2]})), msgpack.Packer is msgpack.fallback.Packer],
        "simplejson": simplejson.dumps({"d": decimal.Decimal("1.10")}, use_decimal=True),
    }
