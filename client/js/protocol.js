/**
 * The framecast wire format, sans I/O: the JavaScript twin of client/framecast/protocol.py.
 *
 * Binary messages (all integers little-endian) start with "FC", the version (1) and the kind:
 * CHUNK (1, client -> server), ACK (2) and OUTPUT (3) (server -> client). Control messages are
 * JSON text. PROTOCOL.md documents every byte; tests/protocol_vectors.json pins them for both
 * implementations. u64 fields (seq, index, offset) are BigInt when parsed and may be given as
 * numbers or BigInts.
 * @module
 */

import { ProtocolError } from "./errors.js";

export const VERSION = 1;
export const MAX_NDIM = 8;
export const FLAG_HAS_PTS = 0x01;
export const FLAG_SHARED = 0x02;

/** The kind byte of a binary message. */
export const Kind = Object.freeze({ CHUNK: 1, ACK: 2, OUTPUT: 3 });

/** Element type codes, by the numpy names PROTOCOL.md uses. */
export const DType = Object.freeze({ uint8: 1, int16: 2, int32: 3, int64: 4, float32: 5, float64: 6 });

const ITEM_SIZE = { 1: 1, 2: 2, 3: 4, 4: 8, 5: 4, 6: 8 };
const DTYPE_NAMES = Object.fromEntries(Object.entries(DType).map(([name, code]) => [code, name]));

/** Audio input sample formats and the dtype each expects. */
export const AUDIO_SAMPLE_FORMATS = Object.freeze({
  u8: DType.uint8, s16: DType.int16, s32: DType.int32, s64: DType.int64, flt: DType.float32, dbl: DType.float64,
});

/** Video input pixel formats (all uint8) and their channel count; frames are (C, H, W) planes. */
export const VIDEO_PIXEL_FORMATS = Object.freeze({ gray8: 1, rgb24: 3, bgr24: 3, rgb0: 4, bgr0: 4, yuv444p: 3 });

/** The typed array class that holds each dtype (little-endian: checked below). */
export const TYPED_ARRAYS = Object.freeze({
  [DType.uint8]: Uint8Array, [DType.int16]: Int16Array, [DType.int32]: Int32Array,
  [DType.int64]: BigInt64Array, [DType.float32]: Float32Array, [DType.float64]: Float64Array,
});

// Typed arrays use the platform's byte order; the wire is little-endian, as is every platform
// that runs a browser or Node today. Refuse loudly rather than send swapped samples.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new ProtocolError("framecast.js needs a little-endian platform");
}

/**
 * The dtype code of a typed array (Uint8ClampedArray counts as uint8).
 * @param {ArrayBufferView} array
 * @returns {number}
 */
export function dtypeOf(array) {
  if (array instanceof Uint8Array || array instanceof Uint8ClampedArray) return DType.uint8;
  for (const [code, Type] of Object.entries(TYPED_ARRAYS)) {
    if (array instanceof Type) return Number(code);
  }
  throw new ProtocolError(`unsupported array type ${array?.constructor?.name}; expected one of ` +
    "Uint8Array, Int16Array, Int32Array, BigInt64Array, Float32Array, Float64Array");
}

/** Length in bytes of a CHUNK header with `ndim` dimensions (where its payload starts). */
export function headerSize(ndim) {
  return (28 + 4 * ndim + 7) & ~7;
}

function preamble(view, kind) {
  view.setUint8(0, 0x46); view.setUint8(1, 0x43); view.setUint8(2, VERSION); view.setUint8(3, kind);
}

function checkPreamble(bytes, kind) {
  if (bytes.length < 4) throw new ProtocolError(`message too short: ${bytes.length} bytes, need at least 4`);
  if (bytes[0] !== 0x46 || bytes[1] !== 0x43) {
    throw new ProtocolError(`bad magic: expected "FC", got ${JSON.stringify(String.fromCharCode(bytes[0], bytes[1]))}`);
  }
  if (bytes[2] !== VERSION) {
    throw new ProtocolError(`unsupported protocol version ${bytes[2]}; this side speaks ${VERSION}`);
  }
  if (kind !== undefined && bytes[3] !== kind) {
    throw new ProtocolError(`expected a CHUNK message (kind ${kind}), got kind ${bytes[3]}`);
  }
  return bytes[3];
}

function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

function u64(value, what) {
  const big = BigInt(value);
  if (big < 0n || big >= 1n << 64n) throw new ProtocolError(`${what} must be in 0..2**64-1, got ${value}`);
  return big;
}

/**
 * A CHUNK header: everything but the payload.
 * @param {{stream: number, seq: number|bigint, dtype: number, shape: number[], pts?: number|null,
 *          shared?: boolean}} header
 * @returns {Uint8Array} the header's bytes; the payload follows them
 */
export function encodeChunkHeader({ stream, seq, dtype, shape, pts = null, shared = false }) {
  const ndim = shape.length;
  if (ndim < 1 || ndim > MAX_NDIM) throw new ProtocolError(`chunk must have 1 to ${MAX_NDIM} dimensions, got ${ndim}`);
  if (!Number.isInteger(stream) || stream < 0 || stream > 0xffff) {
    throw new ProtocolError(`stream index must be in 0..65535, got ${stream}`);
  }
  if (!(dtype in ITEM_SIZE)) throw new ProtocolError(`unknown dtype code ${dtype}`);
  if (shape.some((d) => !Number.isInteger(d) || d < 0 || d > 0xffffffff)) {
    throw new ProtocolError(`every dimension must be in 0..2**32-1, got (${shape.join(", ")})`);
  }
  if (pts !== null && pts !== undefined && !Number.isFinite(pts)) {
    throw new ProtocolError(`pts must be a finite number of seconds, got ${pts}`);
  }
  const hasPts = pts !== null && pts !== undefined;
  const out = new Uint8Array(headerSize(ndim));
  const view = new DataView(out.buffer);
  preamble(view, Kind.CHUNK);
  view.setUint16(4, stream, true);
  view.setUint8(6, dtype);
  view.setUint8(7, (hasPts ? FLAG_HAS_PTS : 0) | (shared ? FLAG_SHARED : 0));
  view.setBigUint64(8, u64(seq, "sequence number"), true);
  view.setFloat64(16, hasPts ? pts : 0, true);
  view.setUint8(24, ndim);
  shape.forEach((d, i) => view.setUint32(28 + 4 * i, d, true));
  return out;
}

/**
 * Parse the header at the start of a CHUNK message (what follows it is not looked at).
 * @param {ArrayBuffer|ArrayBufferView} data
 * @returns {{stream: number, seq: bigint, dtype: number, shape: number[], pts: number|null,
 *            shared: boolean, size: number, payloadSize: number}}
 * @throws {ProtocolError} truncated or malformed
 */
export function parseChunkHeader(data) {
  const bytes = asBytes(data);
  checkPreamble(bytes, Kind.CHUNK);
  if (bytes.length < 28) throw new ProtocolError(`truncated chunk header: ${bytes.length} bytes, need at least 28`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dtype = bytes[6];
  if (!(dtype in ITEM_SIZE)) {
    throw new ProtocolError(`unknown dtype code ${dtype}; expected one of ` +
      Object.entries(DType).map(([name, code]) => `${code} (${name})`).join(", "));
  }
  const ndim = bytes[24];
  if (ndim < 1 || ndim > MAX_NDIM) throw new ProtocolError(`chunk must have 1 to ${MAX_NDIM} dimensions, got ${ndim}`);
  const size = headerSize(ndim);
  if (bytes.length < size) {
    throw new ProtocolError(`truncated chunk header: ${bytes.length} bytes, need ${size} for ndim=${ndim}`);
  }
  const flags = bytes[7];
  if (flags & ~(FLAG_HAS_PTS | FLAG_SHARED)) {
    throw new ProtocolError(`unknown flags 0x${flags.toString(16).padStart(2, "0")}`);
  }
  const pts = view.getFloat64(16, true);
  if (flags & FLAG_HAS_PTS && !Number.isFinite(pts)) {
    throw new ProtocolError(`pts must be a finite number of seconds, got ${pts}`);
  }
  const shape = Array.from({ length: ndim }, (_, i) => view.getUint32(28 + 4 * i, true));
  return {
    stream: view.getUint16(4, true),
    seq: view.getBigUint64(8, true),
    dtype,
    shape,
    pts: flags & FLAG_HAS_PTS ? pts : null,
    shared: Boolean(flags & FLAG_SHARED),
    size,
    payloadSize: shape.reduce((a, b) => a * b, 1) * ITEM_SIZE[dtype],
  };
}

/**
 * Parse a whole CHUNK message: its header and a typed-array view of its payload.
 * @param {ArrayBuffer|ArrayBufferView} data
 * @throws {ProtocolError} malformed, or the payload length does not match the shape and dtype
 */
export function parseChunk(data) {
  const bytes = asBytes(data);
  const header = parseChunkHeader(bytes);
  const payload = bytes.subarray(header.size);
  if (header.shared) {
    if (payload.length !== 8) {
      throw new ProtocolError(`a shared-memory chunk carries an 8-byte offset after its header, got ${payload.length} bytes`);
    }
    return { header, payload };
  }
  if (payload.length !== header.payloadSize) {
    throw new ProtocolError(`payload is ${payload.length} bytes but shape (${header.shape.join(", ")}${header.shape.length === 1 ? "," : ""}) ` +
      `of ${DTYPE_NAMES[header.dtype]} needs ${header.payloadSize}`);
  }
  const Type = TYPED_ARRAYS[header.dtype];
  const copy = payload.slice(); // aligned for the typed array, whatever the message's offset
  return { header, payload, array: new Type(copy.buffer, 0, payload.length / Type.BYTES_PER_ELEMENT) };
}

/**
 * A whole CHUNK message: header and the array's bytes in one buffer (a websocket message).
 * @param {number} stream
 * @param {number|bigint} seq
 * @param {ArrayBufferView} array a typed array in C order, `shape`'s product elements long
 * @param {number[]} shape
 * @param {number|null} [pts] seconds
 * @returns {Uint8Array}
 */
export function encodeChunk(stream, seq, array, shape, pts = null) {
  const dtype = dtypeOf(array);
  const elements = shape.reduce((a, b) => a * b, 1);
  if (elements !== array.length) {
    throw new ProtocolError(`array has ${array.length} elements but shape (${shape.join(", ")}) needs ${elements}`);
  }
  const header = encodeChunkHeader({ stream, seq, dtype, shape, pts });
  const message = new Uint8Array(header.length + array.byteLength);
  message.set(header);
  message.set(asBytes(array), header.length);
  return message;
}

/** An ACK: every chunk with a sequence number <= `seq` is taken. */
export function encodeAck(seq) {
  const out = new Uint8Array(16);
  const view = new DataView(out.buffer);
  preamble(view, Kind.ACK);
  view.setBigUint64(8, u64(seq, "seq"), true);
  return out;
}

/** OUTPUT message number `index`: `data` to write at `offset` of a client-side destination. */
export function encodeOutput(index, offset, data = new Uint8Array(0)) {
  const out = new Uint8Array(24 + data.length);
  const view = new DataView(out.buffer);
  preamble(view, Kind.OUTPUT);
  view.setBigUint64(8, u64(index, "index"), true);
  view.setBigUint64(16, u64(offset, "offset"), true);
  out.set(data, 24);
  return out;
}

/**
 * Parse a binary message from the server.
 * @param {ArrayBuffer|ArrayBufferView} data
 * @returns {{kind: "ack", seq: bigint} | {kind: "output", index: bigint, offset: bigint, data: Uint8Array}}
 * @throws {ProtocolError}
 */
export function parseServerBinary(data) {
  const bytes = asBytes(data);
  const kind = checkPreamble(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (kind === Kind.ACK) {
    if (bytes.length !== 16) throw new ProtocolError(`ACK must be 16 bytes, got ${bytes.length}`);
    return { kind: "ack", seq: view.getBigUint64(8, true) };
  }
  if (kind === Kind.OUTPUT) {
    if (bytes.length < 24) throw new ProtocolError(`truncated OUTPUT header: ${bytes.length} bytes`);
    return { kind: "output", index: view.getBigUint64(8, true), offset: view.getBigUint64(16, true), data: bytes.subarray(24) };
  }
  throw new ProtocolError(`unexpected message kind ${kind} from server`);
}

/** A JSON control message (`finish`, `output_ack`) as the Python side writes it (no spaces). */
export function encodeControl(type, fields = {}) {
  return JSON.stringify({ type, ...fields });
}

/**
 * Parse a JSON control message: an object with a string `type`.
 * @param {string} text
 * @returns {{type: string, [field: string]: unknown}}
 * @throws {ProtocolError}
 */
export function parseControl(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch (error) {
    throw new ProtocolError(`control message is not valid JSON: ${error.message}`);
  }
  if (message === null || typeof message !== "object" || Array.isArray(message) || typeof message.type !== "string") {
    throw new ProtocolError("control message must be a JSON object with a string 'type' field");
  }
  return message;
}
