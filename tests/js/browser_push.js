// Evaluated in Chromium by tests/test_js_client.py (page.evaluate): loads the client from the
// server the page came from and pushes an animated canvas with its frame number stamped in the
// top rows (as tests/media.py's stamp()) and a sine. Video sources take turns: the canvas itself,
// an ImageData, an ImageBitmap and a WebCodecs VideoFrame; audio goes as AudioBuffers.
async ({ dst, frames, seconds, width, height, keep, video = {}, audio = {}, option = null, timeout = 60 }) => {
  const fc = await import("/static/framecast.js");
  const canvas = document.createElement("canvas");
  Object.assign(canvas, { width, height });
  const ctx = canvas.getContext("2d");
  const draw = (f) => {
    const gradient = ctx.createLinearGradient(0, 0, width, height);
    gradient.addColorStop(0, `hsl(${(f * 4) % 360} 60% 50%)`);
    gradient.addColorStop(1, `hsl(${(f * 4 + 150) % 360} 60% 40%)`);
    ctx.fillStyle = gradient;
    ctx.fillRect(0, 0, width, height);
    ctx.fillStyle = "#f0f0f0";
    ctx.fillRect(Math.round((f * 3) % (width - 40)), Math.round(height / 2 - 20), 40, 40);
    const block = Math.floor(width / 12);
    for (let bit = 0; bit < 12; bit++) {
      ctx.fillStyle = (f >> bit) & 1 ? "#ffffff" : "#000000";
      ctx.fillRect(bit * block, 0, block, 16);
    }
  };
  const rgbBase64 = (rgba) => {
    let text = "";
    for (let q = 0; q < rgba.length; q += 4) text += String.fromCharCode(rgba[q], rgba[q + 1], rgba[q + 2]);
    return btoa(text);
  };
  const sine = (from, count) => {
    const buffer = new AudioBuffer({ length: count, numberOfChannels: 2, sampleRate: 48000 });
    for (let c = 0; c < 2; c++) {
      const plane = buffer.getChannelData(c);
      for (let i = 0; i < count; i++) plane[i] = 0.5 * Math.sin((2 * Math.PI * 440 * (from + i)) / 48000);
    }
    return buffer;
  };
  const destination = dst.kind === "blob" ? fc.ClientBlob(dst.name) : fc.ServerFile(dst.path);
  const s = new fc.StreamWriter(destination, { timeout, reconnectTimeout: 30 });
  const states = [];
  s.on("state", (state) => states.push(state));
  s.addVideoStream({ frameRate: 30, width, height, format: "rgba", ...video });
  s.addAudioStream({ sampleRate: 48000, numChannels: 2, ...audio });
  await s.open(option);
  const kept = {};
  const total = Math.round(seconds * 48000);
  let sample = 0;
  for (let f = 0; f < frames; f++) {
    draw(f);
    if (keep.includes(f)) kept[f] = rgbBase64(ctx.getImageData(0, 0, width, height).data);
    let source = canvas;
    if (f % 4 === 1) source = ctx.getImageData(0, 0, width, height);
    if (f % 4 === 2) source = await createImageBitmap(canvas);
    if (f % 4 === 3) source = new VideoFrame(canvas, { timestamp: Math.round((f * 1e6) / 30) });
    await s.writeVideoChunk(0, source);
    if (f % 4 === 3) source.close();
    const upTo = Math.round(((f + 1) / frames) * total);
    if (upTo > sample) await s.writeAudioChunk(1, sine(sample, upTo - sample));
    sample = upTo;
  }
  await s.close();
  let bytes = null;
  if (dst.kind === "blob") {
    if (dst.save) await s.save(); // a download named after the ClientBlob
    const blob = s.blob();
    const array = new Uint8Array(await blob.arrayBuffer());
    let text = "";
    for (let i = 0; i < array.length; i += 0x8000) text += String.fromCharCode(...array.subarray(i, i + 0x8000));
    bytes = btoa(text);
  }
  return { kept, states, bytes, summary: s.summary, reconnects: s.reconnects, events: s.events, sessionId: s.sessionId };
}
