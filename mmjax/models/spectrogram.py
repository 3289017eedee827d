"""Log-mel spectrograms on the device, equal to librosa's `feature.melspectrogram`.

Computing the spectrogram in the model rather than on the host keeps host batches small
(a waveform is 16 kB per second at 16 kHz, float32 / 2 bytes if stored as int16) and lets
SpecAugment and the tower see the same float32 features on every device. The steps are
librosa's (McFee et al. 2015): centre padding by n_fft // 2, frames every `hop_length`
samples, a periodic Hann window of `win_length` centred in `n_fft`, the power spectrum of
`jnp.fft.rfft`, a mel filterbank (Slaney's scale and area normalisation by default, as
`librosa.filters.mel(htk=False, norm="slaney")`; HTK's scale on request) built in numpy
at trace time, and finally `log(mel + eps)` or decibels (`librosa.power_to_db`).

Everything runs in float32 whatever the model's activation dtype; the filterbank matmul
asks for full precision, so accelerators that default to bf16/TF32 matmuls agree too.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

PAD_MODES = ("reflect", "constant")  # librosa's stft: "constant" (zeros) since 0.10
SCALES = ("log", "db", "none")


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """Parameters of the log-mel spectrogram; librosa's names and meanings.

    `win_length` 0 means n_fft, `fmax` 0 means sample_rate / 2. `scale`: "log" gives
    log(mel + eps) (natural log), "db" gives 10 log10(max(mel, eps)) with everything
    more than `top_db` below each example's maximum raised to it (`top_db` 0: no floor),
    "none" the mel power itself.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    win_length: int = 0
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 0.0
    power: float = 2.0
    center: bool = True
    pad_mode: str = "reflect"
    htk: bool = False
    slaney_norm: bool = True
    scale: str = "log"
    eps: float = 1e-6
    top_db: float = 80.0

    def __post_init__(self) -> None:
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"Unknown pad_mode {self.pad_mode!r}; use one of {PAD_MODES}.")
        if self.scale not in SCALES:
            raise ValueError(f"Unknown scale {self.scale!r}; use one of {SCALES}.")
        if not 0 < (self.win_length or self.n_fft) <= self.n_fft:
            raise ValueError(f"win_length {self.win_length} must be in (0, n_fft={self.n_fft}].")
        if not 0 <= self.fmin < (self.fmax or self.sample_rate / 2) <= self.sample_rate / 2:
            raise ValueError(
                f"Need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin},"
                f" fmax={self.fmax}, sample_rate={self.sample_rate}."
            )

    def num_frames(self, samples: int) -> int:
        if self.center:
            return 1 + samples // self.hop_length
        return 1 + (samples - self.n_fft) // self.hop_length


# ------------------------------------------------------------------- mel scale (numpy)

_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz at 200/3 Hz per mel ...
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0  # ... and logarithmic above, 27 mels per factor 6.4


def hz_to_mel(f: np.ndarray, htk: bool = False) -> np.ndarray:
    f = np.asarray(f, np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(f >= _MIN_LOG_HZ, log_part, f / _F_SP)


def mel_to_hz(m: np.ndarray, htk: bool = False) -> np.ndarray:
    m = np.asarray(m, np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    log_part = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log_part, _F_SP * m)


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float,
    fmax: float,
    htk: bool = False,
    slaney_norm: bool = True,
) -> np.ndarray:
    """float64 [n_fft // 2 + 1, n_mels]: triangles between mel-spaced edges over the
    rfft bins; with `slaney_norm` each divided by its width in Hz / 2 (constant energy
    per band, Slaney's Auditory Toolbox)."""
    fft_hz = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz - lo) / (mid - lo)
    falling = (hi - fft_hz) / (hi - mid)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if slaney_norm:
        weights *= 2.0 / (hi - lo)
    return weights.T


def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """A periodic Hann window of `win_length` (scipy's `hann(sym=False)`), zero-padded
    to `n_fft` with the window centred, as librosa's stft does."""
    n = np.arange(win_length)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(w, (left, n_fft - win_length - left))


# ------------------------------------------------------------------------- on device


def frames(waveform: jax.Array, c: MelConfig) -> jax.Array:
    """[..., samples] -> [..., num_frames, n_fft] overlapping frames (centre-padded)."""
    if c.center:
        pad = [(0, 0)] * (waveform.ndim - 1) + [(c.n_fft // 2, c.n_fft // 2)]
        waveform = jnp.pad(waveform, pad, mode=c.pad_mode)
    n = 1 + (waveform.shape[-1] - c.n_fft) // c.hop_length
    if n < 1:
        raise ValueError(f"{waveform.shape[-1]} samples are fewer than n_fft {c.n_fft}.")
    index = np.arange(n)[:, None] * c.hop_length + np.arange(c.n_fft)[None, :]
    return waveform[..., index]


def mel_power(waveform: jax.Array, c: MelConfig) -> jax.Array:
    """float32 [..., samples] -> mel power [..., num_frames, n_mels]
    (librosa.feature.melspectrogram transposed: time first)."""
    x = frames(waveform.astype(jnp.float32), c)
    window = hann_window(c.win_length or c.n_fft, c.n_fft).astype(np.float32)
    z = jnp.fft.rfft(x * window, axis=-1)
    spectrum = jnp.square(z.real) + jnp.square(z.imag)  # |z|^2 without a square root
    if c.power != 2.0:
        spectrum = spectrum ** (c.power / 2)
    bank = mel_filterbank(
        c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax or c.sample_rate / 2, c.htk, c.slaney_norm
    ).astype(np.float32)
    return jnp.matmul(spectrum, bank, precision=jax.lax.Precision.HIGHEST)


def power_to_db(mel: jax.Array, eps: float = 1e-10, top_db: float = 80.0) -> jax.Array:
    """10 log10(max(mel, eps)) (reference power 1), floored at `top_db` below the maximum
    of each [T, M] spectrogram of the batch; librosa.power_to_db(ref=1, amin=eps)."""
    db = 10.0 * jnp.log10(jnp.maximum(mel, eps))
    if top_db:
        db = jnp.maximum(db, db.max(axis=(-2, -1), keepdims=True) - top_db)
    return db


def scale_mel(mel: jax.Array, c: MelConfig) -> jax.Array:
    if c.scale == "log":
        return jnp.log(mel + c.eps)
    if c.scale == "db":
        return power_to_db(mel, c.eps, c.top_db)
    return mel


def log_mel(waveform: jax.Array, c: MelConfig) -> jax.Array:
    """float32 waveform [..., samples] -> float32 [..., num_frames, n_mels], scaled as
    `c.scale` says."""
    return scale_mel(mel_power(waveform, c), c)
