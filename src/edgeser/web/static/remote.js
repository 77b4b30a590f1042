// The page with ?server=URL: the model runs on an `edgeser serve` server instead of this
// device. Files go to its POST /v1/predict (one multipart file part: the answer is
// `edgeser predict --json`'s object), the microphone's 16 kHz samples go over WS /v1/stream
// (protocol edgeser.stream.v1, docs/stream-protocol.md: f32le frames, Silero VAD and the
// model on the server; each utterance.result is `edgeser stream --json`'s object).
//
// URL: ws://, wss://, http:// or https:// with the server's host and port; a path ending in
// /v1/stream or /v1/predict names the server's base too. ?token=KEY is the API key: sent as
// "Authorization: Bearer KEY" to /v1/predict and as the stream's ?token= (browsers cannot
// set a WebSocket's headers). A server on another origin must allow this page's origin
// (edgeser serve --allow-origin).

const ENDPOINTS = /\/v1\/(stream|predict)\/?$/;

/** {base, ws, token} for ?server=URL&token=KEY, or null without ?server. */
export function serverFromQuery(params) {
  const given = params.get("server");
  if (!given) return null;
  let url;
  try {
    url = new URL(given);
  } catch {
    throw new Error(`?server=${given} is not a URL (e.g. ws://127.0.0.1:8000)`);
  }
  const secure = { "wss:": true, "https:": true, "ws:": false, "http:": false }[url.protocol];
  if (secure === undefined) throw new Error(`?server= takes ws://, wss://, http:// or https://`);
  const path = url.pathname.replace(ENDPOINTS, "").replace(/\/+$/, "");
  const host = url.host;
  return new RemoteServer(`${secure ? "https" : "http"}://${host}${path}`,
                          `${secure ? "wss" : "ws"}://${host}${path}`, params.get("token"));
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body?.error?.message) return body.error.message;
  } catch { /* not JSON */ }
  return `HTTP ${response.status}`;
}

export class RemoteServer {
  constructor(base, ws, token) {
    this.base = base;
    this.ws = ws;
    this.token = token || null;
  }

  headers() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  /** /readyz: {status, labels, model, instance, ...} (needs no key). */
  async ready() {
    let response;
    try {
      response = await fetch(`${this.base}/readyz`, { cache: "no-store" });
    } catch (e) {
      throw new Error(`cannot reach the server at ${this.base} (${e.message})`);
    }
    if (!response.ok) throw new Error(`the server at ${this.base}: ${await errorMessage(response)}`);
    return response.json();
  }

  /** POST /v1/predict of one file: `edgeser predict --json`'s object. */
  async predict(file) {
    const body = new FormData();
    body.append("file", file, file.name);
    let response;
    try {
      response = await fetch(`${this.base}/v1/predict`, {
        method: "POST", body, headers: this.headers(), cache: "no-store",
      });
    } catch (e) {
      throw new Error(`cannot reach the server (${e.message})`);
    }
    if (!response.ok) throw new Error(await errorMessage(response));
    return response.json();
  }

  /** A stream of `sampleRate` float32 samples: push(samples), then finish() resolves once
   *  the server's session.end arrived (the open utterance's result before it). Each
   *  utterance.result goes to onResult; a server error or a lost connection to onError. */
  stream(sampleRate, onResult, onError) {
    const url = `${this.ws}/v1/stream${this.token ? `?token=${encodeURIComponent(this.token)}` : ""}`;
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    const waiting = []; // frames captured before session.ready
    let ready = false;
    let failed = null;
    let over = false; // session.end arrived: the server closes the connection next
    let ended;
    const done = new Promise((resolve) => { ended = resolve; });
    const fail = (message) => {
      if (failed) return;
      failed = message;
      onError(message);
      ended();
    };
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "session.start", format: "f32le",
                                   sample_rate: sampleRate }));
    };
    socket.onmessage = (ev) => {
      let event;
      try {
        event = JSON.parse(ev.data);
      } catch {
        return fail("the server sent something that is not edgeser.stream.v1");
      }
      if (event.type === "session.ready") {
        ready = true;
        for (const frame of waiting.splice(0)) socket.send(frame);
      } else if (event.type === "utterance.result") {
        onResult(event);
      } else if (event.type === "error") {
        fail(`the server: ${event.message} (${event.code})`);
      } else if (event.type === "session.end") {
        over = true;
        ended();
      }
    };
    socket.onerror = () => {};
    socket.onclose = (ev) => {
      if (!over) fail(`the server closed the stream (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
    };
    return {
      push(samples) {
        if (failed || over || !samples.length) return;
        const frame = Float32Array.from(samples).buffer; // little-endian on every browser CPU
        if (ready) socket.send(frame);
        else waiting.push(frame);
      },
      async finish() {
        if (!failed && !over && socket.readyState === WebSocket.OPEN) {
          for (const frame of waiting.splice(0)) socket.send(frame);
          socket.send(JSON.stringify({ type: "session.end" }));
          await done;
        }
        failed = failed || "finished";
        socket.onclose = null;
        if (socket.readyState <= WebSocket.OPEN) socket.close(1000);
      },
    };
  }
}
