"""The on-device log-mel spectrogram equals librosa's (float64 reference) to 1e-4.

Errors are measured relative to each spectrogram's largest entry: float32 FFT rounding is
about 1e-7 of the spectrum's norm in every bin, so bins 100 dB below the peak (a pure
tone's leakage) carry large per-element errors in any float32 implementation. Bins within
30 dB of the peak are also checked element by element.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models import spectrogram as sp

librosa = pytest.importorskip("librosa")

# Three parameter sets: AST-like 16 kHz (25 ms windows every 10 ms, 128 mels, reflect
# padding); 22.05 kHz with a short window inside n_fft, a band-limited bank and librosa's
# own default zero padding; 8 kHz magnitude with HTK's mel scale and no centring.
CONFIGS = {
    "ast": sp.MelConfig(),
    "band": sp.MelConfig(
        sample_rate=22050,
        n_fft=512,
        hop_length=128,
        win_length=300,
        n_mels=64,
        fmin=50.0,
        fmax=8000.0,
        pad_mode="constant",
        scale="db",
    ),
    "htk": sp.MelConfig(
        sample_rate=8000,
        n_fft=256,
        hop_length=80,
        n_mels=40,
        fmin=20.0,
        power=1.0,
        center=False,
        htk=True,
        slaney_norm=False,
        scale="db",
        top_db=0.0,
        eps=1e-2,  # an absolute floor 80 dB (of amplitude) below the chirp's peak; at 1e-5
        # the tone's leakage bins, 150 dB down, sit in float32's rounding (1% off)
    ),
}


def signals(sample_rate: int) -> dict[str, np.ndarray]:
    """0.6 s of a linear chirp over the whole band, white noise, and a 440 Hz tone."""
    t = np.arange(int(0.6 * sample_rate)) / sample_rate
    top = 0.45 * sample_rate
    chirp = 0.8 * np.sin(2 * np.pi * (60 * t + 0.5 * (top - 60) / t[-1] * t**2))
    noise = 0.3 * np.random.default_rng(0).normal(size=t.shape)
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    return {"chirp": chirp, "noise": noise, "tone": tone}


def librosa_mel(y: np.ndarray, c: sp.MelConfig) -> np.ndarray:
    """[frames, n_mels] in float64: librosa's melspectrogram with the same parameters."""
    s = librosa.feature.melspectrogram(
        y=np.asarray(y, np.float64),
        sr=c.sample_rate,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length or None,
        window="hann",
        center=c.center,
        pad_mode=c.pad_mode,
        power=c.power,
        n_mels=c.n_mels,
        fmin=c.fmin,
        fmax=c.fmax or None,
        htk=c.htk,
        norm="slaney" if c.slaney_norm else None,
        dtype=np.float64,
    )
    return s.T


def librosa_scaled(mel: np.ndarray, c: sp.MelConfig) -> np.ndarray:
    if c.scale == "log":
        return np.log(mel + c.eps)
    return librosa.power_to_db(mel, ref=1.0, amin=c.eps, top_db=c.top_db or None)


def assert_close_to_max(actual, expected, rtol: float = 1e-4) -> None:
    err = np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max()
    assert err < rtol, err


@pytest.mark.parametrize("name", list(CONFIGS))
def test_filterbank_equals_librosa(name):
    c = CONFIGS[name]
    ours = sp.mel_filterbank(
        c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax or c.sample_rate / 2, c.htk, c.slaney_norm
    )
    theirs = librosa.filters.mel(
        sr=c.sample_rate,
        n_fft=c.n_fft,
        n_mels=c.n_mels,
        fmin=c.fmin,
        fmax=c.fmax or None,
        htk=c.htk,
        norm="slaney" if c.slaney_norm else None,
        dtype=np.float64,
    )
    np.testing.assert_allclose(ours.T, theirs, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_log_mel_equals_librosa(name):
    c = CONFIGS[name]
    waves = signals(c.sample_rate)
    batch = jnp.asarray(np.stack(list(waves.values())), jnp.float32)
    mel, scaled = jax.jit(lambda w: (sp.mel_power(w, c), sp.log_mel(w, c)))(batch)
    assert mel.dtype == scaled.dtype == jnp.float32
    for i, (signal, y) in enumerate(waves.items()):
        want = librosa_mel(y, c)
        assert mel.shape[1:] == want.shape == (c.num_frames(len(y)), c.n_mels), signal
        assert_close_to_max(mel[i], want)
        loud = want > 1e-3 * want.max()
        np.testing.assert_allclose(np.asarray(mel[i])[loud], want[loud], rtol=1e-4, err_msg=signal)
        # The log / dB step, floored per example at top_db below its own maximum.
        assert_close_to_max(scaled[i], librosa_scaled(want, c))


def test_db_step_alone_equals_power_to_db():
    mel = np.random.default_rng(1).lognormal(0, 4, size=(2, 30, 20)) * [[[1.0]], [[1e-3]]]
    got = sp.power_to_db(jnp.asarray(mel, jnp.float32), eps=1e-10, top_db=60.0)
    for i in range(2):
        want = librosa.power_to_db(mel[i], ref=1.0, amin=1e-10, top_db=60.0)
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-4)


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="pad_mode"):
        sp.MelConfig(pad_mode="wrap")
    with pytest.raises(ValueError, match="fmax"):
        sp.MelConfig(sample_rate=8000, fmax=6000.0)
    with pytest.raises(ValueError, match="win_length"):
        sp.MelConfig(n_fft=256, win_length=400)
