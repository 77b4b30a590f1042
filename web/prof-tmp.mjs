import { chromium } from "playwright-core";
const [url, files, secs, threads, opts] = [process.argv[2], process.argv[3].split(","), parseFloat(process.argv[4]), parseInt(process.argv[5]), process.argv[6] || "{}"];
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu"] });
const page = await browser.newPage();
page.on("console", m => console.error("console:", m.text()));
await page.goto(url + `?threads=${threads}`);
await page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: 120000 });
const res = await page.evaluate(async ([files, secs, threads, opts]) => {
  const ort = await import("/vendor/ort/ort.wasm.min.mjs");
  const out = {};
  const n = Math.round(secs * 16000);
  const w = new Float32Array(n); for (let i = 0; i < n; i++) w[i] = 0.3 * Math.sin(i * 0.05) * Math.sin(i * 0.0007) + 0.01 * Math.sin(i * 1.3);
  for (const f of files) {
    const s = await ort.InferenceSession.create("/model/" + f, { executionProviders: ["wasm"], ...JSON.parse(opts) });
    const feeds = { waveform: new ort.Tensor("float32", w, [1, n]), lengths: new ort.Tensor("int64", BigInt64Array.from([BigInt(n)]), [1]) };
    await s.run(feeds);
    const ts = [];
    for (let r = 0; r < 5; r++) { const t0 = performance.now(); await s.run(feeds); ts.push(performance.now() - t0); }
    ts.sort((a, b) => a - b); out[f] = ts[2];
    await s.release();
  }
  return out;
}, [files, secs, threads, opts]);
console.log(JSON.stringify(res));
await browser.close();
