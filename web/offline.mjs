// The page as an installed app on a phone, for tests/test_web.py (playwright-core): a phone
// viewport, one visit online until the service worker has cached everything, then no
// network at all (the test stops the server when this prints "cached" and answers "go"
// on stdin; the browser context is offline too), a reload, files through the file input,
// the fake microphone, and the tab's memory while a long WAV file streams through.
// argv[2]: JSON {url, chromium, files: [path, ...], mic: {wav, seconds} | null,
// long: path | null, screenshot}. Prints one JSON line at the end.
import { chromium } from "playwright-core";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as readline from "node:readline";
import { chromiumArgs } from "./chromium.mjs";

const job = JSON.parse(process.argv[2]);
const args = chromiumArgs(job);
// a persistent profile: an incognito context is never installable
const profile = mkdtempSync(join(tmpdir(), "edgeser-pwa-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: job.chromium, args, viewport: { width: 390, height: 844 },
  deviceScaleFactor: 3, isMobile: true, hasTouch: true,
});
const out = {};
const errorText = () => {
  const e = document.getElementById("error");
  return e.hidden ? null : e.textContent;
};
const ready = (page) => page.waitForFunction(
  () => document.body.dataset.ready === "1" || !document.getElementById("error").hidden,
  null, { timeout: 120000 });
try {
  const page = context.pages()[0] ?? await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  out.logs = logs;
  await page.goto(job.url);
  await ready(page);
  await page.waitForFunction(() => window.edgeserOffline === true, null, { timeout: 180000 });
  const cdp = await context.newCDPSession(page);
  const manifest = await cdp.send("Page.getAppManifest");
  out.manifestErrors = manifest.errors;
  out.installabilityErrors = (await cdp.send("Page.getInstallabilityErrors")).installabilityErrors;
  // the network goes away: the server is stopped, the context is offline
  console.log("cached");
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) if (line.trim() === "go") break;
  await context.setOffline(true);
  await page.reload();
  await ready(page);
  out.readyOffline = await page.evaluate(() => document.body.dataset.ready === "1");
  out.isolatedOffline = await page.evaluate(() => self.crossOriginIsolated);
  out.controlled = await page.evaluate(() => !!navigator.serviceWorker.controller);
  await page.waitForFunction(() => document.getElementById("offline").textContent !== "",
                             null, { timeout: 30000 });
  out.offlineNote = await page.evaluate(() => document.getElementById("offline").textContent);
  if (job.files?.length) {
    await page.setInputFiles("#file", job.files);
    await page.waitForFunction((n) => window.edgeserFilesDone >= n, job.files.length,
                               { timeout: 180000 });
    out.files = await page.evaluate(() => window.edgeserFiles);
  }
  if (job.screenshot) await page.screenshot({ path: job.screenshot, fullPage: true });
  if (job.long) {
    // the tab's memory as the system sees it: resident memory of this profile's renderers
    const tab = async () => {
      let bytes = 0;
      for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
        try {
          const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
          if (!cmd.includes(profile) || !cmd.includes("--type=renderer")) continue;
          const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
          if (rss) bytes += Number(rss[1]) * 1024;
        } catch { /* the process ended */ }
      }
      return bytes;
    };
    // each sample follows a full garbage collection, so it measures what the page keeps,
    // not what the collector has yet to free
    const cdp = await context.newCDPSession(page);
    const settle = async () => {
      await cdp.send("HeapProfiler.collectGarbage");
      return [await tab(), (await cdp.send("Runtime.getHeapUsage")).usedSize];
    };
    [out.memoryBefore, out.heapBefore] = await settle();
    const before = await page.evaluate(() => [window.edgeserFiles.length,
                                              window.edgeserFilesDone]);
    await page.setInputFiles("#file", [job.long]);
    const samples = [], heap = [];
    const t0 = Date.now();
    while (await page.evaluate((n) => window.edgeserFilesDone === n, before[1])) {
      const [rss, used] = await settle();
      samples.push(rss);
      heap.push(used);
      await new Promise((ok) => setTimeout(ok, 500));
      if (Date.now() - t0 > 600000) throw new Error("the long file took over 10 minutes");
    }
    out.longSeconds = (Date.now() - t0) / 1000;
    out.longSegments = (await page.evaluate(() => window.edgeserFiles.length)) - before[0];
    out.memorySamples = samples;
    out.heapSamples = heap;
    out.longError = await page.evaluate(errorText);
  }
  if (job.mic) {
    await page.goto(job.url + "?mic=1");
    await page.waitForFunction(() => document.body.dataset.listening === "1", null,
                               { timeout: 60000 });
    await page.waitForTimeout(job.mic.seconds * 1000);
    await page.evaluate(() => window.edgeserStop());
    out.timeline = await page.evaluate(() => window.edgeserResults);
  }
  out.error = await page.evaluate(errorText);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
