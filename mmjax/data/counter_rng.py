"""Counter-based random numbers: pure functions of (example key, stream name, counter).

numpy's Generators are sequential, so giving every example its own numbers means one
generator, and one Python round trip, per example. Here a number is the splitmix64 hash of
the example's key and a counter, so a whole batch draws in a few array operations, and an
example's numbers are the same whether it is drawn alone or in a batch of any others. Each
draw names its stream, so drawing one more thing (or one modality less) never shifts the
numbers of another.

Bulk noise (pixels, audio samples) would cost a hash per element; it is instead a window of
a fixed bank of Gaussian noise at an offset drawn per example, which is memcpy-fast. Two
examples' noise windows overlap (shifted) only when their offsets fall closer than the
window length, which nothing downstream can exploit: the offsets are independent of labels.
"""

import functools
import math
import zlib
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_BANK = 1 << 22  # Gaussian bank length (16 MiB of float32), doubled for longer windows


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scrambles every bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def example_keys(*parts: int | np.ndarray) -> np.ndarray:
    """One uint64 key per example from non-negative integer parts, e.g. (seed, split, index)."""
    key = np.zeros(np.broadcast_shapes((1,), *(np.shape(p) for p in parts)), np.uint64)
    for part in parts:  # arrays, not numpy scalars: uint64 arrays wrap around silently
        key = _mix(key ^ (np.atleast_1d(np.asarray(part, np.uint64)) * _GOLDEN + _GOLDEN))
    return key


class Draws:
    """Random numbers of a batch of examples: `[B, *shape]` arrays, each row a function of
    that example's key and the stream's name only."""

    def __init__(self, keys: np.ndarray):
        self.keys = np.asarray(keys, np.uint64)

    def __len__(self) -> int:
        return len(self.keys)

    def bits(self, stream: str, shape: tuple[int, ...] = ()) -> np.ndarray:
        """uint64 [B, *shape] of independent uniform bits."""
        stream_key, counters = _stream(stream, math.prod(shape))
        return _mix(_mix(self.keys ^ stream_key)[:, None] + counters).reshape(len(self), *shape)

    def uniform(
        self, stream: str, shape: tuple[int, ...] = (), low: float = 0.0, high: float = 1.0
    ) -> np.ndarray:
        """float64 [B, *shape] uniform in [low, high)."""
        u = (self.bits(stream, shape) >> np.uint64(11)) * (1.0 / (1 << 53))
        return low + (high - low) * u

    def integers(self, stream: str, n: int, shape: tuple[int, ...] = ()) -> np.ndarray:
        """int64 [B, *shape] uniform in [0, n)."""
        return (self.bits(stream, shape) % np.uint64(n)).astype(np.int64)

    def normal(self, stream: str, shape: tuple[int, ...] = ()) -> np.ndarray:
        """float64 [B, *shape] standard normal."""
        u = self.uniform(stream, (2, *shape))
        return gaussian(u[:, 0], u[:, 1])

    def noise(self, stream: str, shape: tuple[int, ...]) -> np.ndarray:
        """float32 [B, *shape] standard normal noise: a window of the Gaussian bank."""
        return GAUSSIAN.read(self.uniform(stream), shape)


def gaussian(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Standard normals from pairs of uniforms in [0, 1) (Box-Muller).

    Renderers draw all their numbers as one block of uniforms (one hash pass, which for
    a single example costs more than the arithmetic) and turn some into normals here.
    """
    return np.sqrt(-2 * np.log1p(-u1)) * np.cos(2 * np.pi * u2)


class NoiseBank:
    """A fixed array of noise, made on first use (once per process and length), read in
    windows of any length; twice the longest window or 2^22 elements long."""

    def __init__(self, make: Callable[[int], np.ndarray]):
        self._make = make
        self._arrays: dict[int, np.ndarray] = {}
        self._windows: dict[int, np.ndarray] = {}

    def windows(self, n: int) -> np.ndarray:
        """[L - n + 1, n] read-only view: row o is the bank's elements o to o + n."""
        if n not in self._windows:
            length = max(_BANK, 1 << (2 * n - 1).bit_length())
            if length not in self._arrays:
                array = self._make(length)
                array.flags.writeable = False
                self._arrays[length] = array
            self._windows[n] = sliding_window_view(self._arrays[length], n)
        return self._windows[n]

    def read(self, u: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """[B, *shape]: for each example, the bank's elements from an offset chosen by its
        uniform `u` [B] in [0, 1)."""
        windows = self.windows(math.prod(shape))
        offsets = (u * len(windows)).astype(np.int64)
        return windows[offsets].reshape(len(u), *shape)


# Standard normal float32 (16 MiB; about 50 ms to make).
GAUSSIAN = NoiseBank(lambda n: np.random.default_rng(0x5EED).standard_normal(n, np.float32))


@functools.lru_cache(maxsize=256)
def _stream(name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A stream's key [1] and its counters' offsets [1, n] (cached: drawn every batch)."""
    key = _mix(np.array([zlib.crc32(name.encode())], np.uint64))
    counters = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    key.flags.writeable = counters.flags.writeable = False
    return key, counters
