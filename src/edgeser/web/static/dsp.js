// Signal preparation outside the graph, as edgeser's Python runtime does it
// (edgeser.runtime.model.OnnxEmotionModel.prepare): downmix by the mean of the channels,
// resample to 16 kHz, trim leading and trailing silence (librosa's trim semantics:
// frames of 2048 samples every 512, 20 dB below the loudest frame). The resampler is a
// Kaiser-windowed sinc (linear phase, no delay, output length round(n * to / from)), the
// same alignment and length as soxr's "HQ" that the Python runtime uses; their passbands
// differ slightly, which the parity test measures.

export const SAMPLE_RATE = 16000;
const AMIN = 1e-5;

/** Mean of the channels (an array of Float32Array of equal length). */
export function toMono(channels) {
  if (channels.length === 1) return Float32Array.from(channels[0]);
  const n = channels[0].length;
  const out = new Float32Array(n);
  for (const ch of channels) for (let i = 0; i < n; i++) out[i] += ch[i];
  for (let i = 0; i < n; i++) out[i] /= channels.length;
  return out;
}

function bessel0(x) {
  // modified Bessel function of the first kind, order 0 (series)
  let sum = 1, term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 50; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < 1e-12 * sum) break;
  }
  return sum;
}

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Resample a mono signal from `from` Hz to `to` Hz (windowed sinc, zero delay). Output
 *  sample n sits at input time n * from / to; with integer rates its fractional part takes
 *  at most to / gcd(from, to) values, so each phase's taps are computed once. */
export function resample(x, from, to = SAMPLE_RATE) {
  if (from === to || x.length === 0) return Float32Array.from(x);
  return resampleRange(x, 0, from, to, 0, Math.round((x.length * to) / from));
}

const kernels = new Map(); // "from/to" -> {half, up, down, taps: Map(phase -> Float64Array)}

function design(from, to) {
  const key = `${from}/${to}`;
  let k = kernels.get(key);
  if (k) return k;
  const g = gcd(from, to);
  const cutoff = 0.96 * Math.min(1, to / from); // in cycles per input sample * 2
  const half = Math.ceil(32 / cutoff); // 32 sinc zero crossings on each side
  k = { half, up: to / g, down: from / g, cutoff, taps: new Map() };
  kernels.set(key, k);
  return k;
}

function phaseTaps(k, num) {
  let h = k.taps.get(num);
  if (h) return h;
  const beta = 10.0, i0beta = bessel0(beta), frac = num / k.up;
  h = new Float64Array(2 * k.half + 1);
  for (let j = -k.half; j <= k.half; j++) {
    const u = j - frac; // input index offset from t
    const r = u / (k.half + 1);
    const w = bessel0(beta * Math.sqrt(Math.max(0, 1 - r * r))) / i0beta;
    const a = Math.PI * k.cutoff * u;
    h[j + k.half] = k.cutoff * (a === 0 ? 1 : Math.sin(a) / a) * w;
  }
  k.taps.set(num, h);
  return h;
}

/** Output samples [n0, n1) of resampling a stream whose samples x hold input indices
 *  [x0, x0 + x.length); input outside that range counts as zero. */
function resampleRange(x, x0, from, to, n0, n1) {
  const k = design(from, to);
  const out = new Float32Array(Math.max(0, n1 - n0));
  for (let n = n0; n < n1; n++) {
    const pos = n * k.down;
    const base = Math.floor(pos / k.up);
    const h = phaseTaps(k, pos - base * k.up);
    let acc = 0;
    const lo = Math.max(x0, base - k.half), hi = Math.min(x0 + x.length - 1, base + k.half);
    for (let i = lo; i <= hi; i++) acc += x[i - x0] * h[i - base + k.half];
    out[n - n0] = acc;
  }
  return out;
}

/** [start, end) of the non-silent part (librosa.effects.trim semantics). */
export function trimBounds(x, topDb = 20, frameLength = 2048, hopLength = 512) {
  const n = x.length;
  if (n === 0) return [0, 0];
  const pad = Math.floor(frameLength / 2);
  const total = n + 2 * pad;
  const nFrames = 1 + Math.floor((total - frameLength) / hopLength);
  const csum = new Float64Array(total + 1);
  for (let i = 0; i < total; i++) {
    const j = i - pad;
    const v = j >= 0 && j < n ? x[j] : 0;
    csum[i + 1] = csum[i] + v * v;
  }
  const rms = new Float64Array(nFrames);
  let ref = 0;
  for (let f = 0; f < nFrames; f++) {
    const s = f * hopLength;
    const p = Math.max(0, (csum[s + frameLength] - csum[s]) / frameLength);
    rms[f] = Math.sqrt(p);
    if (rms[f] > ref) ref = rms[f];
  }
  const refDb = 20 * Math.log10(Math.max(AMIN, ref));
  let first = -1, last = -1;
  for (let f = 0; f < nFrames; f++) {
    const db = 20 * Math.log10(Math.max(AMIN, rms[f])) - refDb;
    if (db > -topDb) {
      if (first < 0) first = f;
      last = f;
    }
  }
  if (first < 0) return [0, 0];
  return [first * hopLength, Math.min(n, (last + 1) * hopLength)];
}

/** Downmix, resample to 16 kHz and trim as model.json's outside_graph says. */
export function prepare(channels, sampleRate, trim) {
  if (!channels.length || channels[0].length === 0) throw new Error("audio holds no samples");
  for (const ch of channels) {
    for (let i = 0; i < ch.length; i++) {
      if (!Number.isFinite(ch[i])) throw new Error("audio contains NaN or infinite samples");
    }
  }
  let x = resample(toMono(channels), sampleRate, SAMPLE_RATE);
  if (x.length === 0) throw new Error("audio is shorter than one sample at 16 kHz");
  if (trim) {
    const [a, b] = trimBounds(x, trim.top_db ?? 20, trim.frame_length ?? 2048,
                              trim.hop_length ?? 512);
    if (b > a) x = x.slice(a, b);
  }
  return x;
}

/** The header of a RIFF/WAVE file in `buffer` (its first bytes at least): {format,
 *  channels, sampleRate, bits, dataOffset, dataSize}; throws an Error with a one-line
 *  reason. `fileSize` (default: the buffer's) bounds the data chunk. */
export function wavHeader(buffer, fileSize = buffer.byteLength) {
  const v = new DataView(buffer);
  const tag = (o) => String.fromCharCode(v.getUint8(o), v.getUint8(o + 1), v.getUint8(o + 2),
                                         v.getUint8(o + 3));
  if (buffer.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") {
    throw new Error("not a WAV file");
  }
  let fmt = null, data = null;
  for (let o = 12; o + 8 <= buffer.byteLength && !data;) {
    const id = tag(o), size = v.getUint32(o + 4, true);
    if (id === "fmt " && o + 8 + 16 <= buffer.byteLength) fmt = { o: o + 8, size };
    else if (id === "data") data = { o: o + 8, size: Math.min(size, fileSize - o - 8) };
    o += 8 + size + (size & 1);
  }
  if (!fmt || !data) throw new Error("WAV file without fmt or data chunk");
  let format = v.getUint16(fmt.o, true);
  const channels = v.getUint16(fmt.o + 2, true);
  const sampleRate = v.getUint32(fmt.o + 4, true);
  const bits = v.getUint16(fmt.o + 14, true);
  if (format === 0xfffe && fmt.size >= 26) format = v.getUint16(fmt.o + 24, true);
  if (!channels || !sampleRate || ![8, 16, 24, 32, 64].includes(bits)) {
    throw new Error("unsupported WAV format");
  }
  if (format !== 1 && format !== 3) throw new Error("unsupported WAV encoding");
  return { format, channels, sampleRate, bits, dataOffset: data.o, dataSize: data.size };
}

/** Decode whole frames of sample data (`buffer` from its start) as libsndfile reads them
 *  into float: integer codes divided by 2^(bits-1). Returns one Float32Array per channel. */
export function wavSamples(buffer, header) {
  const v = new DataView(buffer);
  const { format, channels: nch, bits } = header;
  const bytes = bits / 8;
  const frames = Math.floor(buffer.byteLength / (bytes * nch));
  const channels = Array.from({ length: nch }, () => new Float32Array(frames));
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < nch; c++) {
      const o = (i * nch + c) * bytes;
      let s;
      if (format === 3) s = bits === 32 ? v.getFloat32(o, true) : v.getFloat64(o, true);
      else if (bits === 8) s = (v.getUint8(o) - 128) / 128;
      else if (bits === 16) s = v.getInt16(o, true) / 32768;
      else if (bits === 24) {
        const u = v.getUint8(o) | (v.getUint8(o + 1) << 8) | (v.getInt8(o + 2) << 16);
        s = u / 8388608;
      } else s = v.getInt32(o, true) / 2147483648;
      channels[c][i] = s;
    }
  }
  return channels;
}

/** Decode a whole RIFF/WAVE file: {channels, sampleRate}. */
export function decodeWav(buffer) {
  const header = wavHeader(buffer);
  const data = buffer.slice(header.dataOffset, header.dataOffset + header.dataSize);
  return { channels: wavSamples(data, header), sampleRate: header.sampleRate };
}

/** A WAV file (a File or Blob) read block by block, never whole: yields {header} first,
 *  then one array of channels per `seconds` of audio. Throws like wavHeader. */
export async function* wavBlocks(file, seconds = 1) {
  const head = await file.slice(0, Math.min(file.size, 1 << 16)).arrayBuffer();
  const header = wavHeader(head, file.size);
  yield { header };
  const frameBytes = (header.bits / 8) * header.channels;
  const step = Math.max(1, Math.round(seconds * header.sampleRate)) * frameBytes;
  const end = header.dataOffset + header.dataSize - (header.dataSize % frameBytes);
  for (let o = header.dataOffset; o < end; o += step) {
    yield wavSamples(await file.slice(o, Math.min(o + step, end)).arrayBuffer(), header);
  }
}

/** Block-by-block resampling to 16 kHz with the same kernel as resample(): output sample n
 *  sits at input time n * from / to of the whole stream, so blocks join seamlessly. */
export class StreamResampler {
  constructor(from, to = SAMPLE_RATE) {
    this.from = from;
    this.to = to;
    this.buf = new Float32Array(0);
    this.bufStart = 0; // input index of buf[0]
    this.next = 0; // next output index
    this.whole = from === to;
  }

  /** Resample one block; `last` flushes the tail (the stream has ended). */
  push(block, last = false) {
    if (this.whole) return Float32Array.from(block);
    const joined = new Float32Array(this.buf.length + block.length);
    joined.set(this.buf);
    joined.set(block, this.buf.length);
    this.buf = joined;
    const available = this.bufStart + this.buf.length;
    const { half } = design(this.from, this.to);
    const step = this.from / this.to;
    let end = last ? Math.round((available * this.to) / this.from)
      : Math.max(this.next, Math.floor((available - 1 - half) / step) + 1);
    const out = resampleRange(this.buf, this.bufStart, this.from, this.to, this.next, end);
    this.next = end;
    const keep = Math.max(0, Math.floor(this.next * step) - half - 1) - this.bufStart;
    if (keep > 0) {
      this.buf = this.buf.slice(keep);
      this.bufStart += keep;
    }
    return out;
  }
}
