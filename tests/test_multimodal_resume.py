"""Audio and IMU from webdataset shards, with random time crops: stopping and resuming gives
bitwise the parameters of an uninterrupted run."""

import jax
import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax.train import loop
from tests.data_shards import write_shards
from tests.helpers import tiny_config
from tests.test_resume import saved_params


def audio_imu_text(shards, **overrides):
    """Text, audio and IMU towers (no image), two terms; the shards hold 1 s of audio and
    128 IMU samples, the readers crop 0.5 s and 64 samples at random."""
    c = tiny_config(
        **{"data.source": "wds", "data.path": str(shards), "data.shuffle_buffer": 16},
        **{"data.cycle_length": 2, **overrides},
    )
    with c.unlocked():
        del c.model.towers["image"], c.data.modalities["image"], c.objectives["image_text"]
        del c.evals["zeroshot"]  # it classifies images: no image tower here
        small = dict(width=32, depth=1, num_heads=2, mlp_dim=64, pool="gap")
        c.model.towers.audio = config_lib.tower(
            "audio",
            variant="mu",
            sample_rate=8000,
            n_fft=256,
            hop_length=80,
            n_mels=32,
            patch=(10, 8),
            time_masks=1,
            time_mask_width=4,
            **small,
        )
        c.model.towers.imu = config_lib.tower("timeseries", variant="mu", patch_length=16, **small)
        c.data.modalities.audio = config_lib.modality("audio", sample_rate=8000, clip_seconds=0.5)
        c.data.modalities.imu = config_lib.modality("timeseries", channels=6, length=64)
        c.objectives.audio_text = config_lib.objective("softmax", ("audio", "text"))
        c.objectives.imu_text = config_lib.objective("sigmoid", ("imu", "text"), bias_init=-5.0)
    return c


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("mm_shards")
    write_shards(str(out), shards=4, per_shard=16, modalities=("text", "audio", "imu"))
    return out


def test_audio_and_imu_from_shards_resume_bitwise(shards, tmp_path):
    config = audio_imu_text(shards, total_steps=4, ckpt_every=100)
    loop.train(config, str(tmp_path / "straight"))
    loop.train(audio_imu_text(shards, total_steps=4, stop_at_step=2), str(tmp_path / "resumed"))
    loop.train(config, str(tmp_path / "resumed"))
    straight = saved_params(str(tmp_path / "straight"), config)
    resumed = saved_params(str(tmp_path / "resumed"), config)
    assert set(straight) == {"text", "audio", "imu", "objectives"}
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(straight), jax.tree.leaves(resumed)
    ):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    at_stop = saved_params(str(tmp_path / "resumed"), config, step=2)
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(at_stop), jax.tree.leaves(resumed)))
