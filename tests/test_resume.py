"""Stopping and resuming gives bitwise the parameters of an uninterrupted run, and the
data stream continues on exactly the next batch."""

import jax
import numpy as np

from mmjax import state as state_lib
from mmjax.checkpoint import Checkpointer
from mmjax.data import modalities, pipeline, sources
from mmjax.data.examples import Prepare
from mmjax.parallel.mesh import make_mesh
from mmjax.train import loop
from tests.helpers import tiny_config


def saved_params(workdir: str, config, step: int | None = None) -> dict:
    ckpt = Checkpointer(f"{workdir}/checkpoints", 1, 1)
    abstract = state_lib.build(config, make_mesh(config.mesh)).abstract
    state, _ = ckpt.restore(step or ckpt.latest_step(), abstract, None)
    ckpt.close()
    return jax.device_get(state.params)


def test_stop_and_resume_is_bitwise_identical(tmp_path):
    config = tiny_config(total_steps=6, ckpt_every=100)
    loop.train(config, str(tmp_path / "straight"))

    interrupted = tiny_config(total_steps=6, ckpt_every=100, stop_at_step=3)
    loop.train(interrupted, str(tmp_path / "resumed"))
    first = Checkpointer(str(tmp_path / "resumed" / "checkpoints"), 1, 1)
    assert first.latest_step() == 3
    first.close()
    loop.train(config, str(tmp_path / "resumed"))

    straight = saved_params(str(tmp_path / "straight"), config)
    resumed = saved_params(str(tmp_path / "resumed"), config)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(straight), jax.tree.leaves(resumed)
    ):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    # The resumed run did train: its parameters moved away from the step-3 checkpoint.
    at_stop = saved_params(str(tmp_path / "resumed"), config, step=3)
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(at_stop), jax.tree.leaves(resumed)))


def test_restored_iterator_yields_the_next_batch(tmp_path):
    config = tiny_config(total_steps=4, ckpt_every=2, stop_at_step=2)
    loop.train(config, str(tmp_path))
    prepare = Prepare(modalities.build_readers(config))
    ds = pipeline.train_dataset(
        sources.build_source(config.data, "train", config.seed), prepare, config.batch_size, 0, 0, 1
    )
    data_iter = pipeline.as_iterator(ds, config.data)
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), 2, 1)
    abstract = state_lib.build(config, make_mesh(config.mesh)).abstract
    ckpt.restore(2, abstract, data_iter)
    ckpt.close()
    nxt = next(data_iter)
    # Random access: batch 2 (0-based) of the same dataset is the third batch of the run.
    expected = ds[2]
    np.testing.assert_array_equal(nxt["image"], expected["image"])
    np.testing.assert_array_equal(nxt["text"], expected["text"])
    assert not np.array_equal(nxt["text"], ds[1]["text"])
