// Voice activity detection and online segmentation, as edgeser's Python runtime does it
// (edgeser.runtime.vad.SileroVAD, SpeechSegmenter; edgeser.runtime.stream.speech_segments):
// Silero VAD's ONNX file (the one edgeser ships) on 512-sample windows with a 64-sample
// context and a [2, 1, 128] state, silero's hysteresis, segments returned as they close.

import * as ort from "./vendor/ort/ort.wasm.min.mjs";

export const VAD_RATE = 16000;

export class SileroVAD {
  static async load(url = "./vad/silero_vad.onnx") {
    const session = await ort.InferenceSession.create(new URL(url, location.href).href,
                                                      { executionProviders: ["wasm"] });
    return new SileroVAD(session);
  }

  constructor(session) {
    this.session = session;
    this.frameSize = 512;
    this.contextSize = 64;
    this.sr = new ort.Tensor("int64", BigInt64Array.from([16000n]), []);
    this.reset();
  }

  reset() {
    this.state = new ort.Tensor("float32", new Float32Array(2 * 128), [2, 1, 128]);
    this.context = new Float32Array(this.contextSize);
  }

  /** Speech probability of one 512-sample frame. */
  async prob(frame) {
    const x = new Float32Array(this.contextSize + this.frameSize);
    x.set(this.context);
    x.set(frame, this.contextSize);
    const out = await this.session.run({
      input: new ort.Tensor("float32", x, [1, x.length]), state: this.state, sr: this.sr,
    });
    this.state = out.stateN;
    this.context = x.slice(x.length - this.contextSize);
    return out.output.data[0];
  }
}

export const DEFAULTS = {
  threshold: 0.5, negThreshold: null, minSpeech: 0.25, minSilence: 0.1, speechPad: 0.03,
  maxSegment: 10.0,
};

/** Online speech segmentation from per-frame probabilities (samples at 16 kHz). */
export class SpeechSegmenter {
  constructor(frameSize, config = {}, sampleRate = VAD_RATE) {
    const c = { ...DEFAULTS, ...config };
    this.frameSize = frameSize;
    this.threshold = c.threshold;
    this.negThreshold = c.negThreshold ?? Math.max(c.threshold - 0.15, 0.01);
    this.minSpeech = Math.round(c.minSpeech * sampleRate);
    this.minSilence = Math.round(c.minSilence * sampleRate);
    this.pad = Math.round(c.speechPad * sampleRate);
    this.maxSegment = Math.max(Math.round(c.maxSegment * sampleRate), frameSize);
    this.reset();
  }

  reset() {
    this.frames = 0;
    this.triggered = false;
    this.start = 0;
    this.tempEnd = 0;
    this.prevEnd = 0;
    this.forced = false;
  }

  get position() { return this.frames * this.frameSize; }

  keepFrom() {
    if (this.triggered) return this.paddedStart();
    return Math.max(this.prevEnd, this.position - this.pad);
  }

  paddedStart() {
    if (this.forced) return this.start;
    return Math.max(this.prevEnd, this.start - this.pad, 0);
  }

  emit(end, padEnd, limit) {
    const start = this.paddedStart();
    const raw = end - this.start;
    this.triggered = false;
    this.tempEnd = 0;
    const forcedBefore = this.forced;
    this.forced = false;
    if (raw <= this.minSpeech && !forcedBefore) return null;
    const stop = padEnd ? Math.min(end + this.pad, limit) : end;
    this.prevEnd = stop;
    return [start, stop];
  }

  push(prob) {
    const cur = this.position;
    this.frames += 1;
    const endOfFrame = this.position;
    if (prob >= this.threshold && this.tempEnd) this.tempEnd = 0;
    if (prob >= this.threshold && !this.triggered) {
      this.triggered = true;
      this.start = cur;
      this.forced = false;
      return null;
    }
    if (!this.triggered) return null;
    if (endOfFrame + this.frameSize - this.paddedStart() > this.maxSegment) {
      const seg = this.emit(endOfFrame, false, endOfFrame);
      if (prob >= this.negThreshold) {
        this.triggered = true;
        this.start = endOfFrame;
        this.forced = true;
      }
      return seg;
    }
    if (prob < this.negThreshold) {
      if (!this.tempEnd) this.tempEnd = cur;
      if (cur - this.tempEnd >= this.minSilence) return this.emit(this.tempEnd, true, endOfFrame);
    }
    return null;
  }

  finish(total) {
    if (!this.triggered) return null;
    const end = Math.min(total, this.position);
    if (end <= this.start) {
      this.triggered = false;
      this.forced = false;
      return null;
    }
    if (this.tempEnd) return this.emit(this.tempEnd, true, end);
    return this.emit(end, false, end);
  }
}

/** Feeds 16 kHz blocks, calls onSegment(start, end, audio) as segments close. */
export class SegmentStream {
  constructor(vad, onSegment, config = {}) {
    this.vad = vad;
    this.onSegment = onSegment;
    this.seg = new SpeechSegmenter(vad.frameSize, config);
    vad.reset();
    this.buf = new Float32Array(0);
    this.bufStart = 0;
    this.total = 0;
    this.queue = Promise.resolve();
  }

  cut([a, b]) {
    return [a, b, this.buf.slice(a - this.bufStart, b - this.bufStart)];
  }

  /** Append a block; resolves once its whole frames are classified. Blocks are processed
   *  in order however fast they arrive. */
  push(block) {
    this.queue = this.queue.then(() => this._push(block));
    return this.queue;
  }

  async _push(block) {
    if (!block.length) return;
    const joined = new Float32Array(this.buf.length + block.length);
    joined.set(this.buf);
    joined.set(block, this.buf.length);
    this.buf = joined;
    this.total += block.length;
    const fs = this.vad.frameSize;
    while (this.total - this.seg.position >= fs) {
      const off = this.seg.position - this.bufStart;
      const bounds = this.seg.push(await this.vad.prob(this.buf.subarray(off, off + fs)));
      if (bounds) await this.onSegment(...this.cut(bounds));
    }
    const keep = Math.min(this.seg.keepFrom(), this.seg.position);
    if (keep > this.bufStart) {
      this.buf = this.buf.slice(keep - this.bufStart);
      this.bufStart = keep;
    }
  }

  /** End of the stream: the last partial frame (zero-padded) and the open segment. */
  finish() {
    this.queue = this.queue.then(async () => {
      const fs = this.vad.frameSize;
      if (this.total - this.seg.position > 0) {
        const off = this.seg.position - this.bufStart;
        const frame = new Float32Array(fs);
        frame.set(this.buf.subarray(off));
        const bounds = this.seg.push(await this.vad.prob(frame));
        if (bounds && Math.min(bounds[1], this.total) > bounds[0]) {
          await this.onSegment(...this.cut([bounds[0], Math.min(bounds[1], this.total)]));
        }
      }
      const bounds = this.seg.finish(this.total);
      if (bounds) await this.onSegment(...this.cut(bounds));
    });
    return this.queue;
  }
}
