// Drives the edgeser page in headless Chromium for tests/test_web.py (playwright-core).
// argv[2]: JSON {url, chromium, files: [[path, ...], ...], mic: {wav, seconds} | null,
// deny: bool, query: {name: value} (more query parameters, e.g. server, token), screenshot,
// timeout (ms per file batch, default 120000)}. Prints one JSON
// line: {ready, isolated, batches, timeline, error, logs}.
import { chromium } from "playwright-core";
import { chromiumArgs } from "./chromium.mjs";

const job = JSON.parse(process.argv[2]);
const args = chromiumArgs(job);
const browser = await chromium.launch({ executablePath: job.chromium, args });
const out = { batches: [] };
const errorText = () => {
  const e = document.getElementById("error");
  return e.hidden ? null : e.textContent;
};
try {
  const page = await browser.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  out.logs = logs;
  const query = new URLSearchParams(job.query ?? {});
  if (job.mic || job.deny) query.set("mic", "1");
  await page.goto(job.url + (query.toString() ? `?${query}` : ""));
  await page.waitForFunction(() => document.body.dataset.ready === "1" ||
                             !document.getElementById("error").hidden, null, { timeout: 60000 });
  out.ready = await page.evaluate(() => document.body.dataset.ready === "1");
  out.isolated = await page.evaluate(() => self.crossOriginIsolated);
  if (job.mic) {
    await page.waitForFunction(() => document.body.dataset.listening === "1", null,
                               { timeout: 30000 });
    const t0 = Date.now();
    await page.waitForTimeout(job.mic.seconds * 1000);
    await page.evaluate(() => window.edgeserStop());
    out.listened = (Date.now() - t0) / 1000;
    out.timeline = await page.evaluate(() => window.edgeserResults);
  }
  if (job.deny) {
    await page.waitForFunction(() => document.body.dataset.listening === "denied", null,
                               { timeout: 30000 });
    out.micError = await page.evaluate(errorText);
  }
  for (const batch of job.files ?? []) {
    const before = await page.evaluate(() => window.edgeserFiles.length);
    await page.setInputFiles("#file", batch);
    await page.waitForFunction((n) => window.edgeserFiles.length >= n, before + batch.length,
                               { timeout: job.timeout ?? 120000 });
    out.batches.push({
      results: await page.evaluate((n) => window.edgeserFiles.slice(n), before),
      error: await page.evaluate(errorText),
    });
  }
  out.error = await page.evaluate(errorText);
  if (job.screenshot) await page.screenshot({ path: job.screenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
