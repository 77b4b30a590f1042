// AudioWorklet: the microphone's channels averaged to mono, posted to the page in blocks
// of 4096 frames at the AudioContext's rate (the page resamples to 16 kHz).
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(4096);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const n = input[0].length;
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (const ch of input) s += ch[i];
        this.block[this.fill++] = s / input.length;
        if (this.fill === this.block.length) {
          this.port.postMessage(this.block);
          this.block = new Float32Array(4096);
          this.fill = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("edgeser-capture", Capture);
