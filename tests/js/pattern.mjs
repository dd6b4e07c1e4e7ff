// The test pattern the JavaScript tests push, drawn the way tests/test_js_client.py expects it:
// smooth colour waves that move with the frame number (lossy codecs keep them, so PSNR means
// something) and the frame number stamped into the top rows as 12 black/white blocks, as
// tests/media.py's stamp() does, so a decoded frame tells which input frame it was.
export const STAMP_BITS = 12;
export const STAMP_ROWS = 16;

/** Frame `f` as RGBA pixels (height, width, 4), alpha 255. */
export function patternRGBA(f, width, height) {
  const out = new Uint8Array(width * height * 4);
  const block = Math.floor(width / STAMP_BITS);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const q = 4 * (y * width + x);
      const bit = Math.floor(x / block);
      if (y < STAMP_ROWS && bit < STAMP_BITS) {
        out[q] = out[q + 1] = out[q + 2] = (f >> bit) & 1 ? 255 : 0;
      } else {
        out[q] = Math.round(128 + 100 * Math.sin(2 * Math.PI * (x / width + f / 60)));
        out[q + 1] = Math.round(128 + 100 * Math.sin(2 * Math.PI * (y / height + f / 90)));
        out[q + 2] = Math.round(128 + 100 * Math.sin(2 * Math.PI * ((x + y) / (width + height) - f / 120)));
      }
      out[q + 3] = 255;
    }
  }
  return out;
}

/** `seconds` of a `freq` Hz sine at `rate`, interleaved in `channels`, amplitude 0.5. */
export function sineInterleaved(freq, rate, seconds, channels, start = 0) {
  const frames = Math.round(rate * seconds);
  const out = new Float32Array(frames * channels);
  for (let i = 0; i < frames; i++) {
    const v = 0.5 * Math.sin((2 * Math.PI * freq * (start + i)) / rate);
    for (let c = 0; c < channels; c++) out[i * channels + c] = v;
  }
  return out;
}
