// The JavaScript client end to end, from Node, against a real framecast server whose URL
// tests/test_js_client.py passes in FRAMECAST_TEST_SERVER (it decodes what arrived, too).
import assert from "node:assert/strict";
import { test } from "node:test";

import { WebSocket } from "ws";

import {
  ClientBlob, InvalidChunk, InvalidConfig, ServerFile, StateError, StreamWriter, TransportError,
} from "../../client/js/framecast.js";
import { patternRGBA, sineInterleaved } from "./pattern.mjs";

const server = process.env.FRAMECAST_TEST_SERVER;
const prefix = process.env.FRAMECAST_TEST_PREFIX ?? "node";
const W = 128, H = 96;

test("the server URL is given", () => assert.ok(server, "run from tests/test_js_client.py, which sets FRAMECAST_TEST_SERVER"));

function writer(dst, options = {}) {
  return new StreamWriter(dst, { server, WebSocket, timeout: 60, ...options });
}

async function push(s, { frames = 90, seconds = 3, videoChunk = 10 } = {}) {
  for (let f = 0; f < frames; f += videoChunk) {
    const n = Math.min(videoChunk, frames - f);
    const pixels = new Uint8Array(n * H * W * 4);
    for (let i = 0; i < n; i++) pixels.set(patternRGBA(f + i, W, H), i * H * W * 4);
    await s.writeVideoChunk(0, pixels, { shape: [n, H, W, 4] });
    // Audio in step with the video: 1/3 s per 10 frames.
    const start = Math.round((f / frames) * seconds * 48000);
    await s.writeAudioChunk(1, sineInterleaved(440, 48000, (n / frames) * seconds, 2, start), { numChannels: 2 });
  }
}

test("90 frames and 3 s of a sine from Node to a server file", { timeout: 120_000 }, async () => {
  const s = writer(ServerFile(`${prefix}/push.mkv`));
  const states = [];
  s.on("state", (state) => states.push(state));
  s.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgba" });
  s.addAudioStream({ sampleRate: 48000, numChannels: 2 });
  await s.open();
  await push(s);
  await s.flush();
  await s.close();
  assert.deepEqual(states, ["open", "closing", "closed"]);
  const [video, audio] = s.summary.streams.map((stream) => stream.counters);
  assert.equal(video.frames, 90);
  assert.equal(audio.frames, 144000);
  assert.equal(video.errors + audio.errors, 0);
  assert.ok(s.events.some((e) => e.event === "finalized"), JSON.stringify(s.events));
  const file = await s.download();
  assert.ok(file.size > 1000, `${file.size} bytes`);
});

test("a ClientBlob holds exactly the bytes the server's muxer writes to a file", { timeout: 120_000 }, async () => {
  const outputs = [];
  for (const dst of [ClientBlob("same.mkv"), ServerFile(`${prefix}/same.mkv`)]) {
    const s = writer(dst);
    s.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgba", encoder: "ffv1" });
    s.addAudioStream({ sampleRate: 48000, numChannels: 2, encoder: "flac" });
    await s.open({ fflags: "+bitexact" }); // no random Matroska UIDs
    await push(s, { frames: 30, seconds: 1 });
    await s.close();
    outputs.push(new Uint8Array(await (dst.type === "client" ? s.blob() : await s.download()).arrayBuffer()));
  }
  assert.ok(outputs[0].length > 10_000, `${outputs[0].length} bytes`);
  assert.deepEqual(outputs[0], outputs[1]);
});

test("a list of destinations: one encode, a ClientBlob and a ServerFile with the same bytes", { timeout: 120_000 }, async () => {
  const s = writer([ServerFile(`${prefix}/fan.mkv`), ClientBlob("fan.mkv")]);
  assert.equal(s.destinations.length, 2);
  s.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgba", encoder: "ffv1" });
  s.addAudioStream({ sampleRate: 48000, numChannels: 2, encoder: "flac" });
  await assert.rejects(s.open({ fflags: "+bitexact" }), (error) => error instanceof InvalidConfig && error.field === "options");
  const t = writer([ServerFile(`${prefix}/fan.mkv`), ClientBlob("fan.mkv")]);
  t.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgba", encoder: "ffv1" });
  t.addAudioStream({ sampleRate: 48000, numChannels: 2, encoder: "flac" });
  await t.open();
  await push(t, { frames: 30, seconds: 1 });
  await t.close();
  assert.equal(t.summary.outputs.length, 2);
  const [file, blob] = [new Uint8Array(await (await t.download()).arrayBuffer()), t.bytes()];
  assert.ok(blob.length > 10_000, `${blob.length} bytes`);
  assert.equal(file.length, blob.length); // the same packets, muxed the same way (UIDs aside)
  assert.throws(() => writer([ClientBlob("a.mkv"), ClientBlob("b.mkv")]), (error) => error instanceof InvalidConfig && error.field === "dst");
  assert.throws(() => writer([]), /empty list/);
});

test("a real-time session holds the writer to the ACK window", { timeout: 60_000 }, async () => {
  const s = writer(ServerFile(`${prefix}/paced.mkv`), { realtime: true });
  const heard = [];
  s.on("event", (event) => heard.push(event.event));
  s.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgba" });
  await s.open();
  let most = 0;
  for (let f = 0; f < 60; f++) {
    await s.writeVideoChunk(0, patternRGBA(f, W, H), { shape: [1, H, W, 4] });
    most = Math.max(most, s.inFlight.seconds);
  }
  // Frames leave at media time, so the writer runs ahead until a second is unacknowledged and no
  // further: each write resolves once what is in flight fits the window (plus the frame just sent).
  assert.ok(most <= 1.0 + 1 / 30 + 1e-9, `${most} s in flight`);
  assert.ok(most >= 0.9, `${most} s in flight: the window never filled`);
  await s.close();
  assert.equal(s.inFlight.chunks, 0);
  assert.deepEqual(heard, s.events.map((e) => e.event));
  assert.ok(heard.includes("finalized"), heard.join());
});

test("errors carry the server's code, field and seq", { timeout: 60_000 }, async () => {
  const bad = writer(ServerFile(`${prefix}/bad.mp4`));
  bad.addVideoStream({ frameRate: 30, width: W, height: H, encoder: "no-such-encoder" });
  await assert.rejects(bad.open(), (error) => {
    assert.ok(error instanceof InvalidConfig, String(error));
    assert.equal(error.code, "invalid_config");
    assert.equal(error.field, "streams.0.encoder");
    assert.equal(error.status, 422);
    return true;
  });

  const s = writer(ServerFile(`${prefix}/refused.mkv`));
  assert.throws(() => s.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgb48" }),
    (error) => error instanceof InvalidConfig && error.field === "format");
  s.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgba" });
  await assert.rejects(s.writeVideoChunk(0, new Uint8Array(4)), StateError);
  await s.open();
  // Checked locally: nothing is sent.
  await assert.rejects(s.writeVideoChunk(0, new Uint8Array(10)), (error) => error instanceof InvalidChunk && error.seq === null);
  await assert.rejects(s.writeAudioChunk(0, new Float32Array(4)), /stream 0 is a video stream/);
  // Refused by the server: a chunk that starts before the previous one ended (seq 1).
  const frame = patternRGBA(0, W, H);
  await s.writeVideoChunk(0, frame, { shape: [1, H, W, 4], pts: 1.0 });
  await s.writeVideoChunk(0, frame, { shape: [1, H, W, 4], pts: 0.0 });
  await assert.rejects(s.close(), (error) => {
    assert.ok(error instanceof InvalidChunk, String(error));
    assert.equal(error.code, "invalid_chunk");
    assert.equal(error.seq, 1);
    return true;
  });
  assert.equal(s.state, "closed");
});

test("a server file that exists is replaced only with overwrite", { timeout: 60_000 }, async () => {
  const once = async (dst) => {
    const s = writer(dst);
    s.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgba" });
    s.addAudioStream({ sampleRate: 48000, numChannels: 2 });
    await s.open();
    await push(s, { frames: 10, seconds: 1 / 3 });
    await s.close();
    return s;
  };
  await once(ServerFile(`${prefix}/twice.mkv`));
  await assert.rejects(once(ServerFile(`${prefix}/twice.mkv`)), (error) => {
    assert.ok(error instanceof InvalidConfig, String(error));
    assert.equal(error.code, "path_exists");
    assert.equal(error.field, "destination.path");
    assert.match(error.message, /exists; choose another path, or set overwrite to true to replace it/);
    return true;
  });
  const again = await once(ServerFile(`${prefix}/twice.mkv`, { overwrite: true }));
  assert.equal(again.summary.streams[0].counters.frames, 10);
});

test("a server that is not there is a TransportError", { timeout: 30_000 }, async () => {
  const s = new StreamWriter(ServerFile("x.mkv"), { server: "http://127.0.0.1:9", WebSocket });
  s.addVideoStream({ frameRate: 30, width: W, height: H });
  await assert.rejects(s.open(), (error) => error instanceof TransportError && error.code === "transport_error");
});

// Through tests/faults.py's CuttingProxy (started by tests/test_js_client.py): the stream
// websocket is cut after a random number of bytes, three times per proxy.
const proxies = { file: process.env.FRAMECAST_TEST_PROXY_FILE, blob: process.env.FRAMECAST_TEST_PROXY_BLOB };

test("cut three times, a push to a server file resumes and resends what was not acknowledged", { timeout: 120_000 }, async () => {
  assert.ok(proxies.file, "FRAMECAST_TEST_PROXY_FILE is set by tests/test_js_client.py");
  const s = writer(ServerFile(`${prefix}/cut.mkv`), { server: proxies.file });
  s.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgba" });
  s.addAudioStream({ sampleRate: 48000, numChannels: 2 });
  await s.open();
  await push(s);
  await s.close();
  assert.ok(s.reconnects >= 3, `${s.reconnects} reconnects`);
  assert.equal(s.summary.streams[0].counters.frames, 90); // the server took each frame once
  assert.equal(s.summary.streams[1].counters.frames, 144000);
  // on("event") hears the server's account (events while no client is connected may not reach it).
  assert.ok(s.events.some((e) => e.event === "client_reconnected"), JSON.stringify(s.events));
});

test("cut three times, a ClientBlob still holds exactly the server muxer's bytes", { timeout: 120_000 }, async () => {
  assert.ok(proxies.blob, "FRAMECAST_TEST_PROXY_BLOB is set by tests/test_js_client.py");
  const outputs = [];
  let reconnects = 0;
  for (const [dst, server] of [[ClientBlob("cut.mkv"), proxies.blob], [ServerFile(`${prefix}/cut-twin.mkv`), undefined]]) {
    const s = writer(dst, server ? { server } : {});
    s.addVideoStream({ frameRate: 30, width: W, height: H, format: "rgba", encoder: "ffv1" });
    s.addAudioStream({ sampleRate: 48000, numChannels: 2, encoder: "flac" });
    await s.open({ fflags: "+bitexact" });
    await push(s, { frames: 60, seconds: 2 });
    await s.close();
    reconnects += s.reconnects;
    outputs.push(new Uint8Array(await (dst.type === "client" ? s.blob() : await s.download()).arrayBuffer()));
  }
  assert.ok(reconnects >= 3, `${reconnects} reconnects`);
  assert.ok(outputs[0].length > 100_000, `${outputs[0].length} bytes`);
  assert.deepEqual(outputs[0], outputs[1]);
});
