import { chromium } from "playwright-core";
import { readFileSync } from "fs";
const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu"] });
const page = await browser.newPage();
await page.goto(job.url + `?threads=${job.threads}`);
await page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: 120000 });
const res = await page.evaluate(async (job) => {
  const ort = await import("/vendor/ort/ort.wasm.min.mjs");
  const out = {};
  for (const item of job.items) {
    const s = await ort.InferenceSession.create("/model/" + item.file, { executionProviders: ["wasm"], ...(job.opts || {}) });
    const feeds = {};
    for (const [name, spec] of Object.entries(item.inputs)) {
      const n = spec.shape.reduce((a, b) => a * b, 1);
      if (spec.type === "int64") feeds[name] = new ort.Tensor("int64", BigInt64Array.from(spec.value.map(BigInt)), spec.shape);
      else { const w = new Float32Array(n); for (let i = 0; i < n; i++) w[i] = 0.3 * Math.sin(i * 0.05) * Math.sin(i * 0.0007) + 0.01 * Math.sin(i * 1.3) + (spec.offset || 0); feeds[name] = new ort.Tensor("float32", w, spec.shape); }
    }
    await s.run(feeds);
    const ts = [];
    for (let r = 0; r < job.runs; r++) { const t0 = performance.now(); await s.run(feeds); ts.push(performance.now() - t0); }
    ts.sort((a, b) => a - b); out[item.file] = ts[Math.floor(ts.length / 2)];
    await s.release();
  }
  return out;
}, job);
console.log(JSON.stringify(res));
await browser.close();
