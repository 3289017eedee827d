"""Throughput accounting: the peak table, per-step FLOPs, TFLOP/s and MFU in the progress
line, and device prefetch that keeps the data position exact."""

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.metrics import Progress
from mmjax.parallel import chips
from mmjax.sweeps import flops
from mmjax.train import prefetch
from tests.helpers import tiny_config


@pytest.mark.parametrize(
    "kind, bf16, fp32",
    [
        ("NVIDIA H100 80GB HBM3", 989e12, 495e12),
        ("NVIDIA H100 PCIe", 756e12, 378e12),
        ("NVIDIA H200", 989e12, 495e12),
        ("NVIDIA A100-SXM4-80GB", 312e12, 156e12),
        ("NVIDIA B200", 2250e12, 1100e12),
        ("TPU v4", 275e12, None),
        ("TPU v5 lite", 197e12, None),
        ("TPU v5p", 459e12, None),
        ("TPU v6 lite", 918e12, None),
    ],
)
def test_peak_table(kind, bf16, fp32):
    c = chips.chip(kind)
    assert c.peak("bfloat16") == bf16 and c.peak(jnp.float32) == fp32


def test_unknown_chip_has_no_peak():
    assert chips.chip("cpu") is None and chips.chip("NVIDIA GeForce RTX 4090") is None
    assert chips.peak_flops(None, "float32") is None  # the test devices are CPUs


def test_step_flops_model_and_recompute():
    """Model FLOPs: 3 x (towers + logits row) x batch; the towers' sum is the whole
    model's forward; remat "full" and accumulation each add one forward of the towers."""
    c = tiny_config()
    towers = flops.tower_flops_per_sample(c)
    assert set(towers) == {"image", "text"}
    np.testing.assert_allclose(sum(towers.values()), flops.forward_flops_per_sample(c), rtol=1e-9)
    b, d = c.batch_size, c.model.embed_dim
    f = flops.step_flops(c)
    assert f.model == pytest.approx(3 * (sum(towers.values()) + 2 * b * d) * b)
    assert f.recompute == 0 and f.hardware == f.model
    full = flops.step_flops(tiny_config(**{"model.remat": "full"}))
    assert full.model == f.model and full.recompute == pytest.approx(sum(towers.values()) * b)
    dots = flops.step_flops(tiny_config(**{"model.remat": "dots", "accum_steps": 2}))
    assert dots.recompute == pytest.approx(sum(towers.values()) * b)
    one = flops.step_flops(tiny_config(**{"model.towers.text.remat": "full"}))
    assert one.recompute == pytest.approx(towers["text"] * b)


def test_progress_reports_tflops_mfu_and_data_wait():
    p = Progress(10, 32, 8, 0, step_flops=8e12, peak=1e12, hardware_flops=1.2e13)
    p.add({"loss": jnp.float32(1.0)}, data_wait_s=0.0)
    p.add({"loss": jnp.float32(1.0)}, data_wait_s=0.0)
    m = p.report(2)
    assert m["tflops_per_s_per_device"] == pytest.approx(m["steps_per_s"])  # 8e12 / 8 devices
    assert m["hardware_tflops_per_s_per_device"] == pytest.approx(1.5 * m["steps_per_s"])
    assert m["mfu"] == pytest.approx(m["steps_per_s"])  # 1e12 per device / 1e12 peak
    assert m["data_wait_s"] == 0.0 and m["data_wait_fraction"] == 0.0
    line = p.line(2, m)
    assert "TFLOP/s/device" in line and "MFU " in line and "%" in line and "data wait" in line


def test_progress_without_peak_shows_tflops_and_says_mfu_needs_a_chip():
    p = Progress(10, 32, 8, 0, step_flops=8e12, device_kind="cpu")
    p.add({"loss": jnp.float32(1.0)}, data_wait_s=0.5)
    m = p.report(1)
    assert "mfu" not in m and m["data_wait_s"] == 0.5
    assert "MFU n/a (needs a known chip, not cpu)" in p.line(1, m)


def batches(n: int = 40) -> grain.DatasetIterator:
    ds = grain.MapDataset.range(n).batch(4)
    return iter(ds.to_iter_dataset())


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_state_is_that_of_the_batch_taken(depth):
    it = prefetch.prefetch(batches(), lambda b: np.asarray(b) * 10, depth)
    first = [next(it) for _ in range(3)]
    np.testing.assert_array_equal(first[2], np.arange(8, 12) * 10)
    state = it.get_state()  # the source is read ahead, the state is not
    rest = [next(it) for _ in range(2)]
    it.close()
    again = prefetch.prefetch(batches(), lambda b: np.asarray(b) * 10, depth)
    again.set_state(state)
    for want in rest:
        np.testing.assert_array_equal(next(again), want)
    again.close()


def test_prefetch_passes_the_end_and_errors_on():
    it = prefetch.prefetch(batches(8), np.asarray, 2)
    assert len([next(it), next(it)]) == 2
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_background_yields_in_order_and_raises_in_the_consumer():
    from mmjax.data.stages import background

    assert list(background(iter(range(7)), 2)) == list(range(7))

    def failing():
        yield 1
        raise ValueError("bad record")

    it = background(failing(), 2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad record"):
        next(it)
