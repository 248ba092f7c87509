"""One call into each pure-Python package of the README's compatibility
table; tests/all/python_packages.rs checks every result."""

import datetime
import io
import zoneinfo

import attrs
import chardet
import click
import croniter
import fsspec
import fsspec.implementations.memory  # noqa: F401  (fsspec imports it lazily otherwise)
import jmespath
import marshmallow
import more_itertools
import packaging.version
import pytz
import requests
import six
import structlog
import tabulate
import tenacity
import toolz
from dateutil import parser as date_parser
from dateutil.relativedelta import relativedelta
from dotenv import dotenv_values
from google.protobuf import struct_pb2
from google.protobuf.internal import api_implementation

from caisson import task


# Time zones are data files, read when first named: name them while
# building, since the component holds the snapshot, not the files.
PARIS_PYTZ = pytz.timezone("Europe/Paris")
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


@attrs.define
class Point:
    x: int
    y: int


class OrderSchema(marshmallow.Schema):
    id = marshmallow.fields.Int(required=True)
    when = marshmallow.fields.Date()


# `main` needs `prog_name`: a task has no `sys.argv[0]` to take it from.
@click.command()
@click.option("--count", type=int)
def count_command(count):
    return count * 2


def retried() -> int:
    attempts = []

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)
    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ValueError("not yet")
        return len(attempts)

    return flaky()


def memory_fs() -> str:
    fs = fsspec.filesystem("memory")
    fs.pipe("/caisson/x.txt", b"in memory")
    return fs.cat("/caisson/x.txt").decode()


@task
def run() -> dict:
    base = datetime.datetime(2026, 12, 2, 10, 0)
    message = struct_pb2.Struct()
    message.update({"k": "v"})
    parsed = struct_pb2.Struct()
    parsed.ParseFromString(message.SerializeToString())
    return {
        "attrs": attrs.asdict(Point(1, 2)),
        "chardet": chardet.detect(b"\xef\xbb\xbfgr\xc3\xbc\xc3\x9fe")["encoding"],
        "click": count_command.main(["--count", "21"], prog_name="count", standalone_mode=False),
        "croniter": croniter.croniter("*/15 * * * *", base).get_next(datetime.datetime).isoformat(),
        "fsspec": memory_fs(),
        "jmespath": jmespath.search("a[?v > `1`].n", {"a": [{"n": "x", "v": 1}, {"n": "y", "v": 2}]}),
        "marshmallow": OrderSchema().load({"id": "7", "when": "2026-12-02"})["when"].isoformat(),
        "more_itertools": list(more_itertools.chunked(range(5), 2)),
        "packaging": packaging.version.Version("1.10") > packaging.version.Version("1.9"),
        "protobuf": [parsed["k"], api_implementation.Type()],
        "python_dateutil": (date_parser.parse("2 Dec 2026 10:00") + relativedelta(months=1)).isoformat(),
        "python_dotenv": dotenv_values(stream=io.StringIO("A=1\nB=${A}2\n")),
        "pytz": PARIS_PYTZ.localize(base).isoformat(),
        "requests": requests.Request("GET", "https://example.com/s", params={"q": "a b"}).prepare().url,
        "six": six.ensure_str(b"bytes"),
        "structlog": structlog.processors.JSONRenderer(sort_keys=True)(None, "info", {"event": "e", "n": 1}),
        "tabulate": tabulate.tabulate([[1, "x"]], headers=["n", "s"], tablefmt="github"),
        "tenacity": retried(),
        "toolz": toolz.groupby(len, ["a", "bb", "cc"]),
        "tzdata": datetime.datetime(2026, 7, 1, 12, tzinfo=PARIS).isoformat(),
    }
