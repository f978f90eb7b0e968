// The `jobctl bench` workload on BullMQ: N no-op jobs added in bulk, drained
// by one Worker, then creation -> handler start at a paced rate. BullMQ keeps
// every job and its state in Redis only; completed jobs are kept (its default),
// as jobhost keeps them in PostgreSQL. Its keys (BULLMQ_PREFIX) are removed at the end.
import { Queue, Worker } from "bullmq";
import { redisConnection } from "./bullmq-connection.mjs";
import { enqueueInChunks, nowMs, options, printDrain, printLatency, produceElsewhere, requireEnv, until } from "./common.mjs";

const o = options({ jobs: 100000, concurrency: 64, rate: 1000, "latency-seconds": 10, chunk: 10000 });
const prefix = requireEnv("BULLMQ_PREFIX");
const queueConnection = redisConnection();
const workerConnection = redisConnection();
const queue = new Queue("noop", { connection: queueConnection, prefix });
console.log(`config      Worker concurrency ${o.concurrency}, removeOnComplete default (completed jobs stay in Redis), ` +
            `key prefix ${prefix} (obliterated at the end)`);

await enqueueInChunks(o.jobs, o.chunk, "addBulk", (n) =>
  queue.addBulk(Array.from({ length: n }, () => ({ name: "noop", data: {} }))));

let handled = 0;
let completed = 0;
const latencies = [];
const t0 = nowMs();
const worker = new Worker(
  "noop",
  async (job) => {
    if (job.data.t !== undefined) latencies.push(nowMs() - job.data.t);
    handled++;
  },
  { connection: workerConnection, prefix, concurrency: o.concurrency },
);
worker.on("completed", () => completed++);
worker.on("error", (e) => console.error(`bullmq worker: ${e.message}`));
// 'completed' fires once the job is recorded as completed in Redis.
await until(() => completed >= o.jobs, 600_000, "every job to complete");
const drainMs = nowMs() - t0;
if (handled !== o.jobs) throw new Error(`${o.jobs} jobs added but the handler ran ${handled} times`);
printDrain(o.jobs, drainMs, `worker start -> last completion; ${handled} handler runs`);

if (o["latency-seconds"] > 0) {
  const before = completed;
  const sent = await produceElsewhere("bullmq", o.rate, o["latency-seconds"], {});
  await until(() => completed - before >= sent, 60_000, "the latency jobs");
  if (latencies.length !== sent) throw new Error(`latency: ${sent} jobs sent but ${latencies.length} ran`);
  printLatency(latencies, o.rate, o["latency-seconds"]);
}
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
await workerConnection.quit();
await queueConnection.quit();
