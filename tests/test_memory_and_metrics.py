"""The memory check refuses a step that cannot fit; metrics reach jsonl and TensorBoard."""

import json
import os

import jax
import jax.numpy as jnp
import pytest

from mmjax.metrics import MetricWriter, Progress
from mmjax.train import memory


class _FakeDevice:
    device_kind = "FakeAccelerator"

    def __init__(self, limit):
        self.limit = limit

    def memory_stats(self):
        return {"bytes_limit": self.limit}


def test_check_fits_refuses_with_needed_and_available_memory():
    compiled = jax.jit(lambda x: (x @ x.T).sum()).lower(jnp.zeros((512, 512))).compile()
    needed = memory.check_fits(compiled, _FakeDevice(2**40), "hint")
    assert needed >= 512 * 512 * 4  # at least the argument
    with pytest.raises(memory.OutOfMemoryError, match=r"needs .* GiB .* has 0.00 GiB.*runlocal"):
        memory.check_fits(compiled, _FakeDevice(1000), "Try the runlocal variant.")


def test_metric_writer_and_progress(tmp_path):
    writer = MetricWriter(str(tmp_path))
    progress = Progress(total_steps=10, global_batch=32, num_devices=8, start_step=0)
    progress.add({"loss": jnp.float32(2.0), "acc_x2y": jnp.float32(0.5)})
    progress.add({"loss": jnp.float32(4.0), "acc_x2y": jnp.float32(0.7)})
    m = progress.report(2)
    assert m["loss"] == pytest.approx(3.0) and m["acc_x2y"] == pytest.approx(0.6)
    assert m["samples_per_s"] == pytest.approx(32 * m["steps_per_s"])
    assert m["samples_per_s_per_device"] == pytest.approx(4 * m["steps_per_s"])
    line = progress.line(2, m)
    for part in ("step 2/10", "loss 3.0000", "steps/s", "samples/s", "/s/device", "ETA"):
        assert part in line
    writer.write(2, m)
    writer.close()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["step"] == 2 and record["loss"] == pytest.approx(3.0)
    assert os.listdir(tmp_path / "tensorboard")
