"""Airflow's side of Caisson's benchmark (issue 17).

Run by ``cargo bench -p caisson-bench`` with the Python of Airflow's
virtualenv (``bench/install-peers airflow``)::

    target/tools/airflow/bin/python bench/peers/airflow/bench.py HOME TASKS SAMPLES

It starts ``airflow standalone`` (its quick start: scheduler, DAG processor,
API server and triggerer, LocalExecutor, SQLite in HOME), waits until the two
DAGs of ``dags/caisson_bench.py`` are parsed, and runs each one SAMPLES times
after one untimed warm-up run, one run at a time (a run that fails is
recorded and tried again, see ``measure``). A run is triggered through
the REST API (``POST /api/v2/dags/{id}/dagRuns``) and timed from just before
that request to the ``end_date`` of its last task, read back through the REST
API once the run is final: the polling interval does not count.

Prints one JSON line: {version, executor, settings, chain_ns, fan_ns,
chain_runs, fan_runs, failures}. The
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

    def run(self, dag_id, tasks, home):
        """One DAG run: nanoseconds from the trigger to its last task's end,
        or None and what failed if a task failed."""
        started = time.time()
        run = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None})
        run_id = run["dag_run_id"]
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
        deadline = time.monotonic() + 1800
        while True:
            state = self.call("GET", path)["state"]
            if state in ("success", "failed"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{dag_id} run {run_id} did not finish")
            time.sleep(0.5)
        instances = []
        while True:
            page = self.call(
                "GET", f"{path}/taskInstances?limit=100&offset={len(instances)}"
            )["task_instances"]
            if not page:
                break
            instances.extend(page)
        failed = [ti for ti in instances if ti["state"] != "success"]
        if state == "failed" or failed:
            return None, {
                "dag_id": dag_id,
                "run_id": run_id,
                "tasks": {ti["task_id"]: ti["state"] for ti in failed},
                "log": failed_log(home, dag_id, run_id, failed),
            }
        if len(instances) != tasks:
            raise RuntimeError(f"{dag_id} ran {len(instances)} tasks, not {tasks}")
        ends = [datetime.fromisoformat(ti["end_date"]).timestamp() for ti in instances]
        return int((max(ends) - started) * 1e9), None


def failed_log(home, dag_id, run_id, failed):
    """The end of the first failed task's log, if it wrote one."""
    for ti in failed:
        logs = sorted((home / "logs").glob(
            f"dag_id={dag_id}/run_id={run_id}/task_id={ti['task_id']}/*.log"
        ))
        if logs:
            return logs[-1].read_text(errors="replace")[-1500:]
    return ""


def measure(api, dag_id, tasks, samples, home, failures):
    """One untimed run, then `samples` timed ones. A run that fails is
    recorded in `failures` and tried again, up to `samples` more times: a
    failure is part of the result, not a reason to lose the others."""
    timed = []
    attempts = 0
    while len(timed) < samples + 1 and attempts < 2 * samples + 1:
        attempts += 1
        ns, failure = api.run(dag_id, tasks, home)
        if failure is not None:
            failures.append(failure)
        else:
            timed.append(ns)
    if len(timed) < 2:
        raise RuntimeError(f"{dag_id}: {attempts} runs, {len(failures)} failed: {failures}")
    return timed[1:], attempts


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
        failures = []
        for dag_id, key in [("caisson_chain", "chain"), ("caisson_fan", "fan")]:
            timed, attempts = measure(api, dag_id, tasks, samples, home, failures)
            result[f"{key}_ns"] = timed
            result[f"{key}_runs"] = attempts
        result["failures"] = failures
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
