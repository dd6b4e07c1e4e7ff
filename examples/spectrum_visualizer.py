"""Spectrum visualizer: audio and a video of its spectrum, encoded by a framecast server.

The "Example - Spectrum Visualizer" of torchaudio's StreamWriter tutorial, with framecast's
StreamWriter: one FFT of the audio per video frame, drawn with matplotlib, written as video next
to the audio it shows. No downloads and no torch: the "speech" is synthesized here (voiced
syllables with formants and a pitch contour, and hissing "s" sounds between them), the spectrum
is numpy's FFT.

    python examples/spectrum_visualizer.py --seconds 5 --dst spectrum.mp4
    python examples/spectrum_visualizer.py --dst rtmp://localhost:1935/live/spectrum

Watch how the hissing sounds put their energy on the right (high frequencies), as the tutorial
says of the "s" in its recording. Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import framecast

# Formant frequencies (Hz) and bandwidths of a few vowels, roughly an adult speaker's.
VOWELS = {
    "a": ((730, 90), (1090, 110), (2440, 170)),
    "e": ((530, 70), (1840, 120), (2480, 170)),
    "i": ((270, 60), (2290, 130), (3010, 180)),
    "o": ((570, 80), (840, 100), (2410, 170)),
    "u": ((300, 60), (870, 100), (2240, 170)),
}


def synthesize_speech(seconds: float, rate: int, seed: int = 7) -> np.ndarray:
    """Speech-like audio: voiced syllables and "s" sounds with envelopes. (frames, 1) float32."""
    rng = np.random.default_rng(seed)
    total = int(seconds * rate)
    out = np.zeros(total, dtype=np.float64)
    t0 = 0.15
    while t0 < seconds - 0.1:
        if rng.random() < 0.3:  # a fricative: high-passed noise, 80..160 ms
            length = int(rng.uniform(0.08, 0.16) * rate)
            spectrum = np.fft.rfft(rng.standard_normal(length))
            freqs = np.fft.rfftfreq(length, 1 / rate)
            spectrum *= (freqs > min(4000, 0.3 * rate)) & (freqs < 0.45 * rate)
            sound = np.fft.irfft(spectrum, length)
            sound *= 0.25 / max(1e-9, np.abs(sound).max())
        else:  # a voiced syllable: harmonics of a gliding pitch, weighted by a vowel's formants
            length = int(rng.uniform(0.18, 0.35) * rate)
            t = np.arange(length) / rate
            f0 = rng.uniform(100, 180) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
            phase = 2 * np.pi * np.cumsum(f0) / rate
            formants = VOWELS[str(rng.choice(list(VOWELS)))]
            sound = np.zeros(length)
            base = float(f0.mean())
            for k in range(1, int(0.45 * rate / base)):
                freq = k * base
                gain = sum(1 / (1 + ((freq - f) / bw) ** 2) for f, bw in formants) + 0.02
                sound += gain / k**0.5 * np.sin(k * phase)
            sound *= 0.5 / max(1e-9, np.abs(sound).max())
        envelope = np.sin(np.pi * np.linspace(0, 1, length)) ** 0.7  # rise and fall
        start = int(t0 * rate)
        end = min(total, start + length)
        out[start:end] += (sound * envelope)[: end - start]
        t0 += length / rate + rng.uniform(0.03, 0.15)  # short pauses between sounds
    return out.astype(np.float32)[:, None]


def spectra(waveform: np.ndarray, rate: int, fps: int, n_fft: int) -> np.ndarray:
    """One magnitude spectrum per video frame (the tutorial's Spectrogram with hop = rate // fps),
    centred on the frame's time, scaled so the loudest bin of the clip is 1 and square-rooted so
    that quiet, spread-out sounds (the hiss) show next to loud harmonics. (frames, n_fft//2+1).
    """
    mono = waveform.mean(axis=1)
    hop = rate // fps
    count = len(mono) // hop
    padded = np.pad(mono, (n_fft // 2, n_fft // 2), mode="reflect" if len(mono) > n_fft // 2 else "constant")
    window = np.hanning(n_fft)
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(count)])
    magnitude = np.abs(np.fft.rfft(frames, axis=1))
    return np.sqrt(magnitude / max(1e-9, float(magnitude.max()))).astype(np.float32)


class Canvas:
    """A matplotlib figure drawn off-screen, as the tutorial's ``_plot``.

    The figure is made with the Agg canvas directly (no pyplot, no display needed).
    """

    def __init__(self, width: int, height: int, n_fft: int, label: str, dpi: int = 100) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_subplot()
        self.ax.set_position((0, 0, 1, 1))
        self.n_fft = n_fft
        self.label = label
        ncols, nrows = self.canvas.get_width_height()
        self.width, self.height = ncols - ncols % 2, nrows - nrows % 2  # yuv420p wants even sizes

    def plot(self, data: np.ndarray) -> np.ndarray:
        """Draw one spectrum; the picture as a (3, H, W) uint8 array."""
        ax = self.ax
        ax.clear()
        ax.set_facecolor("black")
        x = np.arange(len(data))
        r, g, b = 238 / 255, 76 / 255, 44 / 255
        for coeff, alpha in ((0.8, 0.7), (1, 1)):
            d = data**coeff
            ax.fill_between(x, d, -d, color=(r, g, b, alpha))
        xlim = self.n_fft // 2 + 1
        ax.set_xlim((-1, xlim))
        ax.set_ylim((-1, 1))
        ax.text(xlim, 0.95, self.label, color="white", ha="right", va="top", backgroundcolor="black")
        self.canvas.draw()
        rgba = np.asarray(self.canvas.buffer_rgba())  # (H, W, 4); tostring_rgb is deprecated
        return np.ascontiguousarray(rgba[: self.height, : self.width, :3].transpose(2, 0, 1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dst", default="spectrum.mp4", help="output file, or rtmp://... (default spectrum.mp4)")
    parser.add_argument("--server", default=None, help="framecast server (default $FRAMECAST_SERVER or :8000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the clip")
    parser.add_argument("--rate", type=int, default=16000, help="audio sample rate")
    parser.add_argument("--fps", type=int, default=20, help="video frame rate (one spectrum per frame)")
    parser.add_argument("--n-fft", type=int, default=1024, help="FFT size (the tutorial uses 4000)")
    parser.add_argument("--width", type=int, default=320, help="video width in pixels")
    parser.add_argument("--height", type=int, default=240, help="video height in pixels")
    args = parser.parse_args(argv)

    waveform = synthesize_speech(args.seconds, args.rate)
    specs = spectra(waveform, args.rate, args.fps, args.n_fft)
    ffmpeg = framecast.capabilities(args.server)["ffmpeg"]  # the server's, as the tutorial shows its own
    canvas = Canvas(args.width, args.height, args.n_fft, label=f"Created with framecast\nFFmpeg {ffmpeg}")
    num_frames, num_channels = waveform.shape

    s = framecast.StreamWriter(args.dst, server=args.server)
    s.add_audio_stream(sample_rate=args.rate, num_channels=num_channels)
    s.add_video_stream(frame_rate=args.fps, height=canvas.height, width=canvas.width)
    started = time.monotonic()
    written = 0
    with s.open():
        i = 0
        for t in range(0, num_frames, args.rate):  # one second of audio and video at a time
            s.write_audio_chunk(0, waveform[t : t + args.rate, :])
            frames = [canvas.plot(spec) for spec in specs[i : i + args.fps]]
            if frames:
                s.write_video_chunk(1, np.stack(frames))
                written += len(frames)
            i += args.fps
    print(
        f"wrote {written} frames ({canvas.width}x{canvas.height} @ {args.fps} fps) and {num_frames} samples "
        f"to {args.dst} in {time.monotonic() - started:.1f} s (session {s.session_id})"
    )


if __name__ == "__main__":
    main()
