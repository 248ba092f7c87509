"""The SDK outside a component, and `caisson.testing` against its real
local backends (a directory, SQLite). Run by tests/all/authoring.rs with
the Python toolchain's pytest."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))

from caisson import (  # noqa: E402
    AccessDenied,
    Db,
    InvalidInput,
    NotFound,
    SqlConflict,
    Store,
    log,
    params,
    task,
    testing,
)


@task
def load(request: dict) -> dict:
    store = Store.open("raw")
    db = Db.open("warehouse")
    db.execute("CREATE TABLE IF NOT EXISTS events (name TEXT PRIMARY KEY, amount INTEGER)")
    rows = 0
    with db.transaction():
        for meta in store.list(request["prefix"]):
            for line in store.lines(meta.key):
                name, amount = line.split(",")
                db.execute("INSERT INTO events (name, amount) VALUES ($1, $2)", name, int(amount))
                rows += 1
    log.info("loaded %d rows for %s", rows, params.get("who", "nobody"))
    total = db.query_one("SELECT SUM(amount) AS total FROM events")
    with store.open_write("out/total.json") as writer:
        writer.write(json.dumps(total))
    return {"rows": rows, "total": total["total"]}


def test_a_task_runs_against_a_directory_and_sqlite(tmp_path):
    (tmp_path / "raw" / "in").mkdir(parents=True)
    (tmp_path / "raw" / "in" / "a.csv").write_text("x,1\ny,2\n")
    (tmp_path / "raw" / "in" / "b.csv").write_text("z,4\n")
    result = testing.run(
        load,
        {"prefix": "in/"},
        stores={"raw": tmp_path / "raw"},
        databases={"warehouse": tmp_path / "w.db"},
        params={"who": "tests"},
    )
    assert result.output == {"rows": 3, "total": 7}
    assert json.loads(result.output_bytes) == result.output
    assert result.logs == [("info", "loaded 3 rows for tests")]
    assert json.loads((tmp_path / "raw" / "out" / "total.json").read_text()) == {"total": 7}


def test_a_failed_transaction_leaves_nothing_and_conflicts_are_typed(tmp_path):
    (tmp_path / "raw" / "in").mkdir(parents=True)
    (tmp_path / "raw" / "in" / "a.csv").write_text("x,1\nx,2\n")
    with pytest.raises(SqlConflict):
        testing.run(
            load,
            {"prefix": "in/"},
            stores={"raw": tmp_path / "raw"},
            databases={"warehouse": tmp_path / "w.db"},
        )
    with testing.host(databases={"warehouse": tmp_path / "w.db"}):
        assert Db.open("warehouse").query("SELECT * FROM events") == []


def test_only_the_given_labels_are_granted_and_keys_stay_inside(tmp_path):
    with testing.host(stores={"raw": tmp_path}):
        with pytest.raises(AccessDenied):
            Store.open("other")
        with pytest.raises(AccessDenied):
            Db.open("warehouse")
        store = Store.open("raw")
        with pytest.raises(NotFound):
            store.read("missing")
        with pytest.raises(InvalidInput, match="bad key"):
            store.read("../outside")


def test_host_calls_outside_the_harness_say_what_to_do():
    with pytest.raises(RuntimeError, match="caisson.testing"):
        Store.open("raw")


def test_read_many_yields_in_order_and_a_missing_key_at_its_place(tmp_path):
    store = testing.LocalStore(tmp_path)
    for name in ("b", "a", "c"):
        store.write(f"in/{name}", name * 3)
    pairs = list(store.read_many(["in/c", "in/nope", "in/a"], errors="yield"))
    assert [key for key, _ in pairs] == ["in/c", "in/nope", "in/a"]
    assert pairs[0][1] == b"ccc" and pairs[2][1] == b"aaa"
    assert isinstance(pairs[1][1], NotFound) and pairs[1][1].key == "in/nope"
    assert list(store.read_many(prefix="in/")) == [
        ("in/a", b"aaa"),
        ("in/b", b"bbb"),
        ("in/c", b"ccc"),
    ]
    with pytest.raises(NotFound) as raised:
        list(store.read_many(["in/a", "in/nope"]))
    assert raised.value.key == "in/nope"
    with pytest.raises(ValueError):
        list(store.read_many(["in/a"], prefix="in/"))
