// The client with the runtime's own WebSocket, as in a browser or Node 22 (here Node 20 with
// --experimental-websocket): no `ws` package, the stream token offered as a subprotocol.
// Run by tests/test_js_client.py, which decodes the file.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ServerFile, StreamWriter } from "../../client/js/framecast.js";
import { patternRGBA, sineInterleaved } from "./pattern.mjs";

test("a push with the global WebSocket", { timeout: 60_000 }, async () => {
  assert.equal(typeof globalThis.WebSocket, "function", "run with --experimental-websocket (Node 20) or Node 22+");
  const s = new StreamWriter(ServerFile("node/global.mkv"), { server: process.env.FRAMECAST_TEST_SERVER, timeout: 60 });
  s.addVideoStream({ frameRate: 30, width: 128, height: 96, format: "rgba" });
  s.addAudioStream({ sampleRate: 48000, numChannels: 2 });
  await s.open();
  for (let f = 0; f < 30; f++) {
    await s.writeVideoChunk(0, patternRGBA(f, 128, 96), { shape: [1, 96, 128, 4] });
    await s.writeAudioChunk(1, sineInterleaved(440, 48000, 1 / 30, 2, f * 1600));
  }
  await s.close();
  assert.equal(s.summary.streams[0].counters.frames, 30);
});
