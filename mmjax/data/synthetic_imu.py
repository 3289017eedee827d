"""How the synthetic classes move: the shape sets the motion, the colour its frequency.

An IMU window is [T, 6]: a 3-axis accelerometer (specific force in m/s^2, so a device at
rest reads +9.81 on the axis that points up) and a 3-axis gyroscope (rad/s), in the
device's frame. The motions: circling (the device turning with its path), moving back and
forth, tracing a figure eight, shaking (three times faster, on every axis), and tumbling
about its own x axis (gravity turns round in the sensor's frame). Nuisances: +-5% frequency
jitter, random phase, amplitude, per-axis phases of the shaking, a small random orientation
of the sensor (up to 15 degrees: the gravity direction), sensor bias and white noise.
"""

import numpy as np

from mmjax.data.counter_rng import GAUSSIAN, Draws, gaussian
from mmjax.data.synthetic import COLOURS, SHAPES, per_kind

GRAVITY = 9.81  # m/s^2
# Colour -> motion frequency in Hz (1.5x apart; the shaking runs at 3x).
FREQUENCIES = {"red": 0.8, "green": 1.2, "blue": 1.8, "yellow": 2.7, "purple": 4.0}
FREQUENCY_JITTER = 0.05
MAX_TILT = np.radians(15)
assert tuple(FREQUENCIES) == tuple(COLOURS)


def _stack(*columns: np.ndarray) -> np.ndarray:
    """[B, T] columns (accelerometer x y z, gyroscope x y z) -> [B, T, 6]."""
    return np.stack(np.broadcast_arrays(*columns), axis=-1)


def _circle(theta, omega, amplitude, phases):
    """Circling in the horizontal plane: centripetal acceleration, turning at omega."""
    a = -amplitude
    return _stack(a * np.cos(theta), a * np.sin(theta), GRAVITY, 0, 0, omega)


def _back_and_forth(theta, omega, amplitude, phases):
    """Moving back and forth along x, not turning."""
    return _stack(-amplitude * np.sin(theta), 0, GRAVITY, 0, 0, 0)


def _figure_eight(theta, omega, amplitude, phases):
    """Tracing x = sin(theta), y = sin(2 theta) / 2, the heading swinging with it."""
    a = -amplitude / 2
    turn = 0.5 * omega * np.cos(theta)
    return _stack(a * np.sin(theta), 4 * a * np.sin(2 * theta), GRAVITY, 0, 0, turn)


def _shaking(theta, omega, amplitude, phases):
    """Shaking at three times the frequency, on all axes, each with its own phase."""
    s = [np.sin(3 * theta + phases[:, i : i + 1]) for i in range(6)]
    spin = 0.3 * omega
    return _stack(
        amplitude * s[0],
        amplitude * s[1],
        GRAVITY + 0.5 * amplitude * s[2],
        spin * s[3],
        spin * s[4],
        spin * s[5],
    )


def _tumbling(theta, omega, amplitude, phases):
    """Rotating about the device's own x axis: gravity turns round in its y-z plane."""
    return _stack(0, GRAVITY * np.sin(theta), GRAVITY * np.cos(theta), omega, 0, 0)


# Shape -> (theta [B, T], omega [B, 1], amplitude [B, 1], phases [B, 6]) -> [B, T, 6].
MOTIONS = {
    "circle": _circle,
    "square": _back_and_forth,
    "triangle": _figure_eight,
    "cross": _shaking,
    "ring": _tumbling,
}
assert tuple(MOTIONS) == SHAPES


def _rotations(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """[B, 3, 3] rotation matrices about unit `axis` [B, 3] by `angle` [B] (Rodrigues)."""
    x, y, z = axis.T
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def render(draws: Draws, label: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """float32 [B, T, 6] IMU windows (accelerometer m/s^2, gyroscope rad/s) of `label`."""
    shape, colour = label // len(COLOURS), label % len(COLOURS)
    t = np.arange(round(rate * seconds)) / rate
    # Frequency, phase, amplitude, tilt, noise level, 6 axis phases, the noise's offset, and
    # 9 normals (tilt axis, sensor bias).
    u = draws.uniform("imu", (30,))
    frequency = np.asarray(list(FREQUENCIES.values()))[colour]
    omega = 2 * np.pi * frequency * (1 + FREQUENCY_JITTER * (2 * u[:, 0] - 1))
    theta = omega[:, None] * t + 2 * np.pi * u[:, 1:2]
    amplitude = 2.0 + 3.0 * u[:, 2:3]
    phases = 2 * np.pi * u[:, 5:11]
    motion = per_kind(shape, tuple(MOTIONS.values()), theta, omega[:, None], amplitude, phases)

    z = gaussian(u[:, 12:21], u[:, 21:30])
    axis = z[:, :3] / np.linalg.norm(z[:, :3], axis=1, keepdims=True)
    tilt = _rotations(axis, MAX_TILT * u[:, 3])
    # The sensor's frame is the device's turned by `tilt`: v_sensor = tilt^T v_device.
    motion = np.concatenate([motion[..., :3] @ tilt, motion[..., 3:] @ tilt], -1)
    scale = np.array([0.1] * 3 + [0.02] * 3)  # bias and noise scales: m/s^2, rad/s
    noise_level = scale * (0.5 + 1.5 * u[:, 4, None, None])
    motion += scale * z[:, None, 3:] + noise_level * GAUSSIAN.read(u[:, 11], (len(t), 6))
    return motion.astype(np.float32)
