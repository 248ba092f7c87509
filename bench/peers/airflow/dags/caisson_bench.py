"""Airflow's side of Caisson's scheduling benchmark (issue 17).

Two DAGs of CAISSON_BENCH_AIRFLOW_TASKS no-op tasks each, the shapes of the
suite's Caisson workflows:

- ``caisson_chain``: s0 >> s1 >> ... >> s(N-1), a linear chain;
- ``caisson_fan``: s0 >> [s1 .. s(N-2)] >> s(N-1), a fan-out/fan-in.

Each task is a ``@task`` Python callable that returns nothing, so that every
task goes through the executor as a real task does. ``EmptyOperator`` would
not: the scheduler marks it successful without running it, which would time
the scheduler alone against Caisson running a sandbox per step.
"""

import os

from airflow.sdk import DAG, task

N = int(os.environ.get("CAISSON_BENCH_AIRFLOW_TASKS", "50"))


@task
def noop():
    pass


with DAG("caisson_chain", schedule=None, catchup=False):
    previous = None
    for i in range(N):
        step = noop.override(task_id=f"s{i}")()
        if previous is not None:
            previous >> step
        previous = step

with DAG("caisson_fan", schedule=None, catchup=False):
    first = noop.override(task_id="s0")()
    last = noop.override(task_id=f"s{N - 1}")()
    for i in range(1, N - 1):
        first >> noop.override(task_id=f"s{i}")() >> last
