// Types of framecast.js, the JavaScript client of a framecast server. Checked by tests/test_js_client.py
// (tsc --noEmit --strict with tests/js/types.test.ts).

/** The fields every framecast error carries (null where they do not apply). */
export interface ErrorInfo {
  code?: string | null;
  field?: string | null;
  seq?: number | null;
  status?: number | null;
  detail?: unknown;
  cause?: unknown;
}

/** Root of every error the client throws. */
export class FramecastError extends Error {
  constructor(message: string, info?: ErrorInfo);
  /** The server's machine-readable code (`invalid_config`, `invalid_chunk`, `session_failed`, ...). */
  readonly code: string | null;
  /** Dotted path of the config value at fault (`streams.0.width`). */
  readonly field: string | null;
  /** Sequence number of the chunk at fault. */
  readonly seq: number | null;
  /** HTTP status of a REST error. */
  readonly status: number | null;
  /** The server's whole error body, when there was one. */
  readonly detail: unknown;
}
export class ProtocolError extends FramecastError {}
export class InvalidConfig extends FramecastError {}
export class InvalidChunk extends FramecastError {}
export class StateError extends FramecastError {}
export class TransportError extends FramecastError {}
export class ServerError extends FramecastError {}
export class SessionNotFound extends ServerError {}
export class SessionFailed extends ServerError {
  constructor(reason: string, info?: ErrorInfo);
  readonly reason: string;
}

export type VideoFormat = "rgba" | "rgb24" | "bgr24" | "rgb0" | "bgr0" | "gray8" | "yuv444p";
export type AudioFormat = "u8" | "s16" | "s32" | "s64" | "flt" | "dbl";

export interface CodecConfig {
  bit_rate?: number;
  compression_level?: number;
  qscale?: number | null;
  gop_size?: number;
  max_b_frames?: number;
}

export interface VideoStreamConfig {
  /** Frames per second, or an exact rational as "30000/1001". */
  frameRate: number | string;
  width: number;
  height: number;
  /** "rgba" (default for image sources: canvases, ImageData, ImageBitmap, VideoFrame) or a server format. Default "rgb24". */
  format?: VideoFormat;
  encoder?: string | null;
  encoderOption?: Record<string, string | number> | null;
  encoderFormat?: string | null;
  encoderFrameRate?: number | string | null;
  encoderWidth?: number | null;
  encoderHeight?: number | null;
  codecConfig?: CodecConfig | null;
  filterDesc?: string | null;
}

export interface AudioStreamConfig {
  sampleRate: number;
  numChannels: number;
  /** Default "flt" (Float32Array). */
  format?: AudioFormat;
  encoder?: string | null;
  encoderOption?: Record<string, string | number> | null;
  encoderFormat?: string | null;
  encoderSampleRate?: number | null;
  encoderNumChannels?: number | null;
  codecConfig?: CodecConfig | null;
  filterDesc?: string | null;
}

export class VideoStream {
  constructor(config: VideoStreamConfig);
  readonly kind: "video";
  readonly rate: number;
  readonly wireFormat: Exclude<VideoFormat, "rgba">;
  readonly channels: number;
  toJSON(): Record<string, unknown>;
}

export class AudioStream {
  constructor(config: AudioStreamConfig);
  readonly kind: "audio";
  readonly rate: number;
  readonly dtype: number;
  toJSON(): Record<string, unknown>;
}

export interface ServerFileDestination { type: "server_file"; path: string; crash_safe: boolean; overwrite?: true }
export interface ClientDestination { type: "client"; filename: string | null; seekable: boolean }
export interface DiscardDestination { type: "discard"; encode: boolean }
export interface UrlDestination { type: "url"; url: string }
export type Destination = ServerFileDestination | ClientDestination | DiscardDestination | UrlDestination;

/** A file under the server's output directory; a path that exists is refused unless `overwrite`. */
export function ServerFile(path: string, options?: { crashSafe?: boolean; overwrite?: boolean }): ServerFileDestination;
/** The encoded bytes come back and are assembled in memory (writer.blob() after close()). */
export function ClientBlob(filename?: string | null): ClientDestination;
/** A destination that keeps nothing. */
export function Discard(options?: { encode?: boolean }): DiscardDestination;

/** A WebSocket class that takes `{headers}` as its third argument, as the `ws` package's does. */
export type HeaderWebSocket = new (
  url: string, protocols: undefined, options: { headers: Record<string, string>; perMessageDeflate: boolean },
) => unknown;

export interface StreamWriterOptions {
  format?: string | null;
  server?: string;
  apiKey?: string | null;
  /** Seconds to wait for the server (window, flush, close). Default 300. */
  timeout?: number;
  realtime?: boolean | null;
  connectTimeout?: number | null;
  onDestinationDrop?: "drop" | "block" | null;
  /** Default true. */
  reconnect?: boolean;
  /** Seconds. Default 30. */
  reconnectTimeout?: number;
  WebSocket?: HeaderWebSocket;
  fetch?: typeof fetch;
}

/** A session event, as the server reports it: `{event: "reconnecting", attempt: 2, reason: "..."}`. */
export interface SessionEvent {
  event: string;
  [field: string]: unknown;
}

export type WriterState = "configuring" | "open" | "closing" | "closed" | "failed";

export interface WriterEvents {
  event: SessionEvent;
  warning: string;
  state: WriterState;
}

export type VideoChunk =
  | ImageData
  | HTMLCanvasElement
  | OffscreenCanvas
  | ImageBitmap
  | VideoFrame
  | HTMLImageElement
  | HTMLVideoElement
  | Uint8Array
  | Uint8ClampedArray
  | Array<ImageData | HTMLCanvasElement | OffscreenCanvas | ImageBitmap | VideoFrame | Uint8Array | Uint8ClampedArray>;

export type AudioChunk =
  | AudioBuffer
  | AudioData
  | Float32Array
  | Float64Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array;

export class StreamWriter {
  constructor(dst: string | Destination | Array<string | Destination>, options?: StreamWriterOptions);
  /** Every destination, in the order given; `destination` is the first. */
  readonly destinations: Destination[];
  readonly destination: Destination;
  readonly format: string | null;
  readonly server: string;
  readonly streams: Array<VideoStream | AudioStream>;
  readonly state: WriterState;
  /** The body of POST /v1/sessions once open. */
  readonly session: Record<string, any> | null;
  readonly sessionId: string | null;
  /** The server's final account of the session, after close(). */
  readonly summary: Record<string, any> | null;
  readonly events: SessionEvent[];
  readonly reconnects: number;
  /** What is sent and not yet acknowledged (the ACK window bounds it). */
  readonly inFlight: { chunks: number; bytes: number; seconds: number };

  /** Returns the stream's index. */
  addVideoStream(config: VideoStreamConfig): number;
  /** Returns the stream's index. */
  addAudioStream(config: AudioStreamConfig): number;
  setMetadata(metadata: Record<string, string | number>): void;
  on<K extends keyof WriterEvents>(name: K, listener: (value: WriterEvents[K]) => void): () => void;

  open(option?: Record<string, string | number> | null): Promise<StreamWriter>;
  /** Resolves once the chunk is sent and what is unacknowledged fits the window. */
  writeVideoChunk(i: number, chunk: VideoChunk, options?: { pts?: number | null; shape?: number[] }): Promise<void>;
  writeAudioChunk(i: number, chunk: AudioChunk, options?: { pts?: number | null; numChannels?: number }): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;

  /** A ClientBlob's output after close(). */
  blob(type?: string): Blob;
  bytes(): Uint8Array;
  /** A ServerFile's output after close(). */
  download(): Promise<Blob>;
  /** In a browser: save the output as a download. */
  save(filename?: string): Promise<void>;
}

/** The wire format (sans I/O); u64 fields parse as bigint. */
export namespace protocol {
  const VERSION: 1;
  const MAX_NDIM: 8;
  const FLAG_HAS_PTS: 1;
  const FLAG_SHARED: 2;
  const Kind: Readonly<{ CHUNK: 1; ACK: 2; OUTPUT: 3 }>;
  const DType: Readonly<{ uint8: 1; int16: 2; int32: 3; int64: 4; float32: 5; float64: 6 }>;
  const AUDIO_SAMPLE_FORMATS: Readonly<Record<AudioFormat, number>>;
  const VIDEO_PIXEL_FORMATS: Readonly<Record<Exclude<VideoFormat, "rgba">, number>>;
  type TypedArray = Uint8Array | Uint8ClampedArray | Int16Array | Int32Array | BigInt64Array | Float32Array | Float64Array;
  const TYPED_ARRAYS: Readonly<Record<number, new (...args: any[]) => TypedArray>>;
  interface ChunkHeader {
    stream: number;
    seq: bigint;
    dtype: number;
    shape: number[];
    pts: number | null;
    shared: boolean;
    size: number;
    payloadSize: number;
  }
  function dtypeOf(array: ArrayBufferView): number;
  function headerSize(ndim: number): number;
  function encodeChunkHeader(header: {
    stream: number; seq: number | bigint; dtype: number; shape: number[]; pts?: number | null; shared?: boolean;
  }): Uint8Array;
  function parseChunkHeader(data: ArrayBuffer | ArrayBufferView): ChunkHeader;
  function parseChunk(data: ArrayBuffer | ArrayBufferView): { header: ChunkHeader; payload: Uint8Array; array?: TypedArray };
  function encodeChunk(stream: number, seq: number | bigint, array: TypedArray, shape: number[], pts?: number | null): Uint8Array;
  function encodeAck(seq: number | bigint): Uint8Array;
  function encodeOutput(index: number | bigint, offset: number | bigint, data?: Uint8Array): Uint8Array;
  function parseServerBinary(data: ArrayBuffer | ArrayBufferView):
    | { kind: "ack"; seq: bigint }
    | { kind: "output"; index: bigint; offset: bigint; data: Uint8Array };
  function encodeControl(type: string, fields?: Record<string, unknown>): string;
  function parseControl(text: string): { type: string; [field: string]: unknown };
}
