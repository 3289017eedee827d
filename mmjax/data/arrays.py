"""Arrays on the host: `.npy` records, windows in time, and video frames.

Time series and video clips are cut to a fixed length the same way: training takes a
window at a random start, evaluation the centred one, so an evaluation batch is a pure
function of the data. A record shorter than the window is padded with zeros at its end
or skipped, as the modality's `pad_short` says. All randomness comes from the generator
that the caller passes (the example's own, examples.py).

Video comes as one `.npy` uint8 [F, H, W, 3], or as a tar inside the sample
(`.video.tar`: one encoded image per frame, in the natural order of the member names,
"0.jpg", "1.jpg", ..., "10.jpg"), of which only the sampled frames are decoded.
"""

import io
import re
import tarfile
from collections.abc import Sequence

import numpy as np

from mmjax.data.images import DECODERS, RESIZERS

_TAR_MAGIC = b"ustar"  # at byte 257 of a POSIX tar header


def load_npy(data: bytes) -> np.ndarray:
    """An `.npy` file's array; pickled objects are refused (they would run code)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def window_start(available: int, needed: int, train: bool, rng: np.random.Generator) -> int:
    """Start of a window of `needed` in `available` (>= needed): random or centred.
    Nothing is drawn when there is one place (so a generator that is never used is
    never made, examples.py)."""
    if train and available > needed:
        return int(rng.integers(0, available - needed + 1))
    return (available - needed) // 2


def crop(
    x: np.ndarray, length: int, train: bool, rng: np.random.Generator, pad: bool
) -> np.ndarray | None:
    """`length` rows of `x` along axis 0 (`window_start`); a shorter `x` is zero-padded at
    its end when `pad`, else None."""
    n = len(x)
    if n >= length:
        start = window_start(n, length, train, rng)
        return x[start : start + length]
    if not pad:
        return None
    out = np.zeros((length, *x.shape[1:]), x.dtype)
    out[:n] = x
    return out


def frame_indices(
    available: int, frames: int, stride: int, train: bool, rng: np.random.Generator, pad: bool
) -> np.ndarray | None:
    """Indices of `frames` frames `stride` apart among `available`: a window of span
    (frames - 1) * stride + 1 (`window_start`). A shorter clip gives the frames it has
    (from its start) when `pad`, for the caller to pad; else None."""
    span = (frames - 1) * stride + 1
    if available >= span:
        return window_start(available, span, train, rng) + stride * np.arange(frames)
    if not pad or available == 0:
        return None
    return np.arange(0, available, stride)[:frames]


def pad_frames(clip: np.ndarray, frames: int) -> np.ndarray:
    """A clip [f, ...] with zero frames appended up to `frames`."""
    if len(clip) == frames:
        return clip
    out = np.zeros((frames, *clip.shape[1:]), clip.dtype)
    out[: len(clip)] = clip
    return out


def is_tar(data: bytes) -> bool:
    return data[257:262] == _TAR_MAGIC


def _natural(name: str) -> list:
    """Sort key: "frame2.jpg" before "frame10.jpg"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class FramesTar:
    """A tar of encoded frames (a video inside one webdataset sample), decoded on demand."""

    def __init__(self, data: bytes):
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
            members = sorted(
                (m for m in t.getmembers() if m.isfile()), key=lambda m: _natural(m.name)
            )
        self._data, self._spans = data, [(m.offset_data, m.size) for m in members]

    def __len__(self) -> int:
        return len(self._spans)

    def decode(self, indices: Sequence[int], decoder: str) -> np.ndarray:
        """uint8 [len(indices), H, W, 3]; frames of different sizes raise ValueError."""
        decode = DECODERS.get(decoder)
        spans = [self._spans[i] for i in indices]
        frames = [decode(self._data[at : at + size]) for at, size in spans]
        if len({f.shape for f in frames}) > 1:
            raise ValueError(f"frames of different sizes: {sorted({f.shape for f in frames})}")
        return np.stack(frames)


def resize_frames(
    frames: np.ndarray, box: tuple[int, int, int, int], size: int, resizer: str
) -> np.ndarray:
    """uint8 [F, H, W, 3] -> [F, size, size, 3]: the same crop box resized in every frame.

    Frame by frame: handing OpenCV the frames side by side as the channels of one image
    measured 10x slower (its fast paths are for up to 4 channels), and its area
    filter refuses more than 4.
    """
    resize = RESIZERS.get(resizer)
    return np.stack([resize(np.ascontiguousarray(frame), box, size) for frame in frames])
