"""Airflow's side of Caisson's benchmark (issue 17).

Run by ``cargo bench -p caisson-bench`` with the Python of Airflow's
virtualenv (``bench/install-peers airflow``)::

    target/tools/airflow/bin/python bench/peers/airflow/bench.py HOME TASKS SAMPLES

It starts ``airflow standalone`` (its quick start: scheduler, DAG processor,
API server and triggerer, LocalExecutor, SQLite in HOME), waits until the two
DAGs of ``dags/caisson_bench.py`` are parsed, and runs each one SAMPLES times
after one untimed warm-up run, one run at a time. A run is triggered through
the REST API (``POST /api/v2/dags/{id}/dagRuns``) and timed from just before
that request to the ``end_date`` of its last task, read back through the REST
API once the run is final: the polling interval does not count.

Prints one JSON line: {version, executor, settings, chain_ns, fan_ns}. The
standalone's own output goes to HOME/standalone.log, whose tail is printed to
stderr if anything fails.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Everything else is Airflow's default. These are not performance settings:
# they keep the example DAGs (about 80, each re-parsed every 30 s) from
# competing for the 2 cores with the two DAGs under test, let the benchmark
# call the REST API without a login, and put the API server on a free port of
# 127.0.0.1 instead of 0.0.0.0:8080, which other programs on the machine may
# hold.
SETTINGS = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base):
        self.base = base

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def ready(self, dag_ids):
        try:
            for dag_id in dag_ids:
                self.call("GET", f"/api/v2/dags/{dag_id}")
            return True
        except OSError:
            return False

    def run(self, dag_id, tasks):
        """One DAG run: nanoseconds from the trigger to its last task's end."""
        started = time.time()
        run = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
        run_id = run["dag_run_id"]
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
        deadline = time.monotonic() + 1800
        while True:
            state = self.call("GET", path)["state"]
            if state == "success":
                break
            if state == "failed":
                raise RuntimeError(f"{dag_id} run {run_id} failed")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{dag_id} run {run_id} did not finish")
            time.sleep(0.5)
        ends = []
        while len(ends) < tasks:
            page = self.call(
                "GET", f"{path}/taskInstances?limit=100&offset={len(ends)}"
            )["task_instances"]
            if not page:
                break
            for ti in page:
                if ti["state"] != "success":
                    raise RuntimeError(f"{dag_id} {ti['task_id']}: {ti['state']}")
                ends.append(datetime.fromisoformat(ti["end_date"]).timestamp())
        if len(ends) != tasks:
            raise RuntimeError(f"{dag_id} ran {len(ends)} tasks, not {tasks}")
        return int((max(ends) - started) * 1e9)


def main():
    home, tasks, samples = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.update(SETTINGS)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(HERE / "dags"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "CAISSON_BENCH_AIRFLOW_TASKS": str(tasks),
            # `airflow standalone` starts its components as `airflow ...`
            # from PATH: the virtualenv's, not another installation.
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    airflow = str(bin_dir / "airflow")
    version = subprocess.run(
        [airflow, "version"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip().splitlines()[-1]
    log_path = home / "standalone.log"
    log = open(log_path, "wb")
    # Its own process group, so that everything it starts (the components,
    # the executor's workers, the tasks) is stopped with it.
    standalone = subprocess.Popen(
        [airflow, "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    api = Api(f"http://127.0.0.1:{port}")
    try:
        dags = ["caisson_chain", "caisson_fan"]
        deadline = time.monotonic() + 300
        while not api.ready(dags):
            if standalone.poll() is not None:
                raise RuntimeError(f"airflow standalone exited: {standalone.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the DAGs were not parsed within 5 minutes")
            time.sleep(1)
        for dag_id in dags:
            api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        result = {
            "version": version,
            "executor": env.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor (default)"),
            "settings": SETTINGS,
        }
        for dag_id, key in [("caisson_chain", "chain_ns"), ("caisson_fan", "fan_ns")]:
            api.run(dag_id, tasks)  # warm-up, not timed
            result[key] = [api.run(dag_id, tasks) for _ in range(samples)]
        print(json.dumps(result), flush=True)
    except BaseException:
        log.flush()
        tail = log_path.read_bytes()[-4000:].decode(errors="replace")
        print(f"airflow standalone's log ends:\n{tail}", file=sys.stderr)
        raise
    finally:
        # Ctrl-C is how its quick start stops it; the group is killed after.
        if standalone.poll() is None:
            standalone.send_signal(signal.SIGINT)
            try:
                standalone.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(standalone.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        standalone.wait()


if __name__ == "__main__":
    main()
