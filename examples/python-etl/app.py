"""Loads CSV files from an object store into a SQL table.

Input (JSON): {"prefix": "incoming/", "table": "events", "dialect": "mysql"}
(`dialect` is optional: `mysql` for MySQL and MariaDB, whose only
placeholder is `?`; anything else uses `$1, $2, ...`, which PostgreSQL and
SQLite take.)
Grants: objects=raw (where the CSV files are), sql=warehouse (where the
rows go). Every file under the prefix is streamed line by line; all rows
go in one transaction, so a failure leaves the table as it was.
"""

import csv

from caisson import Db, Store, TaskError, log, task


@task
def run(request: dict) -> dict:
    prefix = request.get("prefix", "")
    table = request["table"]
    if not table.isidentifier():
        raise TaskError(f"not a table name: {table!r}")

    marks = "?, ?, ?" if request.get("dialect") == "mysql" else "$1, $2, $3"
    insert = f"INSERT INTO {table} (source, name, amount) VALUES ({marks})"

    raw = Store.open("raw")
    db = Db.open("warehouse")
    files = [m for m in raw.list(prefix) if m.key.endswith(".csv")]
    rows = 0
    with db.transaction():
        for done, meta in enumerate(files):
            reader = csv.DictReader(raw.lines(meta.key))
            for record in reader:
                db.execute(
                    insert,
                    meta.key,
                    record["name"],
                    int(record["amount"]),
                )
                rows += 1
            log.progress(done + 1, len(files))
    log.info("loaded %d rows from %d files into %s", rows, len(files), table)
    return {"files": len(files), "rows": rows}
