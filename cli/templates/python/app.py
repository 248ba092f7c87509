"""{{name}}: sums the `amount` column of every CSV object under a prefix,
by region, and writes the totals back to the store as JSON.

Parameters: `store` (default `data`), `prefix` (default `sales/`) and
`output` (default `summary.json`).
"""

import csv
import json

from caisson import Store, TaskError, log, params, task


def add_rows(totals: dict[str, int], lines) -> int:
    """Adds the `region,amount` rows of a CSV to `totals`; returns how many
    rows there were. Plain Python, so it is easy to test on its own."""
    rows = 0
    for record in csv.DictReader(lines):
        try:
            amount = int(record["amount"])
        except (KeyError, TypeError, ValueError):
            raise TaskError(f"bad row {record!r}: expected region,amount") from None
        totals[record["region"]] = totals.get(record["region"], 0) + amount
        rows += 1
    return rows


@task
def run() -> dict:
    store = Store.open(params.get("store", "data"))
    prefix = params.get("prefix", "sales/")
    output = params.get("output", "summary.json")

    # List first, so that progress has a total.
    keys = [meta.key for meta in store.list(prefix)]
    log.info("summing %d objects under %r", len(keys), prefix)

    totals: dict[str, int] = {}
    rows = 0
    for i, key in enumerate(keys):
        rows += add_rows(totals, store.lines(key))  # streamed, a line at a time
        log.progress(i + 1, len(keys))

    summary = {"files": len(keys), "rows": rows, "totals": dict(sorted(totals.items()))}
    store.write(output, json.dumps(summary, indent=2))
    log.info("%d rows from %d files; totals in %s", rows, len(keys), output)
    return summary
