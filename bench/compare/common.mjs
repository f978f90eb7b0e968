// Shared by graphile.mjs, bullmq.mjs and producer.mjs: the clock, options,
// pacing and the report lines, shaped like `jobctl bench`'s.

// CLOCK_MONOTONIC in milliseconds: one clock for every process on the machine,
// so a producer process and the worker can compare timestamps.
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

// --name=value arguments over defaults; numbers stay numbers.
export function options(defaults) {
  const out = { ...defaults };
  for (const arg of process.argv.slice(2)) {
    const m = /^--([a-z-]+)=(.*)$/.exec(arg);
    if (!m || !(m[1] in defaults)) throw new Error(`unknown argument ${arg}; known: ${Object.keys(defaults).join(", ")}`);
    out[m[1]] = typeof defaults[m[1]] === "number" ? Number(m[2]) : m[2];
    if (Number.isNaN(out[m[1]])) throw new Error(`--${m[1]} must be a number, got ${m[2]}`);
  }
  return out;
}

export function requireEnv(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

// Calls send() `rate` times a second for `seconds`, on `lanes` interleaved
// schedules so one slow call does not hold up the others. Returns the count sent.
export async function paced(rate, seconds, lanes, send) {
  const period = (1000 * lanes) / rate;
  const start = nowMs() + 100;
  const end = start + seconds * 1000;
  let sent = 0;
  const lane = async (i) => {
    for (let next = start + (period * i) / lanes; next < end; next += period) {
      const wait = next - nowMs();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await send();
      sent++;
    }
  };
  await Promise.all(Array.from({ length: lanes }, (_, i) => lane(i)));
  return sent;
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

export function printEnqueue(n, ms, how) {
  console.log(`enqueue     ${n} jobs in ${(ms / 1000).toFixed(2)} s = ${Math.round(n / (ms / 1000))} jobs/s (${how})`);
}

export function printDrain(n, ms, how) {
  console.log(`drain       ${n} jobs in ${(ms / 1000).toFixed(2)} s = ${Math.round(n / (ms / 1000))} jobs/s (${how})`);
}

export function printLatency(samples, rate, seconds) {
  const s = [...samples].sort((a, b) => a - b);
  const f = (p) => percentile(s, p).toFixed(2);
  console.log(`latency     ${s.length} jobs at ${rate}/s for ${seconds} s, creation -> handler start: ` +
              `p50 ${f(0.5)} ms  p90 ${f(0.9)} ms  p99 ${f(0.99)} ms  max ${s[s.length - 1].toFixed(2)} ms`);
}

// Enqueues `total` jobs with add(count) in calls of at most `chunk`, and
// prints the enqueue line.
export async function enqueueInChunks(total, chunk, how, add) {
  const t0 = nowMs();
  for (let i = 0; i < total; i += chunk) await add(Math.min(chunk, total - i));
  printEnqueue(total, nowMs() - t0, `${how}, ${chunk} per call`);
}

// Resolves once pred() holds, polling every `everyMs`; rejects after timeoutMs.
export async function until(pred, timeoutMs, what, everyMs = 5) {
  const deadline = nowMs() + timeoutMs;
  while (!(await pred())) {
    if (nowMs() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

// Runs producer.mjs in a process of its own, as jobctl bench's producers are
// outside the host; resolves with the number of jobs it sent.
export async function produceElsewhere(system, rate, seconds, env) {
  const { spawn } = await import("node:child_process");
  const child = spawn(process.execPath, [new URL("./producer.mjs", import.meta.url).pathname,
                                         system, String(rate), String(seconds)],
                      { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const code = await new Promise((r) => child.on("exit", r));
  if (code !== 0) throw new Error(`the ${system} producer exited with ${code}`);
  return Number(out.trim());
}
