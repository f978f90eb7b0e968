// An ioredis client for REDIS_URL (redis://[:password@]host:port[/db]). Under
// ESM, BullMQ wants a client rather than options; its workers require
// maxRetriesPerRequest: null (they block on Redis indefinitely).
import IORedis from "ioredis";
import { requireEnv } from "./common.mjs";

export function redisConnection() {
  return new IORedis(requireEnv("REDIS_URL"), { maxRetriesPerRequest: null });
}
