// A paced producer in a process of its own: node producer.mjs graphile|bullmq RATE SECONDS.
// Each payload carries its creation time on the machine's monotonic clock.
// Prints the number of jobs sent.
import { nowMs, paced, requireEnv } from "./common.mjs";

const [system, rate, seconds] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const lanes = Math.min(4, Math.max(1, Math.floor(rate / 50)));
let send, close;
if (system === "graphile") {
  const { makeWorkerUtils } = await import("graphile-worker");
  const utils = await makeWorkerUtils({ connectionString: requireEnv("DATABASE_URL") });
  send = () => utils.addJob("noop", { t: nowMs() });
  close = () => utils.release();
} else if (system === "bullmq") {
  const { Queue } = await import("bullmq");
  const { redisConnection } = await import("./bullmq-connection.mjs");
  const connection = redisConnection();
  const queue = new Queue("noop", { connection, prefix: requireEnv("BULLMQ_PREFIX") });
  send = () => queue.add("noop", { t: nowMs() });
  close = async () => {
    await queue.close();
    await connection.quit();  // a client we made is ours to close
  };
} else {
  throw new Error(`unknown system ${system}; use graphile or bullmq`);
}
const sent = await paced(rate, seconds, lanes, send);
await close();
console.log(sent);
