// graphile-worker's side of Caisson's benchmark (issue 17), run by
// `cargo bench -p caisson-bench` as
//   node bench/peers/graphile-worker/bench.cjs TOOLS_DIR
// with DATABASE_URL (a fresh database), JOBS, LATENCY_SAMPLES and CLIENTS
// in the environment. Prints one JSON line: {version, throughput, drain,
// latency_ns: [...]}. graphile-worker comes from TOOLS_DIR/node_modules
// (bench/install-peers), so this file needs no install of its own.
"use strict";
const path = require("node:path");
const { createRequire } = require("node:module");

const tools = process.argv[2];
const requireTool = createRequire(path.join(tools, "package.json"));
const { run, makeWorkerUtils } = requireTool("graphile-worker");
const version = requireTool("graphile-worker/package.json").version;

const connectionString = process.env.DATABASE_URL;
const jobs = Number(process.env.JOBS || 1000);
const latencySamples = Number(process.env.LATENCY_SAMPLES || 200);
const clients = Number(process.env.CLIENTS || 8);

// The configuration of the "Quick stats" on graphile-worker's performance
// page (worker.graphile.org/docs/performance): 24 concurrent jobs, a pool
// of 25, a local queue of 500, completions and failures batched with no
// delay. Everything else is the default.
const preset = {
  worker: {
    connectionString,
    concurrentJobs: 24,
    maxPoolSize: 25,
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
};

const now = () => process.hrtime.bigint();

async function main() {
  const utils = await makeWorkerUtils({ connectionString });
  await utils.migrate();

  let done = 0;
  let onDone = null;
  let onStart = null;
  const taskList = {
    // The no-op job; `latency` also reports when it started.
    noop: async () => {
      done += 1;
      if (onDone && done >= onDone.target) onDone.resolve();
    },
    latency: async () => {
      const started = now();
      if (onStart) onStart(started);
    },
  };
  const runner = await run({ preset, taskList, noHandleSignals: true });
  const until = (target) =>
    new Promise((resolve) => {
      onDone = { target, resolve };
      if (done >= target) resolve();
    });

  // Warm up: the pool, prepared statements, the JIT.
  for (let i = 0; i < 50; i++) await utils.addJob("noop", {});
  await until(50);
  done = 0;

  // Throughput, shaped as Caisson's: CLIENTS concurrent clients each add
  // their share one job at a time while the worker runs; timed from the
  // first add until the last job has run.
  let started = now();
  const finished = until(jobs);
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const count = Math.floor(jobs / clients) + (c < jobs % clients ? 1 : 0);
      for (let i = 0; i < count; i++) await utils.addJob("noop", {});
    }),
  );
  await finished;
  const throughput = jobs / (Number(now() - started) / 1e9);

  // The docs' method: the jobs queued first in one addJobs batch, timed
  // from the worker's start until they have all run.
  await runner.stop();
  done = 0;
  await utils.addJobs(Array.from({ length: jobs }, () => ({ identifier: "noop", payload: {} })));
  started = now();
  const drained = until(jobs);
  const drainer = await run({ preset, taskList, noHandleSignals: true });
  await drained;
  const drain = jobs / (Number(now() - started) / 1e9);

  // Add to start: one job at a time, timed from just before addJob to the
  // handler's first line, in this process.
  const latency = [];
  for (let i = 0; i < latencySamples + 5; i++) {
    const startedAt = new Promise((resolve) => {
      onStart = resolve;
    });
    const sent = now();
    await utils.addJob("latency", {});
    const began = await startedAt;
    if (i >= 5) latency.push(Number(began - sent));
  }
  await drainer.stop();
  await utils.release();
  process.stdout.write(JSON.stringify({ version, throughput, drain, latency_ns: latency }) + "\n");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
