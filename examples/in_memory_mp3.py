"""Encode a waveform to MP3 in memory (io.BytesIO) through framecast, one-shot and chunked.

torchaudio's StreamWriter tutorial writes the same audio to MP3 twice, in one call and one second
at a time, and shows that the bytes are identical. The same holds through the service: the
encoder sees the same samples either way, and the server sends the bytes back into the BytesIO.

    python examples/in_memory_mp3.py --seconds 5
    python examples/in_memory_mp3.py --seconds 5 --save tone.mp3
"""

from __future__ import annotations

import argparse
import io
import sys

import numpy as np

import framecast


def waveform(seconds: float, rate: int, channels: int) -> np.ndarray:
    """A chord that swells and fades, a little different in each channel. (frames, channels) float32."""
    t = np.arange(int(seconds * rate), dtype=np.float64) / rate
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * np.minimum(t / max(seconds, 1e-9), 1.0))
    out = np.empty((len(t), channels), dtype=np.float32)
    for c in range(channels):
        detune = 1 + 0.003 * c
        chord = sum(np.sin(2 * np.pi * f * detune * t) / (k + 1) for k, f in enumerate((220.0, 277.2, 329.6)))
        out[:, c] = 0.3 * envelope * chord
    return out


def encode(data: np.ndarray, rate: int, chunk: int | None, server: str | None) -> bytes:
    """MP3 bytes of ``data``, written in one call (``chunk`` None) or ``chunk`` frames at a time."""
    dst = io.BytesIO()
    s = framecast.StreamWriter(dst=dst, format="mp3", server=server)
    s.add_audio_stream(rate, data.shape[1])
    with s.open():
        if chunk is None:
            s.write_audio_chunk(0, data)
        else:
            for start in range(0, len(data), chunk):
                s.write_audio_chunk(0, data[start : start + chunk])
    dst.seek(0)
    return dst.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=None, help="framecast server (default $FRAMECAST_SERVER or :8000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the waveform")
    parser.add_argument("--rate", type=int, default=16000, help="sample rate")
    parser.add_argument("--channels", type=int, default=1, choices=(1, 2))
    parser.add_argument("--chunk-seconds", type=float, default=1.0, help="chunk length of the chunked run")
    parser.add_argument("--save", default=None, help="also write the MP3 to this file")
    args = parser.parse_args(argv)

    data = waveform(args.seconds, args.rate, args.channels)
    chunk = max(1, int(args.chunk_seconds * args.rate))
    bytes1 = encode(data, args.rate, None, args.server)
    print(f"one-shot: {len(bytes1)} bytes  {bytes1[:10]!r}...{bytes1[-10:]!r}")
    bytes2 = encode(data, args.rate, chunk, args.server)
    pieces = -(-len(data) // chunk)
    print(f"chunked:  {len(bytes2)} bytes  {bytes2[:10]!r}...{bytes2[-10:]!r}  ({pieces} chunks of {chunk} frames)")
    print(
        f"{len(data)} samples x {args.channels} channels at {args.rate} Hz: "
        f"{len(data) * args.channels * 4} bytes of float32 in, {len(bytes1)} bytes of MP3 out"
    )
    if args.save:
        with open(args.save, "wb") as f:
            f.write(bytes1)
        print(f"saved to {args.save}")
    if bytes1 != bytes2:
        print("the two encodings differ", file=sys.stderr)
        return 1
    print("identical: chunking does not change the output")
    return 0


if __name__ == "__main__":
    sys.exit(main())
