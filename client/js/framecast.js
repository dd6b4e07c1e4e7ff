/**
 * framecast: push video and audio from a web page or Node to a framecast server.
 *
 *     import { StreamWriter, ServerFile } from "/static/framecast.js";
 *     const s = new StreamWriter(ServerFile("web/canvas.mp4"), { server: location.origin, apiKey });
 *     s.addVideoStream({ frameRate: 30, width: 640, height: 360, format: "rgba" });
 *     s.addAudioStream({ sampleRate: 48000, numChannels: 2 });
 *     await s.open();
 *     await s.writeVideoChunk(0, canvas);
 *     await s.writeAudioChunk(1, float32Interleaved);
 *     await s.close();
 *
 * An ES module with no build step and no dependencies. The wire format is PROTOCOL.md's;
 * protocol.js is its sans-I/O implementation, the twin of the Python SDK's protocol.py.
 * @module
 */

export { ClientBlob, Discard, ServerFile, StreamWriter } from "./writer.js";
export { AudioStream, VideoStream } from "./media.js";
export { FramecastError, InvalidChunk, InvalidConfig, ProtocolError, ServerError, SessionFailed, SessionNotFound,
  StateError, TransportError } from "./errors.js";
export * as protocol from "./protocol.js";
