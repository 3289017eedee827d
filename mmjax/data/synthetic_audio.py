"""How the synthetic classes sound: the colour sets the pitch, the shape timbre and rhythm.

A clip is one instrument playing one pitch: a wavetable of the shape's harmonics at the
colour's fundamental, under the shape's amplitude envelope (a held note, beeps, plucks, a
tremolo, bell strikes). The nuisances make it a learning problem without hiding the class
from a log-mel spectrogram (64 bands, 25 ms windows, 10 ms hop at 8 kHz): pitch jitter of
+-3% (the pitches lie four semitones, 26%, apart), tempo jitter of +-5%, a random onset and
starting phase, loudness, and white noise at 10 to 30 dB below the peak.
"""

import functools

import numpy as np

from mmjax.data.counter_rng import GAUSSIAN, Draws
from mmjax.data.synthetic import COLOURS, SHAPES, per_kind

# Colour -> fundamental in Hz (G3, B3, D#4, G4, B4).
PITCHES = {"red": 196.0, "green": 246.9, "blue": 311.1, "yellow": 392.0, "purple": 493.9}
# Shape -> harmonic number -> amplitude (the timbre).
TIMBRES = {
    "circle": {1: 1.0, 2: 0.1},  # nearly a sine
    "square": {k: 1 / k for k in range(1, 16, 2)},  # odd harmonics: a square wave
    "triangle": {k: 1 / k for k in range(1, 16)},  # all harmonics: a sawtooth
    "cross": {1: 1.0, 2: 0.7, 3: 0.5},  # a strong octave and twelfth
    "ring": {1: 1.0, 4: 0.6, 7: 0.4},  # sparse, bell-like
}
PITCH_JITTER, TEMPO_JITTER = 0.03, 0.05
_TABLE = 2048  # wavetable length (a power of two, at most 2048: see render)
_ENVELOPE_RATE = 1000  # Hz
assert tuple(PITCHES) == tuple(COLOURS) and tuple(TIMBRES) == SHAPES


def _fraction(x: np.ndarray) -> np.ndarray:
    """x mod 1 (ten times faster than numpy's float %)."""
    return x - np.floor(x)


def _attack(tau: np.ndarray, seconds: float) -> np.ndarray:
    """0 before the onset, rising to 1 over `seconds` (no click, and silence before)."""
    return np.clip(tau * (1 / seconds), 0, 1)


def _held(tau: np.ndarray) -> np.ndarray:
    """One note: 20 ms attack, held 0.7 s, 50 ms release."""
    return np.minimum(_attack(tau, 0.02), np.clip((0.7 - tau) * 20, 0, 1))


def _beeps(tau: np.ndarray) -> np.ndarray:
    """Beeps at 4 per second, half the time on, with 5 ms ramps."""
    phase = _fraction(np.maximum(tau, -1 / 16) * 4)  # before the onset: 0.75, off
    return np.clip(np.minimum(phase, 0.5 - phase) * 50, 0, 1)


def _plucks(tau: np.ndarray) -> np.ndarray:
    """Plucks at 3 per second, each decaying with a 60 ms time constant."""
    return _attack(tau, 0.002) * np.exp(_fraction(tau * 3) * (-1 / (3 * 0.06)))


def _tremolo(tau: np.ndarray) -> np.ndarray:
    """A held tone whose loudness swings 80% at 10 Hz."""
    return _attack(tau, 0.02) * (0.6 + 0.4 * np.cos((2 * np.pi * 10) * tau))


def _bells(tau: np.ndarray) -> np.ndarray:
    """Strikes at 2 per second, each decaying with a 200 ms time constant."""
    return _attack(tau, 0.002) * np.exp(_fraction(tau * 2) * (-1 / (2 * 0.2)))


# Shape -> amplitude envelope of tau, the time since the onset in seconds (the rhythm).
RHYTHMS = {
    "circle": _held,
    "square": _beeps,
    "triangle": _plucks,
    "cross": _tremolo,
    "ring": _bells,
}
assert tuple(RHYTHMS) == SHAPES


@functools.lru_cache(maxsize=4)
def wavetables(sample_rate: int) -> np.ndarray:
    """float32 [25 * _TABLE]: one period of each class's wave, peak 1, in class order.

    Harmonics that could pass 0.9 of the Nyquist frequency (with the pitch jitter) are left
    out, so nothing aliases.
    """
    highest = max(PITCHES.values()) * (1 + PITCH_JITTER)
    if sample_rate <= 2 * highest:
        raise ValueError(
            f"sample_rate {sample_rate} Hz is too low for pitches up to {highest:.0f} Hz."
        )
    x = np.arange(_TABLE) / _TABLE
    tables = []
    for shape in SHAPES:
        for colour in COLOURS:
            top = 0.45 * sample_rate / (PITCHES[colour] * (1 + PITCH_JITTER))
            harmonics = {k: a for k, a in TIMBRES[shape].items() if k <= top}
            wave = sum(a * np.sin(2 * np.pi * k * x) for k, a in harmonics.items())
            tables.append(wave / np.abs(wave).max())
    return np.asarray(tables, np.float32).reshape(-1)


def render(draws: Draws, label: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """float32 [B, samples] waveforms in [-1, 1] of classes `label` (indices of CLASS_NAMES)."""
    shape, colour = label // len(COLOURS), label % len(COLOURS)
    samples = round(sample_rate * seconds)
    tables = wavetables(sample_rate)  # first: it checks the rate is high enough
    u = draws.uniform("audio", (7,))
    pitch = np.asarray(list(PITCHES.values()))[colour] * (1 + PITCH_JITTER * (2 * u[:, 0] - 1))
    # Sample i reads the wavetable at (pitch * i / rate + a random phase) periods, kept as
    # uint16 fixed point (_TABLE << 5 to the period): uint16 arithmetic wraps round the
    # period by itself, and is the cheapest there is.
    one = _TABLE << 5
    step = np.rint(pitch * one / sample_rate).astype(np.uint16)
    position = (np.arange(samples) & 0xFFFF).astype(np.uint16) * step[:, None]
    position += np.floor(u[:, 1] * one).astype(np.uint16)[:, None]  # u < 1: below 2^16
    position >>= 5
    index = position.astype(np.intp)
    index += _TABLE * label[:, None]
    wave = tables[index]

    # The envelope, at 1 kHz (a 1 ms hold: the rhythms are far slower): tau is the time
    # since the onset, at the example's tempo; the loudness goes in with it.
    hold = max(sample_rate // _ENVELOPE_RATE, 1)
    t = np.arange(-(-samples // hold), dtype=np.float32) * np.float32(hold / sample_rate)
    onset, tempo = 0.2 * seconds * u[:, 2], 1 + TEMPO_JITTER * (2 * u[:, 3] - 1)
    tau = (t - onset.astype(np.float32)[:, None]) * tempo.astype(np.float32)[:, None]
    envelope = per_kind(shape, tuple(RHYTHMS.values()), tau)
    loudness = 0.25 + 0.65 * u[:, 4]
    envelope *= loudness.astype(np.float32)[:, None]
    wave *= np.repeat(envelope, hold, axis=1)[:, :samples]

    noise_level = loudness * 10 ** (-(10 + 20 * u[:, 5]) / 20)  # 10 to 30 dB below the peak
    noise = GAUSSIAN.read(u[:, 6], (samples,))
    noise *= noise_level.astype(np.float32)[:, None]
    wave += noise
    return np.clip(wave, -1, 1, out=wave)
