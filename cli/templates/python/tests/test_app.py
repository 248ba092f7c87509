"""Tests for the task's logic, run in-process with `pytest`.

`caisson.testing` runs the task function against a local directory (as the
store) and SQLite files (as databases): real backends on this machine, no
component and no sandbox. `caisson run .` runs the built component.
"""

import json
import shutil
from pathlib import Path

from caisson import TaskError, testing

import app

DATA = Path(__file__).parent.parent / "data"


def test_rows_are_summed_by_region():
    totals: dict[str, int] = {}
    rows = app.add_rows(totals, ["region,amount", "north,5", "south,2", "north,1"])
    assert rows == 3
    assert totals == {"north": 6, "south": 2}


def test_a_bad_amount_fails_the_run():
    try:
        app.add_rows({}, ["region,amount", "north,lots"])
    except TaskError as e:
        assert "bad row" in e.message
    else:
        raise AssertionError("a bad amount was accepted")


def test_the_task_writes_its_summary_to_the_store(tmp_path):
    store = tmp_path / "data"
    shutil.copytree(DATA / "sales", store / "sales")

    result = testing.run(app.run, stores={"data": store})

    assert result.output == {
        "files": 2,
        "rows": 6,
        "totals": {"east": 15, "north": 200, "south": 280},
    }
    assert json.loads((store / "summary.json").read_text()) == result.output
    assert result.progress == [(1, 2), (2, 2)]
    assert "6 rows from 2 files" in result.log_text()
