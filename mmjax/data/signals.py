"""Readers of sampled signals: audio (decoded and resampled), multichannel time series and
video frames. Each decodes its field and cuts a window in time (random in training,
centred in evaluation, from the example's own random numbers); a record too short, not
finite or undecodable is skipped by reason. Registered as modality types on import
(modalities.py imports this module).
"""

import logging
from typing import Any

import ml_collections
import numpy as np

from mmjax.data import arrays, audio
from mmjax.data.augment import SignalAugment
from mmjax.data.images import pixel_box
from mmjax.data.modalities import Reader, image_transform, register_modality
from mmjax.data.skipped import Skipped


class SkipRecord(Exception):
    """Raised inside `ArrayReader.read` to skip the record for `reason` ("short", ...)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _as_bytes(value) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray | np.bytes_) else None


def _finite(x: np.ndarray) -> np.ndarray:
    if not np.isfinite(x).all():
        raise ValueError(f"{int((~np.isfinite(x)).sum())} values are not finite")
    return x


class ArrayReader(Reader):
    """A reader that decodes and cuts in time: `read` gives the array or raises
    `SkipRecord`; any other error means the record is bad (`bad_<modality>`), and empty
    bytes that it is missing. So a reader never raises."""

    name: str
    train: bool
    pad: bool  # pad_short: zero-pad records shorter than the window, else skip them

    def read(self, value: Any, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, value, rng):
        if isinstance(value, bytes) and not value:
            return Skipped(f"missing_{self.name}")
        try:
            return self.read(value, rng)
        except SkipRecord as s:
            return Skipped(f"{s.reason}_{self.name}", detail=s.detail)
        except Exception as e:
            logging.debug("Bad %s: %s", self.name, e)
            return Skipped(f"bad_{self.name}", detail=f"{type(e).__name__}: {e}")

    def cut(self, x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        """`length` rows of `x`: a random window in training, the centre otherwise; then
        in training the view augmentations (noise, time masks), if any."""
        out = arrays.crop(x, length, self.train, rng, self.pad)
        if out is None:
            raise SkipRecord("short", f"{len(x)} < {length}")
        augment = getattr(self, "augment", None)
        return augment(out, rng) if augment and self.train else out


# Augmented views of signals (data/augment.py), training only; 0 = off.
SIGNAL_AUGMENT = dict(
    noise=0.0,  # Gaussian noise, std as a fraction of the example's
    time_masks=0,  # zeroed spans per example
    time_mask_width=0.1,  # each up to this fraction of the window
)


def signal_augment(c: ml_collections.ConfigDict) -> SignalAugment:
    return SignalAugment(float(c.noise), int(c.time_masks), float(c.time_mask_width))


class AudioReader(ArrayReader):
    """Encoded audio (any format libsndfile reads) or a waveform array at `sample_rate`
    -> float32 mono [sample_rate * clip_seconds] (audio.py)."""

    def __init__(self, name: str, c: ml_collections.ConfigDict, train: bool):
        self.name, self.train, self.pad = name, train, c.pad_short
        self.sample_rate, self.resample = int(c.sample_rate), c.resample
        self.augment = signal_augment(c)
        self.length = round(c.sample_rate * c.clip_seconds)
        self.shape, self.dtype = (self.length,), np.dtype(np.float32)

    def read(self, value, rng):
        data = _as_bytes(value)
        wave, rate = (np.asarray(value), self.sample_rate) if data is None else audio.decode(data)
        wave = _finite(audio.to_mono(wave))
        if not wave.size:
            raise audio.BadAudio("no samples")
        if rate != self.sample_rate:
            if not self.resample:
                raise SkipRecord("bad_rate", f"{rate} Hz, not {self.sample_rate} (resample=False)")
            wave = audio.resample(wave, rate, self.sample_rate)
        return self.cut(wave, self.length, rng)


@register_modality(
    "audio",
    reasons=("missing", "bad", "bad_rate", "short"),
    key="flac;wav;mp3;ogg;opus;audio",
    sample_rate=16000,  # Hz, what the batch holds; files at other rates are resampled
    clip_seconds=10.0,  # window length: random in training, centred at evaluation
    pad_short=True,  # shorter clips: zero-padded at the end (True) or skipped as short_<m>
    resample=True,  # False: files at another rate are skipped as bad_rate_<m>
    **SIGNAL_AUGMENT,
)
def audio_modality(name: str, c: ml_collections.ConfigDict, config, train: bool) -> AudioReader:
    return AudioReader(name, c, train)


class TimeseriesReader(ArrayReader):
    """`.npy` bytes or an array [T, channels] (IMU, sensors) -> float32 [length, channels]."""

    def __init__(self, name: str, c: ml_collections.ConfigDict, train: bool):
        self.name, self.train, self.pad = name, train, c.pad_short
        self.length, self.channels = int(c.length), int(c.channels)
        self.shape, self.dtype = (self.length, self.channels), np.dtype(np.float32)
        self.augment = signal_augment(c)

    def read(self, value, rng):
        data = _as_bytes(value)
        x = np.asarray(value) if data is None else arrays.load_npy(data)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise SkipRecord("bad_shape", f"shape {x.shape}, not [T, {self.channels}]")
        if x.dtype.kind not in "iuf":  # not bool, complex, str, object
            raise ValueError(f"dtype {x.dtype} is not a real number type")
        return _finite(self.cut(x, self.length, rng).astype(np.float32))


@register_modality(
    "timeseries",
    reasons=("missing", "bad", "bad_shape", "short"),
    key="imu.npy;npy;imu",
    channels=6,  # C of [T, C]: another count is bad_shape_<m>
    length=128,  # T samples: random window in training, centred at evaluation
    pad_short=True,  # shorter records: zero-padded at the end (True) or skipped as short_<m>
    **SIGNAL_AUGMENT,
)
def timeseries(name: str, c: ml_collections.ConfigDict, config, train: bool) -> TimeseriesReader:
    return TimeseriesReader(name, c, train)


class VideoReader(ArrayReader):
    """`.npy` uint8 [F, H, W, 3], a tar of encoded frames (arrays.py) or an array ->
    uint8 [frames, size, size, 3]: `frames` frames `stride` apart, one crop box for all."""

    def __init__(self, name: str, c: ml_collections.ConfigDict, train: bool):
        self.name, self.train, self.pad = name, train, c.pad_short
        self.frames, self.stride = int(c.frames), int(c.stride)
        self.transform = image_transform(c, train)  # the crop box, decoder and resizer
        size = self.transform.size
        self.shape, self.dtype = (self.frames, size, size, 3), np.dtype(np.uint8)

    def read(self, value, rng):
        data = _as_bytes(value)
        if data is not None and arrays.is_tar(data):
            clip = arrays.FramesTar(data)
        else:
            clip = np.asarray(value) if data is None else arrays.load_npy(data)
            if clip.ndim != 4 or clip.shape[-1] != 3:
                raise SkipRecord("bad_shape", f"shape {clip.shape}, not [F, H, W, 3]")
            if clip.dtype != np.uint8:
                raise ValueError(f"dtype {clip.dtype}, not uint8")
        indices = arrays.frame_indices(
            len(clip), self.frames, self.stride, self.train, rng, self.pad
        )
        if indices is None:
            span = (self.frames - 1) * self.stride + 1
            raise SkipRecord("short", f"{len(clip)} frames < {span}")
        if isinstance(clip, arrays.FramesTar):
            clip = clip.decode(indices, self.transform.decoder)
        else:
            clip = clip[indices]
        hw, size = clip.shape[1:3], self.transform.size
        if hw != (size, size):
            box = pixel_box(self.transform.box(hw, rng), hw)
            clip = arrays.resize_frames(clip, box, size, self.transform.resizer)
        return arrays.pad_frames(clip, self.frames)


@register_modality(
    "video",
    reasons=("missing", "bad", "bad_shape", "short"),
    key="video.npy;video.tar;video",
    frames=8,  # frames per clip
    stride=2,  # taken every `stride` frames: a window of (frames - 1) * stride + 1
    size=224,  # each frame: a crop box (the same in every frame) resized to size x size
    crop_scale=(0.9, 1.0),  # training's random resized crop, as the image modality's
    crop_ratio=(3 / 4, 4 / 3),
    decoder="auto",  # frames of a .video.tar: auto | pil | simplejpeg
    resizer="auto",  # auto | pil | cv2, frame by frame
    pad_short=False,  # shorter clips: skipped as short_<m> (False) or zero frames appended
)
def video(name: str, c: ml_collections.ConfigDict, config, train: bool) -> VideoReader:
    return VideoReader(name, c, train)
