// The page's service worker: everything the page needs (its files, onnxruntime-web, Silero
// VAD, model.json and the model) in one cache named after the version the page registered
// it with (sw.js?v=...: a digest of the page's files and of the model), answered from that
// cache first, so the page opens and classifies with no network at all. A new page or a
// new model is a new version: the next online visit installs it beside the old one, and
// the old cache is deleted once the new worker takes over.

const VERSION = new URL(self.location.href).searchParams.get("v") || "unversioned";
const CACHE = `edgeser-${VERSION}`;
const PAGE = [
  "./", "index.html", "app.js", "dsp.js", "model.js", "remote.js", "vad.js", "capture.js",
  "style.css", "manifest.webmanifest", "icons/icon-192.png", "icons/icon-512.png",
  "icons/icon.svg",
  "vendor/ort/ort.wasm.min.mjs", "vendor/ort/ort-wasm-simd-threaded.mjs",
  "vendor/ort/ort-wasm-simd-threaded.wasm", "vad/silero_vad.onnx", "model/model.json",
];

async function precache() {
  const cache = await caches.open(CACHE);
  const card = await (await fetch("model/model.json", { cache: "no-store" })).json();
  const model = card.files?.int8 ?? card.files?.float32;
  await cache.addAll([...PAGE, `model/${model}`].map((u) => new Request(u, { cache: "no-store" })));
}

self.addEventListener("install", (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("edgeser-") && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    // a navigation (with or without ?mic=1) is the page itself
    const hit = request.mode === "navigate"
      ? await cache.match("./") : await cache.match(request, { ignoreSearch: true });
    return hit || fetch(request);
  })());
});
