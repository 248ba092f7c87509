"""Loads CSV files from an object store into a SQL table.

Input (JSON): {"prefix": "incoming/", "table": "events", "dialect": "mysql"}
(`dialect` is optional: `mysql` for MySQL and MariaDB, whose only
placeholder is `?`; anything else uses `$1, $2, ...`, which PostgreSQL and
SQLite take.)
Grants: objects=raw (where the CSV files are), sql=warehouse (where the
rows go). The files under the prefix are read several at a time by the
host (`read_many`) while the rows go in; a file too large to read whole is
streamed line by line instead. All rows go in one transaction, so a failure
leaves the table as it was.
"""

import csv

from caisson import Db, Store, TaskError, TooLarge, log, task


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
    files = [m.key for m in raw.list(prefix) if m.key.endswith(".csv")]
    rows = 0
    with db.transaction():
        for done, (key, data) in enumerate(raw.read_many(files, errors="yield")):
            if isinstance(data, TooLarge):
                lines = raw.lines(key)
            elif isinstance(data, Exception):
                raise data
            else:
                lines = data.decode().splitlines()
            for record in csv.DictReader(lines):
                db.execute(
                    insert,
                    key,
                    record["name"],
                    int(record["amount"]),
                )
                rows += 1
            log.progress(done + 1, len(files))
    log.info("loaded %d rows from %d files into %s", rows, len(files), table)
    return {"files": len(files), "rows": rows}
