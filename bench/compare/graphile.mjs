// The `jobctl bench` workload on graphile-worker: N no-op jobs enqueued in
// bulk, drained by one in-process worker pool, then creation -> handler start
// at a paced rate. Every option left unset keeps graphile-worker's default, so
// run.sh can measure it as shipped and as its performance guide tunes it.
import { Logger, makeWorkerUtils, run } from "graphile-worker";
import { enqueueInChunks, nowMs, options, printDrain, printLatency, produceElsewhere, requireEnv, until } from "./common.mjs";

const o = options({
  jobs: 100000, concurrency: 64, rate: 1000, "latency-seconds": 10, chunk: 10000,
  // 0 = graphile-worker's recommendation: 10 or concurrency + 2, whichever is larger.
  pool: 0,
  // -1 = off, graphile-worker's default for both.
  "local-queue": -1, "batch-delay": -1,
});
const url = requireEnv("DATABASE_URL");
const quiet = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});
const worker = {
  concurrentJobs: o.concurrency,
  maxPoolSize: o.pool > 0 ? o.pool : Math.max(10, o.concurrency + 2),
  ...(o["local-queue"] > 0 && { localQueue: { size: o["local-queue"] } }),
  ...(o["batch-delay"] >= 0 && { completeJobBatchDelay: o["batch-delay"], failJobBatchDelay: o["batch-delay"] }),
};
// pollInterval stays at its default (2000 ms): new jobs reach an idle worker
// through LISTEN "jobs:insert", the poll is only a fallback.
console.log(`config      concurrentJobs ${worker.concurrentJobs}, maxPoolSize ${worker.maxPoolSize}, ` +
            `localQueue ${worker.localQueue ? worker.localQueue.size : "off"}, ` +
            `completeJobBatchDelay ${worker.completeJobBatchDelay ?? "off"}, pollInterval 2000 ms + LISTEN`);

const utils = await makeWorkerUtils({ connectionString: url, logger: quiet });
await utils.migrate();
const remaining = async () =>
  (await utils.withPgClient((c) => c.query("SELECT count(*)::int AS n FROM graphile_worker.jobs"))).rows[0].n;

// With no worker running yet, so that the drain starts from a full queue as
// jobctl bench's does. Each addJobs call is one add_jobs() statement.
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
  preset: { worker },
});
await until(() => handled >= o.jobs, 600_000, "every job to run");
// graphile-worker deletes a job when it completes: the drain ends when the
// last deletion is committed. Counted only now, so the poll costs the run nothing.
await until(async () => (await remaining()) === 0, 60_000, "completions to be written");
const drainMs = nowMs() - t0;
if (handled !== o.jobs) throw new Error(`${o.jobs} jobs enqueued but the handler ran ${handled} times`);
printDrain(o.jobs, drainMs, `worker start -> jobs table empty; ${handled} handler runs`);

if (o["latency-seconds"] > 0) {
  const sent = await produceElsewhere("graphile", o.rate, o["latency-seconds"], {});
  await until(async () => latencies.length >= sent && (await remaining()) === 0, 60_000, "the latency jobs");
  if (latencies.length !== sent) throw new Error(`latency: ${sent} jobs sent but ${latencies.length} ran`);
  printLatency(latencies, o.rate, o["latency-seconds"]);
}
await runner.stop();
await utils.release();
