"""Exercises the Python SDK; the input's `op` says how."""

import datetime
import decimal
import time
import uuid

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
    # Several reads in flight on the host; a missing key fails in its place.
    many = [
        [key, len(data) if isinstance(data, bytes) else data.kind]
        for key, data in store.read_many(
            [f"{prefix}/b.txt", f"{prefix}/missing", f"{prefix}/a.bin"], errors="yield"
        )
    ]
    under = [key for key, _ in store.read_many(prefix=f"{prefix}/")]

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
        "many": many,
        "under": under,
        "row": {**row, "data": list(row["data"])},
        "count": count,
        "streamed": [len(streamed), sum(streamed)],
        "params": params.all(),
    }


def types(request: dict) -> dict:
    """Binds every Python type the SDK maps and reads it back from a typed
    column, reporting what came back (and whether it is what was sent)."""
    db = Db.open(request["db"])
    postgres = request.get("postgres", False)
    table = request["table"]
    sent = {
        "d": datetime.date(1969, 7, 20),
        "t": datetime.time(12, 34, 56, 1),
        "naive": datetime.datetime(1900, 1, 1, 12, 34, 56, 789012),
        "aware": datetime.datetime(2026, 11, 24, 12, 30, tzinfo=datetime.timezone.utc),
        "forever": datetime.datetime.max.replace(tzinfo=datetime.timezone.utc),
        "big": 2**64 - 1 if postgres else 2**63 - 1,
    }
    if postgres:
        sent["num"] = decimal.Decimal("-12345678901234567890.123456789012345678")
        sent["id"] = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        sent["span"] = datetime.timedelta(days=3, microseconds=-4_000_001)
        columns = {
            "d": "DATE", "t": "TIME", "naive": "TIMESTAMP", "aware": "TIMESTAMPTZ",
            "forever": "TIMESTAMPTZ", "big": "NUMERIC(20)", "num": "NUMERIC(38, 18)",
            "id": "UUID", "span": "INTERVAL",
        }
        marks = ", ".join(f"${i + 1}" for i in range(len(sent)))
    else:
        columns = {
            "d": "DATE", "t": "TIME", "naive": "DATETIME", "aware": "DATETIME",
            "forever": "DATETIME", "big": "INTEGER",
        }
        marks = ", ".join("?" for _ in sent)
    names = list(sent)
    db.execute(f"CREATE TABLE {table} ({', '.join(f'{n} {columns[n]}' for n in names)})")
    db.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", *sent.values())
    got = db.query_one(f"SELECT {', '.join(names)} FROM {table}")
    db.execute(f"DROP TABLE {table}")
    # PostgreSQL has no unsigned type: a u64 comes back as an exact Decimal.
    if postgres:
        sent["big"] = decimal.Decimal(sent["big"])
    return {
        name: {"type": type(got[name]).__name__, "same": got[name] == value, "got": str(got[name])}
        for name, value in sent.items()
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


def host_hog(request: dict):
    """Tries to make the host spend memory for it, as the Rust guest
    `host-hog` does (see its doc for the modes); ends with the first error
    it meets, or returns "ok" for mode `normal`."""
    mib = 1 << 20
    mode = request["mode"]
    size = request.get("size", 0) * mib
    prefix = request.get("prefix", "host-hog")
    store = lambda: Store.open(request.get("store", "data"))  # noqa: E731
    db = lambda: Db.open(request.get("db", "warehouse"))  # noqa: E731
    ballast = bytearray(b"\x07") * (request.get("ballast", 0) * mib)
    if mode == "sql-text":
        db().query("SELECT '" + "a" * (size or 48 * mib) + "'")
    elif mode == "sql-params":
        conn, param = db(), "p" * (size or 15 * mib)
        for _ in range(20):
            conn.query("SELECT length($1) AS n", param)
    elif mode == "sql-rows":
        conn, kept = db(), []
        while True:
            kept.append(conn.query("SELECT repeat('r', 65536) AS r FROM generate_series(1, 64)"))
    elif mode == "keys":
        s, key = store(), "k" * (size or 5 * mib)
        for _ in range(20):
            s.write(key, b"x")
    elif mode == "puts":
        s, chunk, open_writers = store(), b"w" * mib, []
        for i in range(1_000_000):
            w = s.open_write(f"{prefix}/flood-{i}")
            for _ in range(8):
                w.write(chunk)
            open_writers.append(w)
    elif mode == "list":
        s, pad = store(), "p" * 40
        for i in range(1000):
            s.write(f"{prefix}/{pad}/{pad}-{i:04}", b"x")
        pages = []
        while True:
            pages.append(list(s.list(f"{prefix}/", page_size=1000)))
    elif mode == "log":
        line = "l" * 1024
        for n in range(32 * 1024):
            log.info("%d %s", n, line)
    elif mode == "normal":
        n = db().query_one("SELECT 41 + 1 AS n")["n"]
        s = store()
        s.write(f"{prefix}/normal", str(n))
        listed = list(s.list(f"{prefix}/", page_size=10))
        if n != 42 or not listed:
            raise TaskError(f"normal run saw {n} and {listed}")
        return b"ok"
    else:
        raise TaskError(f"unknown mode {mode!r}")
    del ballast
    raise TaskError(f"mode {mode} ended without an error")


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
    if op == "types":
        return types(request)
    if op == "raise":
        log.info("about to parse %r", request["amount"])
        return parse_amount(request["amount"])
    if op == "host-hog":
        return host_hog(request)
    if op == "retryable":
        raise TaskError("upstream busy", retryable=True)
    if op == "loop":
        n = 0
        while True:
            n += 1
    raise TaskError(f"unknown op {op!r}")
