# with: packaging==21.3
"""uv's side of the python-etl example's work: every `*.csv` in DIR, in name
order, read with `csv.DictReader` and inserted into the `events` table of
the SQLite database DB in one transaction, as examples/python-etl/app.py
does through Caisson's SDK. The pinned package is not used: it stands for
the dependency a real task pins, and makes uv build the same cached
environment as for the trivial task.

Usage: python etl.py DIR DB"""

import csv
import json
import pathlib
import sqlite3
import sys

directory, database = pathlib.Path(sys.argv[1]), sys.argv[2]
db = sqlite3.connect(database)
files = sorted(p for p in directory.iterdir() if p.name.endswith(".csv"))
rows = 0
with db:
    for path in files:
        with path.open(newline="") as f:
            for record in csv.DictReader(f):
                db.execute(
                    "INSERT INTO events (source, name, amount) VALUES (?, ?, ?)",
                    (path.name, record["name"], int(record["amount"])),
                )
                rows += 1
db.close()
print(json.dumps({"files": len(files), "rows": rows}))
