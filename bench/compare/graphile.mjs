// The `jobctl bench` workload on graphile-worker: N no-op jobs enqueued in
// bulk, drained by one worker pool, then creation -> handler start at a paced
// rate. Uses the batching its performance guide recommends (a local queue of
// concurrency + 1 jobs, batched completions) and a pool of concurrency + 2
// connections, so it is measured at its best, not at its defaults.
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import { enqueueInChunks, nowMs, options, printDrain, printLatency, produceElsewhere, requireEnv, until } from "./common.mjs";

const o = options({ jobs: 100000, concurrency: 64, rate: 1000, "latency-seconds": 10, chunk: 10000 });
const url = requireEnv("DATABASE_URL");
const quiet = new Logger(() => (level, message) => {
  if (level === "error") console.error(`graphile-worker: ${message}`);
});
const utils = await makeWorkerUtils({ connectionString: url, logger: quiet });
await utils.migrate();
const remaining = async () =>
  (await utils.withPgClient((c) => c.query("SELECT count(*)::int AS n FROM graphile_worker.jobs"))).rows[0].n;

// Enqueue with no worker running, in chunks like jobctl bench's.
await enqueueInChunks(o.jobs, o.chunk, "addJobs", (n) =>
  utils.addJobs(Array.from({ length: n }, () => ({ identifier: "noop", payload: {} }))));

let handled = 0;
const latencies = [];
const taskList = {
  noop: async (payload) => {
    if (payload.t !== undefined) latencies.push(nowMs() - payload.t);
    handled++;
  },
};
const t0 = nowMs();
const runner = await run({
  connectionString: url,
  taskList,
  noHandleSignals: true,
  logger: quiet,
  preset: {
    worker: {
      concurrentJobs: o.concurrency,
      maxPoolSize: o.concurrency + 2,
      localQueue: { size: o.concurrency + 1 },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    },
  },
});
await until(() => handled >= o.jobs, 600_000, "every job to run");
// Completed jobs are deleted: the drain ends when the last deletion is committed.
await until(async () => (await remaining()) === 0, 60_000, "completions to be written");
const drainMs = nowMs() - t0;
if (handled !== o.jobs) throw new Error(`${o.jobs} jobs enqueued but the handler ran ${handled} times`);
printDrain(o.jobs, drainMs, `worker start -> last completion written; ${handled} handler runs`);

if (o["latency-seconds"] > 0) {
  const sent = await produceElsewhere("graphile", o.rate, o["latency-seconds"], {});
  await until(async () => latencies.length >= sent && (await remaining()) === 0, 60_000, "the latency jobs");
  printLatency(latencies, o.rate, o["latency-seconds"]);
}
await runner.stop();
await utils.release();
