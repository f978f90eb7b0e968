// Drives the dashboard's job search in headless Chromium, as an operator
// would: with reads protected by a token, enters it, searches the failed
// jobs of a type, opens one job's page (attempts, errors, payload, timeline),
// then replays every job of the search with the bulk button, confirming the
// count the page names.
//
//   node search.mjs BASE_URL TOKEN TYPE EXPECTED_COUNT [SCREENSHOT_DIR]
//
// Prints "bulk replayed N" on success; exits non-zero with the reason on any
// failure. Every wait is bounded.
import { chromium } from "playwright-core";

const [base, token, type, expected, shots] = process.argv.slice(2);
if (!base || !token || !type || !expected) {
  console.error("usage: node search.mjs BASE_URL TOKEN TYPE EXPECTED_COUNT [SCREENSHOT_DIR]");
  process.exit(2);
}

async function until(what, fn, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-quic", "--disable-gpu",
    ...(process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : []),
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(base + "/");
  // Without the token the page has nothing to show: reads need it.
  await until("the page to say it may not read", async () => (await page.textContent("#status")).includes("401"));
  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  await until("the first refresh with the token", async () => (await page.textContent("#status")).startsWith("updated"));

  await page.fill("#f-type", type);
  await page.selectOption("#f-status", "failed");
  await page.click("#search");
  const rows = await until(`${expected} failed ${type} jobs in the results`, async () => {
    const n = await page.$$eval("#results tbody a.job", (as) => as.length);
    return n === Number(expected) ? n : null;
  });

  // The job page: its attempt with the error and duration, its payload, its timeline.
  const first = await page.getAttribute("#results tbody a.job", "data-id");
  await page.click(`#results a.job[data-id="${first}"]`);
  await until("the job page", async () => (await page.textContent("#job-id")) === first);
  const attempts = await page.textContent("#attempts");
  if (!attempts.includes("smtp 550") || !attempts.includes("ms")) throw new Error("attempts: " + attempts);
  const payload = await page.textContent("#job-payload");
  if (!payload.includes("search-test")) throw new Error("payload: " + payload);
  const timeline = await page.textContent("#job-timeline");
  if (!timeline.includes("created") || !timeline.includes("attempt 1: failed")) throw new Error("timeline: " + timeline);
  if (shots) await page.screenshot({ path: `${shots}/dashboard-search.png`, fullPage: true });

  // Bulk replay: the confirmation names how many jobs.
  let asked = "";
  page.once("dialog", async (d) => {
    asked = d.message();
    await d.accept();
  });
  await page.click('button.bulk-action[data-action="replay"]');
  await until("the replay to be confirmed", async () =>
    (await page.textContent("#status")).includes(`replay: ${expected} jobs`));
  if (!asked.startsWith(`Replay ${expected} jobs`)) throw new Error("the confirmation said: " + asked);
  await until("the audit log to show it", async () => (await page.textContent("#audit")).includes("jobs.bulk_replay"));
  if (errors.length) throw new Error("errors in the page: " + errors.join("; "));
  console.log(`found ${rows}, opened ${first}, confirmed "${asked}"`);
  console.log("bulk replayed " + expected);
} finally {
  await browser.close();
}
