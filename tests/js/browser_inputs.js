// Evaluated in Chromium by tests/test_js_client.py: every kind of input the client takes, converted
// by media.js as loaded from the server, and what it refuses.
async () => {
  const { VideoStream, AudioStream } = await import("/static/framecast.js");
  const { videoChunk, audioChunk } = await import("/static/media.js");
  const stream = new VideoStream({ frameRate: 30, width: 4, height: 2, format: "rgba" });
  const planes = async (source, shape) => Array.from((await videoChunk(stream, source, shape)).data);
  const flat = new Uint8Array(4 * 2 * 4);
  for (let p = 0; p < 8; p++) flat.set([10 * p, 10 * p + 1, 10 * p + 2, 255], 4 * p);
  const twoD = Object.assign(document.createElement("canvas"), { width: 4, height: 2 });
  twoD.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(flat), 4, 2), 0, 0);
  const webgl = Object.assign(document.createElement("canvas"), { width: 4, height: 2 });
  const gl = webgl.getContext("webgl", { preserveDrawingBuffer: true });
  gl.clearColor(0.2, 0.4, 0.6, 1);
  gl.clear(gl.COLOR_BUFFER_BIT);
  const frame = new VideoFrame(twoD, { timestamp: 0 });
  // A mid-grey I420 frame (Y 128, U and V 128): the browser converts it to RGBA for copyTo.
  const yuv = new VideoFrame(new Uint8Array(4 * 2 + 2 * 2).fill(128),
    { format: "I420", codedWidth: 4, codedHeight: 2, timestamp: 0 });
  const rgb24 = new VideoStream({ frameRate: 30, width: 4, height: 2, format: "rgb24" });
  const audio = new AudioStream({ sampleRate: 8000, numChannels: 2 });
  const s16 = new AudioStream({ sampleRate: 8000, numChannels: 2, format: "s16" });
  const buffer = new AudioBuffer({ length: 3, numberOfChannels: 2, sampleRate: 8000 });
  buffer.copyToChannel(Float32Array.from([0.5, -0.5, 1]), 0);
  buffer.copyToChannel(Float32Array.from([0.25, 0, -1]), 1);
  const data = new AudioData({ format: "f32-planar", sampleRate: 8000, numberOfFrames: 3, numberOfChannels: 2,
    timestamp: 0, data: Float32Array.from([0.5, -0.5, 1, 0.25, 0, -1]) });
  const errors = [];
  for (const bad of [() => videoChunk(stream, Object.assign(document.createElement("canvas"), { width: 5, height: 2 })),
                     () => videoChunk(stream, new Uint8Array(7)), () => videoChunk(rgb24, new Uint8Array(24), [1, 3, 4, 2]),
                     async () => audioChunk(audio, new Int16Array(4)), async () => audioChunk(audio, new Float32Array(3)),
                     async () => audioChunk(audio, new AudioBuffer({ length: 1, numberOfChannels: 1, sampleRate: 8000 }))]) {
    try { await bad(); errors.push(null); } catch (error) { errors.push([error.name, error.code, error.message]); }
  }
  return {
    typed: await planes(flat, [1, 2, 4, 4]),
    imageData: await planes(new ImageData(new Uint8ClampedArray(flat), 4, 2)),
    canvas2d: await planes(twoD),
    bitmap: await planes(await createImageBitmap(twoD)),
    videoFrame: await planes(frame),
    list: await planes([twoD, new ImageData(new Uint8ClampedArray(flat), 4, 2)]),
    webgl: await planes(webgl),
    yuvFrame: await videoChunk(stream, yuv).then(({ data, shape }) => [shape, Array.from(data)]),
    rgb24: Array.from((await videoChunk(rgb24, twoD)).data),
    audioBuffer: Array.from(audioChunk(audio, buffer).data),
    audioData: Array.from(audioChunk(audio, data).data),
    audioDataS16: Array.from(audioChunk(s16, data).data),
    int16: audioChunk(s16, Int16Array.from([1, 2, 3, 4])).shape,
    errors,
  };
}
