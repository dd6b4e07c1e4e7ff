/**
 * StreamWriter: push video and audio to a framecast server from a web page or Node.
 *
 * The Python SDK's StreamWriter (torchaudio's surface) in JavaScript's idiom: configure streams,
 * `await open()`, `await writeVideoChunk(...)`, `await close()`. Flow control, resume and output
 * assembly follow client/framecast/writer_base.py: chunks stay pending until an ACK covers them,
 * a write waits while what is pending is over the window, a dropped websocket is reconnected with
 * backoff and the pending chunks are sent again (the server drops the ones it has), and OUTPUT
 * messages are applied once each at their offsets.
 * @module
 */

import { FramecastError, InvalidChunk, InvalidConfig, ProtocolError, ServerError, SessionFailed, SessionNotFound,
  StateError, TransportError } from "./errors.js";
import { AudioStream, VideoStream, audioChunk, videoChunk } from "./media.js";
import { encodeChunk, encodeControl, parseControl, parseServerBinary } from "./protocol.js";

/** Media seconds per message for real-time sessions. */
export const REALTIME_PIECE_SECONDS = 0.25;
/** Unacknowledged media (summed over streams) a real-time writer may have in flight. */
export const REALTIME_WINDOW_SECONDS = 1.0;
/** Unacknowledged bytes any writer may have in flight (and keeps, to resend after a reconnect). */
export const MAX_UNACKED_BYTES = 64 * 1024 * 1024;
/** Applied OUTPUT messages are confirmed to the server every this many. */
export const OUTPUT_ACK_EVERY = 16;
/** Session events kept on the writer. */
export const MAX_EVENTS = 100;

const DEFAULT_SERVER = "http://127.0.0.1:8000";
/** Subprotocols a browser offers: the version, and the stream token (a browser cannot set headers). */
export const SUBPROTOCOL = "framecast.v1";
export const TOKEN_SUBPROTOCOL_PREFIX = "framecast.bearer.";

/**
 * A file under the server's output directory (downloadable once closed: `writer.download()`).
 * @param {string} path relative to the server's output directory
 * @param {{crashSafe?: boolean, overwrite?: boolean}} [options] crashSafe (default true): fragmented
 *   MP4/MOV; overwrite (default false): replace a file of this name that exists, which is otherwise
 *   refused (InvalidConfig, code "path_exists")
 */
export function ServerFile(path, { crashSafe = true, overwrite = false } = {}) {
  return { type: "server_file", path, crash_safe: crashSafe, ...(overwrite ? { overwrite: true } : {}) };
}

/**
 * The encoded bytes come back and are assembled in memory: `writer.blob()` after close().
 * @param {string} [filename] names the container when `format` is not given ("out.mkv")
 */
export function ClientBlob(filename = null) {
  return { type: "client", filename, seekable: true };
}

/** A destination that keeps nothing (measuring, dry runs); `encode` still encodes and muxes. */
export function Discard({ encode = false } = {}) {
  return { type: "discard", encode };
}

function describeDestination(dst) {
  if (typeof dst === "string") {
    if (dst.includes("://")) return { type: "url", url: dst };
    throw new InvalidConfig(`a destination string is a URL (rtmp://, udp://, ...); for a file use ServerFile(${JSON.stringify(dst)}) or ClientBlob(${JSON.stringify(dst)})`, { field: "dst" });
  }
  if (dst && ["server_file", "client", "discard", "url"].includes(dst.type)) return { ...dst };
  throw new InvalidConfig("dst must be a URL, ServerFile(path), ClientBlob(filename) or Discard(), or a list of them", { field: "dst" });
}

/** Every destination `dst` names: one, or a list (one encode, written to each; at most one ClientBlob). */
function describeDestinations(dst) {
  if (!Array.isArray(dst)) return [describeDestination(dst)];
  if (!dst.length) throw new InvalidConfig("dst is an empty list; give at least one destination", { field: "dst" });
  const described = dst.map((each) => {
    if (Array.isArray(each)) throw new InvalidConfig("a list of destinations holds destinations, not lists", { field: "dst" });
    return describeDestination(each);
  });
  if (described.filter((d) => d.type === "client").length > 1) {
    throw new InvalidConfig("at most one ClientBlob per session: its bytes come back over this writer's one connection", { field: "dst" });
  }
  return described;
}

/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSE_CODES = {
  4401: () => new TransportError("the server refused the stream token", { code: "unauthorized" }),
  4404: () => new SessionNotFound("the server no longer has this session (was it restarted?)", { status: 404 }),
};

/** Bytes written at offsets, growing as needed: a client-side destination in memory. */
class OutputBuffer {
  constructor() { this.bytes = new Uint8Array(1 << 16); this.length = 0; }

  write(offset, data) {
    const end = offset + data.length;
    if (end > this.bytes.length) {
      const grown = new Uint8Array(Math.max(end, this.bytes.length * 2));
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
    }
    this.bytes.set(data, offset);
    this.length = Math.max(this.length, end);
  }
}

async function restError(response) {
  let error = {};
  try {
    const body = await response.json();
    if (body && typeof body.error === "object" && body.error) error = body.error;
  } catch { /* not the server's JSON: a proxy's page */ }
  const message = error.message ?? `HTTP ${response.status} ${response.statusText}`;
  const info = { status: response.status, code: error.code ?? null, field: error.field ?? null, detail: error };
  if (response.status === 422) return new InvalidConfig(message, info);
  if (response.status === 404 && error.code === "session_not_found") return new SessionNotFound(message, info);
  return new ServerError(message, info);
}

/**
 * Encode audio and video chunks on a framecast server into a server file, a live URL or a Blob.
 *
 * Errors are FramecastError subclasses carrying `code`, `field` and `seq`: a chunk that does not
 * fit its stream throws on the call; what the server refuses throws from a following call, at
 * the latest from close(); a failed session throws SessionFailed from every call after it.
 */
export class StreamWriter {
  /**
   * @param {string|object|Array} dst a URL (rtmp://..., udp://...), ServerFile(path), ClientBlob(name) or
   *   Discard(); or a list of them, all written from one encode (at most one ClientBlob; download()
   *   fetches the first destination, which should then be the ServerFile)
   * @param {object} [options]
   * @param {string} [options.format] muxer name; default: from the file name or URL
   * @param {string} [options.server] base URL; default: the page's origin, else $FRAMECAST_SERVER, else http://127.0.0.1:8000
   * @param {string} [options.apiKey] API key for servers that require one (else $FRAMECAST_API_KEY in Node)
   * @param {number} [options.timeout=300] seconds to wait for the server (window, flush, close)
   * @param {boolean} [options.realtime] send at media time; default: on for URLs
   * @param {number} [options.connectTimeout] seconds a network destination may take to connect
   * @param {"drop"|"block"} [options.onDestinationDrop] what happens while a network destination reconnects
   * @param {boolean} [options.reconnect=true] reconnect a dropped websocket and resend what is unacknowledged
   * @param {number} [options.reconnectTimeout=30] seconds to keep trying
   * @param {Function} [options.WebSocket] a WebSocket class taking `{headers}` as its third argument, as the
   *   `ws` package's does (Node 18-21); default: the global WebSocket, which sends the stream token as a subprotocol
   * @param {Function} [options.fetch] default: the global fetch
   */
  constructor(dst, options = {}) {
    this.destinations = describeDestinations(dst);
    this.destination = this.destinations[0];
    this.format = options.format ?? null;
    const env = globalThis.process?.env ?? {};
    const origin = globalThis.location?.origin?.startsWith("http") ? globalThis.location.origin : null;
    this.server = (options.server ?? origin ?? env.FRAMECAST_SERVER ?? DEFAULT_SERVER).replace(/\/+$/, "");
    this._apiKey = options.apiKey ?? env.FRAMECAST_API_KEY ?? null;
    this._timeout = (options.timeout ?? 300) * 1000;
    this._realtime = options.realtime ?? null;
    this._connectTimeout = options.connectTimeout ?? null;
    this._onDestinationDrop = options.onDestinationDrop ?? null;
    this._reconnect = options.reconnect ?? true;
    this._reconnectTimeout = (options.reconnectTimeout ?? 30) * 1000;
    this._headerWebSocket = options.WebSocket ?? null;
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    /** @type {Array<VideoStream|AudioStream>} */
    this.streams = [];
    this.metadata = {};
    /** "configuring" | "open" | "closing" | "closed" | "failed" */
    this.state = "configuring";
    /** The body of POST /v1/sessions once open. */
    this.session = null;
    /** The server's final account of the session (the `closed` message), after close(). */
    this.summary = null;
    /** Session events so far (the newest 100). */
    this.events = [];
    /** How many times the websocket was re-established after dropping. */
    this.reconnects = 0;
    this._ws = null;
    this._nextSeq = 0;
    this._pending = new Map(); // seq -> {bytes, seconds}: sent, not yet acknowledged or refused
    this._pendingBytes = 0;
    this._pendingSeconds = 0;
    this._errors = [];
    this._failure = null;
    this._broken = null;
    this._closedByUser = false;
    this._outage = null; // while reconnecting: {deadline, delay, attempts}
    this._outputsApplied = 0;
    this._output = this.destinations.some((d) => d.type === "client") ? new OutputBuffer() : null;
    this._waiters = new Set();
    this._listeners = { event: new Set(), warning: new Set(), state: new Set() };
    this._queue = Promise.resolve(); // writes run one after another, in call order
  }

  // -- configuration --------------------------------------------------------------------------

  _require(states, action) {
    if (states.includes(this.state)) return;
    const hint = { configuring: "call open() first", open: "the writer is already open", closing: "the writer is closing",
      closed: "the writer is closed", failed: "the session has failed" }[this.state];
    throw new StateError(`cannot ${action}: ${hint}`);
  }

  /**
   * Add a video stream. `format: "rgba"` takes canvases, ImageData, ImageBitmaps, VideoFrames and
   * (frames, H, W, 4) RGBA arrays; the server's formats take (frames, C, H, W) Uint8Arrays.
   * @param {{frameRate: number|string, width: number, height: number, format?: string, encoder?: string,
   *   encoderOption?: object, encoderFormat?: string, encoderFrameRate?: number|string, encoderWidth?: number,
   *   encoderHeight?: number, codecConfig?: object, filterDesc?: string}} config
   * @returns {number} the stream's index
   */
  addVideoStream(config) {
    this._require(["configuring"], "add a stream");
    return this.streams.push(new VideoStream(config)) - 1;
  }

  /**
   * Add an audio stream; chunks are AudioBuffers, AudioData or interleaved typed arrays of `format`'s dtype.
   * @param {{sampleRate: number, numChannels: number, format?: string, encoder?: string, encoderOption?: object,
   *   encoderFormat?: string, encoderSampleRate?: number, encoderNumChannels?: number, codecConfig?: object,
   *   filterDesc?: string}} config
   * @returns {number} the stream's index
   */
  addAudioStream(config) {
    this._require(["configuring"], "add a stream");
    return this.streams.push(new AudioStream(config)) - 1;
  }

  /** Container metadata (title, artist, ...); before open(). */
  setMetadata(metadata) {
    this._require(["configuring"], "set metadata");
    this.metadata = Object.fromEntries(Object.entries(metadata).map(([k, v]) => [String(k), String(v)]));
  }

  /**
   * Listen to the writer: "event" (session events: `{event: "reconnecting", ...}`), "warning" (a
   * string: options the encoder did not use, ...), "state" (the writer's new state).
   * @returns {() => void} removes the listener
   */
  on(name, listener) {
    const set = this._listeners[name];
    if (!set) throw new StateError(`no such writer event ${JSON.stringify(name)}; expected event, warning or state`);
    set.add(listener);
    return () => set.delete(listener);
  }

  _emit(name, value) {
    if (name === "warning" && !this._listeners.warning.size) console.warn(`framecast: ${value}`);
    for (const listener of this._listeners[name]) {
      try {
        listener(value);
      } catch (error) { // as an EventTarget does: reported, and the writer goes on
        queueMicrotask(() => { throw error; });
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  get sessionId() { return this.session?.id ?? null; }

  /** What is sent and not yet acknowledged: chunk messages, their bytes and media seconds. */
  get inFlight() {
    return { chunks: this._pending.size, bytes: this._pendingBytes, seconds: this._pendingSeconds };
  }

  // -- lifecycle ------------------------------------------------------------------------------

  _headers(extra = {}) {
    return { ...(this._apiKey ? { Authorization: `Bearer ${this._apiKey}` } : {}), ...extra };
  }

  async _request(method, path, body) {
    let response;
    try {
      response = await this._fetch(this.server + path, {
        method, headers: this._headers(body === undefined ? {} : { "Content-Type": "application/json" }),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new TransportError(`cannot reach the framecast server at ${this.server}: ${error.message}`, { cause: error });
    }
    if (!response.ok) throw await restError(response);
    return response;
  }

  /**
   * Create the session on the server and connect to it.
   * @param {object} [option] muxer options (`{movflags: "..."}`)
   * @returns {Promise<StreamWriter>}
   * @throws {InvalidConfig} the server refused the config; `field` names the value at fault
   */
  async open(option = null) {
    this._require(["configuring"], "open");
    if (!this.streams.length) throw new StateError("cannot open: add at least one stream first (addVideoStream / addAudioStream)");
    const common = {
      metadata: this.metadata, streams: this.streams.map((s) => s.toJSON()), realtime: this._realtime,
      connect_timeout: this._connectTimeout,
      ...(this._onDestinationDrop ? { on_destination_drop: this._onDestinationDrop } : {}),
    };
    let config;
    if (this.destinations.length > 1) {
      if (option && Object.keys(option).length) {
        throw new InvalidConfig("open(option) sets the muxer options of a single destination; with several, give each its own", { field: "options" });
      }
      if (this.format) throw new InvalidConfig("format applies to a single destination; with several, each takes the muxer its name implies", { field: "format" });
      // Paced when any destination is live, as one URL alone is.
      config = { destinations: this.destinations, ...common, realtime: this._realtime ?? this.destinations.some((d) => d.type === "url") };
    } else {
      config = {
        destination: this.destination, format: this.format,
        options: Object.fromEntries(Object.entries(option ?? {}).map(([k, v]) => [String(k), v])), ...common,
      };
    }
    this.session = await (await this._request("POST", "/v1/sessions", config)).json();
    for (const warning of this.session.warnings ?? []) this._emit("warning", warning);
    this._ws = await this._connect();
    this._setState("open");
    return this;
  }

  /** Open a websocket to the session; resolves once it is open. */
  _connect() {
    const { stream_url: url, token } = this.session;
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = this._headerWebSocket
          // No permessage-deflate (as the Python SDK): compressing raw pixels costs both ends more CPU than it saves.
          ? new this._headerWebSocket(url, undefined, { headers: { Authorization: `Bearer ${token}` }, perMessageDeflate: false })
          : new globalThis.WebSocket(url, [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token]);
      } catch (error) {
        reject(new TransportError(`cannot open the stream websocket ${url}: ${error.message}`, { cause: error }));
        return;
      }
      let opened = false;
      const timer = setTimeout(() => {
        reject(new TransportError(`the stream websocket ${url} did not open within 30 s`));
        ws.close();
      }, 30_000);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => { opened = true; clearTimeout(timer); resolve(ws); };
      ws.onerror = () => {}; // the close event that follows says how it ended
      ws.onmessage = (event) => this._handle(event.data);
      ws.onclose = (event) => {
        clearTimeout(timer);
        if (opened) this._lost(ws, event.code);
        else reject(new TransportError(`cannot open the stream websocket ${url} (close code ${event.code})`));
      };
    });
  }

  // -- server messages ------------------------------------------------------------------------

  _handle(data) {
    if (this._broken) return;
    this._outage = null; // the server is talking: a reconnect is over
    try {
      if (typeof data === "string") this._control(parseControl(data));
      else this._binary(parseServerBinary(data));
    } catch (error) {
      this._break(error instanceof FramecastError ? error
        : new TransportError(`handling a message from the server failed: ${error.message}`, { cause: error }));
    }
    this._wake();
  }

  _binary(message) {
    if (message.kind === "ack") {
      for (const [seq, item] of this._pending) {
        if (BigInt(seq) > message.seq) break; // insertion order is seq order
        this._forget(seq, item);
      }
      return;
    }
    if (!this._output) throw new ProtocolError("server sent output bytes for a destination that lives on the server");
    const index = Number(message.index);
    if (index < this._outputsApplied) return; // a repeat after a reconnect: already written
    if (index > this._outputsApplied) {
      throw new ProtocolError(`output message ${index} arrived before ${this._outputsApplied}`);
    }
    this._output.write(Number(message.offset), message.data);
    this._outputsApplied += 1;
    if (this._outputsApplied % OUTPUT_ACK_EVERY === 0) {
      this._sendNow(encodeControl("output_ack", { index: this._outputsApplied - 1 }));
    }
  }

  _control(message) {
    switch (message.type) {
      case "error": {
        const seq = message.seq ?? null;
        if (seq !== null && this._pending.has(seq)) this._forget(seq, this._pending.get(seq));
        this._errors.push(new InvalidChunk(message.message ?? "chunk refused", { seq, code: message.code ?? "invalid_chunk" }));
        break;
      }
      case "event": {
        const { type, ...event } = message;
        this.events.push(event);
        this.events.splice(0, Math.max(0, this.events.length - MAX_EVENTS));
        this._emit("event", event);
        break;
      }
      case "warning":
        this._emit("warning", message.message ?? "");
        break;
      case "failed":
        this._failure = new SessionFailed(message.reason ?? "unknown reason");
        this._pending.clear();
        this._pendingBytes = this._pendingSeconds = 0;
        this._setState("failed");
        break;
      case "closed":
        this.summary = message.session ?? null;
        this._setState("closed");
        break;
      default: // newer servers may add informational messages
    }
  }

  _forget(seq, item) {
    this._pending.delete(seq);
    this._pendingBytes -= item.bytes.length;
    this._pendingSeconds -= item.seconds;
  }

  // -- the connection -------------------------------------------------------------------------

  get _done() { return this.state === "closed" || this.state === "failed"; }

  _sendNow(message) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(message);
  }

  _lost(ws, code) {
    if (ws !== this._ws) return;
    this._ws = null;
    if (this._done || this._closedByUser || this._broken) return this._wake();
    const fatal = FATAL_CLOSE_CODES[code];
    if (fatal || !this._reconnect) {
      this._break(fatal ? fatal() : new TransportError(`the connection to the framecast server closed (code ${code})`));
      return;
    }
    if (this._outage && Date.now() > this._outage.deadline) {
      this._break(new TransportError(`could not resume the stream within ${this._reconnectTimeout / 1000} s (close code ${code})`));
      return;
    }
    this._resume();
  }

  /**
   * Reconnect with capped exponential backoff; resend every chunk not acknowledged, in order.
   *
   * The outage (its deadline and delay) lasts until a new socket has held for a second or the
   * server has said something on it: one that opens and is closed at once (4409 while the server
   * still holds the old connection) counts as a failed attempt, not as the end of the outage.
   */
  async _resume() {
    this._outage ??= { deadline: Date.now() + this._reconnectTimeout, delay: 0, attempts: 0 };
    const outage = this._outage;
    while (!this._closedByUser && !this._broken) {
      if (outage.delay) await new Promise((resolve) => setTimeout(resolve, outage.delay));
      outage.delay = Math.min(Math.max(2 * outage.delay, 50), 2000);
      outage.attempts += 1;
      try {
        const ws = await this._connect();
        if (this._closedByUser) { ws.close(); return; }
        for (const item of this._pending.values()) ws.send(item.bytes);
        if (this.state === "closing") ws.send(encodeControl("finish"));
        this._ws = ws;
        this.reconnects += 1;
        setTimeout(() => { if (this._ws === ws) this._outage = null; }, 1000); // it held: the outage is over
        this._wake();
        return;
      } catch (error) {
        if (error instanceof SessionNotFound || Date.now() + outage.delay > outage.deadline) {
          this._break(error instanceof SessionNotFound ? error : new TransportError(
            `lost the connection to the framecast server and could not reconnect within ${this._reconnectTimeout / 1000} s ` +
            `(${outage.attempts} attempts): ${error.message}`, { cause: error }));
          return;
        }
      }
    }
  }

  _break(error) {
    if (!this._broken) this._broken = error;
    this._wake();
  }

  _wake() {
    for (const wake of this._waiters) wake();
  }

  /** Wait (bounded by the writer's timeout) until `predicate()`; throws what broke the writer. */
  async _waitFor(predicate, what) {
    const deadline = Date.now() + this._timeout;
    while (!predicate()) {
      if (this._broken) throw this._broken;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new TransportError(`${what}: no answer from the server within ${this._timeout / 1000} s`);
      await new Promise((resolve) => {
        const done = () => { clearTimeout(timer); this._waiters.delete(done); resolve(); };
        const timer = setTimeout(done, Math.min(remaining, 1000));
        this._waiters.add(done);
      });
    }
  }

  /** Raise the session's failure, else the oldest chunk error not raised yet, else what broke. */
  _check() {
    if (this._failure) throw this._failure;
    if (this._errors.length) throw this._errors.shift();
    if (this._broken && !this._done) throw this._broken;
  }

  _windowOpen() {
    if (this._done || !this._pending.size) return true;
    if (this._pendingBytes > MAX_UNACKED_BYTES) return false;
    return !(this.session?.realtime && this._pendingSeconds > REALTIME_WINDOW_SECONDS);
  }

  // -- chunks ---------------------------------------------------------------------------------

  /**
   * Write video to stream `i`; resolves once the chunk is sent and fits the ACK window.
   * @param {number} i stream index
   * @param {ImageData|HTMLCanvasElement|OffscreenCanvas|ImageBitmap|VideoFrame|Uint8Array|Array<any>} chunk
   * @param {{pts?: number, shape?: number[]}} [options] pts in seconds; shape of a typed array
   */
  writeVideoChunk(i, chunk, options = {}) {
    return this._serial(() => this._write(i, "video", () => videoChunk(this.streams[i], chunk, options.shape), options.pts));
  }

  /**
   * Write audio to stream `i`; resolves once the chunk is sent and fits the ACK window.
   * @param {number} i stream index
   * @param {AudioBuffer|AudioData|Float32Array|Int16Array|ArrayBufferView} chunk interleaved samples
   * @param {{pts?: number, numChannels?: number}} [options]
   */
  writeAudioChunk(i, chunk, options = {}) {
    return this._serial(() => this._write(i, "audio", () => audioChunk(this.streams[i], chunk, options.numChannels), options.pts));
  }

  _serial(task) {
    const run = this._queue.then(task, task);
    this._queue = run.catch(() => {});
    return run;
  }

  async _write(i, kind, convert, pts = null) {
    this._check();
    this._require(["open"], `write a ${kind} chunk`);
    const stream = this.streams[i];
    if (!Number.isInteger(i) || !stream) {
      throw new InvalidChunk(`stream index ${i} does not exist; this writer has streams 0..${this.streams.length - 1}`);
    }
    if (stream.kind !== kind) {
      throw new InvalidChunk(`stream ${i} is a ${stream.kind} stream; use write${stream.kind === "video" ? "Video" : "Audio"}Chunk`);
    }
    const { data, shape } = await convert();
    const frames = shape[0];
    const perFrame = frames ? data.byteLength / frames : 0;
    let limit = (this.session.max_message_bytes ?? 16 * 1024 * 1024) - 64 - 4 * shape.length;
    if (this.session.realtime && frames) limit = Math.min(limit, Math.max(1, Math.floor(stream.rate * REALTIME_PIECE_SECONDS)) * perFrame);
    if (perFrame > limit) {
      throw new InvalidChunk(`one frame is ${perFrame} bytes, more than the server's message limit of ${limit} bytes`);
    }
    const step = frames ? Math.max(1, Math.floor(limit / perFrame)) : 1;
    const rowElements = frames ? data.length / frames : 0;
    for (let start = 0; start < Math.max(frames, 1); start += step) {
      const count = Math.min(step, frames - start);
      const piece = data.subarray(start * rowElements, (start + count) * rowElements);
      const piecePts = pts === null || pts === undefined ? null : pts + start / stream.rate;
      await this._waitFor(() => this._windowOpen(), "write");
      this._check();
      const seq = this._nextSeq++;
      const bytes = encodeChunk(i, seq, piece, [count, ...shape.slice(1)], piecePts);
      const item = { bytes, seconds: count / stream.rate };
      this._pending.set(seq, item);
      this._pendingBytes += bytes.length;
      this._pendingSeconds += item.seconds;
      this._sendNow(bytes); // when disconnected, the reconnect sends it (it is pending)
    }
    this._check();
  }

  /** Wait until the server has encoded every chunk written so far; throws what it refused. */
  async flush() {
    if (this.state === "configuring") throw new StateError("cannot flush: call open() first");
    await this._serial(async () => {
      await this._waitFor(() => !this._pending.size || this._done, "flush");
      this._check();
    });
  }

  /** Finish the output (flush, trailer) and wait until it is complete. Idempotent. */
  async close() {
    await this._serial(async () => {
      try {
        if (this.state === "configuring") {
          this._setState("closed");
        } else if (this.state === "open") {
          this._setState("closing");
          this._sendNow(encodeControl("finish")); // when disconnected, the reconnect sends it
          await this._waitFor(() => this._done, "close");
        }
      } finally {
        this._closedByUser = true;
        this._ws?.close();
        this._wake();
      }
      this._check();
    });
  }

  // -- results --------------------------------------------------------------------------------

  /**
   * The client-side output (ClientBlob) after close(): exactly the bytes the server's muxer wrote.
   * @param {string} [type] the Blob's media type
   * @returns {Blob}
   */
  blob(type = "") {
    return new Blob([this.bytes()], { type });
  }

  /** The client-side output's bytes (ClientBlob) after close(). */
  bytes() {
    if (!this._output) throw new StateError("bytes() and blob() are for ClientBlob destinations");
    if (this.state !== "closed") throw new StateError("the output is complete once close() has returned");
    return this._output.bytes.subarray(0, this._output.length);
  }

  /**
   * A closed ServerFile output, fetched from GET /v1/sessions/{id}/output.
   * @returns {Promise<Blob>}
   */
  async download() {
    if (this.destination.type !== "server_file") {
      const hint = this.destinations.length > 1 ? " (with several destinations, the first one's: put the ServerFile first)" : "";
      throw new StateError(`download() is for ServerFile destinations${hint}`);
    }
    if (this.state !== "closed") throw new StateError("download() needs a closed writer; call close() first");
    return (await this._request("GET", `/v1/sessions/${this.session.id}/output`)).blob();
  }

  /**
   * In a browser: save the output (a ClientBlob's bytes, or a ServerFile fetched) as a download.
   * @param {string} [filename]
   */
  async save(filename) {
    const blob = this.destination.type === "server_file" ? await this.download() : this.blob();
    const name = filename ?? this.destination.filename ?? this.destination.path?.split("/").pop() ?? "output";
    const link = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  }
}
