"""Exercises the Python SDK; the input's `op` says how."""

import datetime
import time

from caisson import AccessDenied, Db, NotFound, Store, TaskError, log, params, task


def parse_amount(text: str) -> int:
    return int(text)


def roundtrip(request: dict) -> dict:
    store = Store.open(request["store"])
    prefix = request["prefix"]
    # A streamed upload in many small writes, read back as lines.
    with store.open_write(f"{prefix}/lines.txt") as out:
        for i in range(request["lines"]):
            out.write(f"line {i}\n")
    lines = list(store.lines(f"{prefix}/lines.txt"))
    store.write(f"{prefix}/a.bin", bytes(range(256)))
    store.write(f"{prefix}/b.txt", "text")
    with store.open_read(f"{prefix}/a.bin") as f:
        head = f.read(4)
    listed = [m.key for m in store.list(f"{prefix}/", page_size=1)]

    db = Db.open(request["db"])
    db.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, flag BOOLEAN, ratio REAL, name TEXT, "
        "data BLOB, at TIMESTAMP, doc TEXT)"
    )
    at = datetime.datetime(2026, 11, 24, 12, 30, tzinfo=datetime.timezone.utc)
    with db.transaction():
        db.execute(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", 1, True, 0.5, "ünï", b"\x00\x01", at, None
        )
    try:
        with db.transaction():
            db.execute("INSERT INTO t (id, name) VALUES (2, 'rolled back')")
            raise RuntimeError("abort the transaction")
    except RuntimeError:
        pass
    row = db.query_one("SELECT id, flag, ratio, name, data, doc FROM t WHERE id = ?", 1)
    series = "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 2500) "
    streamed = [r["n"] for r in db.cursor(series + "SELECT n FROM s", batch=1000)]
    count = db.query_one("SELECT COUNT(*) AS n FROM t")["n"]
    return {
        "lines": len(lines),
        "first_line": lines[0],
        "last_line": lines[-1],
        "head": list(head),
        "listed": listed,
        "row": {**row, "data": list(row["data"])},
        "count": count,
        "streamed": [len(streamed), sum(streamed)],
        "params": params.all(),
    }


def errors(request: dict) -> dict:
    kinds = {}
    try:
        Store.open("never-granted")
    except AccessDenied as e:
        kinds["store"] = e.kind
    try:
        Db.open("never-granted")
    except AccessDenied as e:
        kinds["db"] = e.kind
    try:
        Store.open(request["store"]).read("no/such/key")
    except NotFound as e:
        kinds["missing"] = e.kind
    return kinds


@task
def run(request: dict):
    op = request["op"]
    if op == "hello":
        return b"hello"
    if op == "sleep":
        # The benchmark suite counts this line to know the instance is up.
        log.info("sleeping")
        time.sleep(request["ms"] / 1000)
        return None
    if op == "roundtrip":
        return roundtrip(request)
    if op == "errors":
        return errors(request)
    if op == "raise":
        log.info("about to parse %r", request["amount"])
        return parse_amount(request["amount"])
    if op == "retryable":
        raise TaskError("upstream busy", retryable=True)
    if op == "loop":
        n = 0
        while True:
            n += 1
    raise TaskError(f"unknown op {op!r}")
