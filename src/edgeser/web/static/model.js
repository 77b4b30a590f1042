// The exported edgeser model in the browser: model.json + model.int8.onnx run by
// onnxruntime-web's WASM backend, with the graph contract of the Python runtime
// (inputs waveform float32 [batch, samples] and lengths int64 [batch]; outputs
// probabilities [batch, classes] and, for a dimensional model, dimensions [batch, 3]).

import * as ort from "./vendor/ort/ort.wasm.min.mjs";
import { prepare } from "./dsp.js";

ort.env.wasm.wasmPaths = new URL("./vendor/ort/", import.meta.url).href;
// WASM threads need cross-origin isolation; ?threads=N overrides the default of two.
const asked = Number(new URLSearchParams(location.search).get("threads"));
ort.env.wasm.numThreads = self.crossOriginIsolated
  ? (asked > 0 ? asked : Math.min(2, navigator.hardwareConcurrency || 1)) : 1;

export class EmotionModel {
  static async load(base = "./model/") {
    const folder = new URL(base, location.href);
    const card = await (await fetch(new URL("model.json", folder))).json();
    if (card.format !== "edgeser-onnx") throw new Error("model.json is not an edgeser model card");
    const file = card.files?.int8 ?? card.files?.float32;
    const url = new URL(file, folder);
    const session = await ort.InferenceSession.create(url.href, { executionProviders: ["wasm"] });
    return new EmotionModel(card, session, file);
  }

  constructor(card, session, file) {
    this.card = card;
    this.session = session;
    this.file = file;
    this.labels = card.labels;
    this.dimensionNames = card.dimensions?.names ?? [];
    this.minSamples = Math.max(1, card.min_samples ?? 400);
    // longer inputs go through the VAD, one speech segment at a time (as edgeser predict)
    this.window = card.long_input?.window_seconds ?? 10;
    // statuses, as edgeser.runtime.model.OnnxEmotionModel.status
    this.tooShort = card.status?.too_short_seconds ?? 0.25;
    this.lowConfidence = card.calibration?.low_confidence_below ?? 0;
    const outside = card.preprocessing?.outside_graph ?? {};
    this.trim = "trim" in outside ? outside.trim : { top_db: 20 };
  }

  /** Label, probabilities and dimensions of one prepared 16 kHz waveform. */
  async run(wave) {
    const n = Math.max(wave.length, this.minSamples);
    const padded = new Float32Array(n);
    padded.set(wave);
    const feeds = {
      waveform: new ort.Tensor("float32", padded, [1, n]),
      lengths: new ort.Tensor("int64", BigInt64Array.from([BigInt(n)]), [1]),
    };
    const out = await this.session.run(feeds);
    const p = out.probabilities.data;
    const probabilities = {};
    let best = 0;
    this.labels.forEach((lab, i) => {
      probabilities[lab] = p[i];
      if (p[i] > p[best]) best = i;
    });
    let dimensions = null;
    if (this.dimensionNames.length && out.dimensions) {
      dimensions = {};
      this.dimensionNames.forEach((d, i) => { dimensions[d] = out.dimensions.data[i]; });
    }
    const status = wave.length < this.tooShort * 16000 ? "too_short"
      : p[best] < this.lowConfidence ? "low_confidence" : "ok";
    return { label: this.labels[best], probabilities, dimensions, status };
  }

  /** Downmix, resample, trim (as model.json says) and classify: the result and the
   *  prepared waveform. */
  async classify(channels, sampleRate) {
    const wave = prepare(channels, sampleRate, this.trim);
    return { ...(await this.run(wave)), wave };
  }
}
