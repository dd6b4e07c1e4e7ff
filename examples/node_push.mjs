#!/usr/bin/env node
// Stream a generated test pattern and a tone from Node to RTMP (or a server file) through a
// framecast server, with the JavaScript client (client/js/framecast.js).
//
//   npm install ws        # Node 18-21 have no global WebSocket; `ws` is looked up from the current directory
//   node examples/node_push.mjs --url rtmp://127.0.0.1:1935/live/demo --seconds 10
//   node examples/node_push.mjs --file recordings/node.mp4 --seconds 5 --server http://127.0.0.1:8000 [--overwrite]
//
// The server is --server, else $FRAMECAST_SERVER, else http://127.0.0.1:8000; the API key
// $FRAMECAST_API_KEY. Network URLs are paced in real time by the writer's flow control.
import { createRequire } from "node:module";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { ServerFile, StreamWriter } from "../client/js/framecast.js";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" }, file: { type: "string" }, server: { type: "string" }, overwrite: { type: "boolean" },
    seconds: { type: "string", default: "10" }, fps: { type: "string", default: "30" },
    width: { type: "string", default: "640" }, height: { type: "string", default: "360" },
  },
});
if (!args.url === !args.file) {
  console.error("give --url rtmp://... or --file dir/name.mp4 (a file on the server)");
  process.exit(2);
}

/** The `ws` package's WebSocket (it sends the stream token as a header), else the global one. */
async function webSocketClass() {
  try {
    return createRequire(join(process.cwd(), "noop.js"))("ws");
  } catch { /* not installed where we run */ }
  try {
    return (await import("ws")).WebSocket;
  } catch { /* nor next to this file */ }
  if (globalThis.WebSocket) return undefined;
  throw new Error("no WebSocket: npm install ws (Node 18-21), or use Node 22+");
}

const [seconds, fps, width, height] = [args.seconds, args.fps, args.width, args.height].map(Number);
const rate = 48000;
const writer = new StreamWriter(args.url ?? ServerFile(args.file, { overwrite: args.overwrite }), { server: args.server, WebSocket: await webSocketClass() });
writer.addVideoStream({ frameRate: fps, width, height, format: "rgba" });
writer.addAudioStream({ sampleRate: rate, numChannels: 2 });
writer.on("event", (event) => console.log(`event: ${event.event}`));

/** Frame `f`: colour bars sliding left, a white box bouncing, the frame number as 12 bits on top. */
function frame(f) {
  const pixels = new Uint8Array(width * height * 4);
  const bars = [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0], [0, 0, 255]];
  const box = Math.abs(((f * 4) % (2 * (width - 40))) - (width - 40));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const q = 4 * (y * width + x);
      let colour = bars[Math.floor((((x + 2 * f) % width) * bars.length) / width)];
      if (y < 16) colour = (f >> Math.floor((x * 12) / width)) & 1 ? [255, 255, 255] : [0, 0, 0];
      else if (x >= box && x < box + 40 && y >= height / 2 - 20 && y < height / 2 + 20) colour = [250, 250, 250];
      pixels.set(colour, q);
      pixels[q + 3] = 255;
    }
  }
  return pixels;
}

await writer.open();
console.log(`session ${writer.sessionId}: ${fps} fps ${width}x${height} and a 440 Hz tone to ${args.url ?? args.file}`);
const frames = Math.round(seconds * fps);
let sample = 0;
for (let f = 0; f < frames; f++) {
  await writer.writeVideoChunk(0, frame(f), { shape: [1, height, width, 4] });
  const upTo = Math.round(((f + 1) * rate) / fps);
  const tone = new Float32Array((upTo - sample) * 2);
  for (let i = 0; i < upTo - sample; i++) tone[2 * i] = tone[2 * i + 1] = 0.3 * Math.sin((2 * Math.PI * 440 * (sample + i)) / rate);
  await writer.writeAudioChunk(1, tone);
  sample = upTo;
}
await writer.close();
const [video, audio] = writer.summary.streams.map((s) => s.counters);
console.log(`wrote ${video.frames} frames and ${audio.frames} samples; ${writer.reconnects} reconnects`);
