"""Schemathesis hooks for Caisson's REST fuzz test (tests/all/fuzz.rs).

Module uploads are raw `application/wasm` bytes, a media type schemathesis
has no serializer for: send whatever it generated as bytes, so the
component validator gets fuzzed too.
"""

import json

import schemathesis


@schemathesis.serializer("application/wasm")
def wasm(ctx, value):
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode("utf-8")
