"""Peak dense matmul FLOP/s of known accelerators, for MFU.

MFU (model FLOPs utilisation, Chowdhery et al. 2022, PaLM app. B) divides the model FLOPs
a step does per second by the chip's peak. The peak depends on the matmul precision:
`bf16` is the dense bfloat16 tensor-core / MXU peak; `fp32` is what XLA runs a float32
matmul at by default: TF32 tensor cores on NVIDIA (Ampere and later), bf16 passes on TPU,
for which no single float32 figure is published, so it is left unknown. Vendor data
sheets, dense (not 2:4 sparse) figures, per chip (a TPU v4 or v5p chip is two cores but one
JAX device since v4's megacore).

An unknown device kind (any CPU, a GPU not listed) has no peak: MFU is then omitted,
never guessed.
"""

import dataclasses

import jax
import jax.numpy as jnp

T = 1e12


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    bf16: float  # FLOP/s
    fp32: float | None = None  # FLOP/s at XLA's default float32 matmul precision

    def peak(self, dtype) -> float | None:
        """Peak FLOP/s for matmuls in `dtype` (bfloat16/float16 -> bf16, else fp32)."""
        half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        return self.bf16 if half else self.fp32


# (substring of the lower-cased `device_kind`, chip), most specific first.
CHIPS: tuple[tuple[str, Chip], ...] = (
    ("tpu v6 lite", Chip("TPU v6e", 918 * T)),
    ("tpu v6e", Chip("TPU v6e", 918 * T)),
    ("tpu v5 lite", Chip("TPU v5e", 197 * T)),
    ("tpu v5e", Chip("TPU v5e", 197 * T)),
    ("tpu v5p", Chip("TPU v5p", 459 * T)),
    ("tpu v5", Chip("TPU v5p", 459 * T)),  # v5p reports "TPU v5"
    ("tpu v4", Chip("TPU v4", 275 * T)),
    ("b200", Chip("B200", 2250 * T, 1100 * T)),
    ("h200", Chip("H200", 989 * T, 495 * T)),
    ("h100 pcie", Chip("H100 PCIe", 756 * T, 378 * T)),
    ("h100 nvl", Chip("H100 NVL", 835 * T, 418 * T)),
    ("h100", Chip("H100 SXM", 989 * T, 495 * T)),
    ("a100", Chip("A100", 312 * T, 156 * T)),
)


def chip(device_kind: str) -> Chip | None:
    """The known chip whose name `device_kind` ("NVIDIA H100 80GB HBM3", "TPU v5 lite")
    contains, or None."""
    kind = device_kind.lower()
    for pattern, c in CHIPS:
        if pattern in kind:
            return c
    return None


def peak_flops(device: jax.Device | None = None, dtype="bfloat16") -> float | None:
    """Peak dense FLOP/s of `device` (default: the first local one) for `dtype` matmuls,
    or None when the chip or that precision's peak is unknown."""
    device = device or jax.local_devices()[0]
    c = chip(device.device_kind)
    return None if c is None else c.peak(dtype)
