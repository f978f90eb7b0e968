// Drives the dashboard of a running host in headless Chromium, as an operator
// would: watches its numbers move while jobs run, then replays a dead-lettered
// job by clicking its button (first with a wrong token, then the right one).
//
//   node dashboard.mjs BASE_URL TOKEN [SCREENSHOT_DIR]
//
// Prints "replayed <job id>" on success, so the caller can check the database;
// exits non-zero with the reason on any failure. Every wait is bounded.
import { chromium } from "playwright-core";

const [base, token, shots] = process.argv.slice(2);
if (!base || !token) {
  console.error("usage: node dashboard.mjs BASE_URL TOKEN [SCREENSHOT_DIR]");
  process.exit(2);
}

async function api(path, body) {
  const r = await fetch(base + path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json();
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}: ${JSON.stringify(json)}`);
  return json;
}

const number = async (page, id) => Number(await page.textContent("#" + id));

async function until(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // The machine is offline: keep Chromium from calling home at every start. Root
  // in a container has no user namespace for Chromium's sandbox.
  args: [
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic", "--disable-gpu",
    ...(process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : []),
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(base + "/");
  await until("the first refresh", async () => (await page.textContent("#status")).startsWith("updated"));
  const before = await number(page, "total-completed");

  // One long job first: its handler reports progress, which the running list shows as a bar.
  const long = await api("/api/v1/jobs", { type: "noop", payload: { sleep_ms: 12000 } });
  const progress = await until("the long job's progress bar", async () =>
    page.evaluate((id) => {
      const tr = [...document.querySelectorAll("#running tbody tr")].find((r) => r.textContent.includes(id));
      const bar = tr && tr.querySelector("progress");
      return bar && bar.value > 0 && bar.value < 1 ? bar.value : null;
    }, long.id)).catch(async (e) => {
    throw new Error(e.message + "; the running list shows: " + (await page.textContent("#running")));
  });
  // 300 jobs of 100 ms on a pool of 4: about 8 s of work, so several refreshes
  // see jobs running and the completed count climbing.
  for (let i = 0; i < 300; i++) await api("/api/v1/jobs", { type: "noop", payload: { sleep_ms: 100 } });
  const running = await until("running jobs on the page", async () => (await number(page, "total-running")) > 0);
  const seen = new Set();
  await until("the completed count to climb twice", async () => {
    seen.add(await number(page, "total-completed"));
    return [...seen].filter((n) => n > before).length >= 2;
  });
  await until("the chart to show the completions", async () =>
    Number(await page.getAttribute("#throughput", "data-completed")) > 0);
  if (shots) await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  // A job that fails for good lands in the DLQ table with a Replay button.
  const { id } = await api("/api/v1/jobs", { type: "noop", payload: { permanent: true } });
  const button = `button.replay[data-id="${id}"]`;
  await page.waitForSelector(button, { timeout: 20000 });
  await until("the failure in the recent failures table", async () =>
    (await page.textContent("#failures")).includes("permanent failure as asked"));
  if (shots) await page.screenshot({ path: `${shots}/dashboard-dlq.png`, fullPage: true });

  await page.fill("#token", "wrong-token");
  await page.dispatchEvent("#token", "change");
  await page.click(button);
  await until("the wrong token to be reported", async () => (await page.textContent("#status")).includes("wrong token"));

  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  await page.click(button);
  await until("the replay to be confirmed", async () => (await page.textContent("#status")).includes("replayed " + id));

  // An open batch shows with a progress bar that moves, and leaves the table once finished.
  const batch = await api("/api/v1/batches", { description: "dashboard batch" });
  for (let i = 0; i < 100; i++) await api("/api/v1/jobs", { type: "noop", payload: { sleep_ms: 120 }, batch_id: batch.id });
  await api("/api/v1/batches/" + batch.id + "/close", {});
  const batchBar = () => page.evaluate((id) => {
    const bar = document.querySelector(`#batches tr[data-batch="${id}"] progress`);
    return bar ? bar.value / bar.max : null;
  }, batch.id);
  const partly = await until("the batch's bar part-way", async () => {
    const v = await batchBar();
    return v !== null && v > 0 && v < 1 ? v : null;
  });
  if (shots) await page.screenshot({ path: `${shots}/dashboard-batch.png`, fullPage: true });
  await until("the finished batch to leave the table", async () => (await batchBar()) === null &&
    (await api("/api/v1/batches/" + batch.id)).state === "finished");

  // Pause the queue from its row: a job enqueued meanwhile waits; Resume runs it.
  const pause = 'button.pause[data-queue="noop"]';
  await page.click(pause);
  await until("the queue to show as paused", async () =>
    (await page.textContent('#queues tr[data-queue="noop"]')).includes("PAUSED"));
  const held = await api("/api/v1/jobs", { type: "noop", payload: {} });
  await new Promise((r) => setTimeout(r, 1500));
  const whilePaused = await (await fetch(base + "/api/v1/jobs/" + held.id)).json();
  if (whilePaused.status === "completed" || whilePaused.status === "running") {
    throw new Error("a job of the paused queue ran: " + whilePaused.status);
  }
  if (shots) await page.screenshot({ path: `${shots}/dashboard-paused.png`, fullPage: true });
  await page.click(pause);
  await until("the paused job to run after Resume", async () =>
    (await (await fetch(base + "/api/v1/jobs/" + held.id)).json()).status === "completed");
  if (errors.length) throw new Error("errors in the page: " + errors.join("; "));
  console.log(`saw ${running} running, progress ${progress.toFixed(2)}, batch ${partly.toFixed(2)}; completed counts ${[...seen].join(", ")}`);
  console.log("replayed " + id);
} finally {
  await browser.close();
}
