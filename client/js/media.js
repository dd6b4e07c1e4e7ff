/**
 * Streams, and turning what a page or a Node program has (a canvas, an ImageData, a VideoFrame,
 * an AudioBuffer, typed arrays) into the arrays the wire format carries. No I/O.
 *
 * Video on the wire is uint8 (frames, channels, height, width): one plane per channel. Pixels
 * from a canvas, an ImageData, an ImageBitmap or a VideoFrame are RGBA interleaved (R, G, B, A
 * per pixel); they are split into R, G and B planes and sent as `rgb24`, the alpha dropped. That
 * is a copy, and it has to be: the server's `rgb0` is not interleaved RGBA either but four planes
 * (its 4th plane ignored), so no server format takes RGBA bytes as they are, and three planes
 * carry a quarter less than four.
 * @module
 */

import { InvalidChunk, InvalidConfig } from "./errors.js";
import { AUDIO_SAMPLE_FORMATS, DType, TYPED_ARRAYS, VIDEO_PIXEL_FORMATS, dtypeOf } from "./protocol.js";

/** Video formats a stream may take: the server's, and `rgba` (sent as rgb24 planes). */
export const VIDEO_FORMATS = [...Object.keys(VIDEO_PIXEL_FORMATS), "rgba"];

/** 29.97 and friends mean the NTSC rationals, as in the Python SDK and on the server. */
function frameRateValue(rate) {
  if (typeof rate === "string") {
    const [num, den = "1"] = rate.split("/");
    return Number(num) / Number(den);
  }
  return rate;
}

function positiveInteger(value, field) {
  if (!Number.isInteger(value) || value <= 0) {
    throw new InvalidConfig(`${field} must be a positive integer, got ${JSON.stringify(value)}`, { field });
  }
}

function options(value) {
  return value == null ? null : Object.fromEntries(Object.entries(value).map(([k, v]) => [String(k), v]));
}

/** A video stream as addVideoStream() describes it (torchaudio's names, in camelCase). */
export class VideoStream {
  constructor({ frameRate, width, height, format = "rgb24", encoder = null, encoderOption = null,
    encoderFormat = null, encoderFrameRate = null, encoderWidth = null, encoderHeight = null,
    codecConfig = null, filterDesc = null } = {}) {
    if (!VIDEO_FORMATS.includes(format)) {
      throw new InvalidConfig(`unknown video pixel format ${JSON.stringify(format)}; expected one of ${VIDEO_FORMATS.join(", ")}`,
        { field: "format" });
    }
    positiveInteger(width, "width");
    positiveInteger(height, "height");
    const rate = frameRateValue(frameRate);
    if (!(rate > 0) || !Number.isFinite(rate)) {
      throw new InvalidConfig(`frameRate must be a positive number or "num/den", got ${JSON.stringify(frameRate)}`, { field: "frame_rate" });
    }
    Object.assign(this, { frameRate, width, height, format, encoder, encoderOption, encoderFormat,
      encoderFrameRate, encoderWidth, encoderHeight, codecConfig, filterDesc });
    this.kind = "video";
    this.rate = rate;
    /** The format on the wire: rgba pixels travel as rgb24 planes. */
    this.wireFormat = format === "rgba" ? "rgb24" : format;
    this.channels = VIDEO_PIXEL_FORMATS[this.wireFormat];
  }

  toJSON() {
    return {
      type: "video", frame_rate: this.frameRate, width: this.width, height: this.height, format: this.wireFormat,
      encoder: this.encoder, encoder_option: options(this.encoderOption), encoder_format: this.encoderFormat,
      encoder_frame_rate: this.encoderFrameRate, encoder_width: this.encoderWidth, encoder_height: this.encoderHeight,
      codec_config: this.codecConfig, filter_desc: this.filterDesc,
    };
  }
}

/** An audio stream as addAudioStream() describes it. */
export class AudioStream {
  constructor({ sampleRate, numChannels, format = "flt", encoder = null, encoderOption = null, encoderFormat = null,
    encoderSampleRate = null, encoderNumChannels = null, codecConfig = null, filterDesc = null } = {}) {
    if (!(format in AUDIO_SAMPLE_FORMATS)) {
      throw new InvalidConfig(`unknown audio sample format ${JSON.stringify(format)}; expected one of ` +
        Object.keys(AUDIO_SAMPLE_FORMATS).join(", "), { field: "format" });
    }
    positiveInteger(sampleRate, "sample_rate");
    positiveInteger(numChannels, "num_channels");
    Object.assign(this, { sampleRate, numChannels, format, encoder, encoderOption, encoderFormat,
      encoderSampleRate, encoderNumChannels, codecConfig, filterDesc });
    this.kind = "audio";
    this.rate = sampleRate;
    this.dtype = AUDIO_SAMPLE_FORMATS[format];
  }

  toJSON() {
    return {
      type: "audio", sample_rate: this.sampleRate, num_channels: this.numChannels, format: this.format,
      encoder: this.encoder, encoder_option: options(this.encoderOption), encoder_format: this.encoderFormat,
      encoder_sample_rate: this.encoderSampleRate, encoder_num_channels: this.encoderNumChannels,
      codec_config: this.codecConfig, filter_desc: this.filterDesc,
    };
  }
}

// --- video --------------------------------------------------------------------------------------

const isTyped = (x) => ArrayBuffer.isView(x) && !(x instanceof DataView);
const isVideoFrame = (x) => typeof VideoFrame !== "undefined" && x instanceof VideoFrame;
const isImageData = (x) => typeof x === "object" && x !== null && x.data instanceof Uint8ClampedArray &&
  Number.isInteger(x.width) && Number.isInteger(x.height) && !isTyped(x);

/** Split RGBA pixels into R, G, B planes at `out[at..]`. */
function rgbaToPlanes(rgba, pixels, out, at) {
  for (let p = 0, q = 0; p < pixels; p++, q += 4) {
    out[at + p] = rgba[q];
    out[at + pixels + p] = rgba[q + 1];
    out[at + 2 * pixels + p] = rgba[q + 2];
  }
}

let scratch = null;

/** RGBA bytes of any canvas image source (a 2D or WebGL canvas, an ImageBitmap, an image, a video). */
function readBack(source, width, height) {
  const w = source.displayWidth ?? source.videoWidth ?? source.width;
  const h = source.displayHeight ?? source.videoHeight ?? source.height;
  if (w !== width || h !== height) {
    throw new InvalidChunk(`a ${w}x${h} image for a ${width}x${height} stream; draw it at the stream's size`);
  }
  // A 2D canvas is read directly; getContext("2d") is null for a canvas that has a WebGL context,
  // which is drawn onto a scratch 2D canvas instead (render and write in the same task, or create
  // the WebGL context with preserveDrawingBuffer, so that its drawing buffer is still there).
  const own = typeof source.getContext === "function" ? source.getContext("2d") : null;
  if (own) return own.getImageData(0, 0, width, height).data;
  if (!scratch || scratch.width !== width || scratch.height !== height) {
    scratch = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(width, height)
      : Object.assign(document.createElement("canvas"), { width, height });
  }
  const ctx = scratch.getContext("2d", { willReadFrequently: true });
  ctx.clearRect(0, 0, width, height);
  ctx.drawImage(source, 0, 0);
  return ctx.getImageData(0, 0, width, height).data;
}

/** RGBA bytes of a WebCodecs VideoFrame, copied out with copyTo (converted by the browser if it is YUV). */
async function copyVideoFrame(frame, width, height) {
  const { width: w, height: h } = frame.visibleRect ?? { width: frame.displayWidth, height: frame.displayHeight };
  if (w !== width || h !== height) {
    throw new InvalidChunk(`a ${w}x${h} VideoFrame for a ${width}x${height} stream`);
  }
  const packed = ["RGBA", "RGBX", "BGRA", "BGRX"].includes(frame.format);
  const out = new Uint8Array(width * height * 4);
  try {
    await frame.copyTo(out, packed ? {} : { format: "RGBA" });
  } catch (error) {
    // A frame copyTo cannot convert (a GPU-backed one without a CPU format): draw it instead.
    if (packed) throw error;
    return readBack(frame, width, height);
  }
  if (frame.format === "BGRA" || frame.format === "BGRX") { // what Chromium makes of a canvas
    for (let q = 0; q < out.length; q += 4) {
      const blue = out[q];
      out[q] = out[q + 2];
      out[q + 2] = blue;
    }
  }
  return out;
}

/**
 * The (frames, channels, height, width) uint8 array of a video chunk.
 * @param {VideoStream} stream
 * @param {unknown} chunk an image source, a VideoFrame, an ImageData, a typed array, or an array of them
 * @param {number[]} [shape] for typed arrays: (frames, C, H, W), or (frames, H, W, 4) for rgba
 * @returns {Promise<{data: Uint8Array, shape: number[]}>}
 */
export async function videoChunk(stream, chunk, shape) {
  const { width, height, channels } = stream;
  const pixels = width * height;
  if (isTyped(chunk)) return videoArray(stream, chunk, shape);
  const images = Array.isArray(chunk) ? chunk : [chunk];
  if (!Array.isArray(chunk) && shape) throw new InvalidChunk("shape is for typed arrays; an image is one frame");
  if (stream.wireFormat !== "rgb24") {
    throw new InvalidChunk(`images go to "rgba" or "rgb24" streams; this one takes ${stream.format} arrays (frames, ${channels}, ${height}, ${width})`);
  }
  const out = new Uint8Array(images.length * 3 * pixels);
  for (const [i, image] of images.entries()) {
    let rgba;
    if (isTyped(image)) {
      const part = videoArray(stream, image, undefined);
      if (part.shape[0] !== 1) throw new InvalidChunk("a list of typed arrays holds one frame each");
      out.set(part.data, i * 3 * pixels);
      continue;
    } else if (isImageData(image)) {
      if (image.width !== width || image.height !== height) {
        throw new InvalidChunk(`a ${image.width}x${image.height} ImageData for a ${width}x${height} stream`);
      }
      rgba = image.data;
    } else if (isVideoFrame(image)) {
      rgba = await copyVideoFrame(image, width, height);
    } else if (image && typeof image === "object" && "width" in image) {
      rgba = readBack(image, width, height);
    } else {
      throw new InvalidChunk(`a video chunk is an ImageData, a canvas, an ImageBitmap, a VideoFrame or a Uint8Array with its shape; got ${describe(image)}`);
    }
    rgbaToPlanes(rgba, pixels, out, i * 3 * pixels);
  }
  return { data: out, shape: [images.length, 3, height, width] };
}

function videoArray(stream, array, shape) {
  const { width, height, channels } = stream;
  if (dtypeOf(array) !== DType.uint8) throw new InvalidChunk(`video chunks are uint8; got ${array.constructor.name}`);
  const bytes = array instanceof Uint8Array ? array : new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  if (stream.format === "rgba") {
    const dims = shape ?? [bytes.length / (4 * width * height), height, width, 4];
    const full = dims.length === 3 ? [1, ...dims] : dims;
    if (full.length !== 4 || full[1] !== height || full[2] !== width || full[3] !== 4 || !Number.isInteger(full[0]) ||
        full[0] * height * width * 4 !== bytes.length) {
      throw new InvalidChunk(`stream (rgba) expects RGBA pixels of shape (frames, ${height}, ${width}, 4); ` +
        `got ${bytes.length} bytes${shape ? ` with shape (${shape.join(", ")})` : ""}`);
    }
    const out = new Uint8Array(full[0] * 3 * width * height);
    for (let f = 0; f < full[0]; f++) {
      rgbaToPlanes(bytes.subarray(f * 4 * width * height), width * height, out, f * 3 * width * height);
    }
    return { data: out, shape: [full[0], 3, height, width] };
  }
  const dims = shape ?? [bytes.length / (channels * width * height), channels, height, width];
  const full = dims.length === 3 ? [1, ...dims] : dims;
  if (full.length !== 4 || full[1] !== channels || full[2] !== height || full[3] !== width || !Number.isInteger(full[0]) ||
      full[0] * channels * height * width !== bytes.length) {
    throw new InvalidChunk(`stream (${stream.format}) expects shape (frames, ${channels}, ${height}, ${width}); ` +
      `got ${bytes.length} bytes${shape ? ` with shape (${shape.join(", ")})` : ""}`);
  }
  return { data: bytes, shape: full };
}

// --- audio --------------------------------------------------------------------------------------

const isAudioBuffer = (x) => x && typeof x.getChannelData === "function" && Number.isInteger(x.numberOfChannels);
const isAudioData = (x) => x && typeof x.copyTo === "function" && Number.isInteger(x.numberOfFrames) &&
  Number.isInteger(x.numberOfChannels);

/** Float samples in -1..1 as the stream's dtype (flt, dbl, s16: what float sources can become). */
function fromFloat(samples, stream) {
  if (stream.dtype === DType.float32) return samples;
  if (stream.dtype === DType.float64) return Float64Array.from(samples);
  if (stream.dtype === DType.int16) {
    return Int16Array.from(samples, (x) => Math.round(Math.max(-1, Math.min(1, x)) * 32767));
  }
  throw new InvalidChunk(`an AudioBuffer or AudioData goes to a flt, dbl or s16 stream; for ${stream.format}, write a typed array`);
}

/**
 * The (frames, channels) array of an audio chunk, in the stream's dtype.
 * @param {AudioStream} stream
 * @param {unknown} chunk an AudioBuffer, an AudioData, or an interleaved typed array
 * @param {number} [numChannels] for typed arrays: their channel count (checked against the stream)
 * @returns {{data: ArrayBufferView, shape: number[]}}
 */
export function audioChunk(stream, chunk, numChannels) {
  const channels = stream.numChannels;
  if (numChannels !== undefined && numChannels !== channels) {
    throw new InvalidChunk(`stream (audio) has ${channels} channels; the chunk has ${numChannels}`);
  }
  if (isTyped(chunk)) {
    if (dtypeOf(chunk) !== stream.dtype) {
      throw new InvalidChunk(`stream (audio, format ${JSON.stringify(stream.format)}) expects a ` +
        `${TYPED_ARRAYS[stream.dtype].name}; got ${chunk.constructor.name}`);
    }
    if (chunk.length % channels) {
      throw new InvalidChunk(`${chunk.length} samples do not divide into ${channels} interleaved channels`);
    }
    return { data: chunk, shape: [chunk.length / channels, channels] };
  }
  if (isAudioBuffer(chunk)) {
    check(chunk.numberOfChannels, chunk.sampleRate, stream, "AudioBuffer");
    const frames = chunk.length;
    const out = new Float32Array(frames * channels);
    for (let c = 0; c < channels; c++) {
      const plane = chunk.getChannelData(c);
      for (let i = 0; i < frames; i++) out[i * channels + c] = plane[i];
    }
    return { data: fromFloat(out, stream), shape: [frames, channels] };
  }
  if (isAudioData(chunk)) {
    check(chunk.numberOfChannels, chunk.sampleRate, stream, "AudioData");
    const out = new Float32Array(chunk.numberOfFrames * channels);
    chunk.copyTo(out, { planeIndex: 0, format: "f32" }); // interleaved f32, converted by the browser
    return { data: fromFloat(out, stream), shape: [chunk.numberOfFrames, channels] };
  }
  throw new InvalidChunk(`an audio chunk is an AudioBuffer, an AudioData or an interleaved typed array; got ${describe(chunk)}`);
}

function check(channels, sampleRate, stream, what) {
  if (channels !== stream.numChannels) {
    throw new InvalidChunk(`stream (audio) has ${stream.numChannels} channels; the ${what} has ${channels}`);
  }
  if (sampleRate !== stream.sampleRate) {
    throw new InvalidChunk(`stream (audio) is at ${stream.sampleRate} Hz; the ${what} at ${sampleRate} Hz`);
  }
}

function describe(value) {
  return value === null ? "null" : typeof value === "object" ? value.constructor?.name ?? "an object" : typeof value;
}
