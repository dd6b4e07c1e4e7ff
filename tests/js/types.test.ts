// Compiled with tsc --noEmit --strict (tests/test_js_client.py): the README's use of the client
// type-checks against framecast.d.ts, and misuses do not.
import {
  ClientBlob, FramecastError, InvalidConfig, ServerFile, SessionFailed, StreamWriter, protocol,
} from "../../client/js/framecast.js";

export async function readme(canvas: HTMLCanvasElement, samples: Float32Array, apiKey: string): Promise<Blob> {
  const s = new StreamWriter(ServerFile("web/canvas.mp4"), { server: location.origin, apiKey });
  const video: number = s.addVideoStream({ frameRate: 30, width: 640, height: 360, format: "rgba" });
  s.addAudioStream({ sampleRate: 48000, numChannels: 2 });
  const off: () => void = s.on("event", (event) => console.log(event.event));
  s.on("state", (state) => { if (state === "failed") off(); });
  await s.open({ movflags: "+faststart" });
  await s.writeVideoChunk(video, canvas);
  await s.writeVideoChunk(0, new Uint8Array(640 * 360 * 4), { shape: [1, 360, 640, 4], pts: 0.5 });
  await s.writeAudioChunk(1, samples, { numChannels: 2 });
  await s.flush();
  await s.close();
  return s.download();
}

export async function blob(frame: VideoFrame, audio: AudioData, buffer: AudioBuffer): Promise<Uint8Array> {
  const s = new StreamWriter(ClientBlob("out.mkv"));
  s.addVideoStream({ frameRate: "30000/1001", width: 64, height: 48, format: "rgba" });
  s.addAudioStream({ sampleRate: 48000, numChannels: 1, format: "s16" });
  await s.open();
  await s.writeVideoChunk(0, frame);
  await s.writeAudioChunk(1, audio);
  await s.writeAudioChunk(1, buffer);
  await s.close();
  return s.bytes();
}

export function errors(error: unknown): string | null {
  if (error instanceof SessionFailed) return error.reason;
  if (error instanceof InvalidConfig) return error.field;
  if (error instanceof FramecastError) return `${error.code} ${error.seq ?? ""}`;
  return null;
}

export function wire(): bigint {
  const header = protocol.encodeChunkHeader({ stream: 0, seq: 1n, dtype: protocol.DType.float32, shape: [2, 2] });
  const message = protocol.parseServerBinary(protocol.encodeAck(3));
  return protocol.parseChunkHeader(header).seq + (message.kind === "ack" ? message.seq : message.offset);
}

// Misuses the types must refuse:
// @ts-expect-error frameRate is required
new StreamWriter("rtmp://x/live").addVideoStream({ width: 1, height: 1 });
// @ts-expect-error not a pixel format
new StreamWriter("rtmp://x/live").addVideoStream({ frameRate: 1, width: 1, height: 1, format: "rgb48" });
// @ts-expect-error a string is not an audio chunk
void new StreamWriter("rtmp://x/live").writeAudioChunk(0, "samples");
// @ts-expect-error no such writer event
new StreamWriter("rtmp://x/live").on("progress", () => {});
