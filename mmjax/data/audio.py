"""Audio on the host: decode, mix to mono, resample.

Any format libsndfile reads (WAV, FLAC, OGG/Vorbis, Opus, MP3 with libsndfile >= 1.1; the
`soundfile` wheel bundles it) decodes from the record's bytes. A damaged file must be
skipped, not trained on, and libsndfile does not always say so: a cut FLAC fails to
decode, but a cut WAV decodes as a shorter clip, with `frames` already corrected to what
the file holds. So `decode` checks the frames decoded against the header's own count
(FLAC's STREAMINFO, and for WAV the size the `data` chunk declares, read here).

Resampling is polyphase (`scipy.signal.resample_poly`: a Kaiser-windowed FIR low-pass at
the lower of the two Nyquist rates), exact in rate for any pair of integer rates.
"""

import io
import math
import struct

import numpy as np


class BadAudio(ValueError):
    """Undecodable, truncated or empty audio."""


def wav_declared_frames(data: bytes) -> int | None:
    """Frames a RIFF/WAVE file's `data` chunk declares, or None when it says nothing usable
    (not a RIFF WAVE file, RF64, or a streamed file written with size 0 or 0xFFFFFFFF)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at, block_align = 12, 0
    while at + 8 <= len(data):
        chunk, size = data[at : at + 4], struct.unpack_from("<I", data, at + 4)[0]
        if chunk == b"fmt " and at + 22 <= len(data):
            block_align = struct.unpack_from("<H", data, at + 20)[0]
        elif chunk == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):
                return None
            return size // block_align
        at += 8 + size + (size & 1)  # chunks are padded to even sizes
    return None


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """float32 [frames, channels] in [-1, 1] and the sample rate; `BadAudio` if the file
    does not decode, holds no sample, or holds fewer frames than its header declares."""
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            frames, rate = f.frames, f.samplerate
            wave = f.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise BadAudio(f"does not decode: {e}") from e
    declared = wav_declared_frames(data)
    if declared is not None and declared != len(wave):
        raise BadAudio(f"truncated: the header declares {declared} frames, {len(wave)} decoded")
    if len(wave) != frames:
        raise BadAudio(f"truncated: the header declares {frames} frames, {len(wave)} decoded")
    if not wave.size:
        raise BadAudio("no samples")
    return wave, rate


def to_mono(wave: np.ndarray) -> np.ndarray:
    """[frames] or [frames, channels] -> float32 [frames], the mean of the channels."""
    wave = np.asarray(wave, np.float32)
    if wave.ndim == 1:
        return wave
    if wave.ndim != 2:
        raise BadAudio(f"audio of shape {wave.shape}: want [frames] or [frames, channels]")
    return wave[:, 0] if wave.shape[1] == 1 else wave.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """float32 [n] at `rate` -> float32 [ceil(n * target / rate)] at `target`."""
    if rate == target:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(wave, target // g, rate // g).astype(np.float32)
