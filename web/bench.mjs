// bench/web_speed.py's browser side (playwright-core, headless Chromium).
// argv[2]: a JSON file {url, chromium, waves: {seconds: [samples]}, runs, threads: [1, 2],
// kernels: [{file, inputs: {name: {type, shape}}}] | null, mic: {wav, minutes} | null}.
// Prints one JSON line.
import { readFileSync } from "fs";
import { chromium } from "playwright-core";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const base = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
              "--enable-precise-memory-info"];
const out = { latency: {}, load: null };

async function open(args, query) {
  const browser = await chromium.launch({ executablePath: job.chromium, args: [...base, ...args] });
  const page = await browser.newPage();
  const t0 = Date.now();
  await page.goto(job.url + query);
  await page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: 120000 });
  const loadMs = Date.now() - t0;
  return { browser, page, loadMs };
}

for (const threads of job.threads) {
  const { browser, page, loadMs } = await open([], `?threads=${threads}`);
  if (threads === job.threads[0]) {
    out.load = {
      ms: loadMs,
      bytes: await page.evaluate(() => performance.getEntriesByType("resource")
        .reduce((s, e) => s + (e.transferSize || e.encodedBodySize || 0), 0)
        + (performance.getEntriesByType("navigation")[0]?.transferSize || 0)),
    };
  }
  out.latency[threads] = {};
  for (const [seconds, samples] of Object.entries(job.waves)) {
    out.latency[threads][seconds] = await page.evaluate(
      ([s, r]) => window.edgeserTime(s, r), [samples, job.runs]);
  }
  await browser.close();
}

if (job.kernels) {
  // single operators (files under /model/), one thread: the kernels' own speed in WASM
  const { browser, page } = await open([], "?threads=1");
  out.kernels = await page.evaluate(async ([items, runs]) => {
    const ort = await import("/vendor/ort/ort.wasm.min.mjs");
    const times = {};
    for (const item of items) {
      const session = await ort.InferenceSession.create(`/model/${item.file}`,
                                                        { executionProviders: ["wasm"] });
      const feeds = {};
      for (const [name, { type, shape }] of Object.entries(item.inputs)) {
        const n = shape.reduce((a, b) => a * b, 1);
        // the values bench/web_speed.py's kernel_input gives native onnxruntime
        const data = type === "uint8" ? new Uint8Array(n) : new Float32Array(n);
        for (let i = 0; i < n; i++) data[i] = type === "uint8" ? (i * 37) % 256 : Math.sin(i * 0.37);
        feeds[name] = new ort.Tensor(type, data, shape);
      }
      times[item.file] = await window.edgeserMedianMs(() => session.run(feeds), runs);
      await session.release();
    }
    return times;
  }, [job.kernels, job.runs]);
  await browser.close();
}

if (job.mic) {
  const { browser, page } = await open(
    ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
     `--use-file-for-fake-audio-capture=${job.mic.wav}`], "?mic=1");
  await page.waitForFunction(() => document.body.dataset.listening === "1", null,
                             { timeout: 60000 });
  const memory = async () => (await page.evaluate(async () =>
    (await performance.measureUserAgentSpecificMemory()).bytes));
  out.memory = [];
  const total = job.mic.minutes * 60;
  for (let t = 0; t <= total; t += 60) {
    if (t) await page.waitForTimeout(60000);
    out.memory.push({ seconds: t, bytes: await memory(),
                      segments: await page.evaluate(() => window.edgeserResults.length) });
  }
  await browser.close();
}
console.log(JSON.stringify(out));
