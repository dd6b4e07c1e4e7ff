// The JavaScript wire format against the vectors the Python protocol tests pin
// (tests/protocol_vectors.json, read by tests/test_protocol.py too).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as protocol from "../../client/js/protocol.js";
import { ProtocolError } from "../../client/js/errors.js";

const vectors = JSON.parse(readFileSync(new URL("../protocol_vectors.json", import.meta.url), "utf8"));
const hex = (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
const unhex = (text) => new Uint8Array(Buffer.from(text, "hex"));

function typed(dtype, values) {
  const Type = protocol.TYPED_ARRAYS[protocol.DType[dtype]];
  return Type === BigInt64Array ? BigInt64Array.from(values, BigInt) : Type.from(values);
}

test("chunk headers are byte for byte the vectors", () => {
  for (const v of vectors.chunk_headers) {
    const fields = { stream: v.stream, seq: BigInt(v.seq), dtype: protocol.DType[v.dtype], shape: v.shape, pts: v.pts, shared: v.shared };
    assert.equal(hex(protocol.encodeChunkHeader(fields)), v.hex, `${v.dtype} ${v.shape}`);
    const parsed = protocol.parseChunkHeader(unhex(v.hex));
    assert.deepEqual({ ...parsed, size: undefined, payloadSize: undefined },
      { ...fields, size: undefined, payloadSize: undefined });
    assert.equal(parsed.size, v.hex.length / 2);
  }
});

test("whole chunks: encoded bytes and parsed values", () => {
  for (const v of vectors.chunks) {
    const array = typed(v.dtype, v.values);
    assert.equal(hex(protocol.encodeChunk(v.stream, BigInt(v.seq), array, v.shape, v.pts)), v.hex, v.dtype);
    // The same from a number seq and from an offset view of the bytes (parsing copes with any alignment).
    assert.equal(hex(protocol.encodeChunk(v.stream, Number(v.seq), array, v.shape, v.pts)), v.hex);
    const shifted = new Uint8Array(v.hex.length / 2 + 3);
    shifted.set(unhex(v.hex), 3);
    const { header, array: out } = protocol.parseChunk(shifted.subarray(3));
    assert.deepEqual(Array.from(out), Array.from(array));
    assert.deepEqual(header.shape, v.shape);
    assert.equal(header.pts, v.pts);
  }
});

test("malformed chunks are refused with the Python side's reasons", () => {
  assert.ok(vectors.malformed_chunks.length >= 10);
  for (const v of vectors.malformed_chunks) {
    assert.throws(() => protocol.parseChunk(unhex(v.hex)), (error) => {
      assert.ok(error instanceof ProtocolError, v.what);
      assert.ok(error.message.includes(v.error), `${v.what}: ${error.message} lacks ${v.error}`);
      assert.equal(error.code, "protocol_error");
      return true;
    });
  }
});

test("ACK and OUTPUT messages", () => {
  for (const v of vectors.acks) {
    assert.equal(hex(protocol.encodeAck(BigInt(v.seq))), v.hex);
    assert.deepEqual(protocol.parseServerBinary(unhex(v.hex)), { kind: "ack", seq: BigInt(v.seq) });
  }
  for (const v of vectors.outputs) {
    assert.equal(hex(protocol.encodeOutput(BigInt(v.index), BigInt(v.offset), unhex(v.data_hex))), v.hex);
    const out = protocol.parseServerBinary(unhex(v.hex).buffer);
    assert.equal(out.kind, "output");
    assert.equal(out.index, BigInt(v.index));
    assert.equal(out.offset, BigInt(v.offset));
    assert.equal(hex(out.data), v.data_hex);
  }
  for (const v of vectors.malformed_server_binary) {
    assert.throws(() => protocol.parseServerBinary(unhex(v.hex)),
      (error) => error instanceof ProtocolError && error.message.includes(v.error), v.what);
  }
});

test("control messages and formats", () => {
  for (const v of vectors.controls) {
    assert.equal(protocol.encodeControl(v.type, v.fields), v.text);
    assert.deepEqual(protocol.parseControl(v.text), { type: v.type, ...v.fields });
  }
  for (const text of vectors.malformed_controls) {
    assert.throws(() => protocol.parseControl(text), ProtocolError, text);
  }
  assert.deepEqual({ ...protocol.AUDIO_SAMPLE_FORMATS }, vectors.audio_sample_formats);
  assert.deepEqual({ ...protocol.VIDEO_PIXEL_FORMATS }, vectors.video_pixel_formats);
  assert.deepEqual({ ...protocol.DType }, vectors.dtypes);
});

test("what the format cannot carry is refused before a byte is sent", () => {
  const base = { stream: 0, seq: 0, dtype: protocol.DType.uint8, shape: [1] };
  assert.throws(() => protocol.encodeChunkHeader({ ...base, stream: 70000 }), /stream index/);
  assert.throws(() => protocol.encodeChunkHeader({ ...base, pts: Infinity }), /finite/);
  assert.throws(() => protocol.encodeChunkHeader({ ...base, seq: -1 }), /sequence number/);
  assert.throws(() => protocol.encodeChunkHeader({ ...base, shape: [] }), /1 to 8 dimensions, got 0/);
  assert.throws(() => protocol.encodeChunk(0, 0, new Float32Array(3), [2, 2]), /3 elements but shape \(2, 2\) needs 4/);
  assert.throws(() => protocol.dtypeOf(new Uint16Array(1)), /unsupported array type Uint16Array/);
});
