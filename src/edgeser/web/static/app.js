// The page: load the model and Silero VAD, listen to the microphone or read files, and
// classify each utterance on this device.
//
// - Microphone: AudioWorklet -> mono -> 16 kHz (StreamResampler) -> Silero VAD ->
//   segments as they close -> trimmed as model.json says -> the model. The timeline is
//   window.edgeserResults: objects in `edgeser stream --json`'s format, in seconds from
//   the start of listening. `?mic=1` starts listening on load.
// - Files: a file up to the model's window (model.json long_input.window_seconds, 10 s) is
//   classified whole (window.edgeserFiles, in `edgeser predict --json`'s format); a longer
//   one is streamed through the VAD like the microphone and its segments join
//   window.edgeserFiles with the file's name as "path". A long WAV file is read from disk
//   one second at a time, so a 10-minute recording never sits in the page's memory.
// - "Download results": JSON lines of the timeline (or of the files, without one).
// - Offline: a service worker (sw.js) caches the page, onnxruntime-web, Silero and the
//   model, under the version /version.json names (else a digest of model.json), so the
//   installed page works with no network. window.edgeserOffline turns true once it has.
// - ?server=URL (remote.js): the model runs on an `edgeser serve` server instead: files go
//   to its POST /v1/predict, the microphone's 16 kHz samples over WS /v1/stream; the same
//   results, statuses and timeline. ?token=KEY is its API key. Nothing is cached offline.

import { decodeWav, prepare, SAMPLE_RATE, StreamResampler, toMono, wavBlocks } from "./dsp.js";
import { EmotionModel } from "./model.js";
import { serverFromQuery } from "./remote.js";
import { SegmentStream, SileroVAD } from "./vad.js";

const $ = (id) => document.getElementById(id);
window.edgeserResults = [];
window.edgeserFiles = [];
window.edgeserFilesDone = 0; // files finished (a long one adds many results, then this)
let model = null;
let vad = null;
let listening = null;
let remote = null; // ?server=URL: a RemoteServer

const round = (x, d) => Math.round(x * 10 ** d) / 10 ** d;
const rounded = (obj, d) => Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, round(v, d)]));

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
  window.edgeserLastError = message;
}

function clearError() {
  $("error").hidden = true;
}

function showBars(probabilities) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const [label, p] of Object.entries(probabilities)) {
    const name = document.createElement("span");
    name.textContent = label;
    const track = document.createElement("div");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.textContent = p.toFixed(2);
    bars.append(name, track, value);
  }
}

function addRow(source, start, end, label, confidence, status = "ok") {
  const tr = document.createElement("tr");
  const said = status === "ok" ? label : `${label} (${status.replace("_", " ")})`;
  const when = (t) => (t == null ? "" : t.toFixed(2));
  for (const text of [source, when(start), when(end), said, confidence.toFixed(2)]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.append(td);
  }
  $("timeline").tBodies[0].prepend(tr);
  $("download").disabled = false;
}

/** A server's utterance.result in `edgeser stream --json`'s format (as segmentResult). */
function remoteSegment(e) {
  const out = {
    start: round(e.start, 3), end: round(e.end, 3), label: e.label,
    confidence: round(e.confidence, 4), probabilities: rounded(e.probabilities, 4),
  };
  if (e.dimensions) out.dimensions = rounded(e.dimensions, 4);
  out.status = e.status;
  return out;
}

/** A closed segment in `edgeser stream --json`'s format. */
async function segmentResult(a, b, audio) {
  const r = await model.run(prepare([audio], SAMPLE_RATE, model.trim));
  const out = {
    start: round(a / SAMPLE_RATE, 3), end: round(b / SAMPLE_RATE, 3), label: r.label,
    confidence: round(r.probabilities[r.label], 4),
    probabilities: Object.fromEntries(Object.entries(r.probabilities)
      .map(([k, v]) => [k, round(v, 4)])),
  };
  if (r.dimensions) {
    out.dimensions = Object.fromEntries(Object.entries(r.dimensions)
      .map(([k, v]) => [k, round(v, 4)]));
  }
  out.status = r.status; // a VAD segment: never no_speech
  showBars(r.probabilities);
  return out;
}

async function decode(file) {
  const buffer = await file.arrayBuffer();
  if (buffer.byteLength === 0) throw new Error("the file is empty");
  try {
    return decodeWav(buffer);
  } catch {
    // not a PCM WAV: let the browser decode it (FLAC, MP3, Ogg ...) at the file's rate
    try {
      const ctx = new OfflineAudioContext(1, 1, 44100);
      const audio = await ctx.decodeAudioData(buffer.slice(0));
      const channels = [];
      for (let c = 0; c < audio.numberOfChannels; c++) channels.push(audio.getChannelData(c));
      return { channels, sampleRate: audio.sampleRate };
    } catch {
      throw new Error("not an audio file this page can read (WAV, FLAC, MP3, Ogg)");
    }
  }
}

function fileStream(name) {
  return new SegmentStream(vad, async (a, b, audio) => {
    const seg = { path: name, ...(await segmentResult(a, b, audio)) };
    window.edgeserFiles.push(seg);
    addRow(name, seg.start, seg.end, seg.label, seg.confidence, seg.status);
  });
}

async function streamFile(name, channels, sampleRate) {
  const mono = toMono(channels);
  const rs = new StreamResampler(sampleRate, SAMPLE_RATE);
  const stream = fileStream(name);
  const block = Math.round(0.5 * sampleRate);
  for (let i = 0; i < mono.length; i += block) {
    await stream.push(rs.push(mono.subarray(i, i + block), i + block >= mono.length));
  }
  await stream.finish();
}

/** Whether Silero finds a speech segment in a prepared 16 kHz waveform (its own state:
 *  the microphone's stream may be running). */
async function hasSpeech(wave) {
  let found = false;
  const stream = new SegmentStream(new SileroVAD(vad.session), async () => { found = true; });
  for (let i = 0; i < wave.length && !found; i += SAMPLE_RATE) {
    await stream.push(wave.subarray(i, i + SAMPLE_RATE));
  }
  if (!found) await stream.finish();
  return found;
}

/** A long WAV file from disk, one second at a time: the VAD's segments, each classified. */
async function streamWav(file, header, blocks) {
  const rs = new StreamResampler(header.sampleRate, SAMPLE_RATE);
  const stream = fileStream(file.name);
  const frameBytes = (header.bits / 8) * header.channels;
  const total = Math.floor(header.dataSize / frameBytes);
  let done = 0;
  for await (const channels of blocks) {
    done += channels[0].length;
    await stream.push(rs.push(toMono(channels), done >= total));
  }
  await stream.finish();
}

/** The header and the block reader of a WAV file longer than the model's window, or null. */
async function longWav(file) {
  try {
    const blocks = wavBlocks(file);
    const { header } = (await blocks.next()).value;
    const seconds = header.dataSize / ((header.bits / 8) * header.channels) / header.sampleRate;
    return seconds > model.window ? { header, blocks } : null;
  } catch {
    return null; // not a WAV this page reads block by block: decoded whole below
  }
}

/** A file through the server's POST /v1/predict (`edgeser predict --json`'s object). */
async function predictRemote(file) {
  const r = await remote.predict(file);
  const result = { ...r, path: file.name };
  window.edgeserFiles.push(result);
  showBars(r.probabilities);
  addRow(file.name, null, null, r.label, r.probabilities[r.label], r.status);
}

async function classifyFile(file) {
  clearError();
  try {
    if (file.size === 0) throw new Error("the file is empty");
    if (remote) {
      await predictRemote(file);
      return;
    }
    const long = await longWav(file);
    if (long) {
      await streamWav(file, long.header, long.blocks);
      return;
    }
    const { channels, sampleRate } = await decode(file);
    const seconds = channels[0].length / sampleRate;
    if (seconds > model.window) {
      await streamFile(file.name, channels, sampleRate);
    } else {
      const r = await model.classify(channels, sampleRate);
      const result = { path: file.name, label: r.label, probabilities: r.probabilities };
      if (r.dimensions) result.dimensions = r.dimensions;
      // as edgeser predict: too short, else no speech, else the confidence's say
      result.status = r.status !== "too_short" && !(await hasSpeech(r.wave))
        ? "no_speech" : r.status;
      window.edgeserFiles.push(result);
      showBars(r.probabilities);
      addRow(file.name, 0, seconds, r.label, r.probabilities[r.label], result.status);
    }
  } catch (e) {
    showError(`${file.name}: ${e.message}`);
    window.edgeserFiles.push({ path: file.name, error: e.message });
  } finally {
    window.edgeserFilesDone += 1;
  }
}

async function classifyFiles(files) {
  for (const f of files) await classifyFile(f);
}

async function startListening() {
  clearError();
  // The audio graph is ready before the microphone opens, so no captured audio is lost
  // between the two (the timeline counts samples from the first one received).
  // 48 kHz, the usual microphone rate: the browser then has no resampling of its own to do
  // before ours (a microphone at another rate is resampled by the browser first).
  const ctx = new AudioContext({ sampleRate: 48000 });
  await ctx.audioWorklet.addModule("capture.js");
  const node = new AudioWorkletNode(ctx, "edgeser-capture");
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false,
               autoGainControl: false },
    });
  } catch (e) {
    await ctx.close();
    const denied = e.name === "NotAllowedError" || e.name === "SecurityError";
    showError(denied
      ? "Microphone access was denied: allow it for this page in the browser's site settings, or classify a file instead."
      : `No microphone available (${e.name}): classify a file instead.`);
    document.body.dataset.listening = "denied";
    return;
  }
  const rs = new StreamResampler(ctx.sampleRate, SAMPLE_RATE);
  const show = (seg) => {
    window.edgeserResults.push(seg);
    addRow("microphone", seg.start, seg.end, seg.label, seg.confidence, seg.status);
  };
  const stream = remote
    ? remote.stream(SAMPLE_RATE, (e) => { showBars(e.probabilities); show(remoteSegment(e)); },
                    (message) => {
                      showError(message);
                      if (listening) stopListening();
                    })
    : new SegmentStream(vad, async (a, b, audio) => show(await segmentResult(a, b, audio)));
  node.port.onmessage = (ev) => { stream.push(rs.push(ev.data)); };
  ctx.createMediaStreamSource(media).connect(node);
  if (ctx.state !== "running") await ctx.resume();
  listening = { ctx, media, stream, node };
  $("mic").textContent = "Stop listening";
  $("status").textContent = `Listening (${ctx.sampleRate} Hz → 16 kHz, Silero VAD` +
    `${remote ? " and the model on the server" : ""}).`;
  document.body.dataset.listening = "1";
}

async function stopListening() {
  if (!listening) return;
  const { ctx, media, stream, node } = listening;
  listening = null;
  node.port.onmessage = null;
  media.getTracks().forEach((t) => t.stop());
  await ctx.close();
  await stream.finish();
  $("mic").textContent = "Start listening";
  $("status").textContent = "Ready.";
  document.body.dataset.listening = "0";
}

function download() {
  const rows = window.edgeserResults.length ? window.edgeserResults
    : window.edgeserFiles.filter((r) => !r.error);
  const blob = new Blob([rows.map((r) => JSON.stringify(r)).join("\n") + "\n"],
                        { type: "application/x-ndjson" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "edgeser-results.jsonl";
  a.click();
  URL.revokeObjectURL(a.href);
}

/** The offline cache's version: /version.json (edgeser web); on a static host without it,
 *  a digest of model.json; null when neither can be had (offline: keep the installed one). */
async function offlineVersion() {
  try {
    const r = await fetch("version.json", { cache: "no-store" });
    if (r.ok) return (await r.json()).version;
  } catch { /* offline, or a static host without it */ }
  if (navigator.serviceWorker.controller) return null;
  const text = await (await fetch("model/model.json", { cache: "no-store" })).text();
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest).slice(0, 8), (b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** Install the service worker (when the browser has one and the page is a secure
 *  context); window.edgeserOffline turns true once everything is cached. */
async function offline() {
  window.edgeserOffline = false;
  if (!("serviceWorker" in navigator) || !self.isSecureContext) return;
  try {
    const version = await offlineVersion();
    if (version) await navigator.serviceWorker.register(`sw.js?v=${version}`);
    const ready = await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller) {
      await new Promise((ok) => navigator.serviceWorker.addEventListener("controllerchange",
                                                                        ok, { once: true }));
    }
    window.edgeserOffline = true;
    document.body.dataset.offline = "1";
    const name = new URL(ready.active.scriptURL).searchParams.get("v");
    $("offline").textContent = `Works offline: everything is on this device (version ${name}).`;
  } catch (e) {
    $("offline").textContent = `Not available offline (${e.message}).`;
  }
}

/** Load the model here (onnxruntime-web), or with ?server= ask the server for its own. */
async function load() {
  remote = serverFromQuery(new URLSearchParams(location.search));
  if (remote) {
    $("sub").textContent = `Speech emotion recognition on the server at ${remote.base}: ` +
      "the audio you classify is sent there.";
    const info = await remote.ready();
    $("model").textContent = `${info.model}: ${info.labels.join(", ")} (on ${remote.base})`;
    return;
  }
  offline();
  [model, vad] = await Promise.all([EmotionModel.load("./model/"), SileroVAD.load()]);
  $("model").textContent = `${model.file}: ${model.labels.join(", ")}` +
    (model.dimensionNames.length ? `; ${model.dimensionNames.join(", ")}` : "") +
    ` (onnxruntime-web, ${self.crossOriginIsolated ? "threads" : "one thread"})`;
}

async function main() {
  try {
    await load();
  } catch (e) {
    $("status").textContent = "";
    showError(`could not load the model: ${e.message}`);
    return;
  }
  $("status").textContent = "Ready.";
  $("file").addEventListener("change", (ev) => classifyFiles(ev.target.files));
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    classifyFiles(ev.dataTransfer.files);
  });
  $("mic").addEventListener("click", () => (listening ? stopListening() : startListening()));
  $("download").addEventListener("click", download);
  window.edgeserStop = () => (listening ? stopListening() : Promise.resolve());
  // For bench/web_speed.py: median milliseconds of an async call after a warm-up, and of
  // the model on a prepared waveform.
  window.edgeserMedianMs = async (run, runs) => {
    await run();
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await run();
      times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  };
  window.edgeserTime = (samples, runs) => {
    const wave = Float32Array.from(samples);
    return window.edgeserMedianMs(() => model.run(wave), runs);
  };
  document.body.dataset.ready = "1";
  if (new URLSearchParams(location.search).get("mic") === "1") await startListening();
}

main();
